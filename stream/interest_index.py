"""The interest index: item -> the users most interested in it, bounded per item and in total.

A catalog change (price drop, back in stock, promotion start, a new arrival like the item) reaches
the users this index holds for the item (which triggers a change fires:
``stream.triggers.catalog_triggers``; the interest a scored candidate enters with:
``stream.interest``). It is part of each partition's state (``stream.partition_state``), persisted as
rows per item and per (item, user).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from stream.policy_config import PolicyConfig

# Half-lives the landmark may lag the newest update before every entry is rescaled (2**60 stays far
# from a float's overflow).
_RESCALE_EXPONENT = 60.0


class _Bucket:
    """The users of one item: entries plus a min-heap (lazy deletion) to find the weakest in O(log n)."""

    __slots__ = ("entries", "heap")

    def __init__(self) -> None:
        # user -> (forward-decayed interest, interest, ts)
        self.entries: dict[str, tuple[float, float, float]] = {}
        self.heap: list[tuple[float, str]] = []

    def weakest(self) -> tuple[float, str]:
        """The live entry with the lowest forward-decayed interest (the bucket must not be empty)."""
        heap = self.heap
        while True:
            value, user = heap[0]
            live = self.entries.get(user)
            if live is not None and live[0] == value:
                return value, user
            heapq.heappop(heap)  # stale: the user was refreshed or removed

    def rebuild(self) -> None:
        """Drop stale heap entries."""
        self.heap = [(v[0], u) for u, v in self.entries.items()]
        heapq.heapify(self.heap)


class InterestIndex:
    """item -> the users most interested in it: bounded per item and in total.

    Each item keeps at most ``per_item`` users (the weakest is evicted, compared at the newer score's
    time so stale high scores do not block fresh ones); the whole index keeps at most ``max_entries``
    (item, user) pairs, evicting the least recently updated items first. Stored interest decays with
    ``half_life_seconds`` when read; scores below ``min_interest`` do not enter. Internally interest is
    forward-decayed (see :mod:`stream.forward_decay`), so comparing two entries never needs an exponential.
    """

    def __init__(
        self,
        per_item: int = 200,
        max_entries: int = 500_000,
        half_life_seconds: float = 2 * 86400.0,
        min_interest: float = 0.0,
    ) -> None:
        self.per_item = per_item
        self.max_entries = max_entries
        self.half_life_seconds = half_life_seconds
        self.min_interest = min_interest
        self._landmark: float | None = None
        # Least recently updated item first.
        self._items: OrderedDict[str, _Bucket] = OrderedDict()
        self._size = 0
        # Change tracking for the partition's state store: each item's update order (LRU) and the
        # (item, user) entries written since the last drain.
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._dirty_items: set[str] = set()
        self._dirty_pairs: set[tuple[str, str]] = set()
        # user -> the items holding an entry of theirs (insertion-ordered keys, values unused): an
        # erasure forgets a user's entries without scanning every item. A scan cost 65 ms at the
        # default bound (500,000 entries over 50,000 items), so a bulk erasure of a few hundred users
        # held the event loop past the liveness timeout; this map costs about a fifth of the index's
        # memory.
        self._by_user: dict[str, dict[str, None]] = {}

    def __len__(self) -> int:
        return self._size

    @classmethod
    def from_config(cls, config: PolicyConfig) -> InterestIndex:
        """An empty index sized by the policy settings."""
        return cls(
            config.interest_index_per_item,
            config.interest_index_max_entries,
            config.interest_index_half_life_seconds,
            config.interest_index_min_interest,
        )

    def rescale_due(self, ts: float) -> bool:
        """Whether an update at ``ts`` would move the landmark, rescaling every stored entry."""
        landmark = self._landmark
        return landmark is not None and (ts - landmark) / self.half_life_seconds > _RESCALE_EXPONENT

    def _forward(self, interest: float, ts: float) -> float:
        if self._landmark is None:
            self._landmark = ts
        exponent = (ts - self._landmark) / self.half_life_seconds
        if exponent > _RESCALE_EXPONENT:
            # Move the landmark before 2**exponent could overflow; rescales every entry once.
            scale = math.exp2(-exponent)
            for item, bucket in self._items.items():
                bucket.entries = {u: (v * scale, i, t) for u, (v, i, t) in bucket.entries.items()}
                bucket.rebuild()
                self._dirty_pairs.update((item, u) for u in bucket.entries)
            self._landmark = ts
            exponent = 0.0
        return interest * math.exp2(exponent)

    def update(self, item_id: str, user_id: str, interest: float, ts: float) -> None:
        """Record (or refresh) a user's interest in an item, scored at event time ``ts``."""
        bucket = self._items.get(item_id)
        if interest < self.min_interest and (bucket is None or user_id not in bucket.entries):
            return
        value = self._forward(interest, ts)
        if bucket is None:
            bucket = _Bucket()
            self._items[item_id] = bucket
        else:
            self._items.move_to_end(item_id)
        self._seq += 1
        self._touched[item_id] = self._seq
        self._dirty_items.add(item_id)
        if user_id not in bucket.entries:
            if len(bucket.entries) >= self.per_item:
                weakest_value, weakest = bucket.weakest()
                if weakest_value >= value:
                    return
                heapq.heappop(bucket.heap)
                del bucket.entries[weakest]
                self._unlink(item_id, weakest)
                self._dirty_pairs.add((item_id, weakest))
                self._size -= 1
            self._size += 1
            self._by_user.setdefault(user_id, {})[item_id] = None
        bucket.entries[user_id] = (value, interest, ts)
        self._dirty_pairs.add((item_id, user_id))
        heapq.heappush(bucket.heap, (value, user_id))
        if len(bucket.heap) > 2 * len(bucket.entries) + 16:
            bucket.rebuild()
        while self._size > self.max_entries and len(self._items) > 1:
            oldest_item, oldest = self._items.popitem(last=False)
            if oldest_item == item_id:  # never evict what was just written
                self._items[oldest_item] = oldest
                self._items.move_to_end(oldest_item, last=False)
                break
            self._size -= len(oldest.entries)
            self._forget(oldest_item, oldest)

    def _forget(self, item_id: str, bucket: _Bucket) -> None:
        """Mark an item that left the index (its rows are deleted at the next drain)."""
        self._touched.pop(item_id, None)
        self._dirty_items.add(item_id)
        self._dirty_pairs.update((item_id, u) for u in bucket.entries)
        for user in bucket.entries:
            self._unlink(item_id, user)

    def _unlink(self, item_id: str, user_id: str) -> None:
        items = self._by_user.get(user_id)
        if items is not None:
            items.pop(item_id, None)
            if not items:
                del self._by_user[user_id]

    def _relink(self) -> None:
        """Rebuild the user -> items map from the buckets (after a restore)."""
        self._by_user = {}
        for item, bucket in self._items.items():
            for user in bucket.entries:
                self._by_user.setdefault(user, {})[item] = None

    def discard(self, item_id: str, user_id: str) -> None:
        """Forget one user's interest in one item (e.g. after the user bought it)."""
        bucket = self._items.get(item_id)
        if bucket is not None and bucket.entries.pop(user_id, None) is not None:
            self._size -= 1
            self._unlink(item_id, user_id)
            self._dirty_pairs.add((item_id, user_id))
            if not bucket.entries:
                del self._items[item_id]
                self._forget(item_id, bucket)

    def purge_users(self, user_ids: set[str]) -> int:
        """Forget every entry of these users (erasure, expiry); returns the count. Costs the users' own
        entries, not a scan of the index."""
        hits = [(item, u) for u in sorted(user_ids) for item in list(self._by_user.get(u, ()))]
        for item, user in hits:
            self.discard(item, user)
        for item in {item for item, _ in hits}:  # their lazily deleted heap entries go too
            bucket = self._items.get(item)
            if bucket is not None:
                bucket.rebuild()
        return len(hits)

    # -- persistence: rows per item (update order) and per (item, user) in the state store ----------

    def meta(self) -> dict[str, Any]:
        """The index-wide values a restore needs (landmark and update counter)."""
        return {"landmark": self._landmark, "seq": self._seq}

    def drain_changes(self) -> dict[tuple[str, str], Any]:
        """Rows changed since the last drain, and forget them.

        ``(item, "")`` holds the item's update order, ``(item, user)`` ``[forward value, interest, ts]``;
        None deletes the row.
        """
        rows: dict[tuple[str, str], Any] = {}
        for item in self._dirty_items:
            rows[(item, "")] = self._touched.get(item)
        for item, user in self._dirty_pairs:
            bucket = self._items.get(item)
            entry = None if bucket is None else bucket.entries.get(user)
            rows[(item, user)] = None if entry is None else list(entry)
        self._dirty_items.clear()
        self._dirty_pairs.clear()
        return rows

    def restore(self, meta: dict[str, Any], rows: Iterable[tuple[str, str, Any]]) -> None:
        """Rebuild from :meth:`meta` and the stored rows ``(item, user or "", value)``."""
        self._landmark = None if meta.get("landmark") is None else float(meta["landmark"])
        self._seq = int(meta.get("seq", 0))
        buckets: dict[str, _Bucket] = {}
        touched: dict[str, int] = {}
        for item, user, value in rows:
            if user:
                v, i, t = value
                buckets.setdefault(item, _Bucket()).entries[user] = (float(v), float(i), float(t))
            else:
                touched[item] = int(value)
        self._items = OrderedDict()
        self._size = 0
        for item in sorted(touched, key=touched.__getitem__):
            bucket = buckets.get(item)
            if bucket is None or not bucket.entries:
                continue
            bucket.rebuild()
            self._items[item] = bucket
            self._size += len(bucket.entries)
        self._touched = {item: touched[item] for item in self._items}
        self._relink()
        self._dirty_items.clear()
        self._dirty_pairs.clear()

    def users_for(self, item_id: str, now: float, min_interest: float) -> list[tuple[str, float, float]]:
        """Users with decayed interest >= ``min_interest`` in the item: (user, interest, ts), best first."""
        bucket = self._items.get(item_id)
        if not bucket or self._landmark is None:
            return []
        scale = math.exp2(-(now - self._landmark) / self.half_life_seconds)
        found = [(u, v * scale, t) for u, (v, _, t) in bucket.entries.items() if v * scale >= min_interest]
        found.sort(key=lambda row: (-row[1], row[0]))
        return found

    def best_of(self, item_ids: Iterable[str], now: float, min_interest: float) -> dict[str, float]:
        """User -> their best decayed interest over ``item_ids``, among those with >= ``min_interest`` in
        one of them: the values :meth:`users_for` gives, without sorting each item's users."""
        best: dict[str, float] = {}
        if self._landmark is None:
            return best
        scale = math.exp2(-(now - self._landmark) / self.half_life_seconds)
        get = best.get
        for item_id in item_ids:
            bucket = self._items.get(item_id)
            if not bucket:
                continue
            for user, (v, _, _) in bucket.entries.items():
                value = v * scale
                if value >= min_interest and value > get(user, -1.0):
                    best[user] = value
        return best

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot: ``{"items": [[item, [[user, interest, ts], ...]], ...]}`` oldest first."""
        return {
            "per_item": self.per_item,
            "max_entries": self.max_entries,
            "half_life_seconds": self.half_life_seconds,
            "min_interest": self.min_interest,
            "items": [
                [item, [[u, i, t] for u, (_, i, t) in b.entries.items()]] for item, b in self._items.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterestIndex:
        """Rebuild an index from :meth:`to_dict`."""
        index = cls(
            int(data["per_item"]),
            int(data["max_entries"]),
            float(data["half_life_seconds"]),
            float(data.get("min_interest", 0.0)),
        )
        for item, rows in data["items"]:
            bucket = _Bucket()
            for u, i, t in rows:
                bucket.entries[str(u)] = (index._forward(float(i), float(t)), float(i), float(t))
            bucket.rebuild()
            index._items[str(item)] = bucket
            index._size += len(bucket.entries)
            index._seq += 1
            index._touched[str(item)] = index._seq
        index._relink()
        return index
