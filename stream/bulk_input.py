"""Bulk input: the user-keyed input topics read in batches by librdkafka, on faust's assignment.

Why: faust delivers records one at a time through its stream (an agent, its channel queue, an
``Event`` per record, acking); on this project's 2-core machine a bare faust agent caps near 11,000
records/s and the worker spent about 260 µs per event outside its own batch. librdkafka reads the
same partitions at hundreds of thousands of records per second. So faust stays in charge of what it
is good at (the app, the consumer group, the assignment and its rebalance callbacks, timers) and the
worker reads its inputs underneath it:

* :class:`HeldInputConsumer` is faust's own aiokafka consumer with the input topics *held*: it joins
  the group and is assigned their partitions like any member, but never fetches them.
* :class:`BulkReader` is a librdkafka consumer without a group (``assign``, never ``subscribe``) that
  the worker points at the partitions faust assigned, once each one's state is recovered.

Positions come from the state, never from the group's committed offsets: each partition's state
records the last applied offset of every input topic, written in the same RocksDB batch and
changelog as the user records it produced (``stream.partition_state``). A recovered partition is
read from the next offset; one with no state at all from the beginning (the worker's
``auto.offset.reset`` has always been ``earliest``). The group's committed offsets are written after
the fact, from the same state, so that lag dashboards and ``kafka-consumer-groups`` keep working.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import ConsumerRebalanceListener
from faust.types import TP

from stream.outcome import Inbound, inbound_records
from stream.settings import Settings

log = logging.getLogger(__name__)


class _HoldingRebalanceListener(ConsumerRebalanceListener):
    """Pauses the held topics' partitions inside aiokafka at every assignment (in its thread).

    Keeping them out of faust's active set stops faust from delivering them; pausing them in aiokafka
    also stops its background fetcher from requesting them (a fetch every 10 ms per empty partition
    otherwise, which cost the worker a tenth of its CPU).
    """

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        held: frozenset[str] = getattr(self._thread.consumer, "held", frozenset())
        consumer = self._thread._ensure_consumer()
        tps = [tp for tp in consumer.assignment() if tp.topic in held]
        if tps:
            consumer.pause(*tps)
        await super().on_partitions_assigned(assigned)


class HeldInputConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer that is assigned the held topics' partitions but never fetches them.

    faust decides what to fetch from its set of active partitions; every path that fills it (an
    assignment, a resume after recovery, a drained buffer) goes through the methods below, which keep
    the held topics out. Set :attr:`held` on a subclass (see :func:`holding`).
    """

    held: frozenset[str] = frozenset()
    RebalanceListener = _HoldingRebalanceListener

    def _set_active_tps(self, tps: set[TP]) -> set[TP]:
        active: set[TP] = super()._set_active_tps(tps)
        active.difference_update([tp for tp in active if tp.topic in self.held])
        return active

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Resume fetching, except the held topics (faust's recovery resumes every assigned one)."""
        super().resume_partitions([tp for tp in tps if tp.topic not in self.held])

    def on_buffer_drop(self, tp: TP) -> None:
        """A drained stream buffer re-activates its partition, never a held one."""
        if tp.topic not in self.held:
            super().on_buffer_drop(tp)

    def verify_event_path(self, now: float, tp: TP) -> None:
        """faust's stall warnings watch its own streams; the held topics are read elsewhere."""
        if tp.topic not in self.held:
            super().verify_event_path(now, tp)


def holding(topics: Iterable[str]) -> type[HeldInputConsumer]:
    """A :class:`HeldInputConsumer` class that holds ``topics``."""
    return type("HeldInputConsumer", (HeldInputConsumer,), {"held": frozenset(topics)})


class BulkReader:
    """Reads assigned input partitions in batches (one librdkafka consumer, no group membership).

    Only the thread that calls :meth:`read` touches the consumer: :meth:`assign` and
    :meth:`unassign` (called from the event loop) queue their change and the next ``read`` applies
    it before it fetches. So every record a ``read`` returns belongs to the assignment as it stood
    when that read began, which is what lets the worker tell a current record from one of a
    partition that moved meanwhile (see ``Worker._bulk_loop``).
    """

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        self._consumer = Consumer(
            {
                **kafka.confluent_config(),
                # Never joins (no subscribe) nor commits: the id only names the client's offset reads.
                "group.id": settings.worker.app_id,
                "client.id": "kairos-bulk-input",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": kafka.fetch_max_wait_ms,  # at least 10 (settings)
                "enable.partition.eof": False,
                # Fetch a partition again only once the worker has taken what was fetched: a fetch
                # per batch instead of a stream of small ones (settings: input_prefetch_messages).
                "queued.min.messages": kafka.input_prefetch_messages,
                "fetch.queue.backoff.ms": kafka.input_fetch_backoff_ms,
            }
        )
        self._lock = threading.Lock()
        self._pending: list[tuple[str, list[TopicPartition]]] = []
        self._assigned: set[tuple[str, int]] = set()
        self._read_seconds = 0.0  # time spent taking records, not waiting for the first one

    def assign(self, starts: Mapping[tuple[str, int], int | None]) -> None:
        """Read these partitions from the given offsets (None: from the beginning), from the next read.

        A partition already assigned is re-pointed: a re-assignment after a move restarts from the
        state that was recovered, not from where the previous assignment stopped.
        """
        if not starts:
            return
        with self._lock:
            again = [TopicPartition(t, p) for t, p in sorted(starts) if (t, p) in self._assigned]
            if again:
                self._pending.append(("unassign", again))
            tps = [
                TopicPartition(topic, partition, OFFSET_BEGINNING if start is None else start)
                for (topic, partition), start in sorted(starts.items())
            ]
            self._pending.append(("assign", tps))
            self._assigned.update(starts)

    def unassign(self, tps: Iterable[tuple[str, int]]) -> None:
        """Stop reading these partitions from the next read on (those not assigned are ignored)."""
        with self._lock:
            gone = sorted(set(tps) & self._assigned)
            if gone:
                self._pending.append(("unassign", [TopicPartition(t, p) for t, p in gone]))
                self._assigned.difference_update(gone)

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for op, tps in pending:
            if op == "assign":
                self._consumer.incremental_assign(tps)
                log.info(
                    "bulk input reads %s", ", ".join(f"{t.topic}[{t.partition}]@{t.offset}" for t in tps)
                )
            else:
                self._consumer.incremental_unassign(tps)

    def read(self, max_records: int, timeout: float) -> list[Inbound]:
        """Apply queued assignment changes; wait up to ``timeout`` for a first record, then take every
        record already fetched (up to ``max_records``): a lone event is handed over at once, a
        backlog in full batches."""
        self._apply_pending()
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        started = time.perf_counter()
        messages = [first]
        if max_records > 1:
            messages.extend(self._consumer.consume(max_records - 1, timeout=0))
        records, errors = inbound_records(messages)
        for err in errors:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("bulk input: %s", err)
        self._read_seconds += time.perf_counter() - started
        return records

    def take_read_seconds(self) -> float:
        """Seconds spent taking records since the last call (for ``kairos_stage_seconds_total``)."""
        seconds, self._read_seconds = self._read_seconds, 0.0
        return seconds

    def close(self) -> None:
        """Stop the fetchers; only once no read runs (the reading thread has ended)."""
        self._consumer.close()


def group_offsets(applied: Mapping[tuple[str, int], int]) -> dict[Any, int]:
    """The group offsets to commit for applied input offsets: the next record to read, as faust TPs."""
    return {TP(topic, partition): offset + 1 for (topic, partition), offset in applied.items()}
