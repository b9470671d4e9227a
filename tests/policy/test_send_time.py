"""Send time per shopper: engagement hours in the shopper's zone, and when a decided push goes out.

Every clock is injected; zones are real IANA zones, including DST change days.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stream.policy import quiet_hours_end
from stream.policy_config import PolicyConfig
from stream.quiet_hours import in_quiet_hours
from stream.send_time import (
    EngagementHours,
    describe,
    earliest_send_time,
    observation_weight,
    observe_stored,
    send_at,
)
from tests.policy.conftest import local_ts

NY = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
DAY = 86400.0
HOUR = 3600.0


def cfg(**overrides: Any) -> PolicyConfig:
    """Send-time settings pinned for these tests (quiet hours 22:00-08:00, 15 min minimum lifetime)."""
    values: dict[str, Any] = {
        "send_time_enabled": True,
        "send_time_min_observations": 8.0,
        "send_time_min_share": 0.5,
        "send_time_horizon_seconds": 12 * HOUR,
        "send_time_half_life_seconds": 21 * DAY,
        "send_time_open_weight": 3.0,
        "min_push_lifetime_seconds": 900.0,
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "08:00",
    }
    values.update(overrides)
    return PolicyConfig.model_validate(values)


def habit(
    zone: ZoneInfo,
    until: datetime,
    hours: dict[int, int],
    days: int = 14,
    minute: int = 15,
    hours_obj: EngagementHours | None = None,
) -> EngagementHours:
    """A shopper who, on each of the ``days`` days before ``until`` (local), engages n times at each hour."""
    out = hours_obj or EngagementHours(21 * DAY)
    for back in range(days, 0, -1):
        day = (until - timedelta(days=back)).date()
        for hour, n in sorted(hours.items()):
            for i in range(n):
                out.observe(
                    datetime(day.year, day.month, day.day, hour, minute + i, tzinfo=zone).timestamp(), zone
                )
    return out


def at(zone: str, *args: int, fold: int = 0) -> float:
    return local_ts(zone, *args, fold=fold)


def local(ts: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts, zone)


JUNE_15_NY = datetime(2024, 6, 15, tzinfo=NY)
EVENING = {19: 1, 20: 1}  # engages every evening 19:15 and 20:15


# --- the basic choice ------------------------------------------------------------------------------------


def test_evening_shopper_gets_a_morning_push_at_seven_pm():
    hours = habit(NY, JUNE_15_NY, EVENING)
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    sent = send_at(hours, now, NY, expires_at=now + 24 * HOUR, config=cfg())
    assert sent == at("America/New_York", 2024, 6, 15, 19, 0)
    assert sent - now == 9 * HOUR


def test_shopper_active_at_this_hour_gets_it_now():
    hours = habit(NY, JUNE_15_NY, EVENING)
    now = at("America/New_York", 2024, 6, 15, 19, 40)
    assert send_at(hours, now, NY, now + 24 * HOUR, cfg()) == now
    # 20:xx is as good as 19:xx: at 19:40 the current hour is the best, no reason to wait.
    now = at("America/New_York", 2024, 6, 15, 20, 5)
    assert send_at(hours, now, NY, now + 24 * HOUR, cfg()) == now


def test_min_share_decides_whether_a_decent_hour_is_good_enough():
    # Morning 10:xx twice a day, evening 19:xx three times: the morning is 2/3 of the best hour.
    hours = habit(NY, JUNE_15_NY, {10: 2, 19: 3})
    now = at("America/New_York", 2024, 6, 15, 10, 30)
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_min_share=0.5)) == now
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_min_share=0.7)) == at(
        "America/New_York", 2024, 6, 15, 19, 0
    )
    # Share 0: always now; share 1: only an hour at least as good as the best one keeps the push.
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_min_share=0.0)) == now
    later = at("America/New_York", 2024, 6, 15, 19, 30)
    assert send_at(hours, later, NY, later + DAY, cfg(send_time_min_share=1.0)) == later


def test_too_little_history_sends_now():
    hours = habit(NY, JUNE_15_NY, {19: 1}, days=3)
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    assert hours.total(now) < 8
    assert send_at(hours, now, NY, now + DAY, cfg()) == now
    assert send_at(EngagementHours(), now, NY, now + DAY, cfg()) == now
    # The same history is enough with a lower bar.
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_min_observations=2)) == at(
        "America/New_York", 2024, 6, 15, 19, 0
    )


def test_min_observations_counts_decayed_weighted_observations():
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    yesterday_2pm = now - 20 * HOUR
    views = EngagementHours(21 * DAY)
    for i in range(8):  # eight views yesterday at 14:00: decayed a little, just under the bar of 8
        views.observe(yesterday_2pm + i, NY)
    assert views.total(now) == pytest.approx(8 * 2 ** (-(20 * HOUR - 3.5) / (21 * DAY)), rel=1e-6)
    assert views.total(now) < 8
    assert send_at(views, now, NY, now + DAY, cfg()) == now
    # Three push opens (weight 3 each) are worth nine views: enough, and 14:00 is the shopper's hour.
    opens = EngagementHours(21 * DAY)
    for i in range(3):
        opens.observe(yesterday_2pm + i, NY, weight=observation_weight("push_open", cfg()))
    assert opens.total(now) > 8
    assert send_at(opens, now, NY, now + DAY, cfg()) == at("America/New_York", 2024, 6, 15, 14, 0)


def test_disabled_sends_now():
    hours = habit(NY, JUNE_15_NY, EVENING)
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_enabled=False)) == now


def test_observation_weights():
    config = cfg(send_time_open_weight=4.0)
    assert observation_weight("push_open", config) == 4.0
    assert observation_weight("push_click", config) == 4.0
    assert observation_weight("view", config) == 1.0
    assert observation_weight("purchase", config) == 1.0
    assert observation_weight("push_dismiss", config) == 0.0
    hours = EngagementHours()
    hours.observe(at("UTC", 2024, 6, 1, 9, 0), ZoneInfo("UTC"), weight=0.0)
    assert hours.to_list() is None
    with pytest.raises(ValueError):
        hours.observe(0.0, ZoneInfo("UTC"), weight=-1.0)


# --- bounds: horizon, expiry, quiet hours ------------------------------------------------------------------


def test_horizon_bounds_the_wait():
    hours = habit(NY, JUNE_15_NY, EVENING)
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    # 19:00 is 9 h away: a horizon of 9 h excludes it (strictly before), 9 h + 1 s reaches it.
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_horizon_seconds=9 * HOUR)) == now
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_horizon_seconds=9 * HOUR + 1)) == now + 9 * HOUR
    # A weaker lunchtime habit inside a 4 h horizon wins when the evening is out of reach.
    hours = habit(NY, JUNE_15_NY, {12: 1}, hours_obj=hours)
    assert send_at(hours, now, NY, now + DAY, cfg(send_time_horizon_seconds=4 * HOUR)) == at(
        "America/New_York", 2024, 6, 15, 12, 0
    )


def test_expiry_bounds_the_wait():
    hours = habit(NY, JUNE_15_NY, EVENING)
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    seven_pm = at("America/New_York", 2024, 6, 15, 19, 0)
    # The push must still have min_push_lifetime_seconds (15 min) to live when it goes out.
    assert send_at(hours, now, NY, seven_pm + 900, cfg()) == now
    assert send_at(hours, now, NY, seven_pm + 901, cfg()) == seven_pm
    assert send_at(hours, now, NY, now + HOUR, cfg()) == now  # the default one-hour TTL: 45 min at most
    assert send_at(hours, now, NY, now + 600, cfg()) == now  # already too short to wait at all
    assert send_at(hours, now, NY, now - 1, cfg()) == now  # expired: never a time before now


def test_quiet_hours_are_never_chosen():
    # A night owl: most engagement at 23:xx (quiet), some at 21:xx.
    hours = habit(NY, JUNE_15_NY, {23: 3, 21: 1})
    now = at("America/New_York", 2024, 6, 15, 15, 0)
    assert send_at(hours, now, NY, now + DAY, cfg()) == at("America/New_York", 2024, 6, 15, 21, 0)
    # Without quiet hours 23:00 wins.
    free = cfg(quiet_hours_start="00:00", quiet_hours_end="00:00")
    assert send_at(hours, now, NY, now + DAY, free) == at("America/New_York", 2024, 6, 15, 23, 0)


def test_an_hour_that_starts_in_quiet_hours_begins_when_they_end():
    # Quiet until 08:30; the shopper reads in the 08:xx hour: the push goes out at 08:30, not 09:00.
    hours = habit(NY, JUNE_15_NY, {8: 1, 9: 1}, minute=40)
    hours = habit(NY, JUNE_15_NY, {8: 1}, minute=45, hours_obj=hours)
    now = at("America/New_York", 2024, 6, 14, 20, 0)
    config = cfg(quiet_hours_start="22:00", quiet_hours_end="08:30", send_time_horizon_seconds=14 * HOUR)
    assert send_at(hours, now, NY, now + DAY, config) == at("America/New_York", 2024, 6, 15, 8, 30)


def test_in_quiet_hours_now_is_left_to_the_policys_rule():
    hours = habit(NY, JUNE_15_NY, EVENING)
    now = at("America/New_York", 2024, 6, 15, 23, 0)
    assert send_at(hours, now, NY, now + DAY, cfg()) == now


def random_shopper(
    rng: random.Random, zones: list[ZoneInfo]
) -> tuple[ZoneInfo, EngagementHours, float, float]:
    """A shopper in one of ``zones`` with 30 engagements over the 20 days before a random day of 2024:
    (zone, hours, now within that day, a push's expiry an hour to two days later)."""
    zone = rng.choice(zones)
    hours = EngagementHours()
    base = at("UTC", 2024, 1, 1) + rng.random() * 360 * DAY
    for _ in range(30):
        hours.observe(base - rng.random() * 20 * DAY, zone)
    now = base + rng.random() * DAY
    return zone, hours, now, now + rng.choice([HOUR, 6 * HOUR, 2 * DAY])


def test_sweep_never_returns_a_quiet_or_unreachable_time():
    rng = random.Random(7)
    zones = [NY, TOKYO, ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata"), ZoneInfo("Australia/Lord_Howe")]
    config = cfg(quiet_hours_start="21:30", quiet_hours_end="07:45")
    start, end = config.quiet_minutes()
    for _ in range(300):
        zone, hours, now, expires_at = random_shopper(rng, zones)
        sent = send_at(hours, now, zone, expires_at, config)
        assert sent >= now
        if sent != now:
            assert not in_quiet_hours(sent, zone, start, end)
            assert quiet_hours_end(sent, zone, config) is None
            assert sent < min(expires_at - 900, now + 12 * HOUR)
            assert local(sent, zone).minute in (0, 45)  # an hour start, or the end of quiet hours


def test_no_send_time_comes_before_the_earliest_one():
    """``earliest_send_time`` bounds every send time from below (the engine defers deciding up to it):
    random habits, zones with half and quarter hours and DST days, quiet hours of every shape,
    including a short one that ends before the next quarter hour."""
    rng = random.Random(11)
    zones = [NY, TOKYO, *(ZoneInfo(z) for z in ("Europe/Berlin", "Asia/Kathmandu", "Australia/Lord_Howe"))]
    quiets = [("22:00", "08:00"), ("21:30", "07:45"), ("12:00", "12:05"), ("00:00", "00:00")]
    quiets.append(("23:59", "00:01"))
    tight = 0
    for _ in range(600):
        config = cfg(quiet_hours_start=(q := rng.choice(quiets))[0], quiet_hours_end=q[1])
        zone, hours, now, expires_at = random_shopper(rng, zones)
        sent = send_at(hours, now, zone, expires_at, config)
        bound = earliest_send_time(now, zone, config)
        assert bound > now
        assert sent == now or sent >= bound
        tight += sent == bound
    assert tight > 0  # the bound is reached, not merely below


# --- time zones and DST -------------------------------------------------------------------------------------


def test_tokyo_and_new_york_at_the_same_utc_instant():
    # 2024-06-15 00:30 UTC is 09:30 in Tokyo and 20:30 (the evening before) in New York.
    now = datetime(2024, 6, 15, 0, 30, tzinfo=UTC).timestamp()
    tokyo = habit(TOKYO, datetime(2024, 6, 15, tzinfo=TOKYO), EVENING)
    new_york = habit(NY, datetime(2024, 6, 15, tzinfo=NY), EVENING)
    assert send_at(tokyo, now, TOKYO, now + DAY, cfg()) == at("Asia/Tokyo", 2024, 6, 15, 19, 0)
    assert send_at(new_york, now, NY, now + DAY, cfg()) == now
    # The bins are local: the same habit lands in the same bins whatever the zone.
    assert tokyo.counts[19] > 0 and new_york.counts[19] > 0
    assert tokyo.to_list()[1:] == new_york.to_list()[1:]  # type: ignore[index]


def test_the_same_utc_events_fall_in_different_local_hours():
    tokyo, new_york = EngagementHours(), EngagementHours()
    ts = datetime(2024, 6, 14, 10, 15, tzinfo=UTC).timestamp()  # 19:15 in Tokyo, 06:15 in New York
    tokyo.observe(ts, TOKYO)
    new_york.observe(ts, NY)
    assert tokyo.counts[19] == 1.0 and new_york.counts[6] == 1.0
    assert sum(tokyo.counts) == sum(new_york.counts) == 1.0


def test_half_hour_and_quarter_hour_zones():
    for name in ("Asia/Kolkata", "Asia/Kathmandu"):
        zone = ZoneInfo(name)
        hours = habit(zone, datetime(2024, 6, 15, tzinfo=zone), EVENING)
        now = at(name, 2024, 6, 15, 10, 0)
        assert send_at(hours, now, zone, now + DAY, cfg()) == at(name, 2024, 6, 15, 19, 0)


def test_spring_forward_the_missing_hour_is_skipped():
    # New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT. A shopper who engages at 02:xx (best) and 03:xx.
    quiet_off = cfg(quiet_hours_start="00:00", quiet_hours_end="00:00")
    hours = habit(NY, datetime(2024, 3, 9, tzinfo=NY), {2: 2, 3: 1})
    # The day before, 02:00 exists and wins.
    before = at("America/New_York", 2024, 3, 8, 23, 30)
    assert send_at(hours, before, NY, before + DAY, quiet_off) == at("America/New_York", 2024, 3, 9, 2, 0)
    # On the change day there is no 02:xx: 03:00 EDT is the next best, 1 h 30 min after 00:30 EST.
    now = at("America/New_York", 2024, 3, 10, 0, 30)
    sent = send_at(hours, now, NY, now + DAY, quiet_off)
    assert local(sent, NY).hour == 3 and local(sent, NY).minute == 0
    assert sent - now == 1.5 * HOUR
    # 03:00 EDT is 07:00 UTC.
    assert sent == datetime(2024, 3, 10, 7, 0, tzinfo=UTC).timestamp()


def test_spring_forward_with_quiet_hours_ending_in_the_gap():
    # Quiet 22:00-02:30; on 2024-03-10 02:30 does not exist. The shopper engages at 03:xx.
    config = cfg(quiet_hours_start="22:00", quiet_hours_end="02:30")
    hours = habit(NY, datetime(2024, 3, 10, tzinfo=NY), {3: 1}, minute=10)
    now = at("America/New_York", 2024, 3, 9, 20, 0)
    sent = send_at(hours, now, NY, now + DAY, config)
    assert quiet_hours_end(sent, NY, config) is None
    assert sent == at("America/New_York", 2024, 3, 10, 3, 0)  # 03:00 EDT is already outside quiet hours


def test_fall_back_the_doubled_hour():
    # New York, 2024-11-03: 01:00-02:00 runs twice (EDT, then EST). Quiet hours off.
    quiet_off = cfg(quiet_hours_start="00:00", quiet_hours_end="00:00")
    hours = habit(NY, datetime(2024, 11, 3, tzinfo=NY), {1: 2, 2: 1}, days=10)
    now = at("America/New_York", 2024, 11, 3, 0, 30)  # 04:30 UTC
    # Ties between the two 01:00s go to the earliest: 01:00 EDT = 05:00 UTC.
    assert (
        send_at(hours, now, NY, now + DAY, quiet_off) == datetime(2024, 11, 3, 5, 0, tzinfo=UTC).timestamp()
    )
    # During the first 01:xx: send now.
    first = at("America/New_York", 2024, 11, 3, 1, 30, fold=0)
    assert send_at(hours, first, NY, first + DAY, quiet_off) == first
    # With only the 02:xx habit, 02:00 EST is 2 h 30 min after 00:30 EDT (not 1 h 30 min).
    late = habit(NY, datetime(2024, 11, 3, tzinfo=NY), {2: 1})
    sent = send_at(late, now, NY, now + DAY, quiet_off)
    assert sent - now == 2.5 * HOUR
    assert sent == datetime(2024, 11, 3, 7, 0, tzinfo=UTC).timestamp()


def test_fall_back_observations_in_the_second_occurrence_count_in_the_same_hour():
    hours = EngagementHours()
    hours.observe(at("America/New_York", 2024, 11, 3, 1, 20, fold=0), NY)
    hours.observe(at("America/New_York", 2024, 11, 3, 1, 20, fold=1), NY)
    assert [h for h, c in enumerate(hours.counts) if c] == [1]


def test_a_shopper_who_travels_counts_in_the_zone_of_each_event():
    hours = EngagementHours()
    hours.observe(at("America/New_York", 2024, 6, 1, 19, 0), NY)
    hours.observe(at("Asia/Tokyo", 2024, 6, 10, 19, 0), TOKYO)
    assert [h for h, c in enumerate(hours.counts) if c] == [19]


# --- decay --------------------------------------------------------------------------------------------------


def test_old_habits_fade():
    # For two months the shopper engaged at 09:xx, three times a day; that ended 90 days ago. For the
    # last ten days, once a day at 19:xx.
    old = habit(NY, datetime(2024, 3, 15, tzinfo=NY), {9: 3}, days=60)  # 180 events
    hours = habit(NY, datetime(2024, 3, 15, tzinfo=NY), {9: 3}, days=60)
    hours = habit(NY, JUNE_15_NY, {19: 1}, days=10, hours_obj=hours)  # 10 events
    now = at("America/New_York", 2024, 6, 15, 8, 30)
    assert send_at(hours, now, NY, now + DAY, cfg()) == at("America/New_York", 2024, 6, 15, 19, 0)
    assert describe(hours, now)[0][0] == 19
    # Before the new habit, the morning was the shopper's hour.
    assert describe(old, at("America/New_York", 2024, 3, 15, 8, 30))[0][0] == 9


def test_an_old_history_alone_falls_below_the_minimum():
    hours = habit(NY, datetime(2024, 1, 15, tzinfo=NY), EVENING)  # 28 events, last in mid-January
    assert hours.total(at("America/New_York", 2024, 1, 15, 10)) > 8
    now = at("America/New_York", 2024, 6, 15, 10, 0)  # five months later: ~0.2 left
    assert hours.total(now) < 1
    assert send_at(hours, now, NY, now + DAY, cfg()) == now


def test_decay_is_exact_across_landmark_moves():
    hours = EngagementHours(DAY)
    zone = ZoneInfo("UTC")
    t0 = at("UTC", 2024, 1, 1, 12, 0)
    for day in range(100):  # one event a day at 12:00 for 100 half-lives: the landmark moves many times
        hours.observe(t0 + day * DAY, zone)
    now = t0 + 99 * DAY
    expected = sum(2.0**-k for k in range(100))
    assert hours.decayed(now)[12] == pytest.approx(expected, rel=1e-12)
    # Stored values stay of the order of the weights: at most twice the decayed ones (<= 2 here).
    assert max(hours.counts) <= 4
    assert hours.landmark is not None and now - hours.landmark <= DAY


def test_out_of_order_observations():
    zone = ZoneInfo("UTC")
    a, b = EngagementHours(DAY), EngagementHours(DAY)
    t0 = at("UTC", 2024, 1, 1, 12, 0)
    a.observe(t0, zone)
    a.observe(t0 - DAY, zone)
    b.observe(t0 - DAY, zone)
    b.observe(t0, zone)
    assert a.decayed(t0)[12] == pytest.approx(b.decayed(t0)[12]) == pytest.approx(1.5)
    # A time before the landmark reads as the landmark (never grows backwards).
    assert a.total(t0 - 10 * DAY) == pytest.approx(a.total(t0))


# --- storage ------------------------------------------------------------------------------------------------


def test_empty_serialises_to_none():
    assert EngagementHours().to_list() is None
    assert EngagementHours.from_list(None).to_list() is None
    assert EngagementHours.from_list([]).to_list() is None


def test_round_trip_and_size():
    zone = ZoneInfo("Europe/Berlin")
    rng = random.Random(3)
    hours = EngagementHours(21 * DAY)
    t0 = at("Europe/Berlin", 2024, 6, 1)
    for _ in range(2000):  # every hour of the day, heavy use, over 90 days
        hours.observe(t0 + rng.random() * 90 * DAY, zone, weight=rng.choice([1.0, 3.0]))
    row = hours.to_list()
    assert row is not None and len(row) == 25 and all(c > 0 for c in row[1:])
    again = EngagementHours.from_list(json.loads(json.dumps(row)), 21 * DAY)
    assert again.to_list() == row
    assert again.landmark == hours.landmark
    size = len(json.dumps(row, separators=(",", ":")))
    assert size < 240, size
    now = t0 + 90 * DAY
    config = cfg(quiet_hours_start="00:00", quiet_hours_end="00:00", send_time_min_share=0.99)
    assert send_at(again, now, zone, now + DAY, config) == send_at(hours, now, zone, now + DAY, config)


def test_small_history_is_small():
    hours = EngagementHours()
    hours.observe(at("UTC", 2024, 6, 1, 3, 0), ZoneInfo("UTC"), weight=3.0)
    assert hours.to_list() == [int(at("UTC", 2024, 6, 1, 3, 0)), 0, 0, 0, 3]  # trailing zeros dropped
    assert EngagementHours.from_list(hours.to_list()).counts[3] == 3.0


def test_from_list_rejects_too_many_bins():
    with pytest.raises(ValueError):
        EngagementHours.from_list([0] + [1] * 25)


# --- determinism --------------------------------------------------------------------------------------------


def test_ties_go_to_the_earliest_hour():
    hours = habit(NY, JUNE_15_NY, {19: 1, 20: 1, 15: 1})
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    config = cfg(send_time_min_share=1.0)
    # 15:00, 19:00 and 20:00 are equally good: the earliest.
    assert send_at(hours, now, NY, now + DAY, config) == at("America/New_York", 2024, 6, 15, 15, 0)


def test_the_same_events_in_any_order_give_the_same_send_time():
    events = [
        (datetime(2024, 6, d, h, 10, tzinfo=NY).timestamp(), w)
        for d in range(1, 15)
        for h, w in ((9, 1.0), (19, 3.0), (20, 1.0))
    ]
    now = at("America/New_York", 2024, 6, 15, 10, 0)
    results = set()
    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        hours = EngagementHours()
        for ts, w in shuffled:
            hours.observe(ts, NY, w)
        results.add(send_at(hours, now, NY, now + DAY, cfg()))
    assert results == {at("America/New_York", 2024, 6, 15, 19, 0)}


def test_observe_stored_equals_the_full_round_trip() -> None:
    """The worker's per-event fast path gives the same stored list as decode, observe, encode."""
    rng = random.Random(7)
    zones = [ZoneInfo(z) for z in ("UTC", "Europe/Berlin", "Asia/Kathmandu", "America/New_York")]
    half_life = 21 * 86400.0
    for _ in range(300):
        row: list[float | int] | None = None
        ts = 1_780_000_000.0 + rng.uniform(0, 86400)
        for _ in range(rng.randint(1, 40)):
            # Mostly forward, sometimes out of order, sometimes past a half-life (a rebase).
            ts += rng.choice([rng.uniform(-3600, 0), rng.uniform(0, 7200), rng.uniform(0, 2 * half_life)])
            zone = rng.choice(zones)
            weight = rng.choice([0.0, 1.0, 2.5, 0.001, 0.0004])  # 0.0004 rounds to nothing
            full = EngagementHours.from_list(row, half_life)
            full.observe(ts, zone, weight)
            expected = full.to_list() if weight > 0 else row
            got = observe_stored(row, ts, zone, weight, half_life)
            assert got == expected and [type(v) for v in got or []] == [type(v) for v in expected or []]
            row = got


def test_rounded_is_round_to_three_decimals_bit_for_bit() -> None:
    """``send_time.rounded`` (the stored counts' rounding, per event) gives ``round(x, 3)``'s float for
    every value: near and at halves of the last decimal, the ties ``round`` sends to even, zero and
    negative zero, tiny, huge and random bit patterns."""
    import random
    import struct

    from stream.send_time import rounded

    def bits(x: float) -> bytes:
        return struct.pack("<d", x)

    rng = random.Random(5)
    values = [0.0, -0.0, 0.0005, -0.0005, 0.0015, 0.0025, 2.5e-4, 1e9, -1e9, 1e300, 5e-324, 0.4995, 123.4565]
    for _ in range(200_000):
        base = rng.randint(0, 10**7) / 1000.0
        values += [base, base + 5e-4, base - 5e-4, base + 4.9999e-4, rng.uniform(0.0, 100.0)]
        values.append(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0])
    for x in values:
        if x == x and abs(x) != float("inf"):
            assert bits(rounded(x)) == bits(round(x, 3)), x
