"""The worker end to end on the embedded broker, in its own process: pushes, consent, dead letters, crash."""

from __future__ import annotations

import base64
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from model.scorer import IncrementalScorer
from stream.broker import EmbeddedBroker
from stream.contract import ConsentUpdate, Event, EventType, Push
from stream.dead_letters import DeadLetter
from stream.simulator import SimConfig, World
from stream.state import UserState
from stream.topics import changelog_topic, ensure_topics
from tests.support.worker import WorkerProcess, produce, read_topic, settings_for, wait_for

pytestmark = pytest.mark.integration

T0 = 1_780_315_200.0  # 2026-06-01 12:00 UTC
# Deterministic decisions: no quiet hours, every candidate above the threshold, no timers.
SCRIPTED_ENV = {
    "KAIROS_POLICY__THRESHOLD": "0.0",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",  # else thresholds are clipped up to its default 0.05
    "KAIROS_POLICY__QUIET_HOURS_START": "00:00",
    "KAIROS_POLICY__QUIET_HOURS_END": "00:00",
    "KAIROS_POLICY__CART_ABANDONMENT_DELAY_SECONDS": "1e9",
}


def _world() -> World:
    return World(SimConfig(seed=7, n_users=1500, n_items=600))


def _catalog(bootstrap: str, world: World) -> list[str]:
    """Publish the world's catalog; return the ids of items in stock."""
    entries = world.initial_catalog()
    produce(bootstrap, settings_for(bootstrap).topics.catalog, [(c.item_id.encode(), c) for c in entries])
    return [c.item_id for c in entries if c.stock > 0 and c.promotion is None]


def _event(n: int, user: str, kind: EventType, item: str | None, ts: float) -> tuple[bytes, Event]:
    event = Event(
        event_id=f"e-{user}-{n}", user_id=user, type=kind, item_id=item, ts=ts, session_id=f"s-{user}"
    )
    return user.encode(), event


def _pushes(bootstrap: str) -> list[Push]:
    topic = settings_for(bootstrap).topics.pushes
    return [Push.model_validate_json(m.value(), strict=False) for m in read_topic(bootstrap, topic)]


def _states(bootstrap: str, app_id: str) -> dict[str, UserState]:
    """The latest state of every user, read from the changelog topic (what recovery would rebuild)."""
    settings = settings_for(bootstrap)
    settings.worker.app_id = app_id
    latest: dict[str, bytes | None] = {}
    for msg in read_topic(bootstrap, changelog_topic(settings)):
        if msg.key() and not msg.key().startswith(b"\x00"):  # user records, not partition rows
            latest[msg.key().decode()] = msg.value()
    return {user: UserState.from_bytes(raw) for user, raw in latest.items() if raw is not None}


@pytest.fixture
def worker_factory(tmp_path: Path, model_dir: Path):
    started: list[WorkerProcess] = []

    def make(
        bootstrap: str,
        app_id: str = "kairos-test",
        env: dict[str, str] | None = None,
        state_dir: Path | None = None,
    ) -> WorkerProcess:
        w = WorkerProcess(
            bootstrap,
            state_dir or tmp_path / app_id,
            model_dir,
            {**SCRIPTED_ENV, **(env or {})},
            app_id=app_id,
        )
        started.append(w.start())
        return w

    yield make
    for w in started:
        w.stop()


