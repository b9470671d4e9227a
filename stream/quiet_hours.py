"""Quiet hours: the one rule for whether an instant is in a shopper's quiet hours, and when they end.

Quiet hours are wall-clock times in the shopper's zone (``policy.quiet_hours_start`` / ``_end``, as
minutes after local midnight; start equal to end: none), so across a DST change the night is an hour
shorter or longer in real time:
- an end that does not exist that night (inside a spring-forward gap) is the first instant after the
  gap (:func:`local_instant`);
- an end whose wall time comes twice (a fall-back hour) is its first time, or its second once the first
  has passed;
- a start whose wall time comes twice begins the night at its first time: the repeated wall times
  before the start, in the hour after the clocks went back, stay quiet (by the wall clock alone they
  would read as before the start, a hole in the night).

The policy (``stream.user_facts.quiet_hours_end``) and send time (``stream.send_time``) both ask here,
and send time also for the local hour of every event a shopper sends (:func:`local_hour`).
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_HOUR = 3600.0
# Per zone, a UTC hour [lo, lo + 3600) over which the zone's offset holds, and that offset in seconds.
_OFFSETS: dict[ZoneInfo, tuple[float, float]] = {}
_OFFSETS_MAX = 1_024  # emptied when full: one entry per zone, and a hostile producer can name many
# How far from a local hour's edge an instant must lie for the offset alone to give its hour:
# ``datetime.fromtimestamp`` rounds to the microsecond, which can carry an instant within half a
# microsecond of the edge into the next hour; the sum ts + offset is exact to well under this.
_EDGE = 1e-3


def local_hour(ts: float, zone: ZoneInfo) -> int:
    """``datetime.fromtimestamp(ts, zone).hour``, the same integer for every ``ts``, mostly without
    building the datetime (send time counts every event of a shopper by its local hour).

    The zone's UTC offset is remembered for the UTC hour it was read in: offsets change at whole
    seconds, so when the offsets at the hour's first and last whole second agree and the zone changes
    offset at most once an hour (every zone in the tz database: its changes are months apart), the
    offset holds for the whole hour. An hour with a change, and instants within a millisecond of a
    local hour's edge or of the UTC hour's end (the datetime's rounding may carry them over a change
    there), take the datetime.
    """
    lo = math.floor(ts / _HOUR) * _HOUR
    known = _OFFSETS.get(zone)
    if known is None or known[0] != lo:
        before = datetime.fromtimestamp(lo, zone).utcoffset()
        after = datetime.fromtimestamp(lo + _HOUR - 1.0, zone).utcoffset()
        if before is None or before != after:
            return datetime.fromtimestamp(ts, zone).hour
        if len(_OFFSETS) >= _OFFSETS_MAX:
            _OFFSETS.clear()
        known = _OFFSETS[zone] = (lo, before.total_seconds())
    local = ts + known[1]
    hours = math.floor(local / _HOUR)
    into = local - hours * _HOUR
    if into < _EDGE or into > _HOUR - _EDGE or ts > lo + _HOUR - _EDGE:  # (the last: a change at lo + 1 h)
        return datetime.fromtimestamp(ts, zone).hour
    return hours % 24


def local_instant(day: date, minutes: int, zone: ZoneInfo) -> float:
    """The first instant (epoch seconds) the wall clock of ``zone`` reads ``minutes`` after midnight of
    local ``day``; when that wall time does not exist (a spring-forward gap), the first instant after
    the gap, where the wall clock first reads a later time.

    (Python's default, ``fold=0``, reads a time in the gap with the offset before it, which lands as far
    past the gap as the time is into it: 02:30 in New York's 02:00-03:00 gap became 03:30 EDT, half an
    hour after quiet hours ending at 02:30 had ended by the wall clock.)
    """
    wall = datetime.combine(day, time(minutes // 60, minutes % 60))
    at = wall.replace(tzinfo=zone).timestamp()
    if datetime.fromtimestamp(at, zone).replace(tzinfo=None) == wall:
        return at
    # In a gap: ``fold=1`` reads it with the offset after it, an instant before the gap; the
    # transition lies between the two, and wall time only rises in between. Offsets are whole seconds.
    lo, hi = wall.replace(tzinfo=zone, fold=1).timestamp(), at
    while hi - lo > 1.0:
        mid = float(math.floor((lo + hi) / 2.0))  # a float, as lo and hi are (mypyc: one type per name)
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def quiet_end(now: float, zone: ZoneInfo, start: int, end: int) -> float | None:
    """When the quiet hours around ``now`` end (epoch seconds), or None when ``now`` is outside them.

    ``start`` and ``end`` are minutes after local midnight (equal: no quiet hours).
    """
    if start == end:
        return None
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute + local.second / 60.0
    # Before the start by the wall clock, a night whose start came twice (a fall-back hour) may have
    # begun at its first time (module docstring); asked only then, as it costs two conversions.
    if start < end:
        if minute >= end or (minute < start and not _night_began_at_first_start(now, local, zone, start)):
            return None
        day = local.date()
    elif minute >= start:
        day = local.date() + timedelta(days=1)
    elif minute < end:
        day = local.date()
    elif _night_began_at_first_start(now, local, zone, start):
        day = local.date() + timedelta(days=1)
    else:
        return None
    release = local_instant(day, end, zone)
    if release <= now:
        # The end's wall time comes twice tonight (a fall-back hour) and its first time has passed: the
        # shopper is in the second one, so quiet hours end at the second.
        release = datetime.combine(day, time(end // 60, end % 60, fold=1), tzinfo=zone).timestamp()
    return release


def in_quiet_hours(now: float, zone: ZoneInfo, start: int, end: int) -> bool:
    """Whether ``now`` falls in quiet hours (:func:`quiet_end` is not None)."""
    return quiet_end(now, zone, start, end) is not None


def _night_began_at_first_start(now: float, local: datetime, zone: ZoneInfo, start: int) -> bool:
    """Whether the start's wall time comes twice on ``now``'s local day (a fall-back hour) and ``now``
    (``local`` in ``zone``) lies between its two times: the night began at the first, so ``now`` is
    quiet though its wall clock reads before the start."""
    if not local.fold:  # only the second pass of a repeated hour can lie between the two times
        return False
    wall = time(start // 60, start % 60)
    first = datetime.combine(local.date(), wall, tzinfo=zone).timestamp()
    second = datetime.combine(local.date(), wall.replace(fold=1), tzinfo=zone).timestamp()
    return first < second and first <= now < second
