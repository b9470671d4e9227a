"""What the worker tests share: a worker serving every partition, a store that cannot be re-read, an
exit that is caught."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream.app import Worker
from stream.engine import Engine


class Exited(Exception):
    """Raised where the worker would end the process (``exit_for_redelivery``)."""


def serve_every_partition(worker: Worker, partitions: int) -> None:
    """Make ``worker`` own and serve partitions 0 .. ``partitions`` - 1, as if each were assigned and
    recovered (their stores open, nothing to wait for)."""
    for p in range(partitions):
        worker.store.open(p)
        worker._owned.add(p)
        worker._epochs[p] = 1
        worker._ready_partitions[p] = asyncio.Event()
        worker._ready_partitions[p].set()


def unreadable_partitions(engine: Engine) -> None:
    """Make every re-read of a partition from its store fail."""

    def unreadable(partition: int, store: Any) -> Any:
        raise RuntimeError("partition row does not decode")

    engine.load_partition = unreadable  # type: ignore[method-assign]


def caught_exits(monkeypatch: pytest.MonkeyPatch, module: str) -> list[str]:
    """Replace ``module``'s ``exit_for_redelivery`` by one that records its message and raises
    :class:`Exited`; returns the messages."""
    exits: list[str] = []

    def exit_for_redelivery(what: str) -> None:
        exits.append(what)
        raise Exited

    monkeypatch.setattr(f"{module}.exit_for_redelivery", exit_for_redelivery)
    return exits
