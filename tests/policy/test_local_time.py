"""Rules in the user's local time: calendar-day caps and quiet hours, across time zones and DST changes."""

from __future__ import annotations

from datetime import datetime

import pydantic
import pytest

from stream.policy import (
    PushRecord,
    UserPolicyState,
    Verdict,
    build_push,
    decide,
    quiet_hours_end,
    record_hold,
    record_push,
    release_held,
    user_zone,
)
from stream.policy_config import PolicyConfig
from tests.policy.conftest import candidate, catalog, config, local_ts

# One push per local day; rolling caps and gaps out of the way; no quiet hours.
DAY_CAP = {
    "max_pushes_per_local_day": 1,
    "max_pushes_per_24h": 10,
    "min_gap_seconds": 0,
    "max_per_category_per_local_day": 0,
    "quiet_hours_start": "00:00",
    "quiet_hours_end": "00:00",
}


def utc(year: int, month: int, day: int, *clock: int) -> float:
    return local_ts("UTC", year, month, day, *clock)


def verdict_at(state: UserPolicyState, now: float, **overrides) -> Verdict:
    cfg = config(**{**DAY_CAP, **overrides})
    [(_, verdict)] = decide("u1", [candidate(event_ts=now)], state, now, cfg)
    return verdict


def sent(at: float) -> PushRecord:
    return PushRecord("p", "other", "misc", "in_session", at, at + 3600)


def test_calendar_day_is_the_users_day():
    first = local_ts("Asia/Tokyo", 2024, 6, 1, 23, 30)
    now = local_ts("Asia/Tokyo", 2024, 6, 2, 0, 30)  # the next day in Tokyo, the same day in UTC
    assert verdict_at(UserPolicyState(time_zone="Asia/Tokyo", pushes=[sent(first)]), now).outcome == "emit"
    assert verdict_at(UserPolicyState(pushes=[sent(first)]), now).reason == "cap_local_day"  # default UTC
    assert (
        verdict_at(UserPolicyState(pushes=[sent(first)]), now, default_time_zone="Asia/Tokyo").outcome
        == "emit"
    )


def test_unknown_zone_falls_back_to_default():
    assert user_zone(UserPolicyState(time_zone="Mars/Olympus"), config()).key == "UTC"


def test_day_cap_on_a_25_hour_day_berlin():
    # 2024-10-27 in Berlin has 25 hours: 00:30 and 23:45 are 24 h 15 min apart, yet the same calendar day.
    first = local_ts("Europe/Berlin", 2024, 10, 27, 0, 30)
    now = local_ts("Europe/Berlin", 2024, 10, 27, 23, 45)
    assert now - first > 86400
    state = UserPolicyState(time_zone="Europe/Berlin", pushes=[sent(first)])
    assert verdict_at(state, now).reason == "cap_local_day"
    assert verdict_at(state, local_ts("Europe/Berlin", 2024, 10, 28, 0, 0)).outcome == "emit"


def test_day_cap_on_a_23_hour_day_new_york():
    # 2024-03-10 in New York has 23 hours: 23 h after 00:30 is already the next day.
    first = local_ts("America/New_York", 2024, 3, 10, 0, 30)
    state = UserPolicyState(time_zone="America/New_York", pushes=[sent(first)])
    assert verdict_at(state, local_ts("America/New_York", 2024, 3, 10, 23, 59)).reason == "cap_local_day"
    next_day = local_ts("America/New_York", 2024, 3, 11, 0, 30)
    assert next_day - first == 23 * 3600
    assert verdict_at(state, next_day).outcome == "emit"


def test_quiet_hours_window_edges_utc():
    cfg = config()
    zone = user_zone(UserPolicyState(), cfg)
    assert quiet_hours_end(utc(2024, 6, 1, 21, 59, 59), zone, cfg) is None
    assert quiet_hours_end(utc(2024, 6, 1, 22, 0), zone, cfg) == utc(2024, 6, 2, 8, 0)
    assert quiet_hours_end(utc(2024, 6, 2, 7, 59, 59), zone, cfg) == utc(2024, 6, 2, 8, 0)
    assert quiet_hours_end(utc(2024, 6, 2, 8, 0), zone, cfg) is None
    day = config(quiet_hours_start="13:00", quiet_hours_end="15:00")  # a window that does not wrap midnight
    assert quiet_hours_end(utc(2024, 6, 1, 14, 0), zone, day) == utc(2024, 6, 1, 15, 0)
    assert quiet_hours_end(utc(2024, 6, 1, 15, 0), zone, day) is None
    off = config(quiet_hours_start="00:00", quiet_hours_end="00:00")
    assert quiet_hours_end(utc(2024, 6, 1, 23, 0), zone, off) is None


