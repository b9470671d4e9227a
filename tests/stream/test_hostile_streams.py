"""Hostile but valid streams (``tests/stream/hostile_streams.py``): the engine never raises, refuses
exactly the invalid records, never pushes against consent or the quiet hours, never pushes one id
twice nor a push expired at creation, and decides the same pushes and stored bytes however the stream
is cut into batches and wherever the catalog reader delivers an update before its time. A crash after
a batch (its pushes out, its writes lost, the batch delivered again to an engine restarted from the
store) changes no push and no stored byte, with the event clock and with the wall clock.

The generator is seeded (CI runs fixed seeds); ``KAIROS_FUZZ_SEEDS`` runs more of them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from stream.engine import Engine, Outcome
from stream.partition_rows import META_ROW
from stream.partitioning import partition_for
from stream.quiet_hours import in_quiet_hours
from stream.settings import Settings
from stream.state import UserState
from stream.user_facts import user_zone
from tests.stream.fakes import PARTITIONS, DictState, FakeScorer, make_settings
from tests.stream.hostile_streams import (
    KNOWN_ITEMS,
    USERS,
    BatchClock,
    Generator,
    Stream,
    bootstrap_catalog,
    run,
    run_with_crashes,
)
from tests.stream.test_real_model_replay import PRODUCTION

QUIET = {"quiet_hours_start": "22:00", "quiet_hours_end": "08:00"}
# (worker, policy) settings, each seed runs one: the production decision path with timers, quiet
# hours, send time and expiry; the throttle with quiet hours dropping and consent off by default;
# a window of quiet hours across midnight with every event deciding and one event id remembered.
VARIANTS: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
    (
        {"user_ttl_seconds": 6 * 3600.0},
        {**PRODUCTION, **QUIET, "send_time_enabled": True, "reminder_seconds": 4 * 3600.0},
    ),
    ({}, {**QUIET, "quiet_hours_action": "drop", "max_pushes_per_minute": 8.0, "min_gap_seconds": 600.0}),
    (
        {"dedupe_event_ids": 1, "decision_interval_seconds": 0.0},
        {
            **PRODUCTION,
            "quiet_hours_start": "23:30",
            "quiet_hours_end": "02:30",
            "reminder_seconds": 3600.0,
            "min_gap_seconds": 0.0,
            "promotion_ending_lead_seconds": 600.0,
        },
    ),
    # The production decision path under the throttle: pushes wait for budget while their users come
    # back to the site, move to other zones or reach their quiet hours.
    (
        {"user_ttl_seconds": 6 * 3600.0},
        {**PRODUCTION, **QUIET, "max_pushes_per_minute": 2.0, "reminder_seconds": 3600.0},
    ),
)


def settings_for(variant: int) -> Settings:
    worker, policy = VARIANTS[variant % len(VARIANTS)]
    values: dict[str, Any] = {"returning_visit_seconds": 0.0, **policy, "trigger_thresholds": {}}
    return make_settings(dict(worker), threshold=0.02, min_threshold=0.0, **values)


def new_engine(variant: int, clock: BatchClock | None = None) -> Engine:
    """An engine with the variant's settings; with ``clock``, production's wall clock (driven by it)."""
    settings = settings_for(variant)
    if clock is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"clock": "wall"})}
        )
    engine = Engine(settings, FakeScorer(items=KNOWN_ITEMS, decay=0.9), clock=clock or (lambda: 0.0))
    engine.wall_clock = lambda: 4.2e9  # every valid time is in the past: none is refused for skew
    engine.owned = set(range(PARTITIONS))
    engine.apply_catalog(bootstrap_catalog(), DictState(), announce=False)
    return engine


def pushed(out: Outcome) -> list[tuple[int, str]]:
    return [(p, push.model_dump_json()) for p, push in out.pushes]


def stepwise(variant: int, stream: Stream) -> tuple[list[str], Outcome, DictState]:
    """The stream one record at a time (catalog slices in place), checking every push where it is made."""
    engine, store, total = new_engine(variant), DictState(), Outcome()
    cfg = engine.cfg
    start, end = cfg.quiet_minutes()
    window = cfg.active_window_seconds
    problems: list[str] = []
    sent: dict[str, float] = {}  # push id -> when it went out
    # Push id -> event time of its cause. An id comes again for an event id reused after the user's
    # record forgot it (expired or erased; the contract asks producers for unique event ids): the
    # same id for another cause, not the same push twice.
    ids: dict[str, float] = {}
    for k, (kind, value) in enumerate(stream.steps):
        before = {u: store.get(partition_for(u, PARTITIONS), u.encode()) for u in USERS}
        out = engine.apply_catalog(value, store) if kind == "cat" else engine.process([value], store)
        for _, push in out.pushes:
            where = f"step {k}: {push.trigger} push {push.push_id} to {push.user_id!r}"
            if ids.get(push.push_id) == push.event_ts:
                problems.append(f"{where}: the id was pushed before")
            ids[push.push_id] = push.event_ts
            if push.expires_at <= push.created_at:
                problems.append(f"{where}: expired at creation")
            raw = store.get(partition_for(push.user_id, PARTITIONS), push.user_id.encode())
            if raw is None:
                problems.append(f"{where}: the user was erased")
                continue
            policy = UserState.from_bytes(raw).policy
            if not (cfg.consent_default if policy.opted_in is None else policy.opted_in):
                problems.append(f"{where}: the user opted out")
            # Quiet hours in the zone known after the record, or before it (a timer it fired).
            zones = [user_zone(policy, cfg)]
            raw_before = before.get(push.user_id)
            was = None if raw_before is None else UserState.from_bytes(raw_before)
            if was is not None:
                zones.append(user_zone(was.policy, cfg))
            quiet = start != end and all(in_quiet_hours(push.created_at, z, start, end) for z in zones)
            if quiet:
                problems.append(f"{where}: in quiet hours at {push.created_at}")
            # Never to a shopper on the site: no event of theirs within the active window before the
            # push (as recorded before this step: a push may come before the step's own event).
            if window > 0 and was is not None:
                last = was.engagement.last_ts
                if last is not None and push.created_at - last < window:
                    problems.append(f"{where}: at {push.created_at}, to a shopper active at {last}")
            # The gap to the user's previous push as they got it (a throttled one went out late), among
            # the pushes their record knows (an erasure or expiry forgets them) or this step sent.
            known = [r.push_id for r in policy.pushes if not r.ghost and r.push_id != push.push_id]
            gaps = [push.created_at - sent[i] for i in known if i in sent]
            if cfg.min_gap_seconds > 0 and any(0 <= g < cfg.min_gap_seconds for g in gaps):
                problems.append(f"{where}: at {push.created_at}, {min(gaps):.0f} s after their last push")
            # And the rolling caps, counted the same way.
            for days, cap in ((1, cfg.max_pushes_per_24h), (7, cfg.max_pushes_per_7d)):
                if 1 + sum(1 for g in gaps if 0 <= g < days * 86_400) > cap:
                    problems.append(f"{where}: over the {days}-day cap of {cap}")
            sent[push.push_id] = push.created_at
        total.extend(out)
    total.extend(engine.tick(store))
    if len(total.dead_letters) != stream.invalid:
        reasons = [d.reason for d in total.dead_letters]
        problems.append(f"{len(reasons)} dead letters for {stream.invalid} invalid records: {reasons}")
    return problems, total, store


def feedback_stream(seed: int, n: int, variant: int, tombstones: bool = True) -> Stream:
    """The seed's stream with feedback for the pushes it made without (some before they are made)."""
    first = Generator(seed, n, tombstones=tombstones).build()
    out = run(new_engine(variant), first, DictState(), len(first.steps), early_catalog=not tombstones)
    pushed = [(p.user_id, p.item_id, p.push_id) for _, p in out.pushes]
    return Generator(seed, n, tombstones=tombstones, pushed=pushed).build()


