"""The catalog as the partitions see it: item versions by time, and the changes still to announce.

Every worker reads the whole catalog topic with its own consumer, so *when* a change reaches the
engine depends on thread timing, not on the event stream. Three things make decisions independent
of that timing (replays give the same pushes):

* **Versions by time.** A decision at time ``t`` reads :meth:`CatalogView.at` (the item's latest
  version with ``updated_at <= t``), not whatever arrived last, so a price drop read early is not
  seen by decisions before it, and an item first read live does not exist before its first
  version's time. Versions read by the start-up bootstrap (the compacted topic's latest values) hold
  from the beginning of time. Versions are forgotten by time (:meth:`forget_until`), never by how
  far ahead the reader happened to be.
* **Changes announced in stream order.** A change is announced to a partition (the price-drop, back
  in stock and promotion asks of the users its interest index knows) when that partition's clock
  passes the change's ``updated_at``, at that place in its stream, like a timer; changes with the
  same time go by item id. A change that arrives after the partition's clock already passed it (it
  was produced late, or the reader was behind) is announced on arrival, at the partition's clock:
  that case still depends on timing, and is counted (``kairos_catalog_late_total``).
* **What a change is.** ``previous`` is the version in force just before the update's time; a
  version read again (the reader restarted) or older than the newest is stored for lookups and
  announces nothing.

A tombstone has no time: it removes the item when it is read (and its pending changes with it).
Pure bookkeeping: the engine decides what an announcement does.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from stream.contract import CatalogUpdate

MAX_VERSIONS = 64  # per item, a safety net; versions go by time (forget_until) long before this
# Changes and superseded versions are kept this long behind the slowest owned partition's clock,
# for partitions still recovering or adopted later (their clocks may be behind).
CATALOG_RETENTION_SECONDS = 86_400.0
MAX_CHANGES = 200_000  # changes waiting to be announced, a safety net (the oldest go first)


@dataclass(frozen=True, order=True)
class CatalogChange:
    """One catalog update to announce: the version it replaces (None for a new item) and the update."""

    updated_at: float
    item_id: str  # ties on updated_at go by item: reader order across catalog partitions is timing
    seq: int  # then by arrival: one item's records come in order (one catalog partition)
    previous: CatalogUpdate | None = field(compare=False)
    update: CatalogUpdate = field(compare=False)


@dataclass
class _Item:
    versions: list[CatalogUpdate]  # by updated_at
    base: bool  # the oldest version also held before its time (bootstrap, or older ones forgotten)


class CatalogView:
    """Item versions by ``updated_at`` and the log of changes to announce (see the module docstring)."""

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        self._multi: set[str] = set()  # items with more than one kept version (forget_until's work)
        self._changes: list[CatalogChange] = []  # sorted
        self._change_times: list[float] = []  # their updated_at: bisected without a key function
        self._seq = 0
        # Removed item -> the last change number logged before its removal: its changes up to that one
        # leave the log before the log is read next, all removals at once (a burst of tombstones costs
        # one pass over the log, not one each).
        self._removed: dict[str, int] = {}
        # Items with a promotion in some kept version, deepest discount first (checked at lookup).
        self._promoted: dict[str, float] = {}
        self._promoted_order: list[str] | None = None
        # Category (of the newest version) -> its items: the content side of who hears of a new arrival.
        self._category_of: dict[str, str] = {}
        self._by_category: dict[str, set[str]] = {}
        # Bumped by every change to what :meth:`at` or :meth:`in_category` can answer: readers that
        # cache what they derive from versions compare it (or, per category, :meth:`generation_of`).
        self.generation = 0
        # Category -> the generation of the last change to its items' versions or to its members.
        self._category_generation: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def items(self) -> Iterator[str]:
        """The ids of the items in the catalog."""
        return iter(self._items)

    def latest(self, item_id: str) -> CatalogUpdate | None:
        """The item's newest version (by ``updated_at``), or None when it is not in the catalog."""
        entry = self._items.get(item_id)
        return entry.versions[-1] if entry else None

    def at(self, item_id: str, t: float) -> CatalogUpdate | None:
        """The item's version in force at ``t``: the latest with ``updated_at <= t``.

        Before its oldest kept version an item reads as that version when it held before (a
        bootstrap version, or older versions were forgotten), else as absent (None).
        """
        entry = self._items.get(item_id)
        if entry is None:
            return None
        i = bisect.bisect_right(entry.versions, t, key=_updated_at)
        if i == 0:
            return entry.versions[0] if entry.base else None
        return entry.versions[i - 1]

    def at_span(self, item_id: str, t: float) -> tuple[CatalogUpdate | None, float, float]:
        """:meth:`at` and the times ``[lo, hi)`` around ``t`` over which it gives the same answer (while
        the view does not change: see :attr:`generation`)."""
        entry = self._items.get(item_id)
        if entry is None:
            return None, -math.inf, math.inf
        versions = entry.versions
        i = bisect.bisect_right(versions, t, key=_updated_at)
        hi = versions[i].updated_at if i < len(versions) else math.inf
        if i == 0:
            if entry.base:  # the oldest version holds from the beginning of time to the next one
                return versions[0], -math.inf, versions[1].updated_at if len(versions) > 1 else math.inf
            return None, -math.inf, hi
        return versions[i - 1], versions[i - 1].updated_at, hi

    def generation_of(self, category: str) -> int:
        """The generation of the last change to what :meth:`in_category` answers for ``category`` or
        :meth:`at` for its items: a reader that caches per category (``stream.discovery.CategoryPrices``)
        keeps its entry while this stays, however busy the rest of the catalog is."""
        return self._category_generation.get(category, 0)

    def _touch(self, *categories: str | None) -> None:
        """A change: a new generation, for the whole view and for these categories."""
        self.generation += 1
        for category in categories:
            if category is not None:
                self._category_generation[category] = self.generation

    def in_category(self, category: str) -> list[str]:
        """The items whose newest version is in ``category``, sorted by id."""
        return sorted(self._by_category.get(category, ()))

    def category_size(self, category: str) -> int:
        """How many items :meth:`in_category` answers for ``category``, without listing them."""
        return len(self._by_category.get(category, ()))

    def _file_category(self, item_id: str) -> None:
        category = self._items[item_id].versions[-1].category
        old = self._category_of.get(item_id)
        if old == category:
            return
        if old is not None:
            self._by_category[old].discard(item_id)
            if not self._by_category[old]:
                del self._by_category[old]
        self._category_of[item_id] = category
        self._by_category.setdefault(category, set()).add(item_id)

    def put(self, update: CatalogUpdate, base: bool = False) -> tuple[bool, CatalogUpdate | None]:
        """Add a version. Returns (is it a change to announce, the version in force just before it).

        ``base``: a version read by the start-up bootstrap (it holds from the beginning of time). A
        version identical to a stored one, or older than the newest, is no change.
        """
        entry = self._items.get(update.item_id)
        # A version read again changes nothing, but is rare: not worth the test. The item's category now
        # (it may leave it) and the version's (it may join it, or hold it at other times) change.
        self._touch(self._category_of.get(update.item_id), update.category)
        if entry is None:
            self._items[update.item_id] = _Item([update], base)
            self._track_promotion(update)
            self._file_category(update.item_id)
            return (not base, None)
        versions = entry.versions
        i = bisect.bisect_left(versions, update.updated_at, key=_updated_at)
        if i < len(versions) and versions[i].updated_at == update.updated_at:
            if versions[i] == update:
                return (False, None)  # read again
            versions[i] = update  # the same time, other values: the later record wins
        else:
            versions.insert(i, update)
            self._multi.add(update.item_id)
        if base:
            entry.base = True
        if len(versions) > MAX_VERSIONS:
            del versions[: len(versions) - MAX_VERSIONS]
            entry.base = True
            i = versions.index(update) if update in versions else 0
        self._track_promotion(update)
        self._file_category(update.item_id)
        is_newest = versions[-1] is update
        previous = versions[i - 1] if i > 0 else None
        return (is_newest and not base, previous)

    def remove(self, item_id: str) -> bool:
        """Forget an item (a catalog tombstone) and its pending changes; True when it was there."""
        self._touch(self._category_of.get(item_id))
        if self._promoted.pop(item_id, None) is not None:
            self._promoted_order = None
        self._multi.discard(item_id)
        if self._changes:  # its logged changes leave the log before it is read next (_purge_removed)
            self._removed[item_id] = self._seq
        category = self._category_of.pop(item_id, None)
        if category is not None:
            self._by_category[category].discard(item_id)
            if not self._by_category[category]:
                del self._by_category[category]
        return self._items.pop(item_id, None) is not None

    # -- promotions ------------------------------------------------------------------------------

    def _track_promotion(self, update: CatalogUpdate) -> None:
        if update.promotion is None:
            return
        depth = max(update.promotion.discount, self._promoted.get(update.item_id, 0.0))
        if self._promoted.get(update.item_id) != depth:
            self._promoted[update.item_id] = depth
            self._promoted_order = None

    def active(self, now: float, n: int) -> list[str]:
        """Up to ``n`` items on a running promotion and in stock at ``now`` (in the version in force
        then), deepest discount first (ties by id).

        Items are visited by the deepest discount any kept version offers (an upper bound of the one
        in force), so the scan stops as soon as no later item can enter the top ``n``.
        """
        if n <= 0:
            return []
        if self._promoted_order is None:
            self._promoted_order = sorted(self._promoted, key=lambda k: (-self._promoted[k], k))
        best: list[tuple[float, str]] = []  # (-discount in force, item), the n smallest
        for item_id in self._promoted_order:
            if len(best) >= n and (-self._promoted[item_id], item_id) > best[-1]:
                break
            version = self.at(item_id, now)
            if version is None or version.stock <= 0 or version.promotion is None:
                continue
            if not version.promotion.active_at(now):
                continue
            bisect.insort(best, (-version.promotion.discount, item_id))
            del best[n:]
        return [item_id for _, item_id in best]

    # -- the change log --------------------------------------------------------------------------

    def record_change(self, previous: CatalogUpdate | None, update: CatalogUpdate) -> CatalogChange:
        """Log a change so partitions whose clock has not reached it announce it when it does."""
        self._seq += 1
        change = CatalogChange(update.updated_at, update.item_id, self._seq, previous, update)
        i = bisect.bisect_right(self._changes, change)
        self._changes.insert(i, change)
        self._change_times.insert(i, change.updated_at)
        if len(self._changes) > MAX_CHANGES and self._removed:
            self._purge_removed()
        if len(self._changes) > MAX_CHANGES:
            del self._changes[: len(self._changes) - MAX_CHANGES]
            del self._change_times[: len(self._change_times) - MAX_CHANGES]
        return change

    def _purge_removed(self) -> None:
        """Drop the logged changes of items removed since (those logged before the removal)."""
        removed = self._removed
        self._changes = [c for c in self._changes if c.seq > removed.get(c.item_id, -1)]
        self._change_times = [c.updated_at for c in self._changes]
        removed.clear()

    def changes_between(self, after: float, until: float) -> list[CatalogChange]:
        """Logged changes with ``after < updated_at <= until``, in announcement order."""
        if self._removed:
            self._purge_removed()
        times = self._change_times
        if not times or times[-1] <= after or until < times[0]:
            return []  # the usual answer, asked once per event: no bisection
        lo = bisect.bisect_right(times, after)
        if lo == len(times) or times[lo] > until:
            return []
        return self._changes[lo : bisect.bisect_right(times, until, lo)]

    def pending_changes(self) -> int:
        """Changes still in the log."""
        if self._removed:
            self._purge_removed()
        return len(self._changes)

    def forget_until(self, t: float) -> int:
        """Forget what no decision at or after ``t`` can need: logged changes with ``updated_at <= t``
        and, per item, versions superseded at ``t`` (the one in force then is kept, as a base).
        Returns the changes dropped."""
        if self._removed:
            self._purge_removed()
        n = bisect.bisect_right(self._change_times, t)
        del self._changes[:n]
        del self._change_times[:n]
        for item_id in list(self._multi):
            entry = self._items[item_id]
            versions = entry.versions
            if versions[1].updated_at <= t:
                k = bisect.bisect_right(versions, t, key=_updated_at) - 1
                del versions[:k]
                entry.base = True
                self._touch(self._category_of.get(item_id))
            if len(versions) == 1:
                self._multi.discard(item_id)
        # Promotions over by then, in every kept version, leave the board.
        for item_id in list(self._promoted):
            promos = [v.promotion for v in self._items[item_id].versions if v.promotion is not None]
            if all(p.ends_at <= t for p in promos):
                del self._promoted[item_id]
                self._promoted_order = None
        return n


def _updated_at(update: CatalogUpdate) -> float:
    return update.updated_at
