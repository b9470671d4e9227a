"""Candidate items for a user's next push, from four bounded sources, merged with a source label.

* :class:`Engagement` (per user, stored in the user's state): items the user viewed or carted and has
  not bought, with view counts and last-engagement times.
* :class:`CoVisitationIndex` (per worker): item -> top-N items seen in the same sessions, with
  time-decayed counts, updated from the stream.
* :class:`PromotionBoard` (per worker): items on an active promotion, deepest discount first.
* :class:`TrendingItems` (per worker): time-decayed popularity, for users with little history.

Decayed counts use *forward decay*: an observation at ``ts`` adds ``w * 2 ** ((ts - landmark) / half_life)``,
so stored values never need to be touched again to decay, their order is the order of the decayed
values, and the decayed value at ``now`` is ``stored * 2 ** (-(now - landmark) / half_life)``. The
landmark moves forward (rescaling every value once) before the exponent could overflow.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream.contract import CatalogUpdate
from stream.policy_config import PolicyConfig

# Rescale forward-decayed values when the landmark is this many half-lives behind (2**60 ~ 1e18).
_REBASE_HALF_LIVES = 60.0

_value = operator.itemgetter(1)


def _best_first(counts: dict[str, float]) -> list[tuple[str, float]]:
    """``counts`` as (id, value) pairs, highest value first, then by id (ties never depend on insertion).

    Two C-level sorts instead of a Python key per entry: by id, then stably by value descending (a
    ``reverse`` sort keeps the order of equal values), which gives the order of the key ``(-value, id)``.
    """
    ranked = sorted(counts.items())
    ranked.sort(key=_value, reverse=True)
    return ranked


def _weakest(bucket: dict[str, float]) -> str:
    """The entry evicted first: lowest value, then lowest id (tuples compare in C, no key function)."""
    return min(zip(bucket.values(), bucket.keys(), strict=True))[1]


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
    """A user's recently engaged items (bounded, most recent last) and the session's last event time."""

    def __init__(self, max_items: int = 20) -> None:
        self.max_items = max_items
        self.items: OrderedDict[str, EngagedItem] = OrderedDict()
        self.last_ts: float | None = None

    def observe(self, event_type: str, item_id: str | None, ts: float) -> None:
        """Fold one behaviour event in (push feedback and searches only move the session time)."""
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if item_id is None or event_type not in ("view", "add_to_cart", "remove_from_cart", "purchase"):
            return
        entry = self.items.get(item_id)
        if entry is None:
            entry = EngagedItem()
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
        while len(self.items) > self.max_items:
            self.items.popitem(last=False)

    def get(self, item_id: str) -> EngagedItem | None:
        """The record of one item, if remembered."""
        return self.items.get(item_id)

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

    def bought(self) -> set[str]:
        """Items the user bought (among those remembered)."""
        return {item for item, e in self.items.items() if e.bought}

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-able form: ``{"t": last_ts, "i": [[item, views, carts, in_cart, bought, ts]]}``."""
        return {
            "t": self.last_ts,
            "i": [
                [k, e.views, e.carts, int(e.in_cart), int(e.bought), e.last_ts] for k, e in self.items.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], max_items: int = 20) -> Engagement:
        """Rebuild from :meth:`to_dict`."""
        engagement = cls(max_items)
        engagement.last_ts = None if data.get("t") is None else float(data["t"])
        for item, views, carts, in_cart, bought, ts in data.get("i", []):
            engagement.items[str(item)] = EngagedItem(
                int(views), int(carts), bool(in_cart), bool(bought), float(ts)
            )
        while len(engagement.items) > max_items:
            engagement.items.popitem(last=False)
        return engagement


class _ForwardDecay:
    """The landmark arithmetic shared by the decayed counters."""

    def __init__(self, half_life_seconds: float, landmark: float | None = None) -> None:
        self.half_life_seconds = half_life_seconds
        self.landmark = landmark

    def weight(self, ts: float) -> tuple[float, float | None]:
        """Forward-decayed weight of one unit at ``ts``, and a rescale factor when the landmark moved."""
        if self.landmark is None:
            self.landmark = ts
        exponent = (ts - self.landmark) / self.half_life_seconds
        rescale = None
        if exponent > _REBASE_HALF_LIVES:
            rescale = math.exp2(-exponent)
            self.landmark = ts
            exponent = 0.0
        return math.exp2(exponent), rescale

    def at(self, stored: float, now: float) -> float:
        """The decayed value at ``now`` of a stored forward-decayed value."""
        if self.landmark is None:
            return 0.0
        # A time before the landmark (out-of-order or far-future events moved it) reads as the landmark:
        # decayed values never grow backwards, and the exponent cannot overflow.
        return stored * math.exp2(-max(now - self.landmark, 0.0) / self.half_life_seconds)