def test_quiet_hours_across_dst_changes():
    cfg = config()
    berlin = user_zone(UserPolicyState(time_zone="Europe/Berlin"), cfg)
    new_york = user_zone(UserPolicyState(time_zone="America/New_York"), cfg)
    # Spring forward (night of 30-31 March 2024): 22:00 CET -> 08:00 CEST is 9 hours.
    start = local_ts("Europe/Berlin", 2024, 3, 30, 22, 0)
    assert quiet_hours_end(start, berlin, cfg) == utc(2024, 3, 31, 6, 0) == start + 9 * 3600
    # 06:30 UTC is 08:30 CEST, outside quiet hours (a fixed CET offset would say 07:30, inside).
    assert quiet_hours_end(utc(2024, 3, 31, 6, 30), berlin, cfg) is None
    # Fall back (night of 26-27 October 2024): 22:00 CEST -> 08:00 CET is 11 hours.
    start = local_ts("Europe/Berlin", 2024, 10, 26, 22, 0)
    assert quiet_hours_end(start, berlin, cfg) == utc(2024, 10, 27, 7, 0) == start + 11 * 3600
    # Quiet hours ending inside the hour that comes twice (New York, 3 November 2024, 01:00-02:00): at
    # 01:10 EST, the second 01:10, they end at 01:30 EST, not at 01:30 EDT, which has passed.
    late = config(quiet_hours_start="22:00", quiet_hours_end="01:30")
    second = utc(2024, 11, 3, 6, 10)  # 01:10 EST
    assert quiet_hours_end(second, new_york, late) == utc(2024, 11, 3, 6, 30)
    assert quiet_hours_end(utc(2024, 11, 3, 5, 10), new_york, late) == utc(2024, 11, 3, 5, 30)  # 01:10 EDT
    # New York, 3 November 2024: 22:30 EDT -> 08:00 EST.
    assert quiet_hours_end(local_ts("America/New_York", 2024, 11, 2, 22, 30), new_york, cfg) == utc(
        2024, 11, 3, 13
    )
    # An end inside the spring-forward gap (02:30 does not exist on 31 March) releases right after the
    # gap, at 03:00 CEST, when the wall clock says quiet hours are over (not at 03:30, half an hour on).
    gap = config(quiet_hours_start="22:00", quiet_hours_end="02:30")
    assert quiet_hours_end(local_ts("Europe/Berlin", 2024, 3, 30, 23, 0), berlin, gap) == utc(
        2024, 3, 31, 1, 0
    )
    assert quiet_hours_end(utc(2024, 3, 31, 1, 0), berlin, gap) is None
    assert quiet_hours_end(utc(2024, 3, 31, 1, 0) - 1, berlin, gap) == utc(2024, 3, 31, 1, 0)


@pytest.mark.parametrize(
    ("zone_name", "end", "night", "after_gap"),
    [
        ("America/New_York", "02:30", (2024, 3, 9, 23, 0), (2024, 3, 10, 7, 0)),  # 03:00 EDT
        ("Australia/Lord_Howe", "02:15", (2024, 10, 5, 23, 0), (2024, 10, 5, 15, 30)),  # 02:30 +11:00
        ("Pacific/Chatham", "03:00", (2024, 9, 28, 23, 0), (2024, 9, 28, 14, 0)),  # 03:45 CHADT +13:45
        ("America/Havana", "00:30", (2024, 3, 9, 23, 0), (2024, 3, 10, 5, 0)),  # 01:00 CDT, a midnight gap
    ],
)
def test_quiet_hours_ending_in_a_spring_forward_gap_end_when_the_gap_ends(zone_name, end, night, after_gap):
    cfg = config(quiet_hours_start="22:00", quiet_hours_end=end)
    zone = user_zone(UserPolicyState(time_zone=zone_name), cfg)
    release = quiet_hours_end(local_ts(zone_name, *night), zone, cfg)
    assert release == utc(*after_gap)
    assert quiet_hours_end(release, zone, cfg) is None  # the wall clock is past the end
    assert quiet_hours_end(release - 1, zone, cfg) == release  # and was not a second before


