"""Fuzz one live worker with 10,000+ generated records on all three input topics.

Records are generated with hypothesis strategies (valid, near-valid: valid JSON with one thing
broken, garbage, tombstones, huge values and keys, deep nesting, big integers, lone surrogates,
missing keys, wrong partitions), collected deterministically (``derandomize=True``), then produced
to ONE worker process on the embedded broker. The worker must never exit, and every record must
be accounted for, per topic: applied + dead-lettered + tombstones == produced. Applied and
dead-lettered records are read from the worker's own counters and the dead-letters topic; which
record should end where is predicted with the pure admission functions (tombstones are not
counted by the worker yet: the lead gives them their meaning).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.admission import admit_catalog, admit_consent, admit_event
from stream.contract import EVENT_TYPES, ContractError, to_json_bytes
from stream.dead_letters import DeadLetter, dead_letter_size_bound
from stream.partitioning import partition_for
from stream.settings import Settings
from stream.simulator import SimConfig, World
from tests.support.worker import WorkerProcess, produce, read_topic, settings_for, wait_for

pytestmark = pytest.mark.integration

N_RECORDS = 10_000
PER_EXAMPLE = 50
T0 = 1_780_315_200.0  # 2026-06-01 12:00 UTC: valid times lie in the past of the wall clock
DAY = 86_400.0
USERS = [f"fz-u{i}" for i in range(150)]
ITEMS = [c.item_id for c in World(SimConfig(seed=7, n_users=1500, n_items=600)).initial_catalog()]
MARK = "\u2603"  # replaced in the JSON text by a lone surrogate escape


@dataclass(frozen=True)
class Rec:
    """One record to produce: its partition None lets murmur2_random choose."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    kind: str


# -- strategies ---------------------------------------------------------------------------------

any_text = st.text(max_size=12)
id_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12)
user_ids = st.sampled_from(USERS) | id_text
item_ids = st.sampled_from(ITEMS[:80] + ["fz-unknown"])
times = st.floats(0.0, 20 * DAY).map(lambda d: T0 + d)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=6,
)


@st.composite
def valid_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(EVENT_TYPES))
    data: dict[str, Any] = {
        "event_id": f"fz-e{draw(st.integers(0, 30_000))}",  # some repeat: duplicates
        "user_id": draw(user_ids),
        "type": kind,
        "ts": draw(times),
    }
    if kind == "search":
        data["query"] = draw(any_text)
    else:
        data["item_id"] = draw(item_ids)
    if draw(st.booleans()):
        data["session_id"] = f"s{draw(st.integers(0, 50))}"
    if kind == "purchase" and draw(st.booleans()):
        data["price"], data["quantity"] = draw(st.floats(0, 1e4)), draw(st.integers(1, 5))
    if kind.startswith("push_") and draw(st.booleans()):
        data["push_id"] = draw(st.text("0123456789abcdef", min_size=24, max_size=24))
    if draw(st.booleans()):
        data["context"] = {"time_zone": draw(st.sampled_from(["Europe/Paris", "Asia/Tokyo", "UTC"]))}
    return data


@st.composite
def valid_consent(draw: st.DrawFn) -> dict[str, Any]:
    return {"user_id": draw(user_ids), "opted_in": draw(st.booleans()), "ts": draw(times)}


@st.composite
def valid_catalog(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "item_id": draw(item_ids | st.builds("fz-i{}".format, st.integers(0, 50))),
        "title": draw(any_text),
        "category": draw(st.sampled_from(["shoes", "bags", "hats"])),
        "price": draw(st.floats(0, 1e9)),
        "stock": draw(st.integers(0, 40) | st.integers(0, 10**40)),  # big (legal) integers too
        "updated_at": draw(times),
    }
    if draw(st.booleans()):
        start = draw(times)
        data["promotion"] = {
            "promotion_id": "p1",
            "discount": draw(st.floats(0.01, 0.9)),
            "starts_at": start,
            "ends_at": start + draw(st.floats(1, 10 * DAY)),
        }
    return data


VALID = {"events": valid_event(), "consent": valid_consent(), "catalog": valid_catalog()}
ID_FIELD = {"events": "user_id", "consent": "user_id", "catalog": "item_id"}
TIME_FIELD = {"events": "ts", "consent": "ts", "catalog": "updated_at"}
MUTATIONS = [
    "drop",
    "retype",
    "extra",
    "long_string",
    "future",
    "near_future",
    "millis",
    "big_int",
    "version",
    "control_id",
    "meta_id",
    "surrogate",
    "nan",
    "deep",
]


