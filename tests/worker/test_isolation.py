"""A record the engine fails on is dead-lettered on its own; the rest of its batch is processed."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stream.app import Worker
from stream.dead_letters import DeadLetter
from stream.engine import Outcome
from tests.stream.fakes import FakeScorer, ev, make_engine, make_settings, record
from tests.worker.failures import Exited, caught_exits, unreadable_partitions


class BrokenOnItem(FakeScorer):
    """A scorer with a bug: stepping item i3 raises."""

    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray:
        if (items == self.item_indices(["i3"])[0]).any():
            raise RuntimeError("bug on i3")
        return super().step(states, items, event_types)


class NoOutbox:
    """Nothing is produced in this unit test; a real producer would only log a refused connection."""

    def __init__(self, settings: object) -> None:
        pass


def broken_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Worker:
    """A worker (no broker) whose engine breaks on item i3, with its partitions' stores open."""
    monkeypatch.setattr("stream.app.Outbox", NoOutbox)
    settings = make_settings(worker={"state_dir": tmp_path})
    settings.kafka.bootstrap_servers = "127.0.0.1:9"  # never contacted
    worker = Worker(settings)
    worker.engine = make_engine(settings, BrokenOnItem())
    for p in range(settings.topics.partitions):
        worker.store.open(p)
        worker._owned.add(p)
        worker._epochs[p] = 1
        worker._ready_partitions[p] = asyncio.Event()
        worker._ready_partitions[p].set()
    return worker


def test_a_record_that_breaks_the_engine_is_dead_lettered_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = broken_worker(tmp_path, monkeypatch)
    records = [
        ev("e1", "alice", "view", "i1", 1.7e9),
        ev("e2", "bob", "view", "i3", 1.7e9 + 1),
        ev("e3", "carol", "view", "i2", 1.7e9 + 2),
    ]

    committed: list[tuple[list[str], set[bytes]]] = []

    def commit(outcome, txn) -> None:  # type: ignore[no-untyped-def]
        # What _commit would make durable, one record at a time; then apply it to RocksDB.
        committed.append(
            ([d.reason for d in outcome.dead_letters], {k for w in txn.writes.values() for k in w})
        )
        txn.commit({}, {})

    monkeypatch.setattr(worker, "_commit_or_die", commit)
    outcome = asyncio.run(worker._process_isolated(records))

    assert [d.reason for d in outcome.dead_letters] == ["processing_error"]
    letter: DeadLetter = outcome.dead_letters[0]
    assert letter.original_bytes() == records[1].value and "bug on i3" in letter.error
    assert outcome.events[("view", "processed")] == 2
    assert len(committed) == 3  # each record on its own
    # The failed record staged nothing but its partition's applied offset.
    assert committed[1] == (["processing_error"], {b"\x00p"})
    engine = worker.engine
    assert engine is not None
    assert engine.applied(records[1])
    assert b"alice" in committed[0][1] and b"carol" in committed[2][1]
    # The failed attempt's in-memory changes are gone: the engine holds what the store holds.
    bob_partition = records[1].partition
    assert "bob" not in engine.part(bob_partition).last_seen
    assert engine.part(bob_partition).trending.score("i3", 1.7e9 + 1) == 0.0
    worker.store.close_all()


def test_a_flood_of_breaking_records_is_dead_lettered_whole_but_logged_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = broken_worker(tmp_path, monkeypatch)
    records = [ev(f"e{i}", f"u{i}", "view", "i3", 1.7e9 + i) for i in range(30)]
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: txn.commit({}, {}))

    with caplog.at_level(logging.ERROR, logger="stream.worker_input"):
        outcome = asyncio.run(worker._process_isolated(records))

    assert [d.reason for d in outcome.dead_letters] == ["processing_error"] * 30
    failures = [r for r in caplog.records if "failed; dead-lettered" in r.getMessage()]
    assert len(failures) == worker._failure_logs.per_window == 10
    assert all(r.exc_info for r in failures)  # each line that goes out keeps its traceback
    worker.store.close_all()


def slow_loads(worker: Worker, seconds: float, during: list[str]) -> None:
    """Make the worker's partition reloads take ``seconds`` in their thread, noting where they ran."""
    engine = worker.engine
    assert engine is not None
    load = engine.load_partition

    def slow(partition, store):  # type: ignore[no-untyped-def]
        during.append(threading.current_thread().name)
        time.sleep(seconds)
        return load(partition, store)

    engine.load_partition = slow  # type: ignore[method-assign]