def test_scripted_stream_yields_a_complete_push_and_opt_out_yields_none(
    broker: str, worker_factory, model_dir
):
    world = _world()
    items = _catalog(broker, world)
    jacket = items[3]
    topics = settings_for(broker).topics
    produce(broker, topics.consent, [(b"u-out", ConsentUpdate(user_id="u-out", opted_in=False, ts=T0 - 10))])
    worker = worker_factory(broker)
    worker.wait_ready()
    # Consent is read from its own topic: wait until the worker has stored it before the events come.
    wait_for(lambda: "u-out" in _states(broker, "kairos-test"), 30, what="consent applied")

    events = []
    for user in ("u-in", "u-out"):
        for n in range(3):
            events.append(_event(n, user, "view", jacket, T0 + 60 * n))
        events.append(_event(3, user, "add_to_cart", jacket, T0 + 200))
    produce(broker, topics.events, events)
    wait_for(lambda: any(p.user_id == "u-in" for p in _pushes(broker)), 30, what="a push for u-in")

    pushes = _pushes(broker)
    assert not [p for p in pushes if p.user_id == "u-out"], "an opted-out user got a push"
    push = next(p for p in pushes if p.user_id == "u-in")
    # The first view decides at once; the 1 h minimum gap then holds the other events back.
    assert push.item_id == jacket
    assert push.trigger == "in_session"
    assert push.event_ts == T0
    assert push.created_at == T0  # event-time clock in tests
    assert push.expires_at > push.created_at
    assert push.reason and push.features and push.model_version
    assert push.title and push.category and push.price is not None
    assert 0.0 <= push.threshold <= push.score <= 1.0
    assert len([p for p in pushes if p.user_id == "u-in"]) == 1
    assert push.model_version == IncrementalScorer.load(model_dir).version
    state = _states(broker, "kairos-test")["u-in"]
    assert state.n_events == 4 and state.hidden is not None


def _malformed(rng: random.Random, i: int) -> bytes:
    kind = i % 5
    if kind == 0:
        return b'{"event_id": "x' + str(i).encode() + b'", "user_id": '  # truncated JSON
    if kind == 1:
        return json.dumps(
            {"event_id": f"w{i}", "user_id": "u-bad", "type": "view", "item_id": "i1", "ts": "yesterday"}
        ).encode()  # wrong type
    if kind == 2:
        return json.dumps(
            {"event_id": f"m{i}", "user_id": "u-bad", "type": "view", "ts": T0}
        ).encode()  # no item
    if kind == 3:
        return json.dumps(
            {"event_id": f"o{i}", "user_id": "u-bad", "type": "search", "ts": T0, "query": "x" * 20_000}
        ).encode()  # oversized
    return bytes(rng.getrandbits(8) for _ in range(64)) + b"\xff"  # binary garbage


def test_malformed_inputs_reach_the_dead_letter_topic_while_valid_events_flow(
    own_broker: str, worker_factory
):
    broker = own_broker
    world = _world()
    items = _catalog(broker, world)
    topics = settings_for(broker).topics
    worker = worker_factory(broker, app_id="kairos-dlq")
    worker.wait_ready()
    rng = random.Random(5)
    bad = [_malformed(rng, i) for i in range(1000)]
    good = [_event(i, f"u-good-{i % 20}", "view", items[i % len(items)], T0 + i) for i in range(300)]
    mixed: list[tuple[bytes | None, object]] = [(b"u-bad", raw) for raw in bad] + list(good)
    rng.shuffle(mixed)
    produce(broker, topics.events, mixed)

    wait_for(lambda: len(read_topic(broker, topics.dead_letters)) >= 1000, 60, what="1000 dead letters")

    def valid_done() -> float:
        # Items the small model never saw are processed as "unknown_item" (state kept, no GRU step).
        return worker.metric("kairos_events_total", outcome="processed") + worker.metric(
            "kairos_events_total", outcome="unknown_item"
        )

    wait_for(lambda: valid_done() >= 300, 30, what="valid events")
    letters = [
        DeadLetter.model_validate_json(m.value(), strict=False)
        for m in read_topic(broker, topics.dead_letters)
    ]
    assert len(letters) == 1000
    assert Counter(letter.original_bytes() for letter in letters) == Counter(bad)  # nothing lost, bytes exact
    reasons = Counter(letter.reason for letter in letters)
    assert reasons["bad_json"] == 200 and reasons["oversized"] == 200
    assert reasons["invalid_field"] == 400 and reasons["not_utf8"] == 200
    assert all(letter.source_topic == topics.events and letter.offset >= 0 for letter in letters)
    assert all(letter.original_encoding == "base64" for letter in letters if letter.reason == "not_utf8")
    assert base64.b64decode(next(x for x in letters if x.reason == "not_utf8").original)
    assert worker.metric("kairos_dead_letters_total") == 1000
    assert valid_done() == 300
    assert worker.metric("kairos_events_total", outcome="dead_letter") == 1000
    assert worker.proc is not None and worker.proc.poll() is None  # still running


