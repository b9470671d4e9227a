"""The one table of triggers (``stream/triggers.py``) and the asks its timer triggers make."""

from __future__ import annotations

from stream import contract, triggers
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.timers import TIMER_KINDS, Timer

T0 = 1_781_006_400.0
# Browse abandonment at the session end and abandoned items first at the reminder (both off by default):
# the mechanisms the first tests read; the last two tests switch them to the defaults.
CFG = PolicyConfig.model_validate(
    {
        "browse_min_views": 2,
        "session_end_max_items": 2,
        "quota_engaged": 5,
        "session_end_browse": True,
        "reminder_discovery_first": False,
    }
)


def test_the_table_matches_the_contract_and_every_timer_kind_has_a_trigger() -> None:
    assert set(triggers.TRIGGERS) == set(contract.TRIGGERS)
    assert set(triggers.TIMER_ASKS) == set(TIMER_KINDS)
    assert all(spec.doc and spec.name == name for name, spec in triggers.TRIGGERS.items())


def _engagement(*events: tuple[str, str, float]) -> Engagement:
    e = Engagement(20)
    for kind, item, ts in events:
        e.observe(kind, item, ts)
    return e


def _session() -> Engagement:
    """Viewed once, viewed twice, carted (in that order)."""
    return _engagement(
        ("view", "once", T0 - 50),
        ("view", "twice", T0 - 40),
        ("view", "twice", T0 - 30),
        ("add_to_cart", "carted", T0 - 20),
    )


def test_cart_abandonment_asks_only_while_the_item_is_in_the_cart() -> None:
    timer = Timer(T0 + 3600, "u1", "cart_abandonment", "i1", "ev-7", T0)
    carted = _engagement(("view", "i1", T0 - 10), ("add_to_cart", "i1", T0))
    asked = triggers.timer_ask(timer, carted, CFG)
    assert asked == triggers.TriggerAsk("cart_abandonment", "cart_abandonment:ev-7", T0, ("i1",), ("timer",))
    removed = _engagement(("add_to_cart", "i1", T0), ("remove_from_cart", "i1", T0 + 5))
    assert triggers.timer_ask(timer, removed, CFG) is None


def test_a_session_end_scores_every_engaged_item_and_may_push_only_the_abandoned_ones() -> None:
    timer = Timer(T0 + 1800, "u1", "session_end", "", "ev-9", T0)
    engagement = _session()
    asked = triggers.timer_ask(timer, engagement, CFG)
    assert asked is not None and asked.trigger == "browse_abandonment" and asked.cause == "session_end:ev-9"
    assert set(asked.items) == {"once", "twice", "carted"}
    assert asked.pushable == frozenset({"twice", "carted"})
    assert triggers.candidate_trigger(asked.trigger, in_cart=True) == "cart_abandonment"
    assert triggers.candidate_trigger(asked.trigger, in_cart=False) == "browse_abandonment"
    assert triggers.timer_ask(timer, Engagement(20), CFG) is None  # nothing engaged: nothing to ask


def test_a_reminder_asks_only_about_the_abandoned_items_with_a_cause_of_its_own() -> None:
    timer = Timer(T0 + 86400, "u1", "reminder", "", "ev-9", T0)
    engagement = _session()
    asked = triggers.timer_ask(timer, engagement, CFG)
    assert asked is not None
    assert (asked.trigger, asked.cause, asked.event_ts) == ("reminder", "reminder:ev-9", T0)
    assert asked.items == ("carted", "twice") and asked.pushable is None  # most recent first
    assert asked.rearm is timer  # the first moment may wait out a recent push; the second does not
    again = triggers.timer_ask(Timer(T0 + 2 * 86400, "u1", "reminder", "again", "ev-9", T0), engagement, CFG)
    assert again is not None and again.cause == "reminder:ev-9/again" and again.rearm is None
    only_viewed_once = _engagement(("view", "once", T0 - 50))
    assert triggers.timer_ask(timer, only_viewed_once, CFG) is None  # nothing abandoned: no ask


def test_a_reminder_with_nothing_abandoned_asks_about_the_discovery_pool_with_its_own_interest() -> None:
    timer = Timer(T0 + 86400, "u1", "reminder", "", "ev-9", T0)
    only_viewed_once = _engagement(("view", "once", T0 - 50))
    pool = [("popular", 0.6), ("cheap", 0.4)]
    asked = triggers.timer_ask(timer, only_viewed_once, CFG, lambda engagement: pool)
    assert asked == triggers.TriggerAsk(
        "discovery",
        "discovery:ev-9",
        T0,
        ("popular", "cheap"),
        ("popular", "popular"),
        priors=(0.6, 0.4),
        rearm=timer,  # a reminder moment may wait out a recent push
    )

    # Something abandoned: the reminder, and the pool is never asked for.
    def refuse(engagement: Engagement) -> list[tuple[str, float]]:
        raise AssertionError("the pool is not needed")

    assert triggers.timer_ask(timer, _session(), CFG, refuse).trigger == "reminder"  # type: ignore[union-attr]


