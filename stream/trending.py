"""Time-decayed popularity of items per partition (:class:`TrendingItems`), the candidate source for
users with little history, and its snapshot at a moment (:class:`PopularityAt`) for the discovery pool.

Decayed counts use forward decay (:mod:`stream.forward_decay`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream.forward_decay import ForwardDecay
from stream.policy_config import PolicyConfig

# Items the trending top list caches (a request for more ranks on the spot).
_TRENDING_CACHE = 64
# Fewest observations between two rankings of the top list (bounds its cost per event).
_TRENDING_MIN_OBSERVATIONS = 32

# Trending weight of each behaviour event type; others do not count.
TRENDING_WEIGHTS: dict[str, float] = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}

# Numbers for the key sets of the counters' lives (PopularityAt.keys_epoch), unique in the process.
_KEY_EPOCHS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PopularityAt:
    """The partition's decayed trending counts at a moment (:meth:`TrendingItems.popularity_at`): an
    item's popularity is ``counts.get(item, 0.0) * factor``. Only the counted items can have any, so
    the discovery pool (``stream.discovery``) values the others without a lookup.

    Which items are counted grows by :attr:`added` within one :attr:`keys_epoch`: the counts' keys are
    those they had when the epoch began and the items of ``added`` (a new epoch begins whenever items
    are dropped), so a reader can follow the key set without scanning it
    (:meth:`stream.discovery.CategoryTerms.counted_in`). ``keys_epoch`` 0: not followed (a snapshot).
    """

    counts: Mapping[str, float]
    factor: float
    keys_epoch: int = 0
    added: Sequence[str] = ()

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
        # Items first counted since the key set's epoch began (PopularityAt): only ever appended to.
        self._keys_epoch = next(_KEY_EPOCHS)
        self._added: list[str] = []

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
        counts = self._counts
        old = counts.get(item_id)
        if old is None:
            self._added.append(item_id)
        counts[item_id] = (0.0 if old is None else old) + w * unit
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
            self._new_key_epoch()
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

    def scores(self, items: Sequence[str], now: float) -> list[float]:
        """:meth:`score` of each item, the decay computed once (the same floats:
        :meth:`PopularityAt.of`)."""
        get, factor = self._counts.get, self._decay.at(1.0, now)
        if factor == 0.0:  # no landmark, or decayed to nothing: a negative count's product would be -0.0
            return [self.score(item, now) for item in items]
        return [get(item, 0.0) * factor for item in items]

    def popularity_at(self, now: float) -> PopularityAt:
        """The counts and their decay at ``now`` (the decay factor computed once): :meth:`score` of any
        items, read when needed."""
        return PopularityAt(self._counts, self._decay.at(1.0, now), self._keys_epoch, self._added)

    def _new_key_epoch(self) -> None:
        """Items were dropped: the key set starts a new epoch (:class:`PopularityAt`)."""
        self._keys_epoch = next(_KEY_EPOCHS)
        self._added = []

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

    def count(self, item_id: str) -> float | None:
        """The stored form of an item's count (None when not counted): what :meth:`drain_changes` gives."""
        return self._counts.get(item_id)

    def restore(self, meta: dict[str, Any], rows: Iterable[tuple[str, float]], rewrite: bool = False) -> None:
        """Rebuild from :meth:`meta` and the stored ``(item, count)`` rows.

        ``rewrite``: the rows were read from an older layout; every count is drained again, so the
        store gets them in this one."""
        self._decay.landmark = None if meta.get("landmark") is None else float(meta["landmark"])
        self._top = [str(i) for i in meta.get("top", [])]
        self._top_at = None if meta.get("top_at") is None else float(meta["top_at"])
        self._top_k = int(meta.get("top_k", 0))
        self._since_refresh = int(meta.get("since", 0))
        self._counts = {item: float(v) for item, v in rows}
        self._new_key_epoch()
        self._dirty = set(self._counts) if rewrite else set()
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
        counts = [(str(item), float(count)) for item, count in data["counts"]]  # JSON gives lists
        trending.restore(data.get("cache", {"landmark": data["landmark"]}), counts)
        return trending
