"""Candidate items for a user's next push, from four bounded sources, merged with a source label.

* :class:`Engagement` (per user, stored in the user's state): items the user viewed or carted and has
  not bought, with view counts and last-engagement times, and the purchases it forgot otherwise.
* :class:`~stream.covisitation.CoVisitationIndex` (per partition): item -> top-N items seen in the
  same sessions, with time-decayed counts, updated from the stream.
* :class:`PromotionBoard` (per worker): items on an active promotion, deepest discount first.
* :class:`TrendingItems` (per worker): time-decayed popularity, for users with little history.

Decayed counts use forward decay (:mod:`stream.forward_decay`).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream.contract import CatalogUpdate
from stream.covisitation import CoVisitationIndex
from stream.forward_decay import ForwardDecay
from stream.policy_config import PolicyConfig

# Items the trending top list caches (a request for more ranks on the spot).
_TRENDING_CACHE = 64
# Fewest observations between two rankings of the top list (bounds its cost per event).
_TRENDING_MIN_OBSERVATIONS = 32

# Trending weight of each behaviour event type; others do not count.
TRENDING_WEIGHTS: dict[str, float] = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}


@dataclass
class EngagedItem:
    """One item the user engaged with."""

    views: int = 0
    carts: int = 0
    in_cart: bool = False
    bought: bool = False
    last_ts: float = 0.0


class Engagement:
    """A user's recently engaged items (bounded, most recent last), the session's last event time and
    when their last two visits began.

    A bought item outlives its place among the recent ones: when newer items push it out, its id
    moves to ``earlier_purchases`` (the last ``max_purchases``, most recent last), so no push proposes
    again what the shopper bought a few dozen items ago (an owned item is the one push that cannot
    convert). An id there counts as engaged and bought wherever the recent items are asked.
    """

    def __init__(self, max_items: int = 20, max_purchases: int = 20) -> None:
        self.max_items = max_items
        self.max_purchases = max_purchases
        self.items: OrderedDict[str, EngagedItem] = OrderedDict()
        # Bought items no longer among ``items``, most recent last (a dict as an ordered set).
        self.earlier_purchases: dict[str, None] = {}
        self.last_ts: float | None = None
        # The start of the previous and the current visit (at most two, oldest first) and the last
        # activity: a shopper whose visits come close together is likely back soon.
        self.visits: list[float] = []
        self.active_ts: float | None = None
        self._bought: frozenset[str] | None = None  # bought(), until a purchase or an eviction

    def observe_visit(self, ts: float, gap_seconds: float) -> None:
        """Count an activity at ``ts``: a new visit begins after ``gap_seconds`` without one."""
        if self.active_ts is None or ts - self.active_ts > gap_seconds:
            self.visits.append(ts)
            del self.visits[:-2]
        if self.active_ts is None or ts > self.active_ts:
            self.active_ts = ts

    def returns_soon(self, within_seconds: float) -> bool:
        """Whether the current visit began less than ``within_seconds`` after the previous one (False
        with fewer than two visits seen, or ``within_seconds`` 0)."""
        return len(self.visits) == 2 and self.visits[1] - self.visits[0] < within_seconds

    def observe(self, event_type: str, item_id: str | None, ts: float) -> None:
        """Fold one behaviour event in (push feedback and searches only move the session time)."""
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if item_id is None or event_type not in ("view", "add_to_cart", "remove_from_cart", "purchase"):
            return
        entry = self.items.get(item_id)
        if entry is None:
            # An item bought before and forgotten among the recent ones is still bought.
            bought_before = item_id in self.earlier_purchases
            if bought_before:
                del self.earlier_purchases[item_id]
            entry = EngagedItem(bought=bought_before)
            self.items[item_id] = entry
        else:
            self.items.move_to_end(item_id)
        entry.last_ts = max(entry.last_ts, ts)
        if event_type == "view":
            entry.views += 1
        elif event_type == "add_to_cart":
            entry.carts += 1
            entry.in_cart = True
        elif event_type == "remove_from_cart":
            entry.in_cart = False
        else:
            entry.bought = True
            entry.in_cart = False
            self._bought = None
        self._trim()

    def _trim(self) -> None:
        """Forget the oldest items beyond ``max_items``, keeping the ids of bought ones (class doc)."""
        while len(self.items) > self.max_items:
            item, entry = self.items.popitem(last=False)
            self._bought = None
            if entry.bought and self.max_purchases > 0:
                self.earlier_purchases[item] = None
                while len(self.earlier_purchases) > self.max_purchases:
                    del self.earlier_purchases[next(iter(self.earlier_purchases))]

    def get(self, item_id: str) -> EngagedItem | None:
        """The record of one item, if remembered among the recent ones."""
        return self.items.get(item_id)

    def knows(self, item_id: str) -> bool:
        """Whether the user engaged with the item: among the recent ones, or bought before them."""
        return item_id in self.items or item_id in self.earlier_purchases

    def engaged(self) -> list[str]:
        """Items viewed or carted and not bought, most recent first."""
        return [item for item, e in reversed(self.items.items()) if not e.bought and (e.views or e.carts)]

    def recent(self, n: int) -> list[str]:
        """The ``n`` most recently engaged items (bought ones included), most recent first."""
        out: list[str] = []
        for item in reversed(self.items):
            if len(out) >= n:
                break
            out.append(item)
        return out

    def bought(self) -> frozenset[str]:
        """Items the user bought (among those remembered, earlier purchases included); the same object
        until that changes."""
        if self._bought is None:
            recent = (item for item, e in self.items.items() if e.bought)
            self._bought = frozenset(recent).union(self.earlier_purchases)
        return self._bought

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-able form: ``{"t": last_ts, "i": [[item, views, carts, in_cart, bought, ts]]}``,
        plus ``"v": [visit starts..., last activity]`` once an activity was seen and ``"p": [earlier
        purchases...]`` once a bought item was forgotten among the recent ones."""
        out: dict[str, Any] = {
            "t": self.last_ts,
            "i": [
                [k, e.views, e.carts, int(e.in_cart), int(e.bought), e.last_ts] for k, e in self.items.items()
            ],
        }
        if self.active_ts is not None:
            out["v"] = [*self.visits, self.active_ts]
        if self.earlier_purchases:
            out["p"] = list(self.earlier_purchases)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], max_items: int = 20, max_purchases: int = 20) -> Engagement:
        """Rebuild from :meth:`to_dict` (a record from before ``"p"`` has no earlier purchases)."""
        engagement = cls(max_items, max_purchases)
        if max_purchases > 0:
            engagement.earlier_purchases = dict.fromkeys(str(i) for i in data.get("p", [])[-max_purchases:])
        engagement.last_ts = None if data.get("t") is None else float(data["t"])
        visits = data.get("v")
        if visits:
            engagement.visits = [float(v) for v in visits[:-1]][-2:]
            engagement.active_ts = float(visits[-1])
        for item, views, carts, in_cart, bought, ts in data.get("i", []):
            engagement.items[str(item)] = EngagedItem(
                int(views), int(carts), bool(in_cart), bool(bought), float(ts)
            )
        engagement._trim()
        return engagement


