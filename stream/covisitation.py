"""Co-visitation: item -> the items seen with it in the same sessions, by time-decayed counts.

One index per partition (:mod:`stream.partition_state`), fed by the partition's view and add-to-cart
events; it proposes related items (:func:`stream.candidates.gather_candidates`) and measures how
similar two items are (diversity in :mod:`stream.decider`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from stream.forward_decay import ForwardDecay, best_first
from stream.policy_config import PolicyConfig


def _weakest(bucket: dict[str, float]) -> str:
    """The entry evicted first: lowest value, then lowest id.

    ``min`` of ``(value, id)`` tuples, walked without building them (a full row pays this on every new
    neighbour: at a shop that has run a while, on most co-visits). The comparison is the tuples' own
    (``==`` on the values first, then ``<`` on whichever part differs), the same order for every value
    a row holds: sums of the decay's finite weights, rescaled by factors of at most 1. (Not for a NaN,
    which the tuples would find equal to itself when one float object sits under two ids.)
    """
    first = True
    low, low_key = 0.0, ""
    for key, value in bucket.items():
        if first:
            low, low_key, first = value, key, False
        elif value < low if value != low else key < low_key:
            low, low_key = value, key
    return low_key


def _count(row: dict[str, float], neighbour: str, weight: float, slots: int) -> None:
    """Add ``weight`` to ``neighbour``'s count in ``row``; a new neighbour in a full row (``slots``)
    replaces the weakest (ties broken by id, so the choice never depends on insertion order: replays
    are exact)."""
    if neighbour in row:
        row[neighbour] += weight
        return
    if len(row) >= slots:
        del row[_weakest(row)]
    row[neighbour] = weight


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
        self._decay = ForwardDecay(half_life_seconds)
        self._items: OrderedDict[str, dict[str, float]] = OrderedDict()
        # Change tracking for the partition's state store: the touch order (LRU) of each item and
        # the items whose row (touch order and neighbours) changed since the last drain.
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._dirty_items: set[str] = set()

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
                self._dirty_items.add(item)
        others = [other for other in previous if other != item_id]
        n = len(others)
        if n == 0:
            return
        if len(self._items) + n + 1 > self.max_items:
            self._observe_each(item_id, others, weight)
            return
        # What _observe_each does, with item_id's row looked up, moved and marked once instead of once
        # per pair. With no row evicted (every row this call could create fits), only the last touch
        # of each item decides the rows' recency order and its touch number (item_id's last is pair
        # 2n - 1, the k-th other's 2k + 2, the later one where an item repeats), and first touches
        # decide the insertion orders: the same rows, order, numbers and changed items as pair by pair.
        items, touched, dirty, slots = self._items, self._touched, self._dirty_items, self._slots
        row = items.get(item_id)
        if row is None:
            row = items[item_id] = {}
        seq = self._seq
        touched[item_id] = seq + 2 * n - 1
        dirty.add(item_id)
        last = n - 1
        for k in range(n):
            other = others[k]
            _count(row, other, weight, slots)
            if k == last:
                items.move_to_end(item_id)
            other_row = items.get(other)
            if other_row is None:
                other_row = items[other] = {}
            else:
                items.move_to_end(other)
            touched[other] = seq + 2 * k + 2
            dirty.add(other)
            _count(other_row, item_id, weight, slots)
        self._seq = seq + 2 * n

    def _observe_each(self, item_id: str, others: list[str], weight: float) -> None:
        """Both directions of each pair, one pair after another (the touch order is part of the stored
        rows): the rule, for any input; a new row may evict the least recently touched one."""
        items, touched, dirty, slots = self._items, self._touched, self._dirty_items, self._slots
        for other in others:
            for item, neighbour in ((item_id, other), (other, item_id)):
                row = items.get(item)
                if row is None:
                    row = items[item] = {}
                    if len(items) > self.max_items:
                        self._evict_oldest()
                else:
                    items.move_to_end(item)
                self._seq += 1
                touched[item] = self._seq
                dirty.add(item)
                _count(row, neighbour, weight, slots)

    def _evict_oldest(self) -> None:
        """Drop the least recently touched item; its row is deleted at the next drain."""
        evicted, _ = self._items.popitem(last=False)
        self._touched.pop(evicted, None)
        self._dirty_items.add(evicted)

    def _best(self, item_id: str) -> list[tuple[str, float]]:
        bucket = self._items.get(item_id)
        if not bucket:
            return []
        # Sorting ~2N floats beats heapq.nlargest at these sizes; ties by id (order-independent).
        return best_first(bucket)[: self.top_n]

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
        ranked = best_first(scores)
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
        return _relative(bucket, b)

    # -- persistence: the partition's state store keeps one row per item ----------------------------

    def meta(self) -> dict[str, Any]:
        """The index-wide values a restore needs (landmark and touch counter)."""
        return {"landmark": self._decay.landmark, "seq": self._seq}

    def drain_changes(self) -> dict[str, tuple[int, dict[str, float]] | None]:
        """Rows changed since the last drain, and forget them: per item, its touch order and its
        neighbours' counts (the index's own dict: encode it before the index changes), or None when
        the item was evicted."""
        items, touched = self._items, self._touched
        rows: dict[str, tuple[int, dict[str, float]] | None] = {}
        for item in self._dirty_items:
            bucket = items.get(item)
            rows[item] = None if bucket is None else (touched[item], bucket)
        self._dirty_items.clear()
        return rows

    def row(self, item: str) -> tuple[int, dict[str, float]] | None:
        """An item's stored form, as :meth:`drain_changes` gives it (None when the index lacks it)."""
        bucket = self._items.get(item)
        return None if bucket is None else (self._touched[item], bucket)

    def restore(
        self, meta: dict[str, Any], rows: Iterable[tuple[str, int, dict[str, float]]], rewrite: bool = False
    ) -> None:
        """Rebuild from :meth:`meta` and the stored rows ``(item, touch order, neighbours' counts)``.

        ``rewrite``: the rows were read from an older layout; every item is drained again, so the
        store gets them in this one. Beyond ``max_items`` the least recently touched items are evicted.
        """
        self._decay.landmark = None if meta.get("landmark") is None else float(meta["landmark"])
        self._seq = int(meta.get("seq", 0))
        ordered = sorted(rows, key=lambda row: row[1])
        self._items = OrderedDict((item, bucket) for item, _, bucket in ordered)
        self._touched = {item: seq for item, seq, _ in ordered}
        self._dirty_items = set(self._items) if rewrite else set()
        # More items than the cap (a lower covisit_max_items than the rows were written with, or rows
        # of two layouts): the least recently touched go now, their rows deleted at the next drain.
        while len(self._items) > self.max_items:
            self._evict_oldest()

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
    return _relative(bucket, b)


def _relative(bucket: dict[str, float], b: str) -> float:
    """``b``'s count relative to the strongest in ``bucket``; 0 when every count has decayed to 0.

    A landmark rescale by 2 ** -(gap / half-life) underflows to 0 after about 1,074 half-lives
    without events on the partition (20 hours at a covisit_half_life_seconds of 60).
    """
    top = max(bucket.values())
    return bucket[b] / top if top > 0.0 else 0.0