@pytest.mark.parametrize(
    ("zone_name", "quiet", "first_start", "in_the_hole"),
    [
        # New York falls back at 02:00 EDT to 01:00 EST (3 November 2024). Quiet hours from 01:30 began
        # at 01:30 EDT; at 01:10 EST the wall clock reads before 01:30 again, but the night goes on.
        ("America/New_York", ("01:30", "08:00"), (2024, 11, 3, 5, 30), (2024, 11, 3, 6, 10)),
        # Santiago falls back at midnight to 23:00 (-04) on 6 April 2024: a night starting at 23:30
        # (-03) that wraps midnight goes on through 23:00-23:30 (-04).
        ("America/Santiago", ("23:30", "07:00"), (2024, 4, 7, 2, 30), (2024, 4, 7, 3, 10)),
        # Lord Howe's half-hour fall back: 02:00 (+11) to 01:30 (+10:30) on 7 April 2024.
        ("Australia/Lord_Howe", ("01:45", "08:00"), (2024, 4, 6, 14, 45), (2024, 4, 6, 15, 5)),
    ],
)
def test_a_night_whose_start_comes_twice_begins_at_the_first_and_has_no_hole(
    zone_name, quiet, first_start, in_the_hole
):
    cfg = config(quiet_hours_start=quiet[0], quiet_hours_end=quiet[1])
    zone = user_zone(UserPolicyState(time_zone=zone_name), cfg)
    begins = utc(*first_start)
    assert quiet_hours_end(begins - 1, zone, cfg) is None
    release = quiet_hours_end(begins, zone, cfg)
    assert release is not None
    t = begins
    while t < release:  # quiet every minute of the night, the repeated wall times included
        assert quiet_hours_end(t, zone, cfg) == release, datetime.fromtimestamp(t, zone)
        t += 60
    assert quiet_hours_end(utc(*in_the_hole), zone, cfg) == release
    assert quiet_hours_end(release, zone, cfg) is None


def test_quiet_hours_hold_drop_and_expiry():
    night = local_ts("Europe/Berlin", 2024, 3, 30, 23, 0)
    state = UserPolicyState(time_zone="Europe/Berlin")
    long_ttl = config(push_ttl_seconds=12 * 3600)
    [(_, held)] = decide("u1", [candidate(event_ts=night)], state, night, long_ttl)
    assert (held.outcome, held.reason, held.release_at) == ("hold", "quiet_hours", utc(2024, 3, 31, 6, 0))
    # With the default one-hour TTL the push would expire before the morning: never held, dropped.
    [(_, short)] = decide("u1", [candidate(event_ts=night)], state, night, config())
    assert (short.outcome, short.reason) == ("suppress", "quiet_hours")
    [(_, dropped)] = decide(
        "u1",
        [candidate(event_ts=night)],
        state,
        night,
        config(push_ttl_seconds=12 * 3600, quiet_hours_action="drop"),
    )
    assert (dropped.outcome, dropped.reason) == ("suppress", "quiet_hours")


def test_held_push_is_released_when_quiet_hours_end():
    cfg = config(push_ttl_seconds=12 * 3600)
    night = local_ts("America/New_York", 2024, 11, 2, 23, 0)
    state = UserPolicyState(time_zone="America/New_York")
    c = candidate(event_ts=night)
    [(_, verdict)] = decide("u1", [c], state, night, cfg)
    assert verdict.release_at == utc(2024, 11, 3, 13, 0)
    push = build_push("u1", c, verdict, night, cfg, "v")
    record_hold(state, push, verdict.release_at, cfg)
    # The same item waiting is not held twice; a second item is held while room is left.
    [(_, again)] = decide("u1", [c], state, night + 60, cfg)
    assert again.reason == "already_held"
    assert release_held("u1", state, verdict.release_at - 1, cfg) == []
    [(released, emit)] = release_held(
        "u1", state, verdict.release_at, cfg, catalog=lambda item: catalog(item)
    )
    assert released.push_id == push.push_id and emit.outcome == "emit" and state.held == []
    record_push(state, released, cfg, sent_at=verdict.release_at)
    assert state.pushes[-1].created_at == verdict.release_at


