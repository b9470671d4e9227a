"""The catalog as the partitions see it: item versions by time, and the changes still to announce.

Every worker reads the whole catalog topic with its own consumer, so *when* a change reaches the
engine depends on thread timing, not on the event stream. Three things make decisions independent
of that timing (replays give the same pushes):

* **Versions by time.** A decision at time ``t`` reads :meth:`CatalogView.at` (the item's latest
  version with ``updated_at <= t``), not whatever arrived last, so a price drop read early is not
  seen by decisions before it, and an item first read live does not exist before its first
  version's time. Versions read by the start-up bootstrap (the compacted topic's latest values) hold
  from the beginning of time (the first of each item; the later ones are changes, see :meth:`put`).
  Versions are forgotten by time (:meth:`forget_until`), never by how far ahead the reader happened
  to be.
* **Changes announced in stream order.** A change is announced to a partition (the price-drop, back
  in stock and promotion asks of the users its interest index knows) when that partition's clock
  passes the change's ``updated_at``, at that place in its stream, like a timer; changes with the
  same time go by item id. A change that arrives after the partition's clock already passed it (it
  was produced late, or the reader was behind) is announced on arrival, at the partition's clock:
  that case still depends on timing, and is counted (``kairos_catalog_late_total``).
* **What a change is.** ``previous`` is the version in force just before the update's time; a
  version read again or older than the newest is stored for lookups and announces nothing.

A tombstone has no time: it removes the item when it is read (and its pending changes with it).
Pure bookkeeping: the engine decides what an announcement does.

**Rollback.** :meth:`CatalogView.checkpoint` starts an undo journal and :meth:`CatalogView.rollback`
puts the view back as it was then (``Engine.apply_catalog`` rolls back a slice it failed on). The
journal saves what it changes as it first changes it (an item's versions, promotion and category, a
category's generation, the change log before anything leaves it), so a slice that does not fail
costs a few dictionary operations per record, never a copy of the view.
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


@dataclass
class _Undo:
    """What the view held at :meth:`CatalogView.checkpoint`, saved as it first changes."""

    seq: int  # changes logged since have higher numbers
    # Item -> (its entry, deepest promotion) before its first change; None: it was absent.
    items: dict[str, tuple[_Item | None, float | None]] = field(default_factory=dict)
    categories: dict[str, int | None] = field(default_factory=dict)  # category -> its generation before
    # The change log, its times and the removals not purged yet, before anything left the log; until
    # then, each removal changed, with its number before (None: none).
    log: tuple[list[CatalogChange], list[float], dict[str, int]] | None = None
    removed: dict[str, int | None] = field(default_factory=dict)


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
        # Item -> the categories of its kept versions, and category -> the items with a kept version in it
        # (discovery pools, the peers of a new arrival): a decision at a time before a move must still
        # find the item where it was then, however early the reader read the move.
        self._categories_of: dict[str, frozenset[str]] = {}
        self._by_category: dict[str, set[str]] = {}
        # Bumped by every change to what :meth:`at` or :meth:`in_category` can answer: readers that
        # cache what they derive from versions compare it (or, per category, :meth:`generation_of`).
        self.generation = 0
        # Category -> the generation of the last change to its items' versions or to its members.
        self._category_generation: dict[str, int] = {}
        self._undo: _Undo | None = None  # the journal since checkpoint(), if one is open

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
        versions = entry.versions
        if len(versions) == 1:  # most items: bisect's own test, without a key call
            return None if t < versions[0].updated_at and not entry.base else versions[0]
        i = bisect.bisect_right(versions, t, key=_updated_at)
        if i == 0:
            return versions[0] if entry.base else None
        return versions[i - 1]

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
        undo = self._undo
        for category in categories:
            if category is not None:
                if undo is not None and category not in undo.categories:
                    undo.categories[category] = self._category_generation.get(category)
                self._category_generation[category] = self.generation

    def in_category(self, category: str) -> list[str]:
        """The items with a kept version in ``category``, sorted by id: a superset of those in it at any
        time a decision may ask about (readers check the version in force at their time, :meth:`at`).

        Not the newest version's only: when the reader reads a move must not change what a decision
        before the move's time finds (the pushes would depend on the reader's timing)."""
        return sorted(self._by_category.get(category, ()))

    def category_size(self, category: str) -> int:
        """How many items :meth:`in_category` answers for ``category``, without listing them."""
        return len(self._by_category.get(category, ()))

    def _file_category(self, item_id: str) -> None:
        """File the item under the categories of its kept versions (and under no other)."""
        categories = frozenset(v.category for v in self._items[item_id].versions)
        filed = self._categories_of.get(item_id, frozenset())
        if filed == categories:
            return
        for category in filed - categories:
            self._leave(item_id, category)
        for category in categories - filed:
            self._by_category.setdefault(category, set()).add(item_id)
        self._categories_of[item_id] = categories

    def _unfile(self, item_id: str) -> None:
        """Take the item out of its categories."""
        for category in self._categories_of.pop(item_id, frozenset()):
            self._leave(item_id, category)

    def _leave(self, item_id: str, category: str) -> None:
        members = self._by_category[category]
        members.discard(item_id)
        if not members:
            del self._by_category[category]

    def put(self, update: CatalogUpdate, base: bool = False) -> tuple[bool, CatalogUpdate | None]:
        """Add a version. Returns (is it a change to announce, the version in force just before it).

        ``base``: a version read by the start-up bootstrap. The first one read of an item holds from the
        beginning of time and is no change (with nothing before it, a restarted worker cannot tell a
        new item or a new promotion from one it read before a compaction). A later one is a change
        like any, from the one before it: whether a partition still has to announce it is the
        partition's stored announced-until (``stream.partition_state``), so a change whose
        announcement a crash lost, or that came while no worker ran, is announced after the restart.
        A version identical to a stored one, or older than the newest, is no change.
        """
        if self._undo is not None:
            self._save(update.item_id)
        entry = self._items.get(update.item_id)
        # A version read again changes nothing, but is rare: not worth the test. The item's category now
        # (it may leave it) and the version's (it may join it, or hold it at other times) change.
        self._touch(*self._categories_of.get(update.item_id, ()), update.category)
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
        return (is_newest, previous)

    def remove(self, item_id: str) -> bool:
        """Forget an item (a catalog tombstone) and its pending changes; True when it was there."""
        if self._undo is not None:
            self._save(item_id)
            if self._undo.log is None and item_id not in self._undo.removed:
                self._undo.removed[item_id] = self._removed.get(item_id)
        self._touch(*self._categories_of.get(item_id, ()))
        if self._promoted.pop(item_id, None) is not None:
            self._promoted_order = None
        self._multi.discard(item_id)
        if self._changes:  # its logged changes leave the log before it is read next (_purge_removed)
            self._removed[item_id] = self._seq
        self._unfile(item_id)
        return self._items.pop(item_id, None) is not None

    # -- rollback --------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Start an undo journal, ended by :meth:`rollback` (back to this point) or :meth:`release`."""
        self._undo = _Undo(self._seq)

    def release(self) -> None:
        """End the journal, keeping every change since :meth:`checkpoint`."""
        self._undo = None

    def rollback(self) -> None:
        """Return the view to what it was at :meth:`checkpoint`, and end the journal.

        Every answer is as it was then. Generations are never given out twice: a category changed
        since gets its generation of then back (what a reader cached then holds again), and what a
        reader cached meanwhile carries a number that no longer comes. An item removed and put back
        goes to the end of :meth:`items` (nothing decides by that order).
        """
        undo, self._undo = self._undo, None
        if undo is None:
            raise RuntimeError("rollback without a checkpoint")
        for item_id, (entry, depth) in undo.items.items():
            if entry is None:
                self._items.pop(item_id, None)
                self._unfile(item_id)
            else:
                self._items[item_id] = entry
                self._file_category(item_id)
            if entry is not None and len(entry.versions) > 1:
                self._multi.add(item_id)
            else:
                self._multi.discard(item_id)
            if depth is None:
                self._promoted.pop(item_id, None)
            else:
                self._promoted[item_id] = depth
        self._promoted_order = None
        if undo.log is not None:
            self._changes, self._change_times, self._removed = undo.log
        for item_id, number in undo.removed.items():  # changed before the log was saved
            if number is None:
                self._removed.pop(item_id, None)
            else:
                self._removed[item_id] = number
        if self._seq > undo.seq:  # the changes logged since leave the log
            self._changes = [c for c in self._changes if c.seq <= undo.seq]
            self._change_times = [c.updated_at for c in self._changes]
            self._seq = undo.seq
        self.generation += 1
        for category, generation in undo.categories.items():
            if generation is None:
                self._category_generation.pop(category, None)
            else:
                self._category_generation[category] = generation

    def _save(self, item_id: str) -> None:
        """Journal an item before its first change since the checkpoint."""
        undo = self._undo
        if undo is not None and item_id not in undo.items:
            entry = self._items.get(item_id)
            copy = None if entry is None else _Item(list(entry.versions), entry.base)
            undo.items[item_id] = (copy, self._promoted.get(item_id))

    def _save_log(self) -> None:
        """Journal the change log before anything leaves it (a purge, the bound, forget_until)."""
        undo = self._undo
        if undo is not None and undo.log is None:
            undo.log = (list(self._changes), list(self._change_times), dict(self._removed))

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
            self._save_log()
            del self._changes[: len(self._changes) - MAX_CHANGES]
            del self._change_times[: len(self._change_times) - MAX_CHANGES]
        return change

    def _purge_removed(self) -> None:
        """Drop the logged changes of items removed since (those logged before the removal)."""
        self._save_log()
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
        if n:
            self._save_log()
        del self._changes[:n]
        del self._change_times[:n]
        for item_id in list(self._multi):
            entry = self._items[item_id]
            versions = entry.versions
            if versions[1].updated_at <= t:
                self._save(item_id)
                k = bisect.bisect_right(versions, t, key=_updated_at) - 1
                del versions[:k]
                entry.base = True
                self._touch(*self._categories_of.get(item_id, ()))
                self._file_category(item_id)  # the categories of forgotten versions only
            if len(versions) == 1:
                self._multi.discard(item_id)
        # Promotions over by then, in every kept version, leave the board.
        for item_id in list(self._promoted):
            promos = [v.promotion for v in self._items[item_id].versions if v.promotion is not None]
            if all(p.ends_at <= t for p in promos):
                self._save(item_id)
                del self._promoted[item_id]
                self._promoted_order = None
        return n


def _updated_at(update: CatalogUpdate) -> float:
    return update.updated_at