def check_seed(seed: int, n: int) -> int:
    """One seed both ways: catalog slices where they are (tombstones included: they have no time), and
    before the batch that holds them. Returns the pushes made."""
    variant = seed % len(VARIANTS)
    stream = feedback_stream(seed, n, variant)
    problems, total, store = stepwise(variant, stream)
    assert not problems, f"seed {seed}: {problems[:5]}"
    reference = pushed(total)
    for batch in (7, 29, len(stream.steps)):
        other = DictState()
        assert pushed(run(new_engine(variant), stream, other, batch, early_catalog=False)) == reference, seed
        assert other.data == store.data, (seed, batch)
    # Ticks between the batches (the catalog's retention, the expiry sweep) change nothing either.
    ticked = pushed(run(new_engine(variant), stream, DictState(), 29, early_catalog=False, tick_each=True))
    assert ticked == reference, f"seed {seed}: a tick after every batch"
    early = feedback_stream(seed, n, variant, tombstones=False)
    stores, outs = [], []
    for batch in (1, 29, len(early.steps)):
        state = DictState()
        outs.append(pushed(run(new_engine(variant), early, state, batch, early_catalog=True)))
        stores.append(state.data)
    assert outs[1:] == outs[:1] * 2 and stores[1:] == stores[:1] * 2, f"seed {seed}: catalog read early"
    return len(reference)


# CI's seeds, and seeds on which the fuzz found a bug (11068: a push waiting for the throttle's budget
# went out in the quiet hours of the zone its user had moved to; 279 and 739: one went out while its
# user was on the site, back since the decision in the same batch and in a later one; 561: one went
# out at the minute another push to its user was decided; 12351: the expiry sweep removed a user at
# batch size 1 and kept it in one batch).
SEEDS = [int(s) for s in os.environ.get("KAIROS_FUZZ_SEEDS", "").split(",") if s] or [
    *range(12),
    279,
    561,
    739,
    11068,
    12351,
]


@pytest.mark.parametrize("seed", SEEDS)
def test_hostile_streams_break_no_rule_and_decide_the_same_however_cut(seed: int) -> None:
    check_seed(seed, 250)


