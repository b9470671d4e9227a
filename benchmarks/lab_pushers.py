"""The policy lab's prototype pushers (``benchmarks/policy_lab.py``): one moment, several item choices.

All of them push at the same moment, ``delay`` after a shopper's last behaviour event (the session
has ended), at most once per local day, holding pushes due in quiet hours to their end, never the same
item twice in ``repeat`` seconds. They differ only in which items they consider and how they rank them:

* :class:`SessionEndPusher`: the shopper's abandoned items (carted first, then viewed at least twice).
* :class:`PopularDiscoveryPusher`: items the shopper has not engaged with, the most popular (decayed
  views, carts, purchases) in the categories of their recent views: discovery without a model.
* :class:`ValueDiscoveryPusher`: those items ranked by the observable parts of the shop's utility
  (popularity, discount, price relative to the category).
* :class:`CovisitDiscoveryPusher`: unengaged neighbours of the recent items by same-session co-views.
* :class:`ModelDiscoveryPusher`: items the shopper has not engaged with, ranked by the GRU the push
  benchmark trains on the warm-up days (its state reset at each session, as the worker does).
* ``benchmarks/lab_learned.py``'s :class:`LearnedDiscoveryPusher`: those items ranked by weights learned
  online from the shop's own organic discovery views (no simulator coefficient).

The oracles, which read the world's ground truth, are in ``benchmarks/lab_oracles.py``; nothing here does.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from benchmarks.baselines import BaselinePusher, baseline_push
from stream.contract import Event, Push
from stream.discovery import discovery_value
from stream.engine.intake import STEP_TYPES
from stream.engine.users import TYPE_INDEX
from stream.policy import quiet_hours_end
from stream.policy_config import PolicyConfig
from stream.simulator import DAY
from stream.timers import ACTIVITY_TYPES
from stream.trending import TRENDING_WEIGHTS

DISCOVERY_TRIGGER = "in_session"  # the contract has no "recommendation" trigger; the lab's label only


@dataclass(frozen=True)
class LabCandidate:
    """An item a pusher may send at a session end, its trigger and its value (higher is better)."""

    item_id: str
    trigger: str
    value: float


class SessionEndPusher(BaselinePusher):
    """``delay`` after a shopper's last behaviour event, push their best candidate (see module doc)."""

    def __init__(
        self,
        holdout: Callable[[str], bool],
        delay_seconds: float = 3600.0,
        min_views: int = 2,
        repeat_seconds: float = 7 * DAY,
        ttl_seconds: float = 6 * 3600.0,
        recent_items: int = 5,
    ) -> None:
        super().__init__(holdout)
        self.delay, self.min_views, self.repeat = delay_seconds, min_views, repeat_seconds
        self.ttl, self.recent_n = ttl_seconds, recent_items
        self._quiet = PolicyConfig.model_validate({})
        self._zones: dict[str, ZoneInfo] = {}
        self.zone: dict[str, ZoneInfo] = {}
        self.cart: dict[str, dict[str, float]] = {}  # user -> item -> add time
        self.views: dict[str, dict[str, int]] = {}  # user -> item -> views, not bought
        self.engaged: dict[str, set[str]] = {}  # user -> every item viewed, carted or bought
        self.recent: dict[str, list[str]] = {}  # user -> their last viewed or carted items
        self.pushed: dict[tuple[str, str], float] = {}
        self.per_day: dict[tuple[str, date], int] = {}
        self._due: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}  # user -> the live due time

    def observe_event(self, event: Event) -> None:
        """Track the cart, views, engaged items and zone; (re-)arm the user's session end."""
        if event.context is not None and event.context.time_zone:
            name = event.context.time_zone
            self.zone[event.user_id] = self._zones.setdefault(name, ZoneInfo(name))
        if event.type not in ACTIVITY_TYPES:
            return
        u, i = event.user_id, event.item_id
        cart, views = self.cart.setdefault(u, {}), self.views.setdefault(u, {})
        if i is not None:
            self.engaged.setdefault(u, set()).add(i)
            if event.type in ("view", "add_to_cart"):
                recent = self.recent.setdefault(u, [])
                recent.append(i)
                del recent[: -self.recent_n]
            if event.type == "view":
                views[i] = views.get(i, 0) + 1
            elif event.type == "add_to_cart":
                cart[i] = event.ts
            elif event.type in ("remove_from_cart", "purchase"):
                cart.pop(i, None)
                views.pop(i, None)
        self._armed[u] = event.ts + self.delay
        heapq.heappush(self._due, (event.ts + self.delay, u))

    def abandoned(self, user_id: str) -> list[tuple[str, bool]]:
        """(item, carted) for the shopper's cart and items viewed at least ``min_views`` times."""
        cart = self.cart.get(user_id, {})
        viewed = [
            (i, False)
            for i, n in self.views.get(user_id, {}).items()
            if n >= self.min_views and i not in cart
        ]
        return [(i, True) for i in cart] + viewed

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        """Abandoned items, carts first, then by views (a marketer's ranking)."""
        views = self.views.get(user_id, {})
        return [
            LabCandidate(
                i, "cart_abandonment" if carted else "browse_abandonment", carted + views.get(i, 0) * 1e-3
            )
            for i, carted in self.abandoned(user_id)
        ]

    def due(self, now: float) -> list[Push]:
        """The pushes of every session end due at ``now`` that passes the guards."""
        out: list[Push] = []
        for at, u, day in self.moments(self._due, self._armed, now):
            best = self.best(u, now, self.candidates(u, now))
            if best is not None:
                out.append(self.send(u, day, best, best.trigger, f"end@{at:.0f}", now))
        return out

    def moments(
        self, queue: list[tuple[float, str]], armed: dict[str, float], now: float
    ) -> list[tuple[float, str, date]]:
        """(due time, user, local day) of the moments in ``queue`` due at ``now`` that pass the guards.

        A moment counts only while ``armed`` holds its due time (a later one replaced it otherwise);
        one that falls in quiet hours is re-armed for their end; one of an unreachable user, or of a
        user already pushed that local day, is dropped.
        """
        ready: list[tuple[float, str, date]] = []
        later: list[tuple[float, str]] = []
        while queue and queue[0][0] <= now:
            at, u = heapq.heappop(queue)
            if armed.get(u) != at:
                continue
            del armed[u]
            if not self.audience.reachable(u):
                continue
            zone = self.zone.get(u) or ZoneInfo("UTC")
            quiet_end = quiet_hours_end(now, zone, self._quiet)
            if quiet_end is not None:
                armed[u] = quiet_end
                later.append((quiet_end, u))
                continue
            day = datetime.fromtimestamp(now, zone).date()
            if self.per_day.get((u, day), 0) >= 1:
                continue
            ready.append((at, u, day))
        for entry in later:
            heapq.heappush(queue, entry)
        return ready

    def best(self, user_id: str, now: float, candidates: list[LabCandidate]) -> LabCandidate | None:
        """The highest-valued candidate in stock and not pushed to the user within the repeat window."""
        best: LabCandidate | None = None
        for c in candidates:
            item = self.catalog.get(c.item_id)
            if (
                item is None
                or item.stock <= 0
                or now - self.pushed.get((user_id, c.item_id), -math.inf) < self.repeat
            ):
                continue
            if best is None or (c.value, c.item_id) > (best.value, best.item_id):
                best = c
        return best

    def send(self, user_id: str, day: date, best: LabCandidate, trigger: str, cause: str, now: float) -> Push:
        """Record the push of ``best`` (repeat window, the day's cap) and build it."""
        self.pushed[(user_id, best.item_id)] = now
        self.per_day[(user_id, day)] = 1
        return baseline_push(user_id, self.catalog[best.item_id], trigger, cause, now, self.ttl, "lab")

    def recent_categories(self, user_id: str) -> set[str]:
        """The categories of the shopper's last viewed or carted items."""
        entries = (self.catalog.get(i) for i in self.recent.get(user_id, []))
        return {e.category for e in entries if e is not None}


