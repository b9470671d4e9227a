"""A user's engagement: the items they recently viewed, carted or bought, with counts and times, the
session's last event time, the starts of their last two visits, and the purchases that outlived their
place among the recent items. Stored in the user's record (``UserState.engagement``); the engaged
items are the first candidate source (:func:`stream.candidates.gather_candidates`)."""

from __future__ import annotations

from typing import Any

from stream.record_rows import EngagedItem, EngagementRecord

__all__ = ["EngagedItem", "Engagement"]


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
        # Most recent last (a plain dict: the stored record decodes into one, EngagementRecord.items).
        self.items: dict[str, EngagedItem] = {}
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
            self.items[item_id] = self.items.pop(item_id)  # to the end: the most recent
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
            item = next(iter(self.items))
            entry = self.items.pop(item)
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

    def to_record(self) -> EngagementRecord:
        """The stored form (``K3``, ``stream.record_rows``): shares this engagement's item rows, so encode
        it before the engagement changes again."""
        return EngagementRecord(
            self.last_ts,
            self.items,
            None if self.active_ts is None else [*self.visits, self.active_ts],
            list(self.earlier_purchases) if self.earlier_purchases else None,
        )

    @classmethod
    def from_record(
        cls, record: EngagementRecord, max_items: int = 20, max_purchases: int = 20
    ) -> Engagement:
        """Rebuild from :meth:`to_record` (a decoded record: its item rows are taken over, not copied),
        within these bounds."""
        engagement = cls(max_items, max_purchases)
        purchases = record.earlier_purchases
        if max_purchases > 0 and purchases:
            engagement.earlier_purchases = dict.fromkeys(purchases[-max_purchases:])
        engagement.last_ts = record.last_ts
        visits = record.visits
        if visits:
            engagement.visits = visits[:-1][-2:]
            engagement.active_ts = visits[-1]
        engagement.items = record.items
        engagement._trim()
        return engagement

    def to_dict(self) -> dict[str, Any]:
        """The ``K1``/``K2`` record's form, read from stores written before ``K3`` (:func:`legacy_record`):
        ``{"t": last_ts, "i": [[item, views, carts, in_cart, bought, ts]]}``, plus ``"v": [visit
        starts..., last activity]`` once an activity was seen and ``"p": [earlier purchases...]`` once a
        bought item was forgotten among the recent ones."""
        return legacy_dict(self.to_record())

    @classmethod
    def from_dict(cls, data: dict[str, Any], max_items: int = 20, max_purchases: int = 20) -> Engagement:
        """Rebuild from :meth:`to_dict` (a record from before ``"p"`` has no earlier purchases)."""
        return cls.from_record(legacy_record(data), max_items, max_purchases)


def legacy_dict(record: EngagementRecord) -> dict[str, Any]:
    """A stored engagement in the ``K1``/``K2`` record's form (:meth:`Engagement.to_dict`); the inverse
    of :func:`legacy_record`."""
    out: dict[str, Any] = {
        "t": record.last_ts,
        "i": [
            [k, e.views, e.carts, int(e.in_cart), int(e.bought), e.last_ts] for k, e in record.items.items()
        ],
    }
    if record.visits:
        out["v"] = record.visits
    if record.earlier_purchases:
        out["p"] = record.earlier_purchases
    return out


def legacy_record(data: dict[str, Any]) -> EngagementRecord:
    """The :class:`EngagementRecord` of a ``K1``/``K2`` record's engagement (:meth:`Engagement.to_dict`)."""
    visits = data.get("v")
    purchases = data.get("p")
    return EngagementRecord(
        None if data.get("t") is None else float(data["t"]),
        {
            str(item): EngagedItem(int(views), int(carts), bool(in_cart), bool(bought), float(ts))
            for item, views, carts, in_cart, bought, ts in data.get("i", [])
        },
        [float(v) for v in visits] if visits else None,
        [str(i) for i in purchases] if purchases else None,
    )