# (seed, batch, crash after every n-th batch): CI's seeds, and those on which the crash harness found
# a difference with the run without crashes. A push went out twice: 21, 29 (session 49), 805 (an
# erasure redelivered before a recovered push's decision), 125 (the same, batches of 13). Another push
# went out: 187 and 215 (a catalog change announced by the lost batch, never again). Other stored
# rows: 13 and 855 (the throttle's budget), 73 (a recovered push blocked a decision that came before
# its own in the stream), 0 and 9 (the outcome estimates and feedback) are CI seeds.
CRASHES = (
    [(s, 29, 3) for s in SEEDS]
    if os.environ.get("KAIROS_FUZZ_SEEDS")
    else [
        *((s, 29, 3) for s in SEEDS if s < 12),
        *((s, 29, 3) for s in (13, 21, 29, 73, 187, 215, 805, 855)),
        (125, 13, 1),
    ]
)


@pytest.mark.parametrize(("seed", "batch", "every"), CRASHES)
def test_a_crash_after_a_batch_changes_no_push_and_no_stored_byte(seed: int, batch: int, every: int) -> None:
    """A crash after every ``every``-th batch, after its pushes went out and before its state was
    written (``hostile_streams.run_with_crashes``): recovery reads them back and the redelivered batch
    decides again. No push goes out twice, none is lost or added, and the store ends byte for byte as
    in the run without crashes: the recovered pushes' decisions complete their records, the throttle's
    budget and the outcome estimates as they did then, and catalog changes the lost batch announced
    are announced again (the partition's announced-until is stored)."""
    variant = seed % len(VARIANTS)
    stream = feedback_stream(seed, 250, variant, tombstones=False)
    store, crashed = DictState(), DictState()
    reference = run(new_engine(variant), stream, store, batch, early_catalog=True)
    out = run_with_crashes(lambda: new_engine(variant), stream, crashed, batch=batch, every=every)
    # An id comes again for an event id reused after the user's record forgot it (the run without
    # crashes sends both too: stepwise's check): the same id for another cause, not a push twice.
    sent = [(push.push_id, push.event_ts) for _, push in out.pushes]
    assert len(sent) == len(set(sent)), f"seed {seed}: a push went out twice"
    assert pushed(out) == pushed(reference), f"seed {seed}: other pushes"
    assert crashed.data == store.data, f"seed {seed}: other stored rows"


def without_announced_until(data: dict[tuple[int, bytes], bytes]) -> dict[tuple[int, bytes], Any]:
    """The stored rows, each partition row without its catalog announced-until (``"a"``)."""
    rows: dict[tuple[int, bytes], Any] = dict(data)
    for key in [k for k in rows if k[1] == META_ROW]:
        meta = json.loads(rows[key])
        meta.pop("a", None)
        rows[key] = meta
    return rows


# Seeds whose streams push with the wall clock (most events are stale there: a batch runs 30 s after
# its latest event, and its earlier events may be older than max_event_lag_seconds), with in-session,
# cart-abandonment, discovery and catalog pushes, the throttle's variant among them.
WALL_CRASHES = [*((s, 29, 3) for s in (9, 37, 142, 161, 190, 197)), (161, 13, 1), (190, 13, 1)]


@pytest.mark.parametrize(("seed", "batch", "every"), WALL_CRASHES)
def test_with_the_wall_clock_a_crash_changes_no_push(seed: int, batch: int, every: int) -> None:
    """The crash test with production's wall clock (``hostile_streams.BatchClock``: each batch, and
    the tick after it, at a wall time of its own records, the same when it is delivered again): timers
    fire at the ticks, catalog changes are announced on arrival. The same pushes, and the same stored
    rows but for the partition's announced-until: an idle tick moves it without writing it (a row per
    partition and tick otherwise), so a restart reads it as of its last write; every change up to either
    value was announced (a change read later in that gap is announced at the next tick instead of on
    arrival). Scratch runs: 601 streams at 29/3 and 301 at 13/1, no push differed."""
    variant = seed % len(VARIANTS)
    stream = feedback_stream(seed, 250, variant, tombstones=False)
    clock, crash_clock = BatchClock(), BatchClock()
    store, crashed = DictState(), DictState()
    reference = run(new_engine(variant, clock), stream, store, batch, early_catalog=True, clock=clock)
    out = run_with_crashes(
        lambda: new_engine(variant, crash_clock), stream, crashed, batch, every, clock=crash_clock
    )
    assert pushed(reference), f"seed {seed}: no push to compare"
    sent = [(push.push_id, push.event_ts) for _, push in out.pushes]
    assert len(sent) == len(set(sent)), f"seed {seed}: a push went out twice"
    assert pushed(out) == pushed(reference), f"seed {seed}: other pushes"
    assert without_announced_until(crashed.data) == without_announced_until(store.data), seed


def test_hostile_streams_of_the_ci_seeds_make_pushes() -> None:
    """The property test means something only if its streams push (and reach the timers)."""
    total = Outcome()
    for seed in (13, 17):
        total.extend(stepwise(seed % len(VARIANTS), feedback_stream(seed, 250, seed % len(VARIANTS)))[1])
    assert len(total.pushes) >= 20 and total.erasures and total.consent_updates and total.feedback
    assert {"in_session", "cart_abandonment"} <= {p.trigger for _, p in total.pushes}
