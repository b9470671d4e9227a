"""With the real GRU, a user's state and every push are bit-exact whatever the batching or ownership.

BLAS rounds a row differently depending on how many rows it multiplies; the model's step and scoring
therefore compute row by row without it (``model.scorer``). This test drives a real trained model
over a simulated shop stream cut into different batch sizes and split across two engines, and
compares stored bytes, not approximations.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict, deque
from typing import Any

import msgspec
import numpy as np
import pytest
from pydantic import BaseModel

from model.scorer import IncrementalScorer
from stream.contract import ConsentUpdate, EventContext, to_json_bytes
from stream.engagement import Engagement
from stream.engine import Engine, Inbound, Outcome
from stream.partitioning import partition_for
from stream.record_rows import EngagementRecord
from stream.settings import Settings
from stream.simulator import SimConfig, generate_events
from stream.state import UserState
from tests.stream.fakes import PARTITIONS, DictState, catalog_entry, catalog_record, make_settings
from tests.support.worker import train_small_model


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> IncrementalScorer:
    return IncrementalScorer(train_small_model(tmp_path_factory.mktemp("replay-model") / "artifact"))


def stream(n: int) -> list[Inbound]:
    records = []
    for offset, event in enumerate(generate_events(SimConfig(seed=21, n_users=150, n_items=600), n)):
        p = partition_for(event.user_id, PARTITIONS)
        records.append(Inbound("events", p, offset, event.user_id.encode(), to_json_bytes(event)))
    return records


# The production decision path: no push to active shoppers, session-end decisions, a holdout whose
# ghosts and the pushes' purchases teach the outcome estimates (short learning epochs: many folds).
PRODUCTION = {
    "active_window_seconds": 1800.0,
    "session_end_seconds": 900.0,
    "holdout_share": 0.3,
    "learning_epoch_seconds": 600.0,
    "trigger_thresholds": {"cart_abandonment": 0.05, "browse_abandonment": 0.05},
}


def engine_for(scorer: IncrementalScorer, owned: set[int], **policy: Any) -> Engine:
    values: dict[str, Any] = {"trigger_thresholds": {"cart_abandonment": 0.05}, **policy}
    return engine_with(scorer, owned, make_settings(threshold=0.05, min_threshold=0.0, **values))


def engine_with(scorer: IncrementalScorer, owned: set[int], settings: Settings) -> Engine:
    engine = Engine(settings, scorer, clock=lambda: 0.0)
    engine.owned = owned
    items = [f"i{n:05d}" for n in range(600)]  # the simulator's item ids
    engine.apply_catalog([catalog_record(catalog_entry(i)) for i in items], DictState())
    return engine


def run(engine: Engine, records: list[Inbound], store: DictState, batch: int) -> list[str]:
    out = Outcome()
    for start in range(0, len(records), batch):
        out.extend(
            engine.process([r for r in records[start : start + batch] if r.partition in engine.owned], store)
        )
    assert out.late_timers == 0  # every timer made before the clock could pass it
    return [p.push_id for _, p in out.pushes]


def test_states_and_pushes_are_bit_exact_across_batchings(scorer: IncrementalScorer) -> None:
    records = stream(3000)
    everything = set(range(PARTITIONS))
    reference_store = DictState()
    reference = run(engine_for(scorer, everything), records, reference_store, 256)
    assert reference, "the stream should produce pushes"
    for batch in (1, 37):
        store = DictState()
        pushes = run(engine_for(scorer, everything), records, store, batch)
        assert store.data == reference_store.data
        assert pushes == reference
    # Two engines, each owning half of the partitions, over the same stream.
    store = DictState()
    left, right = engine_for(scorer, {0, 1}), engine_for(scorer, {2, 3})
    pushes = run(left, records, store, 100) + run(right, records, store, 100)
    assert store.data == reference_store.data
    assert sorted(pushes) == sorted(reference)


def test_the_production_decision_path_is_bit_exact_across_batchings(scorer: IncrementalScorer) -> None:
    records = stream(3000)
    everything = set(range(PARTITIONS))
    reference_store = DictState()
    reference = run(engine_for(scorer, everything, **PRODUCTION), records, reference_store, 256)
    assert reference, "the stream should produce pushes"
    triggers = {key for key in reference_store.data if key[1].startswith(b"\x00r")}
    assert any(b"/" in key[1] for key in triggers), "outcome estimates should have been folded in"
    for batch in (1, 37):
        store = DictState()
        pushes = run(engine_for(scorer, everything, **PRODUCTION), records, store, batch)
        assert store.data == reference_store.data
        assert pushes == reference
    store = DictState()
    left = engine_for(scorer, {0, 1}, **PRODUCTION)
    right = engine_for(scorer, {2, 3}, **PRODUCTION)
    pushes = run(left, records, store, 100) + run(right, records, store, 100)
    assert store.data == reference_store.data
    assert sorted(pushes) == sorted(reference)


def _unsettled_stream(n: int) -> list[Inbound]:
    """The simulated stream with its time stretched (a user's next event often hours later: session
    ends, reminders, held pushes released and expiries fall inside batches), a consent change every
    97th record and a time-zone change every 53rd event: what pass 1 changes that pass 2 reads."""
    records: list[Inbound] = []
    events = list(generate_events(SimConfig(seed=23, n_users=120, n_items=600), n))
    t0 = events[0].ts
    zones = ("Europe/Berlin", "America/New_York", "Asia/Tokyo")
    for k, event in enumerate(events):
        ts = t0 + (event.ts - t0) * 30.0
        context = event.context
        if k % 53 == 0:
            context = EventContext(time_zone=zones[(k // 53) % len(zones)])
        moved = event.model_copy(update={"ts": ts, "context": context})
        p = partition_for(event.user_id, PARTITIONS)
        records.append(Inbound("events", p, len(records), event.user_id.encode(), to_json_bytes(moved)))
        if k % 97 == 0:
            consent = ConsentUpdate(user_id=event.user_id, opted_in=(k // 97) % 2 == 1, ts=ts + 1.0)
            records.append(
                Inbound("consent", p, len(records), event.user_id.encode(), to_json_bytes(consent))
            )
    return records


# The unsettled stream's policy: quiet hours, send time and reminders on, and every abandonment path
# pushing, also to shoppers who come back within hours (most here).
UNSETTLED = {
    **PRODUCTION,
    "quiet_hours_start": "22:00",
    "quiet_hours_end": "08:00",
    "send_time_enabled": True,
    "reminder_seconds": 4 * 3600.0,
    "returning_visit_seconds": 0.0,
}


def _unsettled_engine(scorer: IncrementalScorer, records: list[Inbound], **worker: object) -> Engine:
    """An engine owning every partition with :data:`UNSETTLED`, a 6 h user TTL (expiries fall inside the
    stream) plus ``worker``, and a wall clock just after the stream's last event."""
    wall = max(r.value is not None and float(json.loads(r.value)["ts"]) or 0.0 for r in records) + 60.0
    values: dict[str, object] = {"trigger_thresholds": {"cart_abandonment": 0.05}, **UNSETTLED}
    settings = make_settings(
        {"user_ttl_seconds": 6 * 3600.0, **worker}, threshold=0.05, min_threshold=0.0, **values
    )
    engine = engine_with(scorer, set(range(PARTITIONS)), settings)
    engine.wall_clock = lambda: wall
    return engine