@st.composite
def near_valid(draw: st.DrawFn, topic: str) -> bytes:
    """A valid message with one thing broken (some mutations leave it valid: that is fine)."""
    data = draw(VALID[topic])
    how = draw(st.sampled_from(MUTATIONS))
    field = draw(st.sampled_from(sorted(data)))
    raw_tail = ""
    if how == "drop":
        del data[field]
    elif how == "retype":
        data[field] = draw(json_values)
    elif how == "extra":
        data[draw(any_text)] = draw(json_values)
    elif how == "long_string":
        data[field] = "x" * draw(st.sampled_from([129, 600, 20_000]))
    elif how == "future":
        data[TIME_FIELD[topic]] = time.time() + draw(st.sampled_from([DAY, 365 * DAY, 3_600]))
    elif how == "near_future":
        data[TIME_FIELD[topic]] = time.time() + 60  # within the allowed skew: applied
    elif how == "millis":
        data[TIME_FIELD[topic]] = data[TIME_FIELD[topic]] * 1000
    elif how == "version":
        data["v"] = draw(st.sampled_from([2, 0, True, 1.0, "1", [1]]))
    elif how == "control_id":
        data[ID_FIELD[topic]] = "u\x00" + draw(any_text)
    elif how == "meta_id":
        data[ID_FIELD[topic]] = "\x00meta"
    elif how == "surrogate":
        data[ID_FIELD[topic] if draw(st.booleans()) else field] = MARK
    elif how in ("big_int", "nan", "deep"):
        data[field] = MARK
        raw_tail = {
            "big_int": "9" * draw(st.sampled_from([4_000, 4_400])),
            "nan": draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])),
            "deep": "[" * draw(st.sampled_from([3, 50, 3_000])) + "]" * 3,
        }[how]
    text = json.dumps(data)
    if raw_tail:
        text = text.replace(json.dumps(MARK), raw_tail)
    else:
        text = text.replace(json.dumps(MARK)[1:-1], draw(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d"])))
    return text.encode()


CONTROL = bytes(b % 32 for b in range(256))


def _huge(seed: int, size: int, control: bool) -> bytes:
    data = random.Random(seed).randbytes(size)
    return data.translate(CONTROL) if control else data  # control bytes: valid UTF-8, escape 6x


garbage_values = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"[" * 10_000, b"{" * 5_000, b"1" * 5_000, b"null", b"[]", b'"\\ud800"']),
)
huge_values = st.builds(
    _huge, st.integers(0, 2**32), st.sampled_from([17_000] * 4 + [170_000, 200_000]), st.booleans()
)
huge_keys = st.builds(
    lambda seed, n: random.Random(seed).randbytes(n),
    st.integers(0, 2**32),
    st.sampled_from([513, 600, 2_000, 100_000]),
)
odd_keys = st.one_of(
    st.none(), st.binary(max_size=16), huge_keys, st.just(b"\x00meta"), user_ids.map(str.encode)
)
KINDS = ["valid"] * 18 + ["near"] * 18 + ["garbage"] * 7 + ["tombstone"] * 4 + ["huge"]


@st.composite
def records(draw: st.DrawFn) -> Rec:
    topic = draw(st.sampled_from(["events"] * 5 + ["consent"] * 3 + ["catalog"] * 2))
    kind = draw(st.sampled_from(KINDS))
    value: bytes | None
    if kind == "valid":
        data = draw(VALID[topic])
        value, key = json.dumps(data).encode(), data[ID_FIELD[topic]].encode()
    elif kind == "near":
        value = draw(near_valid(topic))
        key = draw(user_ids if topic != "catalog" else item_ids).encode()
        with contextlib.suppress(Exception):  # usually the message's own id (unless broken)
            key = json.loads(value)[ID_FIELD[topic]].encode()
    elif kind == "tombstone":
        value = None
        key = draw((user_ids if topic != "catalog" else item_ids).map(str.encode) | odd_keys)
    else:
        value = draw(garbage_values if kind == "garbage" else huge_values)
        key = draw(odd_keys)
    if kind in ("valid", "near") and draw(st.integers(0, 9)) == 0:
        key = draw(odd_keys)  # missing, binary, huge, the store's meta key, another user's
    partition = None
    if topic != "catalog" and key is not None and len(key) <= 512 and draw(st.integers(0, 9)) == 0:
        partition = (partition_for(key, 4) + draw(st.integers(1, 3))) % 4  # kcat-style partitioner
    return Rec(topic, key, value, partition, kind)


def generate(n: int) -> list[Rec]:
    """At least ``n`` records, the same ones at every run."""
    out: list[Rec] = []

    @settings(
        max_examples=n // PER_EXAMPLE + 20,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(records(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE, unique=True))
    def collect(batch: list[Rec]) -> None:
        out.extend(batch)

    collect()
    return out


# -- what should happen -------------------------------------------------------------------------


def expected(rec: Rec, s: Settings, wall: float) -> str:
    """'applied', 'tombstone' or 'dead:<reason>', from the pure admission functions."""
    if rec.partition is not None:
        partition = rec.partition
    elif rec.key is not None and len(rec.key) <= 512 and rec.topic != "catalog":
        partition = partition_for(rec.key, s.topics.partitions)
    else:
        partition = 0  # a keyless record lands anywhere; it is refused for its missing key first
    admit = {"events": admit_event, "consent": admit_consent, "catalog": admit_catalog}[rec.topic]
    try:
        result = admit(rec.key, partition, rec.value, s, wall)
    except ContractError as exc:
        return f"dead:{exc.reason}"
    return "tombstone" if result is None else "applied"


def produce_all(bootstrap: str, recs: list[Rec]) -> None:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "message.max.bytes": 1_000_000,
        }
    )
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i, rec in enumerate(recs):
        kwargs: dict[str, Any] = {"key": rec.key, "value": rec.value, "on_delivery": on_delivery}
        if rec.partition is not None:
            kwargs["partition"] = rec.partition
        while True:
            try:
                p.produce(rec.topic, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:5]


