"""The rule set a marketer would configure in a push platform: the strongest baseline Kairos must beat.

Two journeys, both one hour after the moment they watch for:

* **cart abandonment**: an ``add_to_cart`` whose item was neither bought nor removed within an hour;
* **browse abandonment**: an item viewed at least twice and not carted, with no further view of it
  (and no cart or purchase of it) within an hour of the last view.

And the platform-level guards every such product offers:

* **quiet hours** in the user's time zone (the zone their events carry, else UTC; 22:00-08:00, the
  same window as Kairos's default): a journey that comes due inside them waits for their end and is
  sent then if it still holds (the item still in the cart / still not carted or bought);
* **frequency cap**: at most one push per user per local calendar day; a journey that finds the cap
  used is dropped (a later journey may push the next day);
* consent and the holdout group, like every baseline.

When two journeys of a user come due in the same step, cart abandonment goes first (it is the stronger
signal). Everything is pure: ``now`` is an argument, iteration orders are fixed, so a run is
reproducible.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from benchmarks.baselines import BaselinePusher, baseline_push
from stream.contract import Event, Push
from stream.policy import quiet_hours_end
from stream.policy_config import PolicyConfig

CART = "cart_abandonment"
BROWSE = "browse_abandonment"
_RANK = {CART: 0, BROWSE: 1}  # cart first when both come due together


@dataclass(order=True, frozen=True)
class _Journey:
    due_at: float
    rank: int
    user_id: str
    item_id: str
    cause: str  # the event that armed it: a newer one replaces it


class MarketerRulesPusher(BaselinePusher):
    """Cart and browse abandonment after ``delay_seconds``, quiet hours, one push per user per local day."""

    def __init__(
        self,
        holdout: Callable[[str], bool],
        delay_seconds: float = 3600.0,
        ttl_seconds: float = 3600.0,
        min_views: int = 2,
        quiet_start: str = "22:00",
        quiet_end: str = "08:00",
    ) -> None:
        super().__init__(holdout)
        self.delay = delay_seconds
        self.ttl = ttl_seconds
        self.min_views = min_views
        self._quiet = PolicyConfig.model_validate(
            {"quiet_hours_start": quiet_start, "quiet_hours_end": quiet_end}
        )
        self.zones: dict[str, ZoneInfo] = {}
        self._zone_cache: dict[str, ZoneInfo] = {}
        self.views: dict[tuple[str, str], int] = {}
        self.carted: set[tuple[str, str]] = set()
        self._armed: dict[tuple[str, str, str], str] = {}  # (kind, user, item) -> live cause
        self._heap: list[_Journey] = []
        self._last_push_day: dict[str, str] = {}  # user -> local ISO date of the last push
        self.dropped_by_cap = 0
        self.held_for_quiet_hours = 0

    # -- inputs ---------------------------------------------------------------------------------

    def observe_event(self, event: Event) -> None:
        """Arm, re-arm or disarm the user's journeys for the event's item; learn the user's zone."""
        if event.context is not None and event.context.time_zone:
            zone = self._zone(event.context.time_zone)
            if zone is not None:
                self.zones[event.user_id] = zone
        if event.item_id is None:
            return
        key = (event.user_id, event.item_id)
        if event.type == "view":
            self.views[key] = self.views.get(key, 0) + 1
            if self.views[key] >= self.min_views and key not in self.carted:
                self._arm(BROWSE, event, event.ts + self.delay)
        elif event.type == "add_to_cart":
            self.carted.add(key)
            self._armed.pop((BROWSE, *key), None)
            self._arm(CART, event, event.ts + self.delay)
        elif event.type == "remove_from_cart":
            self.carted.discard(key)
            self._armed.pop((CART, *key), None)
        elif event.type == "purchase":
            self.carted.discard(key)
            self._armed.pop((CART, *key), None)
            self._armed.pop((BROWSE, *key), None)

    # -- decisions ------------------------------------------------------------------------------

    def due(self, now: float) -> list[Push]:
        """The pushes of every journey due at ``now`` (inclusive) that passes the guards."""
        out: list[Push] = []
        deferred: list[_Journey] = []
        while self._heap and self._heap[0].due_at <= now:
            j = heapq.heappop(self._heap)
            kind = CART if j.rank == _RANK[CART] else BROWSE
            if self._armed.get((kind, j.user_id, j.item_id)) != j.cause:
                continue  # bought, removed, carted or re-armed since
            item = self.catalog.get(j.item_id)
            if item is None or item.stock <= 0 or not self.audience.reachable(j.user_id):
                del self._armed[(kind, j.user_id, j.item_id)]
                continue
            zone = self.zones.get(j.user_id) or self._default_zone()
            quiet_end = quiet_hours_end(now, zone, self._quiet)
            if quiet_end is not None:
                # Wait for the morning; the journey stays armed, so a purchase meanwhile cancels it.
                self.held_for_quiet_hours += 1
                deferred.append(_Journey(quiet_end, j.rank, j.user_id, j.item_id, j.cause))
                continue
            del self._armed[(kind, j.user_id, j.item_id)]
            day = datetime.fromtimestamp(now, zone).date().isoformat()
            if self._last_push_day.get(j.user_id) == day:
                self.dropped_by_cap += 1
                continue
            self._last_push_day[j.user_id] = day
            reason = "Still in your cart" if kind == CART else "Still thinking about it?"
            out.append(baseline_push(j.user_id, item, kind, j.cause, now, self.ttl, reason))
        for j in deferred:
            heapq.heappush(self._heap, j)
        return out

    def pending(self) -> int:
        """Armed journeys (for tests)."""
        return len(self._armed)

    # -- helpers --------------------------------------------------------------------------------

    def _arm(self, kind: str, event: Event, due_at: float) -> None:
        assert event.item_id is not None
        self._armed[(kind, event.user_id, event.item_id)] = event.event_id
        heapq.heappush(
            self._heap, _Journey(due_at, _RANK[kind], event.user_id, event.item_id, event.event_id)
        )

    def _zone(self, name: str) -> ZoneInfo | None:
        zone = self._zone_cache.get(name)
        if zone is None:
            try:
                zone = self._zone_cache[name] = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                return None
        return zone

    def _default_zone(self) -> ZoneInfo:
        zone = self._zone("UTC")
        assert zone is not None
        return zone