@dataclass(frozen=True, slots=True)
class PopularityAt:
    """The partition's decayed trending counts at a moment (:meth:`TrendingItems.popularity_at`): an
    item's popularity is ``counts.get(item, 0.0) * factor``. Only the counted items can have any, so
    the discovery pool (``stream.discovery``) values the others without a lookup."""

    counts: Mapping[str, float]
    factor: float

    def of(self, items: Sequence[str]) -> list[float]:
        """The popularity of each item, in order (the same floats as :meth:`TrendingItems.score`)."""
        get, factor = self.counts.get, self.factor
        return [get(item, 0.0) * factor for item in items]


class TrendingItems:
    """Time-decayed popularity of items (views 1, carts 3, purchases 5), bounded to ``max_items``.

    Beyond ``max_items * 5 / 4`` items the weakest are pruned back to ``max_items`` (amortised cost per
    event O(log n)). The top list is cached and recomputed at most every ``refresh_seconds`` of event time.
    """

    def __init__(
        self,
        max_items: int = 10_000,
        half_life_seconds: float = 6 * 3600.0,
        refresh_seconds: float = 30.0,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.max_items = max_items
        self.refresh_seconds = refresh_seconds
        self.weights = dict(TRENDING_WEIGHTS if weights is None else weights)
        self._decay = ForwardDecay(half_life_seconds)
        self._counts: dict[str, float] = {}
        self._top: list[str] = []
        self._top_at: float | None = None
        self._top_k = 0
        self._dirty: set[str] = set()  # counts written since the last drain (for the state store)
        self._since_refresh = 0  # observations since the top list was last ranked
        # Items counted since the top list was last ranked; the next ranking need only look at them and
        # the list (:meth:`_refresh`), unless something lowered or rescaled counts since (_rank_all).
        self._moved: set[str] = set()
        self._rank_all = True

    @classmethod
    def from_config(cls, config: PolicyConfig) -> TrendingItems:
        """An empty counter sized by the policy settings."""
        return cls(
            config.trending_max_items, config.trending_half_life_seconds, config.trending_refresh_seconds
        )

    def __len__(self) -> int:
        return len(self._counts)

    def observe(self, item_id: str | None, event_type: str, ts: float) -> None:
        """Count one behaviour event."""
        w = self.weights.get(event_type)
        if item_id is None or not w:
            return
        unit, rescale = self._decay.weight(ts)
        if rescale is not None:
            self._counts = {k: v * rescale for k, v in self._counts.items()}
            self._dirty.update(self._counts)
            self._rank_all = True  # rounding may tie counts that were apart
        self._counts[item_id] = self._counts.get(item_id, 0.0) + w * unit
        self._dirty.add(item_id)
        self._moved.add(item_id)
        if w < 0.0:
            self._rank_all = True
        if len(self._counts) > self.max_items + max(1, self.max_items // 4):
            # Ties by id: which items survive never depends on the dict's insertion order.
            keep = self._largest(self.max_items)
            self._dirty.update(self._counts.keys() - {k for _, k in keep})
            self._counts = {k: v for v, k in keep}
            self._rank_all = True
        # The cached top list is refreshed here, on the write path, which sees every event in stream
        # order: a refresh driven by reads would depend on who asked when (batching, blocked users).
        # Only forward moves of event time refresh: interleaved users' slightly out-of-order times
        # would otherwise recompute the list every few events.
        # While fewer items than the cache holds are known, ranking is cheap and always current;
        # otherwise at most once per _TRENDING_MIN_OBSERVATIONS, or a replay whose event time runs
        # thousands of times faster than real time would re-rank every item on every event.
        self._since_refresh += 1
        stale = self._top_at is None or (
            ts - self._top_at >= self.refresh_seconds and self._since_refresh >= _TRENDING_MIN_OBSERVATIONS
        )
        if stale or len(self._top) < _TRENDING_CACHE:
            self._since_refresh = 0
            self._top = self._refresh(self._top_k or _TRENDING_CACHE)
            self._top_k = max(self._top_k, _TRENDING_CACHE)
            self._top_at = ts

    def _refresh(self, k: int) -> list[str]:
        """The ``k`` best items, as :meth:`_ranked` gives them, looking only where they can be.

        Between two rankings counts only grow (forward decay never rewrites them to decay), so an item
        outside the last list that was not counted since is still beaten by every item of the list: the
        new list is the best of the last one and the items counted since. In a replay, where the list is
        re-ranked every few dozen events, that is a hundred items instead of the ten thousand counted.
        A prune, a rescale or a negative weight lowers or rounds counts: then every item is ranked.
        """
        if self._rank_all or k != self._top_k:  # (the list of another length is not the k best)
            ranked = self._ranked(k)
        else:
            counts = self._counts
            near = self._moved.union(self._top)
            ranked = [item for _, item in heapq.nlargest(k, [(counts[i], i) for i in near if i in counts])]
        self._moved.clear()
        self._rank_all = False
        return ranked

    def _largest(self, k: int) -> list[tuple[float, str]]:
        # (count, id) pairs compare in C: the order of the key (count, id) without a Python key call.
        return heapq.nlargest(k, zip(self._counts.values(), self._counts.keys(), strict=True))

    def _ranked(self, k: int) -> list[str]:
        return [item for _, item in self._largest(k)]

    def score(self, item_id: str, now: float) -> float:
        """Decayed count of one item at ``now``."""
        return self._decay.at(self._counts.get(item_id, 0.0), now)

    def popularity_at(self, now: float) -> PopularityAt:
        """The counts and their decay at ``now`` (the decay factor computed once): :meth:`score` of any
        items, read when needed."""
        return PopularityAt(self._counts, self._decay.at(1.0, now))

    def top(self, k: int, now: float) -> list[str]:
        """The ``k`` most popular items, as of the last refresh (at most ``refresh_seconds`` of event
        time before the latest observation). A pure read: it never changes the counter."""
        if k > self._top_k:  # more than the cache holds: rank now, without caching
            return self._ranked(k)
        return self._top[:k]

    # -- persistence: one row per item in the partition's state store ------------------------------

    def meta(self) -> dict[str, Any]:
        """The counter-wide values a restore needs (landmark and the cached top list)."""
        return {
            "landmark": self._decay.landmark,
            "top": self._top,
            "top_at": self._top_at,
            "top_k": self._top_k,
            "since": self._since_refresh,
        }

    def drain_changes(self) -> dict[str, float | None]:
        """Counts changed since the last drain (None: pruned), and forget them."""
        rows = {item: self._counts.get(item) for item in self._dirty}
        self._dirty.clear()
        return rows

    def restore(self, meta: dict[str, Any], rows: Iterable[tuple[str, float]]) -> None:
        """Rebuild from :meth:`meta` and the stored ``(item, count)`` rows."""
        self._decay.landmark = None if meta.get("landmark") is None else float(meta["landmark"])
        self._top = [str(i) for i in meta.get("top", [])]
        self._top_at = None if meta.get("top_at") is None else float(meta["top_at"])
        self._top_k = int(meta.get("top_k", 0))
        self._since_refresh = int(meta.get("since", 0))
        self._counts = {item: float(v) for item, v in rows}
        self._dirty.clear()
        self._moved.clear()
        self._rank_all = True  # what was counted since the stored list was ranked is not stored

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot."""
        return {
            "max_items": self.max_items,
            "half_life_seconds": self._decay.half_life_seconds,
            "refresh_seconds": self.refresh_seconds,
            "landmark": self._decay.landmark,
            "counts": list(self._counts.items()),
            "cache": self.meta(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrendingItems:
        """Rebuild from :meth:`to_dict`."""
        trending = cls(
            int(data["max_items"]), float(data["half_life_seconds"]), float(data["refresh_seconds"])
        )
        trending._decay.landmark = None if data["landmark"] is None else float(data["landmark"])
        trending.restore(data.get("cache", {"landmark": data["landmark"]}), data["counts"])
        return trending


class Promotions(Protocol):
    """Items on a running promotion: :class:`PromotionBoard`, or the worker's catalog view by time."""

    def active(self, now: float, n: int) -> list[str]:
        """Up to ``n`` items whose promotion runs at ``now``, deepest discount first."""
        ...


class PromotionBoard:
    """Items on a promotion (from catalog updates), answered deepest discount first, bounded."""

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = max_items
        self._promos: dict[str, tuple[float, float, float]] = {}  # item -> (discount, starts_at, ends_at)
        self._order: list[str] | None = None

    def __len__(self) -> int:
        return len(self._promos)

    def update(self, entry: CatalogUpdate) -> None:
        """Track the item's promotion (or its absence) from its latest catalog entry."""
        promo = entry.promotion
        if promo is None or entry.stock <= 0:
            if self._promos.pop(entry.item_id, None) is not None:
                self._order = None
            return
        self._promos[entry.item_id] = (promo.discount, promo.starts_at, promo.ends_at)
        self._order = None
        if len(self._promos) > self.max_items:
            # Keep the promotions that end last: the others are the first to go anyway.
            keep = heapq.nlargest(self.max_items, self._promos.items(), key=lambda kv: kv[1][2])
            self._promos = dict(keep)

    def remove(self, item_id: str) -> None:
        """Forget an item that left the catalog."""
        if self._promos.pop(item_id, None) is not None:
            self._order = None

    def active(self, now: float, n: int) -> list[str]:
        """Up to ``n`` items whose promotion runs at ``now``, deepest discount first."""
        if self._order is None:
            self._order = sorted(self._promos, key=lambda k: (-self._promos[k][0], k))
        out: list[str] = []
        for item in self._order:
            _, starts, ends = self._promos[item]
            if starts <= now < ends:
                out.append(item)
                if len(out) >= n:
                    break
        return out


@dataclass(slots=True)
class CandidateSource:
    """One merged candidate: the item and the source that proposed it first.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__`` (about three times
    the cost), and a decision builds one per candidate; nothing changes or hashes it.
    """

    item_id: str
    source: str  # "engaged" | "covisited" | "new" | "promoted" | "trending"
    score: float  # the source's own score (recency rank, decayed count, discount, popularity)


def gather_candidates(
    engagement: Engagement,
    covisitation: CoVisitationIndex,
    promotions: Promotions,
    trending: TrendingItems,
    now: float,
    config: PolicyConfig,
    exclude: Iterable[str] = (),
    new_items: Iterable[str] = (),
) -> list[CandidateSource]:
    """Merge the five sources into at most ``max_candidates`` distinct items, each with its source.

    Order and quotas: engaged items (most recent first, ``quota_engaged``), then items co-visited with
    the session's recent items (``quota_covisited``), new items in the categories the user browses
    (``new_items``, newest first, ``quota_new``: items without history, which no other source can
    propose until shoppers engage with them), items on promotion (``quota_promoted``) and, for users
    with fewer than ``trending_min_history`` engaged items, trending items (``quota_trending``).
    Bought items and ``exclude`` never appear; an item proposed by two sources keeps the first.
    """
    skip = engagement.bought() | set(exclude)
    out: list[CandidateSource] = []
    seen: set[str] = set()

    def take(items: Iterable[tuple[str, float]], source: str, quota: int) -> None:
        taken = 0
        for item, score in items:
            if taken >= quota or len(out) >= config.max_candidates:
                return
            if item in skip or item in seen:
                continue
            seen.add(item)
            out.append(CandidateSource(item, source, score))
            taken += 1

    engaged = engagement.engaged()
    take(((item, 1.0 / (rank + 1)) for rank, item in enumerate(engaged)), "engaged", config.quota_engaged)
    anchors = engagement.recent(config.covisit_window)
    if config.quota_covisited and anchors:
        take(
            covisitation.related(anchors, now, config.quota_covisited, skip),
            "covisited",
            config.quota_covisited,
        )
    if config.quota_new:
        take(((item, 1.0) for item in new_items), "new", config.quota_new)
    if config.quota_promoted:
        promoted = promotions.active(now, config.quota_promoted + len(skip) + len(seen))
        take(((item, 1.0) for item in promoted), "promoted", config.quota_promoted)
    if config.quota_trending and len(engaged) < config.trending_min_history:
        top = trending.top(config.quota_trending + config.max_candidates, now)
        take(((item, trending.score(item, now)) for item in top), "trending", config.quota_trending)
    return out
