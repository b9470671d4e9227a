"""``Decider.earliest_timer``: the bound, known before scoring, on any timer a decision's plan may set.

The engine keeps pass 2 open until a partition's clock reaches it (``stream.asks.Work.first_due``),
so each term must be a true lower bound: quiet hours, a learned send time, a reminder that waits.
Batching invariance itself is tested across batch sizes (``test_engine``, ``test_session_end``,
``test_real_model_replay``); these pin each term.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from stream.asks import Ask, BatchUser, next_minute
from stream.engagement import Engagement
from stream.engine import Engine
from stream.plan import on_minute
from stream.policy_state import PushRecord
from stream.send_time import EngagementHours
from stream.state import UserState
from stream.timers import Timer
from tests.stream.fakes import make_engine, make_settings

BERLIN = "Europe/Berlin"
DAY = 86400.0


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a Berlin wall-clock time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(BERLIN)).timestamp()


def engine(**policy: Any) -> Engine:
    values: dict[str, Any] = {"quiet_hours_start": "22:00", "quiet_hours_end": "08:00"}
    values.update(policy)
    return make_engine(make_settings(**values))


def ask(
    now: float, state: UserState | None = None, rearm: bool = False, hours: EngagementHours | None = None
) -> Ask:
    """A decision for a shopper in Berlin at ``now`` (the fields the bound reads; the rest empty)."""
    state = state or UserState()
    state.policy.time_zone = BERLIN
    user = BatchUser("u1", 0, state, Engagement())
    timer = Timer(now, "u1", "reminder", "", "e1", now - DAY) if rearm else None
    send_hours = hours.to_list() if hours is not None else None
    return Ask(user, "reminder", "e1", now, now, (), (), {}, None, True, send_hours=send_hours, rearm=timer)


def habit(now: float) -> EngagementHours:
    """A shopper with a learned send time: engaged seven hours after ``now``'s time on 14 past days."""
    hours = EngagementHours(21 * DAY)
    for day in range(1, 15):
        hours.observe(now - day * DAY + 7 * 3600, ZoneInfo(BERLIN))
    return hours


def test_a_daytime_decision_for_a_new_shopper_sets_no_timer() -> None:
    assert engine().decider.earliest_timer(ask(at(2024, 3, 1, 12, 0, 30)), False) is None


def test_a_decision_in_quiet_hours_may_hold_until_they_end() -> None:
    e = engine()
    assert e.decider.earliest_timer(ask(at(2024, 3, 1, 23, 30)), False) == at(2024, 3, 2, 8)
    # Dropped instead of held: no timer.
    dropped = engine(quiet_hours_action="drop")
    assert dropped.decider.earliest_timer(ask(at(2024, 3, 1, 23, 30)), False) is None


def test_a_learned_send_time_may_wait_from_the_next_quarter_hour() -> None:
    now = at(2024, 3, 1, 12, 7, 30)
    hours = habit(now)
    assert hours.total(now) >= 8
    assert engine().decider.earliest_timer(ask(now, hours=hours), False) == at(2024, 3, 1, 12, 15)
    # Send time off, or too few observations: no wait.
    assert engine(send_time_enabled=False).decider.earliest_timer(ask(now, hours=hours), False) is None
    few = engine(send_time_min_observations=1000.0)
    assert few.decider.earliest_timer(ask(now, hours=hours), False) is None


def test_a_reminder_waits_at_least_a_gap_after_its_oldest_recent_push() -> None:
    now = at(2024, 3, 1, 12, 0, 30)
    state = UserState()
    state.policy.pushes = [
        PushRecord("p1", "i1", None, "in_session", now - 2 * DAY, now),  # outside the day's gap
        PushRecord("p2", "i2", None, "in_session", now - 5 * 3600, now),
        PushRecord("p3", "i3", None, "in_session", now - 3600, now),
    ]
    e = engine(reminder_push_gap_seconds=DAY)
    assert e.decider.earliest_timer(ask(now, state, rearm=True), False) == on_minute(now - 5 * 3600 + DAY)
    # A decision or release queued before it may add a push now: the next minute.
    assert e.decider.earliest_timer(ask(now, state, rearm=True), True) == next_minute(now)
    # Not a reminder moment, or no gap: no wait.
    assert e.decider.earliest_timer(ask(now, state), False) is None
    assert (
        engine(reminder_push_gap_seconds=0.0).decider.earliest_timer(ask(now, state, rearm=True), False)
        is None
    )


def test_the_earliest_of_the_terms_on_a_whole_minute_after_the_decision() -> None:
    now = at(2024, 3, 1, 23, 59, 50)
    state = UserState()
    state.policy.pushes = [PushRecord("p1", "i1", None, "in_session", now - DAY + 5, now)]
    e = engine(reminder_push_gap_seconds=DAY)
    # The reminder could wait until 5 s from now: the timer is due at the next whole minute.
    assert e.decider.earliest_timer(ask(now, state, rearm=True), False) == next_minute(now)