def test_the_reload_after_a_failure_leaves_the_event_loop_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large partition takes seconds to re-read: the loop (liveness, heartbeats) must go on meanwhile."""
    worker = broken_worker(tmp_path, monkeypatch)
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: txn.commit({}, {}))
    threads: list[str] = []
    slow_loads(worker, 0.3, threads)
    records = [ev("e1", "bob", "view", "i3", 1.7e9), ev("e2", "carol", "view", "i2", 1.7e9 + 1)]

    async def run() -> tuple[Outcome, int, set[int]]:
        beats = 0
        seen_reloading: set[int] = set()
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal beats
            while not done.is_set():
                beats += 1
                seen_reloading.update(worker._reloading)
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        outcome = await worker._process_isolated(records)
        done.set()
        await beat
        return outcome, beats, seen_reloading

    outcome, beats, seen_reloading = asyncio.run(run())
    assert [d.reason for d in outcome.dead_letters] == ["processing_error"]
    assert outcome.events[("view", "processed")] == 1
    assert threads and threading.main_thread().name not in threads
    # Each reload slept 0.3 s in its thread; the loop ran its 10 ms heartbeat all along.
    assert beats >= 20 * len(threads)
    assert seen_reloading == {r.partition for r in records}  # the tick saw them held
    assert worker._reloading == set()
    worker.store.close_all()


def test_a_partition_revoked_during_its_reload_is_not_adopted_and_its_records_are_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = broken_worker(tmp_path, monkeypatch)
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: txn.commit({}, {}))
    slow_loads(worker, 0.3, [])
    records = [ev("e1", "bob", "view", "i3", 1.7e9), ev("e2", "bob", "view", "i2", 1.7e9 + 1)]
    partition = records[0].partition

    async def run() -> Outcome:
        async def revoke() -> None:
            await asyncio.sleep(0.1)  # the first reload is reading the store now
            worker.on_assignment({(worker.topics.events, p) for p in worker._owned - {partition}})

        revoking = asyncio.create_task(revoke())
        outcome = await worker._process_isolated(records)
        await revoking
        return outcome

    outcome = asyncio.run(run())
    engine = worker.engine
    assert engine is not None
    # Not adopted again, nothing processed or dead-lettered for it: its next owner reads both records.
    assert partition not in engine.owned and partition not in engine.parts
    assert outcome.dead_letters == [] and sum(outcome.events.values()) == 0
    # Its store was kept open for the read, and closed after it.
    assert partition not in worker.store.partitions
    worker.store.close_all()


def test_no_record_is_committed_between_a_revocation_and_the_next_assignment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebalance that starts while a partition is re-read: another member may be recovering it, so the
    records wait for the assignment (as the bulk reader's batches do), then go on where it is kept."""
    worker = broken_worker(tmp_path, monkeypatch)
    commits: list[bool] = []  # whether a rebalance was under way at each commit

    def commit(outcome, txn) -> None:  # type: ignore[no-untyped-def]
        commits.append(worker._rebalancing)
        txn.commit({}, {})

    monkeypatch.setattr(worker, "_commit_or_die", commit)
    slow_loads(worker, 0.3, [])
    records = [ev("e1", "bob", "view", "i3", 1.7e9), ev("e2", "carol", "view", "i2", 1.7e9 + 1)]
    owned = set(worker._owned)

    async def run() -> Outcome:
        async def rebalance() -> None:
            await asyncio.sleep(0.1)  # the first reload is reading the store now
            await worker._on_revoked(worker.app, set())
            await asyncio.sleep(1.5)  # the group protocol's time: every reload is over by now
            worker.on_assignment({(worker.topics.events, p) for p in owned})  # all of them kept

        rebalancing = asyncio.create_task(rebalance())
        outcome = await worker._process_isolated(records)
        await rebalancing
        return outcome

    outcome = asyncio.run(run())
    assert commits and not any(commits)  # nothing written while the partitions might be moving
    # Kept across the rebalance: both records are accounted for (the reader's position moved on).
    assert [d.reason for d in outcome.dead_letters] == ["processing_error"]
    assert outcome.events[("view", "processed")] == 1
    worker.store.close_all()


class ClosableOutbox(NoOutbox):
    def close(self) -> None:
        pass


class IdleReader:
    """The bulk reader, as shutdown sees it."""

    def close(self) -> None:
        pass