def test_a_reminder_may_prefer_the_discovery_pool_to_the_abandoned_items() -> None:
    timer = Timer(T0 + 86400, "u1", "reminder", "", "ev-9", T0)
    first = CFG.model_copy(update={"reminder_discovery_first": True})
    pool = [("popular", 0.6)]
    asked = triggers.timer_ask(timer, _session(), first, lambda engagement: pool)
    assert asked is not None
    assert (asked.trigger, asked.items, asked.priors) == ("discovery", ("popular",), (0.6,))
    # An empty pool: the abandoned items after all; neither: no ask.
    asked = triggers.timer_ask(timer, _session(), first, lambda engagement: [])
    assert asked is not None and (asked.trigger, asked.items) == ("reminder", ("carted", "twice"))
    assert triggers.timer_ask(timer, _engagement(("view", "once", T0)), first, lambda engagement: []) is None


def test_a_session_end_may_leave_the_viewed_items_to_the_reminder() -> None:
    timer = Timer(T0 + 1800, "u1", "session_end", "", "ev-9", T0)
    carts_only = CFG.model_copy(update={"session_end_browse": False})
    asked = triggers.timer_ask(timer, _session(), carts_only)
    assert asked is not None and set(asked.items) == {"once", "twice", "carted"}  # all still scored
    assert asked.pushable == frozenset({"carted"})
    reminded = triggers.timer_ask(Timer(T0 + 86400, "u1", "reminder", "", "ev-9", T0), _session(), carts_only)
    assert reminded is not None and reminded.items == ("carted", "twice")  # the reminder still has both


def test_a_shopper_back_within_the_returning_window_gets_no_abandonment_push_now() -> None:
    cfg = CFG.model_copy(update={"returning_visit_seconds": 12 * 3600.0})
    gap = cfg.visit_gap_seconds
    session_end = Timer(T0 + 1800, "u1", "session_end", "", "ev-9", T0)
    cart = Timer(T0 + 1800, "u1", "cart_abandonment", "carted", "ev-8", T0 - 20)

    def after(previous_visit: float) -> Engagement:
        engagement = _session()
        engagement.observe_visit(previous_visit, gap)
        engagement.observe_visit(previous_visit + gap, gap)  # the same visit: not more than the gap
        engagement.observe_visit(T0 - 60, gap)  # the visit that just ended
        return engagement

    # Its visit began exactly 12 h after the one before: not returning (the window is open).
    away = after(T0 - 60 - 12 * 3600)
    assert away.visits == [T0 - 60 - 12 * 3600, T0 - 60]
    asked = triggers.timer_ask(session_end, away, cfg)
    assert asked is not None and asked.pushable == frozenset({"twice", "carted"})
    assert triggers.timer_ask(cart, away, cfg) is not None
    # A second earlier: back within 12 h. Everything is still scored (the interest index learns), but
    # nothing may be pushed now, and the cart timer asks nothing.
    back = after(T0 - 60 - 12 * 3600 + 1)
    asked = triggers.timer_ask(session_end, back, cfg)
    assert (
        asked is not None
        and set(asked.items) == {"once", "twice", "carted"}
        and asked.pushable == frozenset()
    )
    assert triggers.timer_ask(cart, back, cfg) is None
    # Off (0), or with a single visit seen, the session end pushes as before.
    off = cfg.model_copy(update={"returning_visit_seconds": 0.0})
    assert triggers.timer_ask(session_end, back, off).pushable == frozenset({"twice", "carted"})  # type: ignore[union-attr]
    first = _session()
    first.observe_visit(T0 - 60, gap)
    assert triggers.timer_ask(session_end, first, cfg).pushable == frozenset({"twice", "carted"})  # type: ignore[union-attr]


def test_visits_survive_the_stored_form_and_old_records_load_without_them() -> None:
    engagement = _session()
    assert "v" not in engagement.to_dict()  # no activity counted: the stored form is as before
    for ts in (T0 - 9000, T0 - 6000, T0 - 100):
        engagement.observe_visit(ts, 1800.0)
    assert engagement.visits == [T0 - 6000, T0 - 100] and engagement.active_ts == T0 - 100
    again = Engagement.from_dict(engagement.to_dict(), 20)
    assert (again.visits, again.active_ts) == (engagement.visits, engagement.active_ts)
    old = {k: v for k, v in engagement.to_dict().items() if k != "v"}
    loaded = Engagement.from_dict(old, 20)
    assert (loaded.visits, loaded.active_ts) == ([], None)
    # An activity older than the last one (out of order) opens no visit and keeps the last activity.
    again.observe_visit(T0 - 5000, 1800.0)
    assert again.visits == [T0 - 6000, T0 - 100] and again.active_ts == T0 - 100
