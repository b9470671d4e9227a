"""Timers: due order, cancel, reschedule, bounds, serialisation, cart abandonment and promotion ending."""

from __future__ import annotations

import json
import random

import pytest

from stream.contract import Promotion
from stream.timers import (
    REMINDER_AGAIN,
    Timer,
    TimerQueue,
    on_behaviour,
    reminder_again,
    schedule_promotion_ending,
)
from tests.policy.conftest import T0, config


def timer(user: str, item: str, due: float, kind: str = "cart_abandonment") -> Timer:
    return Timer(due, user, kind, item, f"cause-{item}", T0)


def test_pop_due_in_order_and_inclusive():
    q = TimerQueue()
    q.schedule(timer("u1", "b", T0 + 20))
    q.schedule(timer("u2", "a", T0 + 10))
    q.schedule(timer("u1", "c", T0 + 30))
    assert q.next_due() == T0 + 10
    assert q.pop_due(T0 + 9) == []
    assert [t.item_id for t in q.pop_due(T0 + 20)] == ["a", "b"]  # due_at == now is due
    assert len(q) == 1 and [t.item_id for t in q.pop_due(T0 + 1000, limit=5)] == ["c"]
    assert q.next_due() is None


def test_cancel_and_reschedule():
    q = TimerQueue()
    q.schedule(timer("u1", "a", T0 + 10))
    q.schedule(timer("u1", "a", T0 + 50))  # same key: moved, not duplicated
    assert len(q) == 1 and q.get("u1", "cart_abandonment", "a").due_at == T0 + 50
    assert q.pop_due(T0 + 10) == []
    assert q.cancel("u1", "cart_abandonment", "a") and not q.cancel("u1", "cart_abandonment", "a")
    assert q.pop_due(T0 + 100) == []
    q.schedule(timer("u1", "a", T0 + 1))
    q.schedule(timer("u1", "b", T0 + 2, kind="promotion_ending"))
    q.schedule(timer("u2", "a", T0 + 3))
    assert q.cancel_user("u1") == 2 and [t.user_id for t in q.pop_due(T0 + 5)] == ["u2"]


def test_bounds_total_and_per_user():
    q = TimerQueue(max_timers=10, max_per_user=3)
    for n in range(5):
        q.schedule(timer("u1", f"i{n}", T0 + 100 - n))  # later items are due sooner
    assert sorted(t.item_id for t in q.timers_for("u1")) == ["i2", "i3", "i4"]  # the latest due went
    for n in range(20):
        q.schedule(timer(f"v{n}", "x", T0 + n))
    assert len(q) == 10 and q.refused == 13
    # Churn does not grow the heap without bound (stale entries are compacted).
    for n in range(2000):
        q.schedule(timer("u1", "i4", T0 + n))
    assert len(q._heap) <= 2 * len(q) + 65


@pytest.mark.parametrize("seed", range(5))
def test_queue_fires_like_a_plain_sorted_list(seed: int):
    """Pushed-back timers keep their heap entry until it reaches the top (``TimerQueue._settle``): the
    queue must still fire exactly what a plain sorted list of the live timers would, in due then key
    order, and report the same next due time, whatever mix of schedules, re-arms (``rearm``: a timer
    pushed back is updated in place), cancels and pops; and ``may_be_due`` never says no when a timer
    is due."""
    rng = random.Random(seed)
    q = TimerQueue(max_timers=1_000, max_per_user=1_000)
    live: dict[tuple[str, str, str], Timer] = {}
    now = T0
    for step in range(3_000):
        op = rng.random()
        key = (f"u{rng.randrange(8)}", rng.choice(["session_end", "reminder"]), "")
        if op < 0.6:
            t = Timer(now + rng.choice([0, 5, 10, 30, 60, 120]), key[0], key[1], "", f"e{step}", now)
            if rng.random() < 0.5:
                assert q.schedule(t)
            else:
                assert q.rearm(t.user_id, t.kind, t.item_id, t.due_at, t.cause, t.created_at)
            live[key] = t
        elif op < 0.7:
            assert q.cancel(*key) == (live.pop(key, None) is not None)
        else:
            now += rng.choice([0, 1, 7, 20])
            expected = sorted((t for t in live.values() if t.due_at <= now), key=lambda t: (t.due_at, t.key))
            if expected:  # the engine's per-event check before it pops (may say yes when nothing is)
                assert q.may_be_due(now)
            elif not q.may_be_due(now):
                assert q.pop_due(now) == []
            assert q.pop_due(now) == expected
            for t in expected:
                del live[t.key]
        assert q.next_due() == min((t.due_at for t in live.values()), default=None)
        assert len(q) == len(live)
        user = f"u{rng.randrange(8)}"  # a user's timers as stored with the user: soonest, then by kind
        mine = sorted((t for t in live.values() if t.user_id == user), key=lambda t: (t.due_at, t.kind))
        assert q.timers_for(user) == mine


