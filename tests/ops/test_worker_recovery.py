"""The worker's recovery, rebalance and tick paths, driven directly (the broker replays are faked).

Observed on main: a recovery that met an error died silently in its background task (the partition
stayed "recovering" forever, batches waited forever); a partition revoked while it recovered raised
KeyError; a catalog record the engine failed on stopped the tick; an idle member never became ready.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from stream import metrics
from stream.app import Worker
from stream.contract import to_json_bytes
from stream.engine import Engine, Inbound, Outcome
from stream.partition_state import PartitionState
from stream.partitioning import partition_for
from stream.state import UserState
from stream.store import Transaction
from tests.stream.fakes import T0, FakeScorer, catalog_entry, make_engine, make_settings


class NoOutbox:
    """Nothing reaches a broker in these tests."""

    def __init__(self, settings: object) -> None:
        self.produced: list[tuple[str, bytes | None]] = []

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None, partition: Any = None
    ) -> None:
        self.produced.append((topic, value))

    def flush(self, timeout: float = 30.0) -> dict[tuple[str, int], int]:
        return {}

    def ping(self, timeout: float = 5.0) -> bool:
        return True

    def close(self) -> None:
        pass


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    monkeypatch.setattr("stream.app.Outbox", NoOutbox)
    settings = make_settings(worker={"state_dir": tmp_path, "recovery_retry_seconds": 0.05})
    settings.kafka.bootstrap_servers = "127.0.0.1:9"  # never contacted
    w = Worker(settings)
    w.engine = make_engine(settings, FakeScorer())
    w.engine.owned = set()  # make_engine owns every partition; a worker owns what it is assigned
    yield w
    w._stop.set()
    w.store.close_all()


async def start(w: Worker) -> None:
    """What _on_startup does that these tests need: the recovery loop, a loaded catalog."""
    w._catalog_ready = asyncio.Event()
    w._catalog_ready.set()
    w._spawn(w._recovery_loop())


def assignment(w: Worker, parts: set[int]) -> set[tuple[str, int]]:
    return {(t, p) for p in parts for t in (w.topics.events, w.topics.consent)}


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def test_a_failed_recovery_is_retried_and_the_partition_opens(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    threads: list[str] = []

    def flaky_replay(settings: Any, topic: str, starts: dict[int, int], **_: Any) -> Iterator[Any]:
        calls.append(topic)
        threads.append(threading.current_thread().name)
        if len(calls) <= 2:
            raise TimeoutError(f"no end of {topic} within 60s")  # the broker was slow
        return iter(())

    monkeypatch.setattr("stream.recovery.replay_partitions", flaky_replay)
    original_load = Engine.load_partition

    def load(self: Engine, partition: int, store: Any) -> PartitionState:
        threads.append(threading.current_thread().name)
        return original_load(self, partition, store)

    monkeypatch.setattr(Engine, "load_partition", load)
    errors_before = counter("kairos_recovery_errors_total")

    async def scenario() -> None:
        await start(worker)
        worker.on_assignment(assignment(worker, {0, 1}))
        assert not worker.health.ready()[0] and worker._recovering
        waiter = asyncio.ensure_future(worker._ready_partitions[0].wait())
        await asyncio.wait_for(waiter, 5)  # a batch waiting on partition 0 is released
        await eventually(lambda: not worker._recovering)

    asyncio.run(scenario())
    assert counter("kairos_recovery_errors_total") - errors_before == 2
    assert worker._serving(0) and worker._serving(1)
    assert worker.engine is not None and worker.engine.owned == {0, 1}
    assert not worker.health.snapshot()["recovering"]
    assert threading.main_thread().name not in threads  # replays and user loads ran off the loop


def test_a_partition_revoked_while_it_recovers_is_dropped_cleanly(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    seen: list[dict[int, int]] = []

    def slow_replay(settings: Any, topic: str, starts: dict[int, int], **_: Any) -> Iterator[Any]:
        seen.append(dict(starts))
        if len(seen) == 1:
            release.wait(5)  # the first changelog replay is slow: partition 0 is revoked meanwhile
        return iter(())

    monkeypatch.setattr("stream.recovery.replay_partitions", slow_replay)
    errors_before = counter("kairos_recovery_errors_total")

    async def scenario() -> None:
        await start(worker)
        worker.on_assignment(assignment(worker, {0, 1}))
        await eventually(lambda: bool(seen))
        waiter = asyncio.ensure_future(worker._ready_partitions[0].wait())
        worker.on_assignment(assignment(worker, {1}))  # partition 0 moved to another worker
        await asyncio.wait_for(waiter, 1)  # its waiting batch is released at once...
        assert not worker._serving(0)  # ...and _consume skips its records
        assert 0 in worker.store.partitions  # the replay thread still uses it: not closed under it
        release.set()
        await eventually(lambda: not worker._recovering)

    asyncio.run(scenario())
    assert counter("kairos_recovery_errors_total") == errors_before  # no KeyError, nothing retried
    assert worker._serving(1) and not worker._serving(0)
    assert 0 not in worker.store.partitions  # closed once the round ended
    assert worker.engine is not None and worker.engine.owned == {1}
    assert set(seen[1]) == {1}  # the pushes read skipped the revoked partition


def test_a_partition_kept_across_a_rebalance_is_not_recovered_again(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    replays: list[dict[int, int]] = []

    def replay(settings: Any, topic: str, starts: dict[int, int], **_: Any) -> Iterator[Any]:
        replays.append(dict(starts))
        return iter(())

    monkeypatch.setattr("stream.recovery.replay_partitions", replay)

    async def scenario() -> None:
        await start(worker)
        worker.on_assignment(assignment(worker, {0, 1}))
        await eventually(lambda: not worker._recovering)
        # faust's eager rebalance: "revoked: everything", then the new assignment.
        await worker._on_revoked(worker.app, set())
        assert worker._rebalancing
        worker.on_assignment(assignment(worker, {1, 2}))
        await eventually(lambda: not worker._recovering)

    asyncio.run(scenario())
    assert [set(r) for r in replays] == [{0, 1}, {0, 1}, {2}, {2}]  # changelog + pushes, twice
    assert worker.engine is not None and worker.engine.owned == {1, 2}
    assert not worker._rebalancing


def test_an_idle_member_is_ready(worker: Worker) -> None:
    worker.health.set_model("m")
    worker.health.set_broker_ok(True)

    async def scenario() -> None:
        await start(worker)
        assert "no partition assignment yet" in worker.health.ready()[1]
        worker.on_assignment(set())  # more members than partitions: this one owns nothing

    asyncio.run(scenario())
    assert worker.health.ready() == (True, [])


def test_the_tick_leaves_timers_and_announcements_until_the_catalog_is_read(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's tick announces the catalog changes a partition's clock passed and fires timers:
    during the start-up read it would announce the changes read so far and move the partitions'
    announced-until past those still to come (never announced then), and decide on part of the catalog.
    """
    assert worker.engine is not None
    ticks: list[int] = []

    def tick(txn: Any) -> Outcome:
        ticks.append(1)
        return Outcome()

    monkeypatch.setattr(worker.engine, "tick", tick)
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    worker._catalog_inbox.put(Inbound("catalog", 0, 0, b"i-1", to_json_bytes(catalog_entry("i-1"))))

    async def scenario() -> None:
        worker._catalog_ready = asyncio.Event()
        await worker._tick()  # the reader has not reached the catalog's end: applied, no engine tick
        assert ticks == [] and "i-1" in worker.engine.catalog  # type: ignore[union-attr]
        worker._catalog_read.set()
        await worker._tick()
        assert worker._catalog_ready.is_set() and ticks == [1]

    asyncio.run(scenario())