# -- the test -----------------------------------------------------------------------------------


def test_fuzzed_records_never_stop_the_worker_and_all_are_accounted_for(
    own_broker: str, model_dir: Path, tmp_path: Path
) -> None:
    broker = own_broker
    s = settings_for(broker)
    assert time.time() > T0 + 30 * DAY  # valid times must lie in the past

    world = World(SimConfig(seed=7, n_users=1500, n_items=600))
    setup = world.initial_catalog()
    produce(broker, s.topics.catalog, [(c.item_id.encode(), c) for c in setup])
    worker = WorkerProcess(broker, tmp_path / "state", model_dir, app_id="kairos-fuzz")
    worker.start()
    try:
        started = time.monotonic()  # generate while the worker starts
        recs = generate(N_RECORDS)
        generated_s = time.monotonic() - started
        assert len(recs) >= N_RECORDS
        wall = time.time()
        fate = [expected(r, s, wall) for r in recs]
        kinds = Counter((r.topic, f) for r, f in zip(recs, fate, strict=True))
        worker.wait_ready()
        produce_all(broker, recs)

        produced = Counter(r.topic for r in recs) + Counter({"catalog": len(setup)})
        tombstones = Counter(t for t, f in kinds.elements() if f == "tombstone")

        def applied(topic: str) -> float:
            if topic == "events":
                return sum(
                    worker.metric("kairos_events_total", outcome=o)
                    for o in ("processed", "duplicate", "unknown_item")
                )
            return worker.metric(f"kairos_{topic}_updates_total")

        def dead(topic: str) -> float:
            return worker.metric("kairos_dead_letters_total", topic=topic)

        def accounted() -> bool:
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail_log()
            return all(
                applied(t) + dead(t) + tombstones[t] >= produced[t] for t in ("events", "consent", "catalog")
            )

        try:
            wait_for(accounted, 240, interval=1.0, what="every record applied or dead-lettered")
        finally:
            summary = {
                t: (produced[t], applied(t), dead(t), tombstones[t]) for t in ("events", "consent", "catalog")
            }
            print(f"generated {len(recs)} records in {generated_s:.1f}s; per topic", summary)
        time.sleep(2.0)  # nothing more may arrive

        # 0 crashes: the process runs and says it is healthy.
        assert worker.proc is not None and worker.proc.poll() is None
        assert worker.get("/healthz")[0] == 200

        # Every record accounted for, per topic, and each where admission says it belongs.
        for topic in ("events", "consent", "catalog"):
            want_applied = sum(n for (t, f), n in kinds.items() if t == topic and f == "applied")
            want_dead = sum(n for (t, f), n in kinds.items() if t == topic and f.startswith("dead:"))
            if topic == "catalog":
                want_applied += len(setup)
            assert applied(topic) + dead(topic) + tombstones[topic] == produced[topic], topic
            assert (applied(topic), dead(topic)) == (want_applied, want_dead), topic
            for (t, f), n in kinds.items():
                if t == topic and f.startswith("dead:"):
                    got = worker.metric("kairos_dead_letters_total", topic=topic, reason=f[5:])
                    assert got == n, (topic, f)

        # The dead-letters topic holds one bounded, readable letter per refused record.
        letters = read_topic(broker, s.topics.dead_letters, timeout=30)
        assert len(letters) == sum(n for (_, f), n in kinds.items() if f.startswith("dead:"))
        bound = dead_letter_size_bound(s.worker.dead_letter_max_original_bytes)
        by_topic: Counter[str] = Counter()
        for msg in letters:
            assert len(msg.value()) + len(msg.key() or b"") <= bound
            letter = DeadLetter.model_validate_json(msg.value(), strict=False)
            assert letter.reason != "processing_error", letter.error  # a bug, not bad input
            by_topic[letter.source_topic] += 1
            to_json_bytes(letter)
        assert by_topic == Counter(t for t, f in kinds.elements() if f.startswith("dead:"))
        # The mix really was mixed.
        assert (
            kinds[("events", "applied")] > 1_000 and tombstones["consent"] > 50 and tombstones["catalog"] > 20
        )
        reasons = {f for (_, f) in kinds if f.startswith("dead:")}
        for reason in (
            "no_key",
            "wrong_partition",
            "key_mismatch",
            "future_timestamp",
            "bad_json",
            "oversized",
        ):
            assert f"dead:{reason}" in reasons, reason
    finally:
        worker.stop()