def test_rearm_is_schedule_of_the_timer_it_describes():
    q = TimerQueue(max_timers=2, max_per_user=5)
    assert q.rearm("u1", "session_end", "", T0 + 10, "e1", T0)
    held = q.get("u1", "session_end", "")
    assert q.rearm("u1", "session_end", "", T0 + 20, "e2", T0 + 10)  # pushed back: the same object
    assert q.get("u1", "session_end", "") is held
    assert held == Timer(T0 + 20, "u1", "session_end", "", "e2", T0 + 10)
    assert q.rearm("u1", "session_end", "", T0 + 5, "e3", T0 + 1)  # brought forward: a timer of its own
    assert q.get("u1", "session_end", "") == Timer(T0 + 5, "u1", "session_end", "", "e3", T0 + 1)
    assert q.rearm("u2", "reminder", "", T0 + 1, "e4", T0)
    assert not q.rearm("u3", "reminder", "", T0 + 1, "e5", T0) and q.refused == 1  # full: refused
    assert [t.cause for t in q.pop_due(T0 + 100)] == ["e4", "e3"]


def test_round_trip():
    q = TimerQueue()
    q.schedule(timer("u1", "a", T0 + 10))
    q.schedule(timer("u2", "b", T0 + 5, kind="promotion_ending"))
    copy = TimerQueue.from_dict(json.loads(json.dumps(q.to_dict())))
    assert copy.pop_due(T0 + 10) == q.pop_due(T0 + 10)
    rebuilt = TimerQueue()
    rebuilt.extend(timer("u1", "a", T0 + 10) for _ in range(3))
    assert len(rebuilt) == 1


def test_cart_abandonment_lifecycle():
    cfg = config(cart_abandonment_delay_seconds=1800)
    q = TimerQueue.from_config(cfg)
    on_behaviour(q, "u1", "add_to_cart", "a", "e1", T0, cfg)
    on_behaviour(q, "u1", "add_to_cart", "b", "e2", T0, cfg)
    on_behaviour(q, "u1", "add_to_cart", "c", "e3", T0, cfg)
    on_behaviour(q, "u1", "purchase", "a", "e4", T0 + 60, cfg)
    on_behaviour(q, "u1", "remove_from_cart", "b", "e5", T0 + 60, cfg)
    on_behaviour(q, "u1", "view", "c", "e6", T0 + 60, cfg)
    on_behaviour(q, "u1", "search", None, "e7", T0 + 60, cfg)
    assert q.pop_due(T0 + 1799) == []
    [due] = q.pop_due(T0 + 1800)
    assert (due.kind, due.item_id, due.cause) == ("cart_abandonment", "c", "e3")
    # Carting again pushes the deadline back.
    on_behaviour(q, "u1", "add_to_cart", "d", "e8", T0, cfg)
    on_behaviour(q, "u1", "add_to_cart", "d", "e9", T0 + 600, cfg)
    assert q.pop_due(T0 + 1800) == [] and q.pop_due(T0 + 2400)[0].cause == "e9"


def test_promotion_ending():
    cfg = config(promotion_ending_lead_seconds=3600, session_end_seconds=0)
    q = TimerQueue.from_config(cfg)
    promo = Promotion(promotion_id="p1", discount=0.3, starts_at=T0, ends_at=T0 + 5 * 3600)
    assert schedule_promotion_ending(q, ["u1", "u2"], "i1", promo, T0, cfg) == 2
    assert q.pop_due(T0 + 4 * 3600 - 1) == []
    on_behaviour(q, "u2", "purchase", "i1", "e1", T0 + 10, cfg)  # bought: no reminder
    [due] = q.pop_due(T0 + 4 * 3600)
    assert (due.user_id, due.kind, due.cause) == ("u1", "promotion_ending", "p1")
    # Learnt late: due at once; after the end: nothing.
    assert schedule_promotion_ending(q, ["u3"], "i1", promo, T0 + 4.5 * 3600, cfg) == 1
    assert q.pop_due(T0 + 4.5 * 3600)[0].user_id == "u3"
    assert schedule_promotion_ending(q, ["u4"], "i1", promo, T0 + 5 * 3600, cfg) == 0