def test_the_tick_survives_a_failing_catalog_record_and_failing_timers(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert worker.engine is not None
    engine = worker.engine
    good = Inbound("catalog", 0, 0, b"new-1", to_json_bytes(catalog_entry("new-1")))
    poison = Inbound("catalog", 0, 1, b"new-2", to_json_bytes(catalog_entry("new-2")))
    original = engine.apply_catalog

    def apply_catalog(records: Any, txn: Any, announce: bool = True) -> Outcome:
        if any(r.offset == 1 for r in records):
            raise RecursionError("maximum recursion depth exceeded")  # a bug, not bad input
        return original(records, txn, announce)

    def tick(txn: Any) -> Outcome:
        raise RuntimeError("timer bug")

    monkeypatch.setattr(engine, "apply_catalog", apply_catalog)
    monkeypatch.setattr(engine, "tick", tick)
    committed: list[Outcome] = []
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: committed.append(outcome))
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    worker._catalog_inbox.put(good)
    worker._catalog_inbox.put(poison)
    before = {s: counter("kairos_tick_errors_total", stage=s) for s in ("catalog", "timers")}

    async def scenario() -> None:
        worker._catalog_ready = asyncio.Event()
        worker._catalog_read.set()  # the reader read all of it: the engine's tick runs once it is applied
        await worker._tick()
        await worker._tick()  # the next tick runs too

    asyncio.run(scenario())
    assert "new-1" in engine.catalog and "new-2" not in engine.catalog
    letters = [d for o in committed for d in o.dead_letters]
    assert [(d.reason, d.offset) for d in letters] == [("processing_error", 1)]
    assert "RecursionError" in letters[0].error
    assert counter("kairos_tick_errors_total", stage="catalog") - before["catalog"] == 1
    assert counter("kairos_tick_errors_total", stage="timers") - before["timers"] == 2