def test_shutdown_leaves_the_store_of_a_partition_being_reloaded_open_for_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown cancels the input task (bulk input) and then waits for the reader: the reload's thread
    still reads the store meanwhile, and must find it open."""
    worker = broken_worker(tmp_path, monkeypatch)
    monkeypatch.setattr(worker, "outbox", ClosableOutbox(None))
    worker.reader = IdleReader()  # type: ignore[assignment]
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: txn.commit({}, {}))
    engine = worker.engine
    assert engine is not None
    load = engine.load_partition
    open_when_read: list[bool] = []

    def slow(partition, store):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        open_when_read.append(worker.store.partitions.get(partition) is store)
        return load(partition, store)

    engine.load_partition = slow  # type: ignore[method-assign]
    record = ev("e1", "bob", "view", "i3", 1.7e9)

    async def run() -> None:
        worker._spawn(worker._process_isolated([record]))  # as _bulk_loop runs it
        await asyncio.sleep(0.1)  # the reload is reading the store now
        await worker._on_shutdown(worker.app)

    asyncio.run(run())  # ends once the reload's thread is done
    assert open_when_read == [True]
    worker.store.close_all()


def test_a_recovery_round_ending_leaves_open_the_store_a_reload_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition moves away during its re-read, back (a recovery round starts on the same open store)
    and away again: the round's end must not close the store under the reload's thread."""
    worker = broken_worker(tmp_path, monkeypatch)
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: txn.commit({}, {}))
    record = ev("e1", "bob", "view", "i3", 1.7e9)
    partition = record.partition
    others = worker._owned - {partition}
    engine = worker.engine
    assert engine is not None
    load = engine.load_partition
    open_when_read: list[bool] = []

    def slow(p, store):  # type: ignore[no-untyped-def]
        time.sleep(0.6)
        open_when_read.append(worker.store.partitions.get(p) is store)
        return load(p, store)

    engine.load_partition = slow  # type: ignore[method-assign]

    async def recover(batch: dict[int, int]) -> None:  # a round that reads the store for a while
        for p in batch:
            worker.store.open(p)
        await asyncio.sleep(0.1)

    monkeypatch.setattr(worker, "_recover", recover)

    def assign(partitions: set[int]) -> None:
        worker.on_assignment({(worker.topics.events, p) for p in partitions})

    async def run() -> Outcome:
        async def rebalances() -> None:
            await asyncio.sleep(0.1)
            assign(others)  # away during the reload
            await asyncio.sleep(0.05)
            assign(others | {partition})  # back: a recovery round opens the store
            await asyncio.sleep(0.05)
            assign(others)  # away again, the round still running

        worker._spawn(worker._recovery_loop())
        moving = asyncio.create_task(rebalances())
        outcome = await worker._process_isolated([record])
        await moving
        worker._stop.set()
        for task in list(worker._background):
            task.cancel()
        return outcome

    outcome = asyncio.run(run())
    assert open_when_read == [True]
    assert outcome.dead_letters == []  # left to the partition's new owner
    assert partition not in worker.store.partitions  # closed once both were done with it
    worker.store.close_all()


def test_a_batch_that_waited_for_the_catalog_leaves_the_records_of_a_partition_that_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start-up a read batch waits for the catalog; a rebalance meanwhile may move its partition
    away. Its records belong to the new owner: nothing of them is written here (not even the dead
    letter of a malformed one, with a partition row made from no state)."""
    worker = broken_worker(tmp_path, monkeypatch)
    worker._catalog_ready = asyncio.Event()
    committed: list[Outcome] = []
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: committed.append(outcome))
    malformed = record(b"not json", "bob")
    partition = malformed.partition

    async def run() -> None:
        catalog_ready = worker._catalog_ready
        assert catalog_ready is not None
        handling = asyncio.create_task(worker._handle([malformed]))
        await asyncio.sleep(0.05)  # waiting for the catalog
        await worker._on_revoked(worker.app, set())
        worker.on_assignment({(worker.topics.events, p) for p in worker._owned - {partition}})
        catalog_ready.set()
        await handling

    asyncio.run(run())
    assert committed == []
    engine = worker.engine
    assert engine is not None and partition not in engine.parts
    worker.store.close_all()


def test_a_failure_of_the_input_path_itself_ends_the_process_for_a_clean_redelivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-read that fails (a damaged partition row, a store closed under it) must not end the input
    loop silently with its batch neither applied nor dead-lettered: the process exits (70) instead,
    and a restarted worker reads the batch again from its recovered state's offsets."""
    worker = broken_worker(tmp_path, monkeypatch)
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: txn.commit({}, {}))
    worker._catalog_ready = None
    engine = worker.engine
    assert engine is not None

    unreadable_partitions(engine)
    exits = caught_exits(monkeypatch, "stream.worker_input")
    records = [ev("e1", "bob", "view", "i3", 1.7e9)]  # breaks the engine: its partition is re-read
    with pytest.raises(Exited):
        asyncio.run(worker._handle_or_exit(records))
    assert exits == ["a batch of 1 input records could not be processed"]
    worker.store.close_all()