class PopularDiscoveryPusher(SessionEndPusher):
    """The most popular items of the shopper's recent categories that they have not engaged with."""

    half_life = DAY
    per_category = 30

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.popularity: dict[str, tuple[float, float]] = {}  # item -> (score, at)

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        weight = TRENDING_WEIGHTS.get(event.type)
        if weight is None or event.item_id is None:
            return
        score, at = self.popularity.get(event.item_id, (0.0, event.ts))
        decay = 0.5 ** (max(0.0, event.ts - at) / self.half_life)
        self.popularity[event.item_id] = (score * decay + weight, max(at, event.ts))

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        categories = self.recent_categories(user_id)
        engaged = self.engaged.get(user_id, set())
        ranked: dict[str, list[tuple[float, str]]] = {}
        for item_id, (score, at) in self.popularity.items():
            entry = self.catalog.get(item_id)
            if entry is not None and entry.category in categories and item_id not in engaged:
                value = score * 0.5 ** (max(0.0, now - at) / self.half_life)
                ranked.setdefault(entry.category, []).append((value, item_id))
        out = []
        for category in sorted(ranked):
            for value, item_id in sorted(ranked[category], reverse=True)[: self.per_category]:
                out.append(LabCandidate(item_id, DISCOVERY_TRIGGER, value))
        return out


