"""Feedback: attribution to pushes (ids, purchase windows) and the bounded responsiveness rule."""

from __future__ import annotations

from typing import Any

import pytest

from stream.contract import Event
from stream.feedback import apply_feedback, settle_ignored
from stream.policy import PushRecord, UserPolicyState, current_offset, decide
from tests.policy.conftest import T0, candidate, config

HOUR = 3600.0


def event(kind: str, ts: float, **fields: Any) -> Event:
    return Event(event_id=f"e{ts}{kind}", user_id="u1", type=kind, ts=ts, **fields)  # type: ignore[arg-type]


def state_with(*records: PushRecord) -> UserPolicyState:
    return UserPolicyState(pushes=list(records))


def record(push_id: str = "p1", item: str = "i1", at: float = T0, trigger: str = "price_drop") -> PushRecord:
    return PushRecord(push_id, item, "shoes", trigger, at, at + HOUR)


def test_open_click_dismiss_by_push_id_once():
    cfg = config()
    state = state_with(record())
    opened = apply_feedback(state, event("push_open", T0 + 60, item_id="i1", push_id="p1"), cfg)
    assert (opened.kind, opened.trigger, opened.seconds_after_push) == ("open", "price_drop", 60)
    assert (
        apply_feedback(state, event("push_open", T0 + 61, item_id="i1", push_id="p1"), cfg) is None
    )  # redelivery
    clicked = apply_feedback(state, event("push_click", T0 + 90, item_id="i1", push_id="p1"), cfg)
    assert clicked.kind == "click" and state.pushes[0].clicked_at == T0 + 90
    assert apply_feedback(state, event("push_open", T0 + 9, item_id="i1", push_id="unknown"), cfg) is None
    state2 = state_with(record())
    assert (
        apply_feedback(state2, event("push_click", T0 + 5, item_id="i1", push_id="p1"), cfg).kind == "click"
    )
    assert state2.pushes[0].opened_at == T0 + 5  # a click implies the push was seen
    dismissed = apply_feedback(
        state_with(record()), event("push_dismiss", T0 + 5, item_id="i1", push_id="p1"), cfg
    )
    assert dismissed.kind == "dismiss" and dismissed.offset_after > dismissed.offset_before


def test_a_push_read_back_after_a_crash_answers_no_feedback_until_its_decision_meets_it():
    """Crash fuzz (session 50, seed 9): the redelivered input held a dismissal before the decision of a
    push read back at recovery; the run without the crash had no such push there and counted nothing,
    the recovered one took it. Until its decision, made again, meets it (``recovered`` cleared), or
    ``UNMET_RECOVERED_SECONDS`` after it went out, such a push answers nothing and is never ignored."""
    cfg = config(ignore_after_seconds=60.0)
    earlier = record("p0", at=T0 - HOUR)
    back = record("p1", at=T0 + 600)
    back.recovered = True
    state = state_with(earlier, back)
    assert apply_feedback(state, event("push_dismiss", T0 + 400, item_id="i1", push_id="p1"), cfg) is None
    bought = apply_feedback(state, event("purchase", T0 + 700, item_id="i1", price=10.0), cfg)
    assert bought is not None and bought.push_id == "p0"  # the push the run without the crash credited
    assert [f.push_id for f in settle_ignored(state, T0 + 900, cfg)] == ["p0"]  # not p1
    assert back.dismissed_at is None and back.purchased_at is None and back.ignored_at is None
    back.recovered = False  # its decision came
    assert apply_feedback(state, event("push_dismiss", T0 + 950, item_id="i1", push_id="p1"), cfg) is not None


def test_purchase_attribution_window_edges():
    cfg = config(attribution_window_seconds=24 * HOUR)
    at_edge = state_with(record())
    bought = apply_feedback(
        at_edge, event("purchase", T0 + 24 * HOUR, item_id="i1", price=20.0, quantity=2), cfg
    )
    assert bought.kind == "purchase" and bought.revenue == 40.0 and at_edge.pushes[0].revenue == 40.0
    late = state_with(record())
    assert apply_feedback(late, event("purchase", T0 + 24 * HOUR + 1, item_id="i1", price=20.0), cfg) is None
    before = state_with(record())
    assert apply_feedback(before, event("purchase", T0 - 1, item_id="i1", price=20.0), cfg) is None
    other = state_with(record())
    assert apply_feedback(other, event("purchase", T0 + 5, item_id="i2", price=20.0), cfg) is None
    # The most recent push of the item gets the purchase, and each push at most one.
    two = state_with(record("old", at=T0), record("new", at=T0 + HOUR))
    assert (
        apply_feedback(two, event("purchase", T0 + 2 * HOUR, item_id="i1", price=5.0), cfg).push_id == "new"
    )
    assert (
        apply_feedback(two, event("purchase", T0 + 2 * HOUR, item_id="i1", price=5.0), cfg).push_id == "old"
    )
    assert apply_feedback(two, event("purchase", T0 + 2 * HOUR, item_id="i1", price=5.0), cfg) is None


def test_engagement_lowers_the_threshold_and_ignoring_raises_it_within_bounds():
    cfg = config(responsiveness_min=-0.1, responsiveness_max=0.2)
    state = UserPolicyState()
    for n in range(30):
        state.pushes.append(record(f"p{n}", at=T0 + n))
        apply_feedback(state, event("push_click", T0 + n + 1, item_id="i1", push_id=f"p{n}"), cfg)
        apply_feedback(state, event("purchase", T0 + n + 2, item_id="i1", price=1.0), cfg)
    low = current_offset(state, T0 + 100, cfg)
    assert low == pytest.approx(-0.1, abs=1e-4)
    [(_, verdict)] = decide("u1", [candidate(interest=0.45, event_ts=T0 + 100)], state_with(), T0 + 100, cfg)
    assert verdict.reason == "below_threshold"
    state.pushes = []
    [(_, verdict)] = decide("u1", [candidate(interest=0.45, event_ts=T0 + 100)], state, T0 + 100, cfg)
    assert verdict.outcome == "emit" and verdict.threshold == pytest.approx(0.4, abs=1e-4)

    ignored = UserPolicyState()
    for n in range(30):
        ignored.pushes.append(record(f"q{n}", at=T0 + n))
    outcomes = settle_ignored(ignored, T0 + cfg.ignore_after_seconds + 29, cfg)
    assert len(outcomes) == 30 and {o.kind for o in outcomes} == {"ignored"}
    assert current_offset(ignored, T0 + cfg.ignore_after_seconds + 29, cfg) == pytest.approx(0.2)
    assert settle_ignored(ignored, T0 + 10 * cfg.ignore_after_seconds, cfg) == []  # each push once


def test_ignored_only_after_the_delay_and_without_reaction():
    cfg = config(ignore_after_seconds=6 * HOUR)
    state = state_with(record("a"), record("b"))
    apply_feedback(state, event("push_open", T0 + 60, item_id="i1", push_id="b"), cfg)
    assert settle_ignored(state, T0 + 6 * HOUR - 1, cfg) == []
    [outcome] = settle_ignored(state, T0 + 6 * HOUR, cfg)
    assert outcome.push_id == "a" and outcome.offset_after > outcome.offset_before


def test_offset_decays_toward_zero():
    cfg = config(responsiveness_half_life_seconds=10 * 86400.0)
    state = UserPolicyState(responsiveness=0.2, responsiveness_ts=T0)
    assert current_offset(state, T0 + 10 * 86400.0, cfg) == pytest.approx(0.1)
    assert current_offset(state, T0 + 100 * 86400.0, cfg) == pytest.approx(0.0, abs=1e-3)
