"""The engine's catalog announcements: a catalog change decided where each partition's clock passes it.

:class:`CatalogAnnouncementMixin` gives :class:`stream.engine.core.Engine` the announcement path: the
time up to which each partition has been told of catalog changes, the changes its clock has passed
since, and one partition's share of them decided (the asks of the users who care,
``stream.engine.catalog_asks``; the changes by time, ``stream.catalog_view``). Changes come in
through :meth:`stream.engine.core.Engine.apply_catalog`; :meth:`~stream.engine.core.Engine.process`
and :meth:`~stream.engine.core.Engine.tick` announce them as clocks move.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

from stream.asks import Ask, BatchUser, Work
from stream.catalog_view import CatalogChange, CatalogView
from stream.decider import Decider
from stream.engine.catalog_asks import CatalogAsks
from stream.engine.ports import StateAccess
from stream.engine.users import UserRecords
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.triggers import catalog_triggers


class CatalogAnnouncementMixin:
    """Engine mixin: announce catalog changes to a partition as its clock passes them."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    catalog: CatalogView
    catalog_asks: CatalogAsks
    decider: Decider
    users: UserRecords
    part: Callable[[int], PartitionState]
    now: Callable[[int], float]
    _decide: Callable[[list[Ask], Outcome], None]
    _throttle: Callable[[Outcome, int], None]

    def _catalog_until(self, partition: int) -> float:
        """The time up to which catalog changes were announced to ``partition`` (its clock at first use)."""
        part = self.part(partition)
        if part.catalog_until is None:
            part.catalog_until = self.now(partition)
        return part.catalog_until

    def _announce_due(
        self, txn: StateAccess, partition: int, out: Outcome, users: dict[str, BatchUser] | None = None
    ) -> bool:
        """Announce the logged changes the partition's clock has passed since last time; True if any.

        ``users``: the batch's user records when a batch announces (it stages them at its end).
        """
        until = self.now(partition)
        due = self.catalog.changes_between(self._catalog_until(partition), until)
        self.part(partition).catalog_until = until
        if due:
            self._announce(txn, partition, due, out, users)
        return bool(due)

    def _announce_reaches_anyone(self, partition: int, changes: Sequence[CatalogChange], work: Work) -> bool:
        """Whether announcing these changes to the partition would ask anyone or arm a timer, now or
        after the queued work's decisions (``CatalogAsks.reaches_anyone``, each change judged as
        :meth:`_announce` judges it).

        Those decisions add interest-index entries only for the items they score (``Work.indexing``);
        entries they lower or evict, and a purchase's discard, only shrink an audience. The index's
        rare rescale of every entry (``rescale_due``) counts as touching every item.
        """
        part = self.part(partition)
        indexing: AbstractSet[str] = work.indexing.get(partition, frozenset())
        if indexing and part.interest.rescale_due(self.now(partition)):
            return True
        judged = self._judged(partition, changes)
        self._prepare_pools(judged)
        return any(
            self.catalog_asks.reaches_anyone(part, at, change.previous, change.update, indexing)
            for at, change in judged
        )

    def _judged(self, partition: int, changes: Sequence[CatalogChange]) -> list[tuple[float, CatalogChange]]:
        """The changes still to announce (an item removed since has nothing to announce), each with the
        time it is judged at: its own time when that is ahead of the clock (event-time replays)."""
        now = self.now(partition)
        return [
            (max(now, change.update.updated_at), change)
            for change in changes
            if change.update.item_id in self.catalog
        ]

    def _prepare_pools(self, judged: Sequence[tuple[float, CatalogChange]]) -> None:
        """The pools of the new arrivals among these changes, computed at once (a burst's in one go)."""
        self.catalog_asks.prepare_pools(
            change.update
            for at, change in judged
            if change.previous is None
            and any(t == "new_arrival" for t, _ in catalog_triggers(None, change.update, at))
        )

    def _announce(
        self,
        txn: StateAccess,
        partition: int,
        changes: Sequence[CatalogChange],
        out: Outcome,
        batch_users: dict[str, BatchUser] | None = None,
    ) -> None:
        """Decide one partition's share of catalog changes: the asks of the users who care.

        With ``batch_users`` (a batch announces) the users are read from and left in the batch's
        records, staged at its end; without, they are staged here.
        """
        users: dict[str, BatchUser] = {} if batch_users is None else batch_users
        asks: list[Ask] = []
        judged = self._judged(partition, changes)
        self._prepare_pools(judged)
        for at, change in judged:
            asks += self.catalog_asks.asks(
                txn, self.part(partition), at, change.previous, change.update, users, out
            )
        first = len(out.pushes)
        if asks:
            self._decide(asks, out)
        self._throttle(out, first)
        self.decider.apply_interest_updates()
        if batch_users is None:  # every user the asks loaded is marked dirty there (timers changed)
            self.users.save(txn, users.values())