def test_every_behaviour_event_rearms_the_one_session_end_timer():
    cfg = config(session_end_seconds=1800, reminder_seconds=0)
    q = TimerQueue.from_config(cfg)
    on_behaviour(q, "u1", "view", "a", "e1", T0, cfg)
    on_behaviour(q, "u1", "search", None, "e2", T0 + 100, cfg)
    on_behaviour(q, "u1", "push_open", "a", "e3", T0 + 200, cfg)  # feedback is not activity
    on_behaviour(q, "u2", "view", "b", "e4", T0 + 50, cfg)
    assert [(t.user_id, t.cause) for t in q.pop_due(T0 + 1899)] == [("u2", "e4")]
    [due] = q.pop_due(T0 + 1900)
    assert (due.user_id, due.kind, due.item_id, due.cause, due.created_at) == (
        "u1",
        "session_end",
        "",
        "e2",
        T0 + 100,
    )
    off = config(session_end_seconds=0, reminder_seconds=0)
    on_behaviour(q, "u3", "view", "a", "e5", T0, off)
    assert len(q) == 0


def test_a_reminder_fires_only_when_the_shopper_stays_away():
    cfg = config(session_end_seconds=1800, reminder_seconds=86400)
    q = TimerQueue.from_config(cfg)
    on_behaviour(q, "u1", "view", "a", "e1", T0, cfg)
    on_behaviour(q, "u2", "view", "b", "e2", T0, cfg)
    on_behaviour(q, "u2", "view", "b", "e3", T0 + 20 * 3600, cfg)  # u2 came back: re-armed
    due = q.pop_due(T0 + 86400)
    assert [(t.user_id, t.kind) for t in due] == [
        ("u1", "session_end"),
        ("u2", "session_end"),
        ("u1", "reminder"),
    ]
    assert due[-1].cause == "e1" and due[-1].created_at == T0
    [later] = [t for t in q.pop_due(T0 + 20 * 3600 + 86400) if t.kind == "reminder"]
    assert (later.user_id, later.cause) == ("u2", "e3")
    on_behaviour(q, "u1", "push_open", "a", "e4", T0 + 90000, cfg)  # feedback is not a return
    assert q.get("u1", "reminder", "") is None


def test_the_reminder_again_is_armed_by_the_first_moment_only_and_a_return_cancels_it():
    cfg = config(session_end_seconds=1800, reminder_seconds=86400, reminder_again_seconds=86400)
    q = TimerQueue.from_config(cfg)
    on_behaviour(q, "u1", "view", "a", "e1", T0, cfg)
    [first] = [t for t in q.pop_due(T0 + 86400) if t.kind == "reminder"]
    again = reminder_again(first, cfg)
    assert again is not None
    assert (again.due_at, again.kind, again.item_id, again.cause, again.created_at) == (
        T0 + 2 * 86400,
        "reminder",
        REMINDER_AGAIN,
        "e1",
        T0,
    )
    assert reminder_again(again, cfg) is None  # no third moment
    assert reminder_again(first, config(reminder_seconds=86400, reminder_again_seconds=0)) is None
    assert reminder_again(timer("u1", "i1", T0), cfg) is None  # only the reminder has a second moment
    q.schedule(again)
    on_behaviour(q, "u1", "push_open", "a", "e2", T0 + 90000, cfg)  # feedback is not a return
    assert q.get("u1", "reminder", REMINDER_AGAIN) is again
    on_behaviour(q, "u1", "search", None, "e3", T0 + 100000, cfg)  # a return cancels it ...
    assert q.get("u1", "reminder", REMINDER_AGAIN) is None
    assert q.get("u1", "reminder", "") is not None  # ... and re-arms the first moment