class ModelDiscoveryPusher(SessionEndPusher):
    """The items the shopper has not engaged with that the GRU scores highest after their session."""

    scorer: Any = None  # model.scorer.IncrementalScorer, set by the lab
    shortlist = 200

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.states: dict[str, np.ndarray] = {}
        self.sessions: dict[str, str | None] = {}

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        if event.item_id is None or event.type not in STEP_TYPES:
            return
        u = event.user_id
        if u not in self.states or self.sessions.get(u) != event.session_id:
            self.states[u] = self.scorer.initial_state(1)
            self.sessions[u] = event.session_id
        index = self.scorer.item_indices([event.item_id])
        self.states[u] = self.scorer.step(self.states[u], index, np.array([TYPE_INDEX[event.type]]))

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        state = self.states.get(user_id)
        if state is None:
            return []
        scores = self.scorer.catalog_scores(state)[0]
        engaged = self.engaged.get(user_id, set())
        out = []
        for k in np.argsort(-scores, kind="stable")[: self.shortlist]:
            item_id = self.scorer.item_id(int(k))
            if item_id not in engaged:
                out.append(LabCandidate(item_id, DISCOVERY_TRIGGER, float(scores[k])))
        return out


class ValueDiscoveryPusher(PopularDiscoveryPusher):
    """:class:`PopularDiscoveryPusher`'s items ranked by the observable parts of the shop's utility.

    ``log1p(popularity) + 3 x discount - 0.9 x log(price / the category's median price)``: popularity
    stands for the item's appeal, the discount and the relative price are what every shopper weighs
    (the simulator's utility has ``+3 x discount`` and ``-rho log(price / reference)``, rho 0.3-1.5).
    """

    discount_weight = 3.0
    price_weight = 0.9

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self._medians: tuple[float, dict[str, float]] = (math.nan, {})

    def median_prices(self, now: float) -> dict[str, float]:
        """Each category's median effective price at ``now`` (computed once per step, not per shopper)."""
        if self._medians[0] != now:
            prices: dict[str, list[float]] = {}
            for entry in self.catalog.values():
                prices.setdefault(entry.category, []).append(entry.effective_price(now))
            self._medians = (now, {category: float(np.median(p)) for category, p in prices.items()})
        return self._medians[1]

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        median = self.median_prices(now)
        out = []
        for c in super().candidates(user_id, now):
            entry = self.catalog[c.item_id]
            promo = entry.promotion
            discount = promo.discount if promo is not None and promo.active_at(now) else 0.0
            relative = max(entry.effective_price(now), 0.01) / median[entry.category]
            value = discovery_value(c.value, discount, relative, self.discount_weight, self.price_weight)
            out.append(LabCandidate(c.item_id, c.trigger, value))
        return out


class CovisitDiscoveryPusher(PopularDiscoveryPusher):
    """Unengaged neighbours of the shopper's recent items by same-session co-views of every shopper.

    Neighbours of the latest item weigh 1, the one before 1/2, ...; popularity breaks ties, and a
    shopper whose items have no neighbours yet gets :class:`PopularDiscoveryPusher`'s items.
    """

    window = 5

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.co_views: dict[str, dict[str, float]] = {}
        self.session_items: dict[str, tuple[str | None, list[str]]] = {}

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        if event.type not in ("view", "add_to_cart") or event.item_id is None:
            return
        session, items = self.session_items.get(event.user_id, (None, []))
        if session != event.session_id:
            items = []
        for other in items[-self.window :]:
            if other != event.item_id:
                row = self.co_views.setdefault(other, {})
                row[event.item_id] = row.get(event.item_id, 0.0) + 1.0
                back = self.co_views.setdefault(event.item_id, {})
                back[other] = back.get(other, 0.0) + 1.0
        items.append(event.item_id)
        self.session_items[event.user_id] = (event.session_id, items)

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        engaged = self.engaged.get(user_id, set())
        scores: dict[str, float] = {}
        for rank, item in enumerate(reversed(self.recent.get(user_id, []))):
            for other, count in self.co_views.get(item, {}).items():
                if other not in engaged:
                    scores[other] = scores.get(other, 0.0) + count / (rank + 1)
        popular = {c.item_id: c.value for c in super().candidates(user_id, now)}
        if not scores:
            return [LabCandidate(i, DISCOVERY_TRIGGER, 1e-3 * v) for i, v in popular.items()]
        return [LabCandidate(i, DISCOVERY_TRIGGER, s + 1e-3 * popular.get(i, 0.0)) for i, s in scores.items()]
