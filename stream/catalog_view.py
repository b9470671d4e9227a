"""The catalog as the partitions see it: item versions by time, and the changes still to announce.

Every worker reads the whole catalog topic with its own consumer, so *when* a change reaches the
engine depends on thread timing, not on the event stream. Two things make decisions independent of
that timing (replays give the same pushes):

* **Versions by time.** A decision at time ``t`` reads :meth:`CatalogView.at` (the item's latest
  version with ``updated_at <= t``), not whatever arrived last, so a price drop read early is not
  seen by decisions before it. Each item keeps its last :data:`VERSIONS_KEPT` versions (dropped by
  count as they arrive, never by timing).
* **Changes announced in stream order.** A change is announced to a partition (the price-drop, back
  in stock and promotion asks of the users its interest index knows) when that partition's clock
  passes the change's ``updated_at``, at that place in its stream, like a timer. A change that
  arrives after the partition's clock already passed it (it was produced late, or the reader was
  behind) is announced on arrival, at the partition's clock: that case still depends on timing,
  and is counted (``kairos_catalog_late_total``).

Pure bookkeeping: the engine decides what an announcement does.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from stream.candidates import PromotionBoard
from stream.contract import CatalogUpdate

VERSIONS_KEPT = 8  # per item; a lookup before the oldest kept version reads that oldest one


@dataclass(frozen=True, order=True)
class CatalogChange:
    """One catalog update to announce: the version it replaces (None for a new item) and the update."""

    updated_at: float
    seq: int  # arrival order: ties on ``updated_at`` are announced in the order they were read
    previous: CatalogUpdate | None = field(compare=False)
    update: CatalogUpdate = field(compare=False)


class CatalogView:
    """Item versions by ``updated_at``, the promotions board and the log of changes to announce."""

    def __init__(self) -> None:
        self._versions: dict[str, list[CatalogUpdate]] = {}  # sorted by updated_at (ties: arrival)
        self._changes: list[CatalogChange] = []  # sorted by (updated_at, seq)
        self._seq = 0
        self.promotions = PromotionBoard()

    def __len__(self) -> int:
        return len(self._versions)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._versions

    def items(self) -> Iterator[str]:
        """The ids of the items in the catalog."""
        return iter(self._versions)

    def latest(self, item_id: str) -> CatalogUpdate | None:
        """The item's newest version (by ``updated_at``), or None when it is not in the catalog."""
        versions = self._versions.get(item_id)
        return versions[-1] if versions else None

    def at(self, item_id: str, t: float) -> CatalogUpdate | None:
        """The item's version in force at ``t``: the latest with ``updated_at <= t``.

        Before its oldest kept version the item reads as that version (it is in the catalog, its
        earlier state is not known); None when the item is not in the catalog.
        """
        versions = self._versions.get(item_id)
        if not versions:
            return None
        i = bisect.bisect_right(versions, t, key=_updated_at)
        return versions[max(i - 1, 0)]

    def put(self, update: CatalogUpdate) -> CatalogUpdate | None:
        """Add a version; returns the newest version before it (what this update changes)."""
        versions = self._versions.setdefault(update.item_id, [])
        previous = versions[-1] if versions else None
        bisect.insort_right(versions, update, key=_updated_at)
        if len(versions) > VERSIONS_KEPT:
            del versions[: len(versions) - VERSIONS_KEPT]
        self.promotions.update(versions[-1])
        return previous

    def remove(self, item_id: str) -> bool:
        """Forget an item (a catalog tombstone); True when it was there."""
        self.promotions.remove(item_id)
        return self._versions.pop(item_id, None) is not None

    def record_change(self, previous: CatalogUpdate | None, update: CatalogUpdate) -> CatalogChange:
        """Log a change so partitions whose clock has not reached it announce it when it does."""
        self._seq += 1
        change = CatalogChange(update.updated_at, self._seq, previous, update)
        bisect.insort_right(self._changes, change)
        return change

    def changes_between(self, after: float, until: float) -> list[CatalogChange]:
        """Logged changes with ``after < updated_at <= until``, in announcement order."""
        lo = bisect.bisect_right(self._changes, after, key=_change_time)
        hi = bisect.bisect_right(self._changes, until, key=_change_time)
        return self._changes[lo:hi]

    def forget_changes_until(self, t: float) -> int:
        """Drop logged changes with ``updated_at <= t`` (every partition announced them); returns how many."""
        n = bisect.bisect_right(self._changes, t, key=_change_time)
        del self._changes[:n]
        return n

    def pending_changes(self) -> int:
        """Changes still in the log."""
        return len(self._changes)


def _updated_at(update: CatalogUpdate) -> float:
    return update.updated_at


def _change_time(change: CatalogChange) -> float:
    return change.updated_at