def _crash_script(
    world: World, items: list[str], users: int = 120, per_user: int = 25
) -> list[tuple[bytes, Event]]:
    rng = random.Random(11)
    events = []
    for n in range(per_user):
        for u in range(users):
            user = f"u-crash-{u:03d}"
            kind: EventType = "add_to_cart" if rng.random() < 0.1 else "view"
            events.append(_event(n, user, kind, items[rng.randrange(60)], T0 + n * 30 + u * 0.01))
    return events


@pytest.mark.parametrize(
    "local_state",
    ["kept", "deleted", "damaged"],
    ids=["restart", "restart-without-local-rocksdb", "restart-with-damaged-local-rocksdb"],
)
def test_kill9_and_restart_gives_the_uninterrupted_state_and_no_duplicate_push(
    worker_factory, tmp_path: Path, local_state: str
):
    world = _world()
    # The reference: the same stream, uninterrupted, on its own broker.
    with EmbeddedBroker() as ref:
        ensure_topics(settings_for(ref.bootstrap))
        items = _catalog(ref.bootstrap, world)
        script = _crash_script(world, items)
        produce(ref.bootstrap, settings_for(ref.bootstrap).topics.events, script)
        # The reference reads through faust's own per-record stream, the crashing run through the
        # bulk reader (the default): the same pushes and states also show that reading in bulk
        # changed no decision.
        w = worker_factory(ref.bootstrap, app_id="ref", env={"KAIROS_WORKER__INPUT_READER": "faust"})
        w.wait_ready()
        wait_for(lambda: w.metric("kairos_events_total") >= len(script), 120, what="reference run")
        wait_for(
            lambda: sum(s.n_events for s in _states(ref.bootstrap, "ref").values()) == len(script),
            30,
            what="reference changelog",
        )
        expected = _states(ref.bootstrap, "ref")
        expected_pushes = {p.push_id for p in _pushes(ref.bootstrap)}
        w.stop()

    with EmbeddedBroker() as live:
        ensure_topics(settings_for(live.bootstrap))
        _catalog(live.bootstrap, world)
        state_dir = tmp_path / "crashing"
        w = worker_factory(live.bootstrap, app_id="crash", state_dir=state_dir)
        w.wait_ready()
        produce(live.bootstrap, settings_for(live.bootstrap).topics.events, script)
        wait_for(lambda: w.metric("kairos_events_total") >= len(script) // 3, 60, what="a third processed")
        w.kill9()
        if local_state == "deleted":
            shutil.rmtree(state_dir)
        elif local_state == "damaged":  # a crash or a disk fault: RocksDB refuses every partition's files
            damaged = list(state_dir.glob("*/p*/CURRENT"))  # <state_dir>/<app_id>/p<N>
            assert damaged
            for current in damaged:
                current.write_text("garbage\n")
        w2 = worker_factory(live.bootstrap, app_id="crash", state_dir=state_dir)
        w2.wait_ready(120)
        wait_for(
            lambda: sum(s.n_events for s in _states(live.bootstrap, "crash").values()) == len(script),
            120,
            what="the restarted run to finish",
        )
        got = _states(live.bootstrap, "crash")
        if local_state == "damaged":  # each set aside, rebuilt from the changelog, counted
            assert len(list(state_dir.glob("*/p*.damaged"))) == len(damaged)
            assert w2.metric("kairos_state_store_rebuilds_total") == len(damaged)
        pushes = _pushes(live.bootstrap)
        w2.stop()  # while its broker is still up, so it can leave the group cleanly

    ids = [p.push_id for p in pushes]
    assert len(ids) == len(set(ids)), "a push_id appears twice on the outbound topic"
    assert ids and expected_pushes
    # Every user's state and the push set equal the uninterrupted run's: the partition's clock,
    # indexes and timers are recovered with it (stream.partition_state), so nothing depends on the crash.
    assert set(got) == set(expected)
    for user in sorted(expected):
        a, b = expected[user], got[user]
        assert b.n_events == a.n_events
        assert list(b.event_ids) == list(a.event_ids)
        assert b.recent == a.recent
        assert b.engagement == a.engagement
        assert b.policy == a.policy, user
        assert a.hidden is not None and b.hidden is not None
        np.testing.assert_allclose(b.hidden, a.hidden, rtol=1e-5, atol=1e-6)
    assert set(ids) == expected_pushes


@pytest.mark.parametrize("reader", ["bulk", "faust"])
def test_inputs_compressed_with_every_kafka_codec_are_read(own_broker: str, worker_factory, reader: str):
    """Producers choose their compression: gzip, snappy, lz4 and zstd batches are read by either input
    reader (faust's aiokafka needs cramjam for the last three, else its fetch fails on every batch)."""
    world = _world()
    topics = settings_for(own_broker).topics
    catalog = world.initial_catalog()
    items = [c.item_id for c in catalog if c.stock > 0 and c.promotion is None]
    n = 0
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        p = Producer(
            {
                "bootstrap.servers": own_broker,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "compression.type": codec,
            }
        )
        if codec == "zstd":  # the catalog too, read by its own librdkafka consumer
            for c in catalog:
                p.produce(topics.catalog, value=c.model_dump_json().encode(), key=c.item_id.encode())
        for k in range(20):
            key, event = _event(k, f"u-{codec}-{k}", "view", items[k], T0 + k)
            p.produce(topics.events, value=event.model_dump_json().encode(), key=key)
            n += 1
        assert p.flush(30) == 0
    worker = worker_factory(own_broker, app_id=f"codec-{reader}", env={"KAIROS_WORKER__INPUT_READER": reader})
    worker.wait_ready()
    wait_for(
        lambda: worker.metric("kairos_events_total", outcome="processed") >= n,
        60,
        what="every event processed",
    )
    assert worker.metric("kairos_events_total", outcome="processed") == n
    assert worker.metric("kairos_dead_letters_total") == 0
    assert worker.proc is not None and worker.proc.poll() is None


@pytest.mark.parametrize("reader", ["bulk", "faust"])
def test_kafka_level_oddities_are_dead_lettered_or_ignored_by_either_reader(
    own_broker: str, worker_factory, reader: str
):
    """What a broken producer can do below the contract: headers (binary, repeated, huge, many), a null
    or empty value, no key, a 100 KB key, a record timestamp of 1970. Headers and the record timestamp
    are not read; the rest is dead-lettered; the worker goes on."""
    world = _world()
    items = _catalog(own_broker, world)
    topics = settings_for(own_broker).topics
    p = Producer({"bootstrap.servers": own_broker, "partitioner": "murmur2_random"})
    headers: list[tuple[str, str | bytes | None]] = [
        ("h", b"\xff\xfe\x00"),
        ("h", None),
        ("k" * 1000, b"v" * 10_000),
        *((f"n{i}", b"x") for i in range(200)),
    ]
    good = [_event(k, f"u-odd-{k}", "view", items[k], T0 + k) for k in range(10)]
    for k, (key, event) in enumerate(good):
        value = event.model_dump_json().encode()
        if k % 2:
            p.produce(topics.events, value=value, key=key, headers=headers)
        else:
            p.produce(topics.events, value=value, key=key, timestamp=1)
    _, loose = _event(99, "u-odd-x", "view", items[0], T0)
    p.produce(topics.events, value=None, key=b"u-odd-x")
    p.produce(topics.events, value=b"", key=b"u-odd-x")
    p.produce(topics.events, value=loose.model_dump_json().encode())
    p.produce(topics.events, value=loose.model_dump_json().encode(), key=b"u" * 100_000)
    assert p.flush(30) == 0
    worker = worker_factory(own_broker, app_id=f"odd-{reader}", env={"KAIROS_WORKER__INPUT_READER": reader})
    worker.wait_ready()
    wait_for(lambda: worker.metric("kairos_dead_letters_total") >= 4, 60, what="four dead letters")
    wait_for(lambda: worker.metric("kairos_events_total", outcome="processed") >= len(good), 30, what="valid")
    reasons = Counter(
        DeadLetter.model_validate_json(m.value(), strict=False).reason
        for m in read_topic(own_broker, topics.dead_letters)
    )
    assert reasons == Counter({"bad_json": 2, "no_key": 1, "key_mismatch": 1})
    assert worker.metric("kairos_events_total", outcome="processed") == len(good)
    assert worker.proc is not None and worker.proc.poll() is None
