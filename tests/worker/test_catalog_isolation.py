"""A catalog slice the engine fails on, through the worker's tick: the bad record is dead-lettered, every
other is applied and announced as if it had never been there, and memory matches the store after it.

The worker runs without a broker (its outputs are captured where they would be produced) on real
RocksDB stores; the slice goes through the tick's path (``TickMixin._apply_catalog_backlog``). The
engine's side (the rollback) is ``tests/stream/test_catalog_rollback.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stream.app import Worker
from stream.contract import to_json_bytes
from stream.engine import Engine, Inbound, Outcome
from stream.partitioning import partition_for
from stream.store import Transaction
from tests.stream.fakes import PARTITIONS, T0, catalog_entry, ev, make_settings
from tests.stream.test_catalog_rollback import (
    NEW_A,
    NEW_B,
    VIEWS,
    PoisonScorer,
    partition_snapshot,
    pushes,
    slice_records,
    views,
)
from tests.worker.failures import Exited, caught_exits, serve_every_partition, unreadable_partitions


class NoOutbox:
    """Nothing is produced in this unit test."""

    def __init__(self, settings: object) -> None:
        pass


def shop_worker(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Worker, PoisonScorer, list[Outcome]]:
    """A worker owning every partition, the catalog loaded, each shopper's view committed to its store;
    returns it, its model and the outcomes it commits (each committed to RocksDB as it comes)."""
    monkeypatch.setattr("stream.app.Outbox", NoOutbox)
    # Each batch committed whole, by the commit below (staged commits: tests/worker/test_commit_pipeline.py).
    settings = make_settings(
        worker={"state_dir": path, "commit_overlap": False},
        trigger_thresholds={"price_drop": 0.3, "new_arrival": 0.6},
    )
    settings.kafka.bootstrap_servers = "127.0.0.1:9"  # never contacted
    worker = Worker(settings)
    scorer = PoisonScorer()
    engine = Engine(settings, scorer, clock=lambda: 0.0)
    worker.engine = engine
    serve_every_partition(worker, PARTITIONS)
    engine.owned = set(range(PARTITIONS))
    bootstrap = [catalog_entry(i) for i in ("i1", "i2", "i3", "i4", "i5")]
    txn = Transaction(worker.store)
    engine.apply_catalog(
        [Inbound("catalog", 0, k, u.item_id.encode(), to_json_bytes(u)) for k, u in enumerate(bootstrap)],
        txn,
        False,
    )
    events = views()
    assert engine.process(events, txn).pushes == []
    txn.commit({}, {})
    committed: list[Outcome] = []

    def commit(outcome: Outcome, txn: Transaction) -> None:
        committed.append(outcome)
        txn.commit({}, {})

    monkeypatch.setattr(worker, "_commit_or_die", commit)
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    worker._catalog_ready = asyncio.Event()
    return worker, scorer, committed


def rows(worker: Worker) -> dict[int, list[tuple[bytes, bytes]]]:
    """Every partition's stored rows: user records and shared rows."""
    return {
        p: sorted([*store.items(), *store.partition_rows()]) for p, store in worker.store.partitions.items()
    }


def all_pushes(committed: list[Outcome]) -> list[tuple[str, str, str]]:
    out = Outcome()
    for outcome in committed:
        out.extend(outcome)
    return pushes(out)


async def apply_slice(worker: Worker, records: list[Inbound]) -> bool:
    assert worker._catalog_ready is not None
    worker._catalog_ready.set()  # past the bootstrap: changes are announced
    worker._catalog_backlog.extend(records)
    return await worker._apply_catalog_backlog()


@pytest.fixture
def reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same worker and slice, without the bad record: its pushes and its stores' rows."""
    worker, _, committed = shop_worker(tmp_path / "reference", monkeypatch)
    assert asyncio.run(apply_slice(worker, slice_records(poisoned=False)))
    assert all_pushes(committed) == [
        ("u0", NEW_B, "new_arrival"),
        ("u1", NEW_A, "new_arrival"),
        ("u11", "i3", "price_drop"),
        ("u9", "i3", "price_drop"),
    ]
    yield all_pushes(committed), rows(worker)
    worker.store.close_all()


def test_a_slice_the_engine_fails_on_announces_the_others_and_letters_the_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Any
) -> None:
    expected_pushes, expected_rows = reference
    worker, scorer, committed = shop_worker(tmp_path / "worker", monkeypatch)
    scorer.poison = "i5"  # a bug: deciding on i5 raises
    engine = worker.engine
    assert engine is not None
    threads: list[str] = []
    load = engine.load_partition

    def load_in(partition: int, store: Any) -> Any:
        threads.append(threading.current_thread().name)
        return load(partition, store)

    engine.load_partition = load_in  # type: ignore[method-assign]

    assert asyncio.run(apply_slice(worker, slice_records(poisoned=True)))

    letters = [d for o in committed for d in o.dead_letters]
    assert [(d.reason, d.offset) for d in letters] == [("processing_error", 2)]
    assert "bug on i5" in letters[0].error
    assert all_pushes(committed) == expected_pushes
    # The partitions the failed attempt announced to were re-read (off the loop), and every partition
    # now holds in memory what a fresh read of its store gives; the stores are the reference's.
    assert threads and threading.main_thread().name not in threads
    assert sorted({partition_for(u, PARTITIONS) for u in VIEWS}) == [0, 2, 3]
    for p in range(PARTITIONS):
        pstore = worker.store.partitions[p]
        fresh = Engine(engine.settings, scorer, clock=lambda: 0.0)
        fresh.adopt(p, fresh.load_partition(p, pstore))
        assert partition_snapshot(engine, p) == partition_snapshot(fresh, p)
    assert rows(worker) == expected_rows
    assert not worker._catalog_backlog and worker._reloading == set()
    worker.store.close_all()


