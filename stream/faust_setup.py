"""What the worker changes in faust-streaming: the consumer's fetch wait and the partition assignor."""

from __future__ import annotations

from typing import Any

from faust.assignor import PartitionAssignor
from faust.transport.drivers import aiokafka as faust_aiokafka

_FETCH_MAX_WAIT_MS = 10


def patch_fetch_wait(wait_ms: int) -> None:
    """faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``.

    The embedded broker holds every waiting fetch for the full wait, so that constant alone would
    add up to 1.5 s to every push. Set the consumer's wait once it is created.
    """
    global _FETCH_MAX_WAIT_MS
    _FETCH_MAX_WAIT_MS = wait_ms
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_kairos_patched", False):
        return
    original = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS
        return consumer

    cls._create_worker_consumer = create  # type: ignore[method-assign]
    cls._kairos_patched = True  # type: ignore[attr-defined]


class BalancedAssignor(PartitionAssignor):
    """faust's co-partitioning assignor without standby replicas: balanced, sticky within balance.

    A member keeps up to ``floor(partitions / members)`` of its partitions (fewer moves than a
    fresh round robin); the rest go round robin to the members with the fewest, so a restarted or
    added worker always gets work while there are at least as many partitions as members.
    """

    def __init__(self, app: Any, replicas: int = 0) -> None:
        super().__init__(app, replicas=0)