class CoVisitationIndex:
    """item -> its top-N co-visited items, by time-decayed co-occurrence counts in sessions.

    Each item keeps up to ``2 * top_n`` neighbours (the slack lets new pairs accumulate before they
    compete; the weakest is evicted beyond it) and answers with its best ``top_n``; at most
    ``max_items`` items are kept, the least recently touched evicted first. Memory is therefore bounded
    by ``max_items * 2 * top_n`` entries.
    """

    def __init__(
        self, top_n: int = 20, max_items: int = 100_000, half_life_seconds: float = 7 * 86400.0
    ) -> None:
        self.top_n = top_n
        self.max_items = max_items
        self._slots = 2 * top_n
        self._decay = _ForwardDecay(half_life_seconds)
        self._items: OrderedDict[str, dict[str, float]] = OrderedDict()
        # Change tracking for the partition's state store: the touch order (LRU) of each item and
        # the (item, neighbour) entries written since the last drain.
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._dirty_items: set[str] = set()
        self._dirty_pairs: set[tuple[str, str]] = set()

    @classmethod
    def from_config(cls, config: PolicyConfig) -> CoVisitationIndex:
        """An empty index sized by the policy settings."""
        return cls(config.covisit_top_n, config.covisit_max_items, config.covisit_half_life_seconds)

    def __len__(self) -> int:
        return len(self._items)

    def entries(self) -> int:
        """Stored (item, neighbour) pairs: the memory the index uses."""
        return sum(len(b) for b in self._items.values())

    def observe(self, item_id: str, previous: Sequence[str], ts: float) -> None:
        """Count ``item_id`` as co-visited with each of the session's ``previous`` items (both ways)."""
        weight, rescale = self._decay.weight(ts)
        if rescale is not None:
            for item, bucket in self._items.items():
                for key in bucket:
                    bucket[key] *= rescale
                    self._dirty_pairs.add((item, key))
        for other in previous:
            if other != item_id:
                self._add(item_id, other, weight)
                self._add(other, item_id, weight)

    def _add(self, item: str, other: str, weight: float) -> None:
        bucket = self._items.get(item)
        if bucket is None:
            bucket = {}
            self._items[item] = bucket
            if len(self._items) > self.max_items:
                evicted, gone = self._items.popitem(last=False)
                self._touched.pop(evicted, None)
                self._dirty_items.add(evicted)
                self._dirty_pairs.update((evicted, k) for k in gone)
        else:
            self._items.move_to_end(item)
        self._seq += 1
        self._touched[item] = self._seq
        self._dirty_items.add(item)
        self._dirty_pairs.add((item, other))
        if other in bucket:
            bucket[other] += weight
            return
        if len(bucket) >= self._slots:
            # Ties broken by id, so the choice never depends on insertion order (replays are exact).
            weakest = _weakest(bucket)
            del bucket[weakest]
            self._dirty_pairs.add((item, weakest))
        bucket[other] = weight

    def _best(self, item_id: str) -> list[tuple[str, float]]:
        bucket = self._items.get(item_id)
        if not bucket:
            return []
        # Sorting ~2N floats beats heapq.nlargest at these sizes; ties by id (order-independent).
        return _best_first(bucket)[: self.top_n]

    def neighbours(self, item_id: str, now: float, n: int | None = None) -> list[tuple[str, float]]:
        """The best co-visited items of ``item_id`` with their decayed counts at ``now``, best first."""
        best = self._best(item_id)[: n or self.top_n]
        return [(k, self._decay.at(v, now)) for k, v in best]

    def related(
        self, anchors: Sequence[str], now: float, n: int, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """Items co-visited with ``anchors`` (most recent first, weights 1, 1/2, 1/3 ...), best first."""
        scores: dict[str, float] = {}
        for rank, anchor in enumerate(anchors):
            weight = 1.0 / (rank + 1)
            for other, value in self._best(anchor):
                scores[other] = scores.get(other, 0.0) + value * weight
        skip = set(exclude)
        skip.update(anchors)
        # Forward-decayed values rank like decayed ones: decay only the answers.
        ranked = _best_first(scores)
        out: list[tuple[str, float]] = []
        for k, v in ranked:
            if k not in skip:
                out.append((k, self._decay.at(v, now)))
                if len(out) >= n:
                    break
        return out

    def snapshot(self, items: Iterable[str]) -> dict[str, dict[str, float]]:
        """Copies of these items' neighbour counts, for :func:`snapshot_similarity` later."""
        buckets = self._items
        return {item: dict(bucket) for item in items if (bucket := buckets.get(item))}

    def similarity(self, a: str, b: str) -> float:
        """Co-visitation similarity in [0, 1]: count(a, b) relative to a's strongest neighbour."""
        bucket = self._items.get(a)
        if not bucket or b not in bucket:
            return 0.0
        return bucket[b] / max(bucket.values())

    # -- persistence: the partition's state store keeps one row per item and per (item, neighbour) --

    def meta(self) -> dict[str, Any]:
        """The index-wide values a restore needs (landmark and touch counter)."""
        return {"landmark": self._decay.landmark, "seq": self._seq}

    def drain_changes(self) -> dict[tuple[str, str], Any]:
        """Rows changed since the last drain, and forget them.

        Keys are ``(item, "")`` for an item's touch order and ``(item, neighbour)`` for a count;
        values are the new value or None for a deleted row.
        """
        rows: dict[tuple[str, str], Any] = {}
        for item in self._dirty_items:
            rows[(item, "")] = self._touched.get(item)
        for item, other in self._dirty_pairs:
            bucket = self._items.get(item)
            rows[(item, other)] = None if bucket is None else bucket.get(other)
        self._dirty_items.clear()
        self._dirty_pairs.clear()
        return rows

    def restore(self, meta: dict[str, Any], rows: Iterable[tuple[str, str, Any]]) -> None:
        """Rebuild from :meth:`meta` and the stored rows ``(item, neighbour or "", value)``."""
        self._decay.landmark = None if meta.get("landmark") is None else float(meta["landmark"])
        self._seq = int(meta.get("seq", 0))
        buckets: dict[str, dict[str, float]] = {}
        touched: dict[str, int] = {}
        for item, other, value in rows:
            if other:
                buckets.setdefault(item, {})[other] = float(value)
            else:
                touched[item] = int(value)
        self._items = OrderedDict(
            (item, buckets.get(item, {})) for item in sorted(touched, key=touched.__getitem__)
        )
        self._touched = touched
        self._dirty_items.clear()
        self._dirty_pairs.clear()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot (least recently touched item first)."""
        return {
            "top_n": self.top_n,
            "max_items": self.max_items,
            "half_life_seconds": self._decay.half_life_seconds,
            "landmark": self._decay.landmark,
            "items": [[k, list(b.items())] for k, b in self._items.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoVisitationIndex:
        """Rebuild from :meth:`to_dict`."""
        index = cls(int(data["top_n"]), int(data["max_items"]), float(data["half_life_seconds"]))
        index._decay.landmark = None if data["landmark"] is None else float(data["landmark"])
        for item, pairs in data["items"]:
            index._items[str(item)] = {str(o): float(v) for o, v in pairs}
            index._seq += 1
            index._touched[str(item)] = index._seq
        return index


def snapshot_similarity(snapshot: dict[str, dict[str, float]], a: str, b: str) -> float:
    """:meth:`CoVisitationIndex.similarity` as it was when ``snapshot`` was taken (``a`` in it)."""
    bucket = snapshot.get(a)
    if not bucket or b not in bucket:
        return 0.0
    return bucket[b] / max(bucket.values())


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
        self._decay = _ForwardDecay(half_life_seconds)
        self._counts: dict[str, float] = {}
        self._top: list[str] = []
        self._top_at: float | None = None
        self._top_k = 0
        self._dirty: set[str] = set()  # counts written since the last drain (for the state store)
        self._since_refresh = 0  # observations since the top list was last ranked

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
        self._counts[item_id] = self._counts.get(item_id, 0.0) + w * unit
        self._dirty.add(item_id)
        if len(self._counts) > self.max_items + max(1, self.max_items // 4):
            # Ties by id: which items survive never depends on the dict's insertion order.
            keep = heapq.nlargest(self.max_items, self._counts.items(), key=lambda kv: (kv[1], kv[0]))
            self._dirty.update(self._counts.keys() - {k for k, _ in keep})
            self._counts = dict(keep)
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
            self._top = self._ranked(self._top_k or _TRENDING_CACHE)
            self._top_k = max(self._top_k, _TRENDING_CACHE)
            self._top_at = ts

    def _ranked(self, k: int) -> list[str]:
        ranked = heapq.nlargest(k, self._counts.items(), key=lambda kv: (kv[1], kv[0]))
        return [item for item, _ in ranked]

    def score(self, item_id: str, now: float) -> float:
        """Decayed count of one item at ``now``."""
        return self._decay.at(self._counts.get(item_id, 0.0), now)

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


@dataclass(frozen=True)
class CandidateSource:
    """One merged candidate: the item and the source that proposed it first."""

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