def test_a_rebalance_during_the_re_read_leaves_the_rest_of_the_slice_for_a_later_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Any
) -> None:
    """No catalog record is applied between a revocation and the next assignment: the records not
    applied yet go back to the backlog, in order, and the next tick goes on with them."""
    expected_pushes, expected_rows = reference
    worker, scorer, committed = shop_worker(tmp_path / "worker", monkeypatch)
    scorer.poison = "i5"
    engine = worker.engine
    assert engine is not None
    load = engine.load_partition

    def slow(partition: int, store: Any) -> Any:
        time.sleep(0.2)
        return load(partition, store)

    engine.load_partition = slow  # type: ignore[method-assign]
    commits_while_rebalancing: list[bool] = []
    commit = worker._commit_or_die

    def noting(outcome: Outcome, txn: Transaction) -> None:
        commits_while_rebalancing.append(worker._rebalancing)
        commit(outcome, txn)

    monkeypatch.setattr(worker, "_commit_or_die", noting)

    async def run() -> None:
        async def rebalance() -> None:
            await asyncio.sleep(0.1)  # the first re-read is under way
            await worker._on_revoked(worker.app, set())

        rebalancing = asyncio.create_task(rebalance())
        assert not await apply_slice(worker, slice_records(poisoned=True))
        await rebalancing
        assert [r.offset for r in worker._catalog_backlog] == [0, 1, 2, 3, 4]  # all of it, in order
        worker.on_assignment({(worker.topics.events, p) for p in range(PARTITIONS)})  # all kept
        assert await worker._apply_catalog_backlog()

    asyncio.run(run())
    assert not any(commits_while_rebalancing)
    letters = [d for o in committed for d in o.dead_letters]
    assert [(d.reason, d.offset) for d in letters] == [("processing_error", 2)]
    assert all_pushes(committed) == expected_pushes
    assert rows(worker) == expected_rows
    worker.store.close_all()


def test_an_input_batch_of_a_partition_being_re_read_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-read replaces the engine's state of the partition: a batch processed meanwhile would be
    lost from memory (read from the store before it was committed), so it waits, and goes on after."""
    worker, scorer, committed = shop_worker(tmp_path / "worker", monkeypatch)
    scorer.poison = "i5"
    engine = worker.engine
    assert engine is not None
    load = engine.load_partition
    reading: list[int] = []

    def slow(partition: int, store: Any) -> Any:
        reading.append(partition)
        time.sleep(0.3)
        return load(partition, store)

    engine.load_partition = slow  # type: ignore[method-assign]
    handled_during: list[set[int]] = []
    original = engine.process

    def process(records: Any, txn: Any) -> Outcome:
        handled_during.append(set(worker._reloading))
        return original(records, txn)

    engine.process = process  # type: ignore[method-assign]
    batch = [ev("late-u1", "u1", "view", "i2", T0 + 700)]  # partition 0, re-read first

    async def run() -> None:
        async def input_batch() -> None:
            while not reading:
                await asyncio.sleep(0.01)
            await worker._handle(batch)

        handling = asyncio.create_task(asyncio.wait_for(input_batch(), 5))
        assert await apply_slice(worker, slice_records(poisoned=True))
        await handling

    asyncio.run(run())
    assert len(handled_during) == 1 and batch[0].partition not in handled_during[0]
    assert engine.part(batch[0].partition).offsets["events"] == batch[0].offset
    p = batch[0].partition
    fresh = Engine(engine.settings, scorer, clock=lambda: 0.0)
    fresh.adopt(p, fresh.load_partition(p, worker.store.partitions[p]))
    assert partition_snapshot(engine, p) == partition_snapshot(fresh, p)
    worker.store.close_all()


def test_a_re_read_that_fails_ends_the_process_rather_than_the_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without its re-read a partition's memory goes on holding part of the failed slice, and an error
    escaping the tick would stop faust's timer (the catalog, the timers): exit 70 instead."""
    worker, scorer, _ = shop_worker(tmp_path / "worker", monkeypatch)
    scorer.poison = "i5"
    engine = worker.engine
    assert engine is not None

    unreadable_partitions(engine)
    exits = caught_exits(monkeypatch, "stream.worker_tick")
    with pytest.raises(Exited):
        asyncio.run(apply_slice(worker, slice_records(poisoned=True)))
    assert exits == ["partitions [0, 2, 3] could not be re-read after a failed catalog slice"]
    worker.store.close_all()