def test_a_held_push_is_not_released_after_the_shopper_bought_its_item():
    cfg = config(trigger_ttl_seconds={"in_session": 12 * 3600})
    night = local_ts("UTC", 2024, 6, 1, 23, 0)
    state = UserPolicyState(time_zone="UTC")
    c = candidate(event_ts=night)
    [(_, verdict)] = decide("u1", [c], state, night, cfg)
    assert verdict.outcome == "hold"  # the trigger's own TTL outlives the night
    push = build_push("u1", c, verdict, night, cfg, "v")
    assert push.expires_at == night + 12 * 3600
    record_hold(state, push, verdict.release_at, cfg)
    kept = UserPolicyState(time_zone="UTC", held=list(state.held))
    [(_, bought)] = release_held("u1", state, verdict.release_at, cfg, bought={c.item_id})
    assert (bought.outcome, bought.reason) == ("suppress", "bought") and state.held == []
    [(_, emit)] = release_held("u1", kept, verdict.release_at, cfg, bought={"another"})
    assert emit.outcome == "emit"


def test_held_pushes_expire_and_are_rechecked():
    cfg = config(push_ttl_seconds=10 * 3600)
    night = local_ts("UTC", 2024, 6, 1, 23, 0)  # expires 09:00, released 08:00
    state = UserPolicyState()
    for item in ("a", "b"):
        c = candidate(item, category=item, event_ts=night)
        [(_, verdict)] = decide("u1", [c], state, night, cfg)
        record_hold(state, build_push("u1", c, verdict, night, cfg, "v"), verdict.release_at, cfg)
    assert len(state.held) == 2
    [(_, full)] = decide("u1", [candidate("c", category="c")], state, night, cfg)
    assert full.reason == "held_limit"
    expiry = night + 10 * 3600
    # Exactly at expires_at a held push is expired; both are.
    reasons = [v.reason for _, v in release_held("u1", state, expiry, cfg)]
    assert reasons == ["expired", "expired"] and state.held == []


def test_release_rechecks_stock_and_emits_one():
    cfg = config(push_ttl_seconds=12 * 3600)
    night = local_ts("UTC", 2024, 6, 1, 23, 0)
    state = UserPolicyState()
    for item, score in (("a", 0.9), ("b", 0.8)):
        c = candidate(item, score, category=item, event_ts=night)
        [(_, verdict)] = decide("u1", [c], state, night, cfg)
        record_hold(state, build_push("u1", c, verdict, night, cfg, "v"), verdict.release_at, cfg)
    morning = local_ts("UTC", 2024, 6, 2, 8, 0)
    out = release_held(
        "u1", state, morning, cfg, catalog=lambda item: catalog(item, stock=0 if item == "a" else 3)
    )
    assert [(p.item_id, v.reason) for p, v in out] == [("a", "out_of_stock"), ("b", "ok")]
    state2 = UserPolicyState()
    for item, score in (("a", 0.9), ("b", 0.8)):
        c = candidate(item, score, category=item, event_ts=night)
        record_hold(
            state2, build_push("u1", c, Verdict("hold", "quiet_hours"), night, cfg, "v"), morning, cfg
        )
    out = release_held("u1", state2, morning, cfg)
    assert [(p.item_id, v.reason) for p, v in out] == [("a", "ok"), ("b", "min_gap")]


def test_a_default_time_zone_that_is_a_folder_or_the_hosts_own_is_a_validation_error() -> None:
    for zone in ("Europe", "localtime", "right/UTC", "Mars/Olympus"):
        with pytest.raises(pydantic.ValidationError, match="unknown time zone"):
            PolicyConfig(default_time_zone=zone)