def test_the_tick_applies_a_catalog_burst_in_order_a_slice_at_a_time_letting_the_loop_run(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's burst of catalog records is applied in slices, in order, each committed; the event
    loop runs between them. A rebalance between slices stops the tick; the next goes on with the rest.
    The first full read (a bootstrap, announcing nothing) is ready only once all of it is applied."""
    assert worker.engine is not None
    engine = worker.engine
    monkeypatch.setattr("stream.worker_tick.CATALOG_SLICE_FIRST", 16)
    monkeypatch.setattr("stream.worker_tick.CATALOG_SLICE_MAX", 16)
    monkeypatch.setattr("stream.worker_tick.CATALOG_SLICE_SECONDS", 1e6)  # sizes never shrink here
    slices: list[tuple[list[int], bool]] = []
    txns: list[Any] = []
    original = engine.apply_catalog

    def apply_catalog(records: Any, txn: Any, announce: bool = True) -> Outcome:
        slices.append(([r.offset for r in records], announce))
        txns.append(txn)
        return original(records, txn, announce)

    monkeypatch.setattr(engine, "apply_catalog", apply_catalog)
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    for k in range(100):
        worker._catalog_inbox.put(
            Inbound("catalog", 0, k, f"b{k}".encode(), to_json_bytes(catalog_entry(f"b{k}")))
        )
    worker._catalog_read.set()  # the reader reached the end: all of it is in the inbox
    seen_between: list[int] = []

    async def rebalance_after_two_slices() -> None:
        while len(slices) < 2:
            seen_between.append(len(slices))
            await asyncio.sleep(0)
        worker._rebalancing = True

    async def scenario() -> None:
        worker._catalog_ready = asyncio.Event()
        other = asyncio.ensure_future(rebalance_after_two_slices())
        await worker._tick()
        await other
        assert len(slices) == 2 and not worker._catalog_ready.is_set()  # stopped: the rest waits
        assert len(worker._catalog_backlog) == 100 - 32
        worker._rebalancing = False
        await worker._tick()
        assert worker._catalog_ready.is_set()

    asyncio.run(scenario())
    assert 1 in seen_between  # the loop ran another task between the first two slices
    assert [offsets for offsets, _ in slices] == [list(range(k, min(k + 16, 100))) for k in range(0, 100, 16)]
    assert not any(announce for _, announce in slices)  # a bootstrap, all of it
    assert len({id(txn) for txn in txns}) == len(slices)  # each slice its own transaction (committed)
    assert all(f"b{k}" in engine.catalog for k in range(100)) and not worker._catalog_backlog


def test_a_shutdown_between_catalog_slices_stops_the_tick(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown (``_on_shutdown``) closes the stores while faust's timer still runs: a tick between
    slices of a catalog burst must not go on with the next (each would fail on the closed stores, be
    logged and counted as a tick error and retried record by record, delaying the exit). What is left
    is read again at the next start, like any record not applied before an exit."""
    assert worker.engine is not None
    engine = worker.engine
    monkeypatch.setattr("stream.worker_tick.CATALOG_SLICE_FIRST", 8)
    monkeypatch.setattr("stream.worker_tick.CATALOG_SLICE_MAX", 8)
    monkeypatch.setattr("stream.worker_tick.CATALOG_SLICE_SECONDS", 1e6)
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    committed: list[Outcome] = []
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: committed.append(outcome))
    slices: list[list[int]] = []
    original = engine.apply_catalog

    def apply_catalog(records: Any, txn: Any, announce: bool = True) -> Outcome:
        slices.append([r.offset for r in records])
        return original(records, txn, announce)

    monkeypatch.setattr(engine, "apply_catalog", apply_catalog)
    # Partition 0 is owned, its clock past the burst: each price drop is announced to its interested user.
    worker.store.open(0)
    engine.owned = {0}
    worker._owned = {0}
    part = engine.part(0)
    part.advance(T0 + 10_000)
    user = next(f"u{k}" for k in range(100) if partition_for(f"u{k}", engine.settings.topics.partitions) == 0)
    part.interest.update("i1", user, 0.9, T0)
    for k in range(64):
        entry = catalog_entry("i1", price=100.0 - k, updated_at=T0 + k)
        worker._catalog_inbox.put(Inbound("catalog", 0, k, b"i1", to_json_bytes(entry)))

    async def shut_down_after_two_slices() -> None:
        while len(slices) < 2:
            await asyncio.sleep(0)
        await worker._on_shutdown(worker.app)

    async def scenario() -> None:
        assert worker._catalog_ready is not None
        worker._catalog_ready.set()  # past the bootstrap: changes are announced
        other = asyncio.ensure_future(shut_down_after_two_slices())
        await worker._tick()
        await other

    before = counter("kairos_tick_errors_total", stage="catalog")
    worker._catalog_ready = asyncio.Event()
    asyncio.run(scenario())
    assert slices == [list(range(0, 8)), list(range(8, 16))] and len(worker._catalog_backlog) == 64 - 16
    assert counter("kairos_tick_errors_total", stage="catalog") == before
    assert not [d for o in committed for d in o.dead_letters]


