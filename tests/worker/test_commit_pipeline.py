"""Staged commits (``stream.commit_pipeline``): each batch durable two batches later, in the order
recovery relies on, with the next batches building on the batches in flight.

Real RocksDB stores and the real ``BatchCommitter``; the broker is a recording outbox that gives each
message the next offset of its partition and acknowledges everything queued at a flush (the broker
side of the stages runs in ``tests/integration/test_worker_matches_engine.py``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from stream.app import Worker
from stream.batch_commit import BatchCommitter
from stream.commit_pipeline import MAX_IN_FLIGHT, CommitPipeline
from stream.contract import Push
from stream.engine import Engine, Outcome
from stream.partitioning import partition_for
from stream.state import UserState
from stream.store import META_KEY, PartitionMeta, StateStore, Transaction
from stream.web import Health
from tests.stream.fakes import PARTITIONS, T0, FakeScorer, ev, make_settings
from tests.worker.failures import serve_every_partition


class RecordingOutbox:
    """Gives each message its partition's next offset; a flush acknowledges all that is queued, and
    until then the broker has acknowledged it only when ``fast`` (as if it answered at once).
    ``log`` notes each message queued and each flush, in order."""

    def __init__(self, settings: object = None) -> None:
        self.fast = False
        self.log: list[tuple[str, str, bytes | None]] = []  # ("queued", topic, key) or ("flush", "", None)
        self.queued: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.delivered: list[tuple[str, int, int, bytes | None, bytes | None]] = []
        self.flushed_by: list[int] = []  # per delivered message: the number of the flush that took it

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None, partition: Any = None
    ) -> None:
        self.queued.append((topic, 0 if partition is None else partition, key, value))
        self.log.append(("queued", topic, key))

    def produce_rows(self, topic: str, rows: dict[bytes, bytes | None], partition: int) -> None:
        for key, value in rows.items():
            self.produce(topic, value, key, partition)

    def acknowledged(self) -> bool:
        return self.fast or not self.queued

    def flush(self, timeout: float = 30.0) -> dict[tuple[str, int], int]:
        acked: dict[tuple[str, int], int] = {}
        for topic, partition, key, value in self.queued:
            offset = self.ends.get((topic, partition), -1) + 1
            self.ends[(topic, partition)] = acked[(topic, partition)] = offset
            self.delivered.append((topic, partition, offset, key, value))
            self.flushed_by.append(self.log.count(("flush", "", None)))
        self.queued = []
        self.log.append(("flush", "", None))
        return acked

    def ping(self, timeout: float = 5.0) -> bool:
        return True

    def close(self) -> None:
        pass


def a_push(user: str, n: int, push_id: str | None = None) -> tuple[int, Push]:
    push = Push(
        push_id=push_id or f"p-{user}-{n}",
        user_id=user,
        item_id="i1",
        trigger="cart_abandonment",
        reason="test",
        score=0.9,
        threshold=0.5,
        model_version="m",
        event_ts=T0 + n,
        created_at=T0 + n,
        expires_at=T0 + n + 3600,
    )
    return 0, push


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[CommitPipeline, RecordingOutbox, StateStore]]:
    settings = make_settings()
    store = StateStore(tmp_path)
    store.open(0).write({b"alice": b"a1", b"carol": b"c1"}, PartitionMeta(-1, -1))
    outbox = RecordingOutbox()
    committer = BatchCommitter(settings, outbox, Health())  # type: ignore[arg-type]
    wholes: list[Outcome] = []
    yield CommitPipeline(lambda o, t: wholes.append(o), committer, store, stage_from=1), outbox, store
    store.close_all()


def test_with_a_broker_that_answers_at_once_each_batch_is_durable_one_batch_later(
    pipeline: tuple[CommitPipeline, RecordingOutbox, StateStore],
) -> None:
    commits, outbox, store = pipeline
    outbox.fast = True
    pstore = store.partitions[0]
    changelog = BatchCommitter(make_settings(), outbox, Health()).changelog  # type: ignore[arg-type]
    for n, value in enumerate([b"a2", b"a3", b"a4"]):
        txn = commits.transaction()
        txn.put(0, b"alice", value)
        outcome = Outcome()
        outcome.pushes.append(a_push("alice", n))
        commits.stage(outcome, txn, 1)
        # Its output acknowledged and its changelog queued; the batch before it in RocksDB.
        assert commits.in_flight == 1
        assert pstore.get(b"alice") == [b"a1", b"a2", b"a3"][n]
    commits.settle()
    assert commits.in_flight == 0 and pstore.get(b"alice") == b"a4"

    flushes = [i for i, (kind, _, _) in enumerate(outbox.log) if kind == "flush"]
    pushes = [i for i, (_, topic, _) in enumerate(outbox.log) if topic == "pushes"]
    rows = [i for i, entry in enumerate(outbox.log) if entry == ("queued", changelog, b"alice")]
    assert len(pushes) == len(rows) == 3 and len(flushes) == 4  # one flush per batch, one more to settle
    for n in range(3):
        # Its pushes, then a flush, then its changelog with the pushes offset, then a flush.
        assert pushes[n] < next(f for f in flushes if f > pushes[n]) < rows[n] < flushes[n + 1]
    metas = [json.loads(v or b"") for t, p, off, k, v in outbox.delivered if t == changelog and k == META_KEY]
    assert [m["p"] for m in metas] == [0, 1, 2]  # each batch's changelog names its own pushes' offsets
    last_row = max(off for t, p, off, k, v in outbox.delivered if t == changelog and k == b"alice")
    assert (pstore.meta.pushes_offset, pstore.meta.changelog_offset) == (2, last_row + 1)  # + its meta


def test_batches_wait_for_the_broker_in_flight_and_go_on_together(
    pipeline: tuple[CommitPipeline, RecordingOutbox, StateStore],
) -> None:
    commits, outbox, store = pipeline
    pstore = store.partitions[0]
    first = commits.transaction()
    first.put(0, b"alice", b"a2")
    first.put(0, b"carol", None)
    outcome = Outcome()
    outcome.pushes.append(a_push("alice", 0))
    commits.stage(outcome, first, 1)
    second = commits.transaction()
    assert second.below is first
    second.put(0, b"bob", b"b1")
    outcome = Outcome()
    outcome.pushes.append(a_push("bob", 1))
    commits.stage(outcome, second, 1)
    third = commits.transaction()
    # Nothing acknowledged: nothing waited for, nothing in RocksDB, and the next batch reads both.
    assert commits.in_flight == 2 and not [e for e in outbox.log if e[0] == "flush"]
    assert pstore.get(b"alice") == b"a1"
    assert (third.get(0, b"alice"), third.get(0, b"bob"), third.get(0, b"carol")) == (b"a2", b"b1", None)
    third.put(0, b"alice", b"a3")
    assert third.get(0, b"alice") == b"a3"  # its own writes come first
    commits.poll()
    assert commits.in_flight == 2  # still not acknowledged
    outbox.fast = True
    commits.poll()  # both outputs acknowledged: their changelogs go out together, one pushes offset
    assert pstore.get(b"alice") == b"a1"
    commits.poll()  # their changelog acknowledged: one RocksDB write for both
    assert commits.in_flight == 0 and pstore.get(b"alice") == b"a2" and pstore.get(b"bob") == b"b1"
    assert pstore.get(b"carol") is None and pstore.meta.pushes_offset == 1
    assert third.below is second and second.writes == {}  # read through, now empty: the store answers
    assert (third.get(0, b"bob"), third.get(0, b"carol")) == (b"b1", None)


def test_pushes_are_counted_when_the_broker_holds_them(
    pipeline: tuple[CommitPipeline, RecordingOutbox, StateStore],
) -> None:
    commits, outbox, store = pipeline

    def pushed() -> float:
        return REGISTRY.get_sample_value("kairos_pushes_total", {"trigger": "cart_abandonment"}) or 0.0

    before = pushed()
    outcome = Outcome()
    outcome.pushes += [a_push("alice", 0), a_push("bob", 1)]
    commits.stage(outcome, commits.transaction(), 1)
    commits.poll()
    assert pushed() == before  # queued, not acknowledged
    outbox.fast = True
    commits.poll()  # acknowledged: counted, while the batch's changelog is only queued
    assert pushed() == before + 2 and commits.in_flight == 1
    commits.settle()
    assert pushed() == before + 2


def test_at_most_max_in_flight_batches_wait(
    pipeline: tuple[CommitPipeline, RecordingOutbox, StateStore],
) -> None:
    commits, outbox, store = pipeline
    for n in range(MAX_IN_FLIGHT + 1):
        txn = commits.transaction()
        txn.put(0, b"alice", b"a%d" % n)
        commits.stage(Outcome(), txn, 1)
        assert commits.in_flight <= MAX_IN_FLIGHT
    # The first batch (no output: its changelog went out at once) was written when the last came,
    # the others went on together; none of them is in RocksDB yet.
    assert store.partitions[0].get(b"alice") == b"a0" and commits.in_flight == MAX_IN_FLIGHT
    assert [kind for kind, _, _ in outbox.log].count("flush") == 2
    commits.settle()
    assert store.partitions[0].get(b"alice") == b"a%d" % MAX_IN_FLIGHT


def test_a_whole_commit_completes_the_batches_in_flight_first(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(0)
    seen: list[bytes | None] = []
    committer = BatchCommitter(make_settings(), RecordingOutbox(), Health())  # type: ignore[arg-type]
    commits = CommitPipeline(
        lambda o, t: seen.append(store.partitions[0].get(b"alice")), committer, store, stage_from=1
    )
    staged = commits.transaction()
    staged.put(0, b"alice", b"a2")
    commits.stage(Outcome(), staged, 1)
    whole = commits.transaction()
    assert whole.below is staged
    commits.commit(Outcome(), whole)  # as the tick commits, between input batches
    assert seen == [b"a2"] and commits.in_flight == 0 and whole.below is None
    store.close_all()


def test_without_staging_each_batch_commits_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(0)
    wholes: list[Transaction] = []
    outbox = RecordingOutbox()
    committer = BatchCommitter(make_settings(), outbox, Health())  # type: ignore[arg-type]
    commits = CommitPipeline(lambda o, t: wholes.append(t), committer, store, stage_from=None)
    txn = commits.transaction()
    commits.stage(Outcome(), txn, 1)
    assert wholes == [txn] and commits.in_flight == 0 and not outbox.log
    assert commits.transaction().below is None
    store.close_all()


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """A bulk-input worker owning every partition, no user records kept warm (every batch reads its
    users through its transaction), every batch staged however small, its outputs recorded."""
    monkeypatch.setattr("stream.app.Outbox", RecordingOutbox)
    settings = make_settings(
        worker={"state_dir": tmp_path, "warm_users_per_partition": 0, "commit_overlap_min_batch": 1}
    )
    settings.kafka.bootstrap_servers = "127.0.0.1:9"  # never contacted
    assert settings.worker.input_reader == "bulk" and settings.worker.commit_overlap
    w = Worker(settings)
    w.engine = Engine(settings, FakeScorer(), clock=lambda: 0.0)
    w.engine.owned = set(range(PARTITIONS))
    serve_every_partition(w, PARTITIONS)
    w._catalog_ready = asyncio.Event()
    w._catalog_ready.set()
    yield w
    w._stop.set()
    w.store.close_all()


def stored_user(w: Worker, user: str) -> UserState | None:
    raw = w.store.partitions[partition_for(user, PARTITIONS)].get(user.encode())
    return None if raw is None else UserState.from_bytes(raw)


def test_the_worker_builds_each_batch_on_the_batches_in_flight(worker: Worker) -> None:
    async def scenario() -> None:
        for n in range(3):
            await worker._handle([ev(f"e{n}", "u1", "view", f"i{n + 1}", T0 + 10 * n)])
        assert worker.commits.in_flight == 3 and stored_user(worker, "u1") is None
        worker.commits.settle()

    asyncio.run(scenario())
    user = stored_user(worker, "u1")
    assert user is not None and list(user.event_ids) == ["e0", "e1", "e2"] and user.n_events == 3


def test_a_batch_smaller_than_the_staging_minimum_is_committed_at_once(worker: Worker) -> None:
    worker.commits.stage_from = 3

    async def scenario() -> None:
        await worker._handle([ev("s1", "u4", "view", "i1", T0), ev("s2", "u4", "view", "i2", T0 + 1)])
        assert worker.commits.in_flight == 0  # two records: the worker keeps up, no waiting for more
        user = stored_user(worker, "u4")
        assert user is not None and list(user.event_ids) == ["s1", "s2"]
        batch = [ev(f"s{n}", "u4", "view", "i3", T0 + n) for n in range(3, 6)]
        await worker._handle(batch)
        assert worker.commits.in_flight == 1  # three: staged

    asyncio.run(scenario())


@pytest.mark.parametrize("settled_by", ["revocation", "tick"])
def test_a_revocation_and_the_tick_complete_the_batches_in_flight(worker: Worker, settled_by: str) -> None:
    async def scenario() -> None:
        await worker._handle([ev("e1", "u2", "view", "i1", T0)])
        assert worker.commits.in_flight == 1
        if settled_by == "revocation":
            # The next owner recovers from the changelog: the batch must be there before it may start.
            await worker._on_revoked(worker.app, set())
        else:
            await worker._tick()  # its group offsets and its own commit come after the batch's
        assert worker.commits.in_flight == 0
        user = stored_user(worker, "u2")
        assert user is not None and list(user.event_ids) == ["e1"]

    asyncio.run(scenario())


# Any interleaving of batches, acknowledgements that come late or at once, polls, whole commits and
# settles keeps what recovery relies on. Two partitions, three user keys; every batch also writes a
# marker row naming it on both partitions and pushes on some of them.
KEYS = (b"a", b"b", b"c")
write = st.tuples(st.integers(0, 1), st.sampled_from(KEYS), st.booleans())  # partition, key, delete?
step: st.SearchStrategy[tuple[str, Any, Any]] = st.one_of(
    st.tuples(st.just("batch"), st.lists(write, max_size=4), st.lists(st.integers(0, 1), max_size=2)),
    st.tuples(st.just("whole"), st.lists(write, max_size=2), st.just([])),
    st.tuples(st.sampled_from(["poll", "settle", "broker_fast", "broker_slow"]), st.just([]), st.just([])),
)


def marker(n: int) -> bytes:
    return b"\x00batch-%d" % n


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=25))
def test_any_interleaving_keeps_the_order_recovery_relies_on(steps: list[tuple[str, Any, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp))
        store.open(0)
        store.open(1)
        outbox = RecordingOutbox()
        committer = BatchCommitter(make_settings(), outbox, Health())  # type: ignore[arg-type]
        commits = CommitPipeline(committer.commit, committer, store, stage_from=1)
        model: dict[tuple[int, bytes], bytes | None] = {}  # every batch applied, in order
        snapshots: list[dict[tuple[int, bytes], bytes | None]] = [{}]  # the model after each batch
        durable = 0  # the RocksDB state is the snapshot at this index or a later one
        pushes_of: dict[str, int] = {}  # push id -> its batch
        for n, (kind, writes, pushes) in enumerate(steps):
            if kind in ("batch", "whole"):
                txn = commits.transaction()
                for key in KEYS:  # the batch reads what every batch before it wrote
                    for p in (0, 1):
                        assert txn.get(p, key) == model.get((p, key))
                outcome = Outcome()
                for p, key, delete in writes:
                    value = None if delete else b"%d" % n
                    txn.put(p, key, value)
                    model[(p, key)] = value
                for p in (0, 1):
                    txn.put(p, marker(n), b"x")
                    model[(p, marker(n))] = b"x"
                for i, p in enumerate(pushes):
                    push_id = f"{n}-{i}"
                    outcome.pushes.append((p, a_push("u", n, push_id)[1]))
                    pushes_of[push_id] = n
                snapshots.append(dict(model))
                if kind == "batch":
                    commits.stage(outcome, txn, 1)
                else:
                    commits.commit(outcome, txn)
                    assert commits.in_flight == 0
            elif kind == "poll":
                commits.poll()
            elif kind == "settle":
                commits.settle()
                assert commits.in_flight == 0
            else:
                outbox.fast = kind == "broker_fast"
            assert commits.in_flight <= MAX_IN_FLIGHT
            stored = {
                (p, k): store.partitions[p].get(k)
                for p in (0, 1)
                for k in {key for snap in snapshots for (q, key) in snap if q == p}
            }
            # RocksDB holds a prefix of the batches, never moving back.
            matches = [
                i
                for i in range(durable, len(snapshots))
                if all(stored[key] == snapshots[i].get(key) for key in stored)
            ]
            assert matches, "RocksDB holds no prefix of the batches"
            durable = matches[0]
            # ... and the changelog (what the broker acknowledged) holds at least as much.
            logged: dict[tuple[int, bytes], bytes | None] = {}
            for topic, p, _, row, value in outbox.delivered:
                if topic == committer.changelog and row is not None and row != META_KEY:
                    logged[(p, row)] = value
            assert [
                i
                for i in range(durable, len(snapshots))
                if all(logged.get(key) == snapshots[i].get(key) for key in stored)
            ], "RocksDB is ahead of the changelog"
        commits.settle()
        for (p, key), value in model.items():
            assert store.partitions[p].get(key) == value
        # The changelog: each batch's rows were queued after its pushes were acknowledged (taken by an
        # earlier flush: the broker orders no two topics), and each meta
        # record's pushes offset covers exactly the pushes of the batches whose rows came before it.
        changelog = committer.changelog
        acked_at: dict[str, tuple[int, int, int]] = {}
        for i, (topic, p, off, _, value) in enumerate(outbox.delivered):
            if topic == "pushes":
                acked_at[json.loads(value or b"")["push_id"]] = (i, p, off)
        seen_batches: dict[int, set[int]] = {0: set(), 1: set()}
        for i, (topic, p, _, row, value) in enumerate(outbox.delivered):
            if topic != changelog:
                continue
            if row is not None and row.startswith(b"\x00batch-"):
                batch = int(row.split(b"-")[1])
                seen_batches[p].add(batch)
                for push_id, (j, _, _) in acked_at.items():
                    if pushes_of[push_id] == batch:
                        assert outbox.flushed_by[j] < outbox.flushed_by[i], (
                            "a batch's changelog went out before its pushes were acknowledged"
                        )
            elif row == META_KEY:
                offset = json.loads(value or b"")["p"]
                for push_id, (_, q, push_offset) in acked_at.items():
                    if q == p:
                        assert (push_offset <= offset) == (pushes_of[push_id] in seen_batches[p])
        store.close_all()