def test_local_dates_are_remembered_without_changing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rules.local_date`` caches its answers (every decision asks again for the same push times):
    the same dates as the conversion itself, across a DST change and after the cache is emptied."""
    from zoneinfo import ZoneInfo

    from stream import rules

    monkeypatch.setattr(rules, "_LOCAL_DATES", {})
    monkeypatch.setattr(rules, "_LOCAL_DATES_MAX", 50)
    zone = ZoneInfo("America/New_York")
    start = datetime(2026, 3, 7, 20, 0, tzinfo=zone).timestamp()  # the night clocks go forward
    times = [start + 900.0 * k for k in range(120)]
    for _ in range(2):  # computed, then remembered (the cache fills and is emptied on the way)
        for ts in times:
            assert rules.local_date(ts, zone) == datetime.fromtimestamp(ts, zone).date()
    assert 0 < len(rules._LOCAL_DATES) <= 50
    other = ZoneInfo("Asia/Tokyo")
    assert rules.local_date(times[0], other) == datetime.fromtimestamp(times[0], other).date()


# Zones with DST of an hour, of half an hour (Lord Howe), offsets of 45 minutes (Kathmandu, Chatham),
# a southern-hemisphere DST, none at all, and one that changed its standard offset (Samoa skipped a day).
LOCAL_HOUR_ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/Santiago",
    "Asia/Tokyo",
    "Pacific/Apia",
    "UTC",
)


@pytest.mark.parametrize("name", LOCAL_HOUR_ZONES)
def test_the_local_hour_is_the_datetimes_hour_across_offset_changes_and_at_hour_edges(name: str) -> None:
    """``quiet_hours.local_hour`` (send time's per-event hour, from a remembered offset) gives
    ``datetime.fromtimestamp(ts, zone).hour`` for every instant: every quarter hour of a year with
    their offset changes, and instants a hair either side of the edges, where the datetime's rounding
    to the microsecond carries one into the next hour."""
    from zoneinfo import ZoneInfo

    from stream.quiet_hours import local_hour

    zone = ZoneInfo(name)
    start = datetime(2011, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()  # Samoa's skipped day: 2011-12-30
    for k in range(366 * 96):
        edge = start + 900.0 * k
        for ts in (edge, edge + 4e-7, edge - 4e-7, edge + 6e-7, edge - 6e-7, edge + 0.0015, edge + 449.5):
            assert local_hour(ts, zone) == datetime.fromtimestamp(ts, zone).hour, (name, ts)


def test_the_local_hour_of_random_instants_and_zones_is_the_datetimes_hour() -> None:
    """The same for random instants of the contract's range in every zone the host knows, in an order
    that moves between hours and zones all the time (the remembered offsets are replaced)."""
    import random
    from zoneinfo import ZoneInfo, available_timezones

    from stream.quiet_hours import local_hour

    rng = random.Random(7)
    zones = [ZoneInfo(z) for z in sorted(available_timezones())]
    for _ in range(60_000):
        zone = rng.choice(zones)
        ts = rng.uniform(946_684_800.0, 4_102_444_800.0)
        assert local_hour(ts, zone) == datetime.fromtimestamp(ts, zone).hour, (zone, ts)


def test_quiet_hours_ends_are_remembered_without_changing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """``user_facts.quiet_hours_end`` caches its answers per instant, zone and quiet hours (a decision
    asks when it is queued and again when it is decided): the same ends as the rule itself, across the
    nights clocks go forward and back, after the cache is emptied, and for other quiet hours."""
    from zoneinfo import ZoneInfo

    from stream import user_facts
    from stream.quiet_hours import quiet_end

    monkeypatch.setattr(user_facts, "_QUIET_ENDS", {})
    monkeypatch.setattr(user_facts, "_QUIET_ENDS_MAX", 50)
    zone = ZoneInfo("America/New_York")
    nights = [datetime(2026, 3, 7, 18, 0, tzinfo=zone), datetime(2026, 10, 31, 18, 0, tzinfo=zone)]
    times = [night.timestamp() + 600.0 * k for night in nights for k in range(120)]
    for hours in (("22:00", "08:00"), ("01:30", "02:30")):
        cfg = PolicyConfig(quiet_hours_start=hours[0], quiet_hours_end=hours[1])
        for _ in range(2):  # computed, then remembered (the cache fills and is emptied on the way)
            for ts in times:
                assert quiet_hours_end(ts, zone, cfg) == quiet_end(ts, zone, *cfg.quiet_minutes())
    assert 0 < len(user_facts._QUIET_ENDS) <= 50