def test_users_a_catalog_slice_left_out_at_the_hourly_bound_are_counted_with_nothing_to_write(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new item whose users have all heard of new_arrival_asks_per_user_hour new items this hour asks
    no one and writes nothing (the common case deep in a burst): the users it left out still count in
    kairos_new_arrival_asks_capped_total, though the slice, and the tick's timers, commit nothing."""
    assert worker.engine is not None
    engine = worker.engine
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    committed: list[Outcome] = []
    monkeypatch.setattr(worker, "_commit_or_die", lambda outcome, txn: committed.append(outcome))
    monkeypatch.setattr(
        engine, "apply_catalog", lambda records, txn, announce=True: Outcome(arrival_asks_capped=7)
    )
    monkeypatch.setattr(engine, "tick", lambda txn: Outcome(arrival_asks_capped=2))
    worker._catalog_inbox.put(Inbound("catalog", 0, 0, b"n1", to_json_bytes(catalog_entry("n1"))))
    before = counter("kairos_new_arrival_asks_capped_total")

    async def scenario() -> None:
        worker._catalog_ready = asyncio.Event()
        worker._catalog_ready.set()
        await worker._tick()

    asyncio.run(scenario())
    assert committed == []
    assert counter("kairos_new_arrival_asks_capped_total") - before == 9


def test_recovery_adopts_the_stored_users_timers(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream.recovery.replay_partitions", lambda *a, **k: iter(()))
    pstore = worker.store.open(2)
    state = UserState(last_event_ts=1.7e9, timers=[])
    txn = Transaction(worker.store)
    txn.put(2, b"alice", state.to_bytes())
    txn.commit({2: 0}, {})

    async def scenario() -> None:
        await start(worker)
        worker.on_assignment(assignment(worker, {2}))
        await eventually(lambda: not worker._recovering)

    asyncio.run(scenario())
    assert pstore.ready and worker._serving(2)
    assert metrics.OWNED_PARTITIONS._value.get() == 1  # type: ignore[attr-defined]
    assert metrics.RECOVERING_PARTITIONS._value.get() == 0  # type: ignore[attr-defined]


def _assign(replicas: int, current: list[set[int]], partitions: int = 4) -> list[set[int]]:
    from faust.assignor.client_assignment import CopartitionedAssignment
    from faust.assignor.copartitioned_assignor import CopartitionedAssignor

    cluster = {
        f"member-{i}": CopartitionedAssignment(actives=set(parts), topics={"events", "consent"})
        for i, parts in enumerate(current)
    }
    result = CopartitionedAssignor(
        topics={"events", "consent"}, cluster_asgn=cluster, num_partitions=partitions, replicas=replicas
    ).get_assignment()
    return [result[f"member-{i}"].actives for i in range(len(current))]


def test_a_restarted_or_added_worker_gets_partitions(worker: Worker) -> None:
    # Observed: three workers, one killed and restarted: it rejoined with nothing and faust's
    # sticky assignment (with its default standby replica) kept 2+2+0.
    assert sorted(map(len, _assign(1, [{0, 1}, {2, 3}, set()]))) == [0, 2, 2]  # the old behaviour
    replicas = worker.app.assignor.replicas
    assert replicas == 0
    # faust's aiokafka driver uses app.assignor only with standbys or tables; otherwise aiokafka's
    # round robin, which would put events[p] and consent[p] on different members.
    assert worker.app.conf.table_standby_replicas > 0
    restarted = _assign(replicas, [{0, 1}, {2, 3}, set()])
    assert sorted(map(len, restarted)) == [1, 1, 2] and set().union(*restarted) == {0, 1, 2, 3}
    assert restarted[0] & {0, 1} and restarted[1] & {2, 3}  # each old member keeps some of its own
    added = _assign(replicas, [*restarted, set()])  # a fourth joins
    assert sorted(map(len, added)) == [1, 1, 1, 1]
    left = _assign(replicas, [added[0], added[1], added[2] | added[3]][:2] + [set()])
    assert set().union(*left) == {0, 1, 2, 3}


def test_consume_stall_is_judged_only_when_batches_could_run(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stream.recovery.replay_partitions", lambda *a, **k: iter(()))

    async def scenario() -> None:
        await start(worker)
        worker.on_assignment(assignment(worker, {0}))
        await eventually(lambda: not worker._recovering)

    worker_engine = worker.engine
    asyncio.run(scenario())
    worker.lag.on_high_watermark(worker.topics.events, 0, 10)  # 10 records waiting on partition 0
    assert worker._work_pending()
    worker.engine = None  # no model yet: batches wait on purpose; alive, not ready
    assert not worker._work_pending()
    worker.engine = worker_engine
    assert worker._catalog_ready is not None
    worker._catalog_ready.clear()  # the catalog is still loading
    assert not worker._work_pending()


class _Message:
    """What the catalog reader's callback reads of a consumed message."""

    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def topic(self) -> str:
        return "catalog"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return f"r{self._offset}".encode()

    def value(self) -> bytes:
        return self._value


def test_a_catalog_topic_larger_than_the_inbox_is_read_at_the_rate_it_is_applied(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader waits while the inbox is full (a topic of millions of records is never held in memory
    whole); the start-up read still goes on within one tick, and is ready once all of it is applied."""
    monkeypatch.setattr("stream.worker_tick.CATALOG_INBOX_RECORDS", 10)
    worker._catalog_inbox = queue.Queue(maxsize=10)
    monkeypatch.setattr(worker, "_publish_gauges", lambda: None)
    n = 100
    values = [to_json_bytes(catalog_entry(f"r{k}")) for k in range(n)]
    most_waiting = 0

    def consume_forever(settings: Any, topic: str, on_message: Any, stop: Any, on_caught_up: Any) -> None:
        nonlocal most_waiting
        for k in range(n):
            on_message(_Message(k, values[k]))
            most_waiting = max(most_waiting, worker._catalog_inbox.qsize())
        on_caught_up()
        while not stop():
            time.sleep(0.01)

    monkeypatch.setattr("stream.worker_tick.consume_forever", consume_forever)
    reader = threading.Thread(target=worker._read_catalog, daemon=True)
    reader.start()

    async def scenario() -> None:
        worker._catalog_ready = asyncio.Event()
        for _ in range(200):
            await worker._tick()
            if worker._catalog_ready.is_set():
                return
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    worker._stop.set()
    reader.join(5)
    assert worker._catalog_ready is not None and worker._catalog_ready.is_set()
    assert worker.engine is not None and all(f"r{k}" in worker.engine.catalog for k in range(n))
    assert most_waiting <= 10