def test_what_later_inputs_of_a_batch_change_never_reaches_the_decisions_before_them(
    scorer: IncrementalScorer,
) -> None:
    """Pass 2 runs after all of pass 1: releases read the engagement as it was where they were queued,
    and a consent change, an expiry or a new time zone first finishes the user's queued work. Cut into
    batches of 1, 29 or the whole stream, the pushes and every stored byte are the same."""
    records = _unsettled_stream(2500)
    reference_store = DictState()
    reference = run(_unsettled_engine(scorer, records), records, reference_store, len(records))
    assert len(reference) > 20, "the stream should produce pushes"
    for batch in (1, 29):
        store = DictState()
        assert run(_unsettled_engine(scorer, records), records, store, batch) == reference
        assert store.data == reference_store.data


def _exact(value: Any) -> Any:
    """``value`` as nested tuples that hold every type and every float's bits: two values give equal
    results only when a decision could not tell them apart (``numpy.float64`` is not ``float``, a
    tuple is not a list, ``-0.0`` is not ``0.0``)."""
    if isinstance(value, float):
        return (type(value).__name__, value.hex())
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, Engagement):
        names = ("items", "earlier_purchases", "last_ts", "visits", "active_ts", "max_items", "max_purchases")
        return ("Engagement", tuple(_exact(getattr(value, n)) for n in names))
    if isinstance(value, BaseModel):
        return (type(value).__name__, _exact(dict(value)))
    if isinstance(value, msgspec.Struct):
        struct_fields = [f.name for f in msgspec.structs.fields(value)]
        return (type(value).__name__, tuple((n, _exact(getattr(value, n))) for n in struct_fields))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value).__name__, tuple((f.name, _exact(getattr(value, f.name))) for f in fields))
    if isinstance(value, dict | OrderedDict):
        return (type(value).__name__, tuple((_exact(k), _exact(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | deque):
        return (type(value).__name__, tuple(_exact(v) for v in value))
    return (type(value).__name__, value)


def _cold(store: DictState, partition: int, user_id: str, settings: Settings) -> tuple[Any, Any]:
    """A user's record as a batch decodes it from the store (``UserRecords.load`` without the cache),
    less the two fields a warm record leaves empty: the encoding's copies of the engagement (decoded
    beside it) and of the partition's timers, rewritten by every save and read by no batch."""
    raw = store.get(partition, user_id.encode())
    assert raw is not None, f"a warm user without a stored record: {user_id}"
    state = UserState.from_bytes(raw)
    bounds = settings.policy.engagement_max_items, settings.policy.engagement_max_purchases
    engagement = Engagement.from_record(state.engagement, *bounds)
    state.engagement, state.timers = EngagementRecord(), []
    return state, engagement


def test_warm_users_are_what_the_store_decodes_to_after_every_batch(scorer: IncrementalScorer) -> None:
    """The records kept warm between batches (``stream.warm_users``) equal, value and type, what the next
    batch would decode from the store; with them off (0) every stored byte and push is the same."""
    records = _unsettled_stream(2500)

    cold_store = DictState()
    cold = run(_unsettled_engine(scorer, records, warm_users_per_partition=0), records, cold_store, 11)
    assert len(cold) > 20, "the stream should produce pushes"

    warm_engine = _unsettled_engine(scorer, records, warm_users_per_partition=4096)
    store = DictState()
    pushes: list[str] = []
    checked, held = 0, 0
    for start in range(0, len(records), 11):
        out = warm_engine.process(records[start : start + 11], store)
        pushes += [p.push_id for _, p in out.pushes]
        for partition, part in warm_engine.parts.items():
            for user_id, state, engagement in part.warm_users.items():
                cold_record = _cold(store, partition, user_id, warm_engine.settings)
                assert _exact((state, engagement)) == _exact(cold_record)
                checked += 1
                held += len(state.policy.held)
    assert checked > 5 * len(records), "warm users should have been checked after every batch"
    assert held > 0, "some checked users should hold pushes (quiet hours, send time)"
    assert pushes == cold
    assert store.data == cold_store.data


def test_warm_users_are_bounded_per_partition(scorer: IncrementalScorer) -> None:
    records = stream(600)
    settings = make_settings({"warm_users_per_partition": 5}, threshold=0.05, min_threshold=0.0)
    engine = engine_with(scorer, set(range(PARTITIONS)), settings)
    run(engine, records, DictState(), 50)
    assert [len(part.warm_users) for part in engine.parts.values()] == [5] * PARTITIONS


def test_records_written_for_older_workers_give_the_same_decisions(scorer: IncrementalScorer) -> None:
    """``worker.user_record_version`` 2 writes every user record as ``K2`` (what workers before ``K3``
    read) and changes nothing else: the same pushes, every other row's bytes, and each record decodes to
    the state its ``K3`` record holds, value and type."""
    records = _unsettled_stream(2500)
    current, older = DictState(), DictState()
    pushes = run(_unsettled_engine(scorer, records), records, current, 11)
    assert len(pushes) > 20, "the stream should produce pushes"
    assert run(_unsettled_engine(scorer, records, user_record_version=2), records, older, 11) == pushes
    assert current.data.keys() == older.data.keys()
    users = 0
    for key, value in current.data.items():
        old = older.data[key]
        if value is not None and value[:2] == b"K3":
            assert old is not None and old[:2] == b"K2"
            assert _exact(UserState.from_bytes(old)) == _exact(UserState.from_bytes(value))
            users += 1
        else:
            assert old == value
    assert users > 50
