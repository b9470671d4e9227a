"""Send time per shopper: the local hours a shopper tends to engage, and when to send a decided push.

:class:`EngagementHours` counts a shopper's engagement in 24 bins of their *local* hour (the zone of
each observation), with time decay so old habits fade. :func:`send_at` uses it to pick when a push
decided at ``now`` goes out: at once, or at the start of a better local hour that is still reachable
(before the push must go out to live long enough, within a horizon, never in quiet hours).

Counts use *forward decay* (as in :mod:`stream.forward_decay`): an observation at ``ts`` adds
``w * 2 ** ((ts - landmark) / half_life)``, so stored values decay without being touched, their ratios
are the ratios of the decayed values, and the decayed value at ``now`` is
``stored * 2 ** (-(now - landmark) / half_life)``. The landmark moves forward (rescaling the 24 bins)
once an observation is more than one half-life past it, which keeps stored values of the order of the
weights, so rounding them to 3 decimals for storage is harmless.

Everything here is pure: time is an argument, iteration is in time order, ties go to the earliest.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from stream.policy_config import PolicyConfig
from stream.quiet_hours import in_quiet_hours, local_hour, local_instant

HOURS = 24
# Stored counts are rounded to this many decimals in :meth:`EngagementHours.to_list`.
_DECIMALS = 3
_SCALE = 1000.0  # 10 ** _DECIMALS
# Move the landmark once an observation is this many half-lives past it (rescales 24 floats).
_REBASE_HALF_LIVES = 1.0
# Candidate hour starts are looked for on this UTC grid: every zone offset in use (and every DST
# shift) is a multiple of 15 minutes, so every local hour starts on it (Kathmandu +05:45 included).
_GRID_SECONDS = 900
# Reachable hours within this share of the best count as ties (the earliest wins): decay alone makes
# 20:xx of an every-evening 19:xx-20:xx habit ~0.1 % heavier than 19:xx, which is no reason to wait.
_TIE_TOLERANCE = 0.05
# Events of these types are push feedback, weighted by ``send_time_open_weight``.
_PUSH_ENGAGEMENT = frozenset({"push_open", "push_click"})
# Events that say nothing about when the shopper likes to engage.
_NOT_ENGAGEMENT = frozenset({"push_dismiss"})


def observation_weight(event_type: str, config: PolicyConfig) -> float:
    """Weight of an event in its local hour: behaviour 1, push open/click more, dismiss 0."""
    if event_type in _PUSH_ENGAGEMENT:
        return config.send_time_open_weight
    if event_type in _NOT_ENGAGEMENT:
        return 0.0
    return 1.0


class EngagementHours:
    """A shopper's time-decayed engagement per local hour (0-23), stored with the user's state.

    Compact form (:meth:`to_list`): ``[landmark, c0, c1, ..., c23]`` with trailing zero bins left off and
    counts rounded to 3 decimals; an empty (or fully faded) one is ``None``.
    """

    __slots__ = ("counts", "half_life_seconds", "landmark")

    def __init__(self, half_life_seconds: float = 21 * 86400.0) -> None:
        if half_life_seconds <= 0:
            raise ValueError("half_life_seconds must be positive")
        self.half_life_seconds = half_life_seconds
        self.landmark: float | None = None  # whole seconds, so the stored form is exact
        self.counts = [0.0] * HOURS  # forward-decayed, relative to the landmark

    @classmethod
    def from_config(cls, config: PolicyConfig) -> EngagementHours:
        """An empty one with the configured half-life."""
        return cls(config.send_time_half_life_seconds)

    def __repr__(self) -> str:
        return f"EngagementHours(landmark={self.landmark}, counts={self.counts})"

    def observe(self, ts: float, zone: ZoneInfo, weight: float = 1.0) -> None:
        """Count an engagement at ``ts`` in the local hour of ``zone`` (the shopper's zone at that time)."""
        if weight < 0:
            raise ValueError("weight must not be negative")
        if weight == 0:
            return
        if self.landmark is None:
            self.landmark = float(math.floor(ts))
        elif ts - self.landmark > _REBASE_HALF_LIVES * self.half_life_seconds:
            landmark = float(math.floor(ts))
            rescale = math.exp2(-(landmark - self.landmark) / self.half_life_seconds)
            self.counts = [c * rescale for c in self.counts]
            self.landmark = landmark
        hour = local_hour(ts, zone)
        # An out-of-order event before the landmark gets a weight below w (it is older): still exact.
        self.counts[hour] += weight * math.exp2((ts - self.landmark) / self.half_life_seconds)

    def _factor(self, now: float) -> float:
        """Stored -> decayed at ``now`` (a time before the landmark reads as the landmark)."""
        if self.landmark is None:
            return 0.0
        return math.exp2(-max(now - self.landmark, 0.0) / self.half_life_seconds)

    def decayed(self, now: float) -> list[float]:
        """The 24 decayed counts at ``now`` (index = local hour)."""
        factor = self._factor(now)
        return [c * factor for c in self.counts]

    def total(self, now: float) -> float:
        """Decayed, weighted number of observations at ``now``."""
        return math.fsum(self.counts) * self._factor(now)

    def to_list(self) -> list[float | int] | None:
        """Compact JSON-able form ``[landmark, c0, ..., c23]`` (trailing zeros dropped); None when empty."""
        if self.landmark is None:
            return None
        counts: list[float | int] = []
        for c in self.counts:
            r = rounded(c)
            counts.append(int(r) if r.is_integer() else r)  # "3" is shorter than "3.0"
        while counts and counts[-1] == 0:
            counts.pop()
        if not counts:
            return None
        return [int(self.landmark), *counts]

    @classmethod
    def from_list(
        cls, row: list[float | int] | None, half_life_seconds: float = 21 * 86400.0
    ) -> EngagementHours:
        """Inverse of :meth:`to_list` (None or an empty list: no history)."""
        hours = cls(half_life_seconds)
        if not row:
            return hours
        if len(row) > HOURS + 1:
            raise ValueError(f"expected at most {HOURS + 1} values, got {len(row)}")
        hours.landmark = float(row[0])
        for hour, count in enumerate(row[1:]):
            hours.counts[hour] = float(count)
        return hours


def rounded(x: float) -> float:
    """``round(x, _DECIMALS)``, the same float for every ``x``, faster (it runs for every event a shopper
    sends, :func:`observe_stored`; compiled, 70 ns a call from Python against ``round``'s 280).

    ``round`` takes the integer nearest to the exact ``x * 1000`` (ties to even) and returns the float
    nearest to that integer over 1000. The product as computed is off the exact one by at most half a
    unit in its last place, so where it lies well away from a half (and is not huge) its nearest integer
    is the same, and the division, exact in its operands and correctly rounded, gives that float. Near
    a half, for huge values, and for an answer of zero (whose sign ``round`` keeps), ``round`` answers.
    """
    y = x * _SCALE
    if -1e9 < y < 1e9:
        whole = math.floor(y)
        part = y - whole  # off by at most an ulp of 1: far inside the margin below
        n = whole + 1 if part > 0.5 else whole
        if n != 0 and abs(part - 0.5) > 1e-6:
            return n / _SCALE
    return round(x, _DECIMALS)


def observe_stored(
    row: list[float | int] | None, ts: float, zone: ZoneInfo, weight: float, half_life_seconds: float
) -> list[float | int] | None:
    """``EngagementHours.from_list(row).observe(ts, zone, weight)`` then ``to_list()``, without the
    round trip when the landmark stays: only the observed bin changes (the others are already
    rounded, and rounding is idempotent), so the result is the same list, bin for bin.

    The worker counts every event of a shopper this way; the full decode and encode of 24 bins
    per event was one of the largest costs of its bookkeeping.
    """
    if weight < 0:
        raise ValueError("weight must not be negative")
    if weight == 0:
        return row
    if not row:  # a first observation: its landmark, zeros up to its hour, its count (as to_list)
        landmark = math.floor(ts)
        first = rounded(weight * math.exp2((ts - landmark) / half_life_seconds))
        if first == 0:
            return None
        hour = local_hour(ts, zone)
        return [landmark, *([0] * hour), int(first) if first.is_integer() else first]
    if len(row) > HOURS + 1 or ts - row[0] > _REBASE_HALF_LIVES * half_life_seconds:
        hours = EngagementHours.from_list(row, half_life_seconds)
        hours.observe(ts, zone, weight)
        return hours.to_list()
    hour = local_hour(ts, zone)
    out = list(row)
    if len(out) < hour + 2:
        out.extend([0] * (hour + 2 - len(out)))
    added = weight * math.exp2((ts - float(row[0])) / half_life_seconds)
    count = rounded(float(out[hour + 1]) + added)
    out[hour + 1] = int(count) if count.is_integer() else count
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return out if len(out) > 1 else None


def _candidates(now: float, deadline: float, zone: ZoneInfo, config: PolicyConfig) -> list[tuple[float, int]]:
    """(instant, local hour) of every reachable send time after ``now`` and before ``deadline``, in order.

    These are the starts of local hours (a missing spring-forward hour has none; a doubled fall-back
    hour has two) and the ends of quiet hours (an hour that starts in quiet hours begins there), never an
    instant inside quiet hours.
    """
    start, end = config.quiet_minutes()
    found: dict[float, int] = {}
    t = (math.floor(now / _GRID_SECONDS) + 1) * float(_GRID_SECONDS)
    while t < deadline:
        local = datetime.fromtimestamp(t, zone)
        if local.minute == 0 and local.second == 0:
            found[t] = local.hour
        t += _GRID_SECONDS
    if start != end:
        day = datetime.fromtimestamp(now, zone).date()
        last = datetime.fromtimestamp(deadline, zone).date()
        while day <= last:
            at = local_instant(day, end, zone)
            if now < at < deadline:
                found[at] = datetime.fromtimestamp(at, zone).hour
            day += timedelta(days=1)
    return [(at, found[at]) for at in sorted(found) if not in_quiet_hours(at, zone, start, end)]


def learned(hours: EngagementHours, now: float, config: PolicyConfig) -> bool:
    """Whether send time is on and the shopper has ``send_time_min_observations`` at ``now``: else
    :func:`send_at` sends at once."""
    return config.send_time_enabled and hours.total(now) >= config.send_time_min_observations


def earliest_send_time(now: float, zone: ZoneInfo, config: PolicyConfig) -> float:
    """A time no later than any :func:`send_at` other than ``now`` itself may return at ``now``: the first
    instant after ``now`` that could start a local hour (the next quarter hour: every reachable time
    lies on that grid) or end quiet hours, whichever comes first.

    Cheap and independent of the push and the shopper's hours: the engine needs it for every decision
    it queues (``stream.decider.Decider.earliest_timer``), and :func:`send_at` scans up to a day.
    """
    first = (math.floor(now / _GRID_SECONDS) + 1) * float(_GRID_SECONDS)
    start, end = config.quiet_minutes()
    if start == end:
        return first
    day = datetime.fromtimestamp(now, zone).date()
    for _ in range(2):  # the quiet end of today, else of tomorrow (as _candidates finds them)
        at = local_instant(day, end, zone)
        if now < at:
            return min(first, at)
        day += timedelta(days=1)
    return first


def send_at(
    hours: EngagementHours, now: float, zone: ZoneInfo, expires_at: float, config: PolicyConfig
) -> float:
    """When to send a push decided at ``now`` for a shopper in ``zone`` (epoch seconds, never before now).

    ``now`` itself when send time is disabled, the shopper has fewer than ``send_time_min_observations``
    decayed observations, ``now`` is in quiet hours (the policy's quiet-hours rule decides those), no
    better hour is reachable, or the current local hour's count is at least ``send_time_min_share`` of
    the best reachable hour's. Otherwise the first instant of the best reachable local hour (the
    earliest of those within 5 % of the best). Reachable: after ``now``, before
    ``min(expires_at - min_push_lifetime_seconds, now + send_time_horizon_seconds)``, not in quiet hours
    (wall-clock times in ``zone``, across DST changes).
    """
    if not learned(hours, now, config):
        return now
    deadline = min(expires_at - config.min_push_lifetime_seconds, now + config.send_time_horizon_seconds)
    if deadline <= now:
        return now
    start, end = config.quiet_minutes()
    if in_quiet_hours(now, zone, start, end):
        return now
    # Stored counts have the decayed counts' ratios: compare them directly.
    counts = hours.counts
    reachable = _candidates(now, deadline, zone, config)
    best = max((counts[hour] for _, hour in reachable), default=0.0)
    current = counts[local_hour(now, zone)]
    if best <= 0.0 or current >= config.send_time_min_share * best:
        return now
    # The earliest hour that ties with the best (within the tolerance) wins.
    floor = best * (1.0 - _TIE_TOLERANCE)
    return next(at for at, hour in reachable if counts[hour] >= floor)


def describe(hours: EngagementHours, now: float, top: int = 3) -> list[tuple[int, float]]:
    """The shopper's ``top`` local hours at ``now`` with their share of the total, best first (hour on ties).

    For explanations and the console, e.g. ``[(19, 0.41), (20, 0.33), (12, 0.08)]``.
    """
    values = hours.decayed(now)
    total = math.fsum(values)
    if total <= 0.0:
        return []
    ranked = sorted(range(HOURS), key=lambda h: (-values[h], h))
    return [(h, values[h] / total) for h in ranked[:top] if values[h] > 0.0]
