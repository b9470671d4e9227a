"""The marketer's rule-set baseline: journeys, quiet hours in the user's zone, one push per local day."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from benchmarks.marketer_rules import MarketerRulesPusher
from stream.contract import CatalogUpdate, ConsentUpdate, Event, EventContext

NY = ZoneInfo("America/New_York")
H = 3600.0


def _ts(day: int, hour: float, zone: ZoneInfo = NY) -> float:
    """An instant of 2026-03-<day> at a local hour (March 2026 has New York's DST change on the 8th)."""
    return datetime(2026, 3, day, tzinfo=zone).timestamp() + hour * H


def _pusher() -> MarketerRulesPusher:
    p = MarketerRulesPusher(holdout=lambda user: user.startswith("h"))
    for item in ("a", "b", "c"):
        p.observe_catalog(
            CatalogUpdate(item_id=item, title=item, category="x", price=10.0, stock=5, updated_at=_ts(1, 0))
        )
    return p


_n = 0


def _event(
    p: MarketerRulesPusher, user: str, kind: str, item: str, ts: float, zone: str = "America/New_York"
) -> None:
    global _n
    _n += 1
    p.observe_event(
        Event(
            event_id=f"e{_n}",
            user_id=user,
            type=kind,  # type: ignore[arg-type]
            item_id=item,
            ts=ts,
            context=EventContext(time_zone=zone),
        )
    )


def test_cart_abandonment_fires_an_hour_later_unless_bought() -> None:
    p = _pusher()
    t = _ts(2, 10)
    _event(p, "u1", "add_to_cart", "a", t)
    _event(p, "u2", "add_to_cart", "a", t)
    _event(p, "u2", "purchase", "a", t + 600)
    assert p.due(t + H - 1) == []
    pushes = p.due(t + H)
    assert [(x.user_id, x.item_id, x.trigger) for x in pushes] == [("u1", "a", "cart_abandonment")]
    assert p.due(t + 2 * H) == []  # fired once


def test_browse_abandonment_needs_two_views_no_cart_and_an_hour_without_another_view() -> None:
    p = _pusher()
    t = _ts(2, 10)
    _event(p, "u1", "view", "a", t)
    assert p.pending() == 0  # one view is not interest enough
    _event(p, "u1", "view", "a", t + 60)
    _event(p, "u1", "view", "a", t + 1800)  # re-arms: the hour counts from the last view
    assert p.due(t + 60 + H) == []
    pushes = p.due(t + 1800 + H)
    assert [(x.item_id, x.trigger) for x in pushes] == [("a", "browse_abandonment")]
    # Carting turns a browse journey into a cart journey.
    _event(p, "u3", "view", "b", t)
    _event(p, "u3", "view", "b", t + 10)
    _event(p, "u3", "add_to_cart", "b", t + 20)
    assert [x.trigger for x in p.due(t + 20 + H)] == ["cart_abandonment"]


def test_one_push_per_local_day_and_cart_goes_first() -> None:
    p = _pusher()
    t = _ts(2, 10)
    _event(p, "u1", "view", "a", t)
    _event(p, "u1", "view", "a", t)
    _event(p, "u1", "add_to_cart", "b", t)
    pushes = p.due(t + H)
    assert [x.trigger for x in pushes] == ["cart_abandonment"]
    assert p.dropped_by_cap == 1
    # The next local day, a new journey may push again.
    _event(p, "u1", "add_to_cart", "c", _ts(3, 10))
    assert [x.item_id for x in p.due(_ts(3, 11))] == ["c"]


def test_quiet_hours_hold_until_morning_in_the_users_zone_and_a_purchase_cancels() -> None:
    p = _pusher()
    t = _ts(2, 21.5)  # due 22:30 New York: quiet
    _event(p, "u1", "add_to_cart", "a", t)
    _event(p, "u2", "add_to_cart", "b", t)
    assert p.due(t + H) == []
    assert p.held_for_quiet_hours == 2
    _event(p, "u2", "purchase", "b", _ts(3, 7))
    assert p.due(_ts(3, 7.99)) == []
    pushes = p.due(_ts(3, 8))
    assert [(x.user_id, x.item_id) for x in pushes] == [("u1", "a")]
    # The same wall-clock hour in Tokyo is mid-morning for a Tokyo shopper: no hold there.
    _event(p, "u5", "add_to_cart", "c", t, zone="Asia/Tokyo")
    assert [x.user_id for x in p.due(t + H)] == ["u5"]


def test_quiet_hours_follow_dst() -> None:
    p = _pusher()
    # 2026-03-08 02:00 New York clocks jump to 03:00; 08:00 local is then 12:00 UTC, not 13:00.
    t = _ts(8, 0)  # 00:00 local (EST)
    _event(p, "u1", "add_to_cart", "a", t)
    assert p.due(t + H) == []
    morning = datetime(2026, 3, 8, 8, tzinfo=NY).timestamp()
    assert morning - t == 7 * H  # 8 wall-clock hours, 7 real ones
    assert p.due(morning - 1) == []
    assert [x.user_id for x in p.due(morning)] == ["u1"]


def test_consent_holdout_and_stock_are_honoured() -> None:
    p = _pusher()
    t = _ts(2, 10)
    p.observe_consent(ConsentUpdate(user_id="u1", opted_in=False, ts=t))
    _event(p, "u1", "add_to_cart", "a", t)
    _event(p, "h1", "add_to_cart", "a", t)  # holdout
    _event(p, "u2", "add_to_cart", "b", t)
    p.observe_catalog(CatalogUpdate(item_id="b", title="b", category="x", price=10.0, stock=0, updated_at=t))
    assert p.due(t + H) == []
    assert p.pending() == 0


def test_same_inputs_same_pushes() -> None:
    def run() -> list[str]:
        global _n
        _n = 0  # the same event ids each time
        p = _pusher()
        t = _ts(2, 9)
        for i in range(30):
            user = f"u{i % 7}"
            _event(p, user, ["view", "view", "add_to_cart"][i % 3], "abc"[i % 3], t + i * 97)
        return [x.push_id for x in p.due(t + 5 * H)]

    first = run()
    assert first and first == run()
