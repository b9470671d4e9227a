"""The engine's catalog: updates coming in, and each change decided where each partition's clock passes it.

:class:`CatalogAnnouncementMixin` gives :class:`stream.engine.core.Engine` the catalog path: updates
folded into the view (:meth:`~CatalogAnnouncementMixin.apply_catalog`: admission, the bound on items
held, tombstones), the time up to which each partition has been told of catalog changes, the changes
its clock has passed since, and one partition's share of them decided (the asks of the users who care,
``stream.engine.catalog_asks``; the changes by time, ``stream.catalog_view``).
:meth:`~stream.engine.core.Engine.process` and :meth:`~stream.engine.core.Engine.tick` announce them as
clocks move.

A slice that fails half-way (a bug) is rolled back engine-wide before :class:`CatalogFailure` says
so: the view, the items waiting for placement, the new items, the items the model forgot and the
arrival pools are as they were before it, and the failure names the partitions whose in-memory state
it may have changed (those it began announcing to): their stored state is what the slice would have
changed, so the worker re-reads them from the store before it retries the records one at a time
(``stream.worker_tick``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

from stream.admission import admit_catalog
from stream.asks import Ask, BatchUser, Work
from stream.catalog_view import CatalogChange, CatalogView
from stream.content_items import (
    ContentScorer,
    Forgotten,
    Unplaced,
    check_image,
    forget_placed,
    placed_from_content,
    restore_forgotten,
    reuse_forgotten,
)
from stream.contract import CatalogUpdate, ContractError
from stream.decider import Decider
from stream.engine.catalog_asks import CatalogAsks
from stream.engine.ports import StateAccess
from stream.engine.users import UserRecords
from stream.new_items import NewItems
from stream.outcome import Inbound, Outcome, refused
from stream.partition_state import PartitionState
from stream.settings import Settings
from stream.triggers import catalog_triggers


class CatalogFailure(Exception):
    """``apply_catalog`` failed on ``error``; what it changed engine-wide is rolled back, and
    ``partitions`` are those whose in-memory state may hold part of it (to re-read from the store)."""

    def __init__(self, error: Exception, partitions: frozenset[int]) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.partitions = partitions


class CatalogAnnouncementMixin:
    """Engine mixin: announce catalog changes to a partition as its clock passes them."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    settings: Settings
    owned: set[int]
    wall_clock: Callable[[], float]
    unplaced: Unplaced
    new_items: NewItems
    _content: ContentScorer | None
    _start_batch: Callable[[], None]
    _event_clock: Callable[[], bool]
    _place_waiting: Callable[[Outcome], None]
    catalog: CatalogView
    catalog_asks: CatalogAsks
    decider: Decider
    users: UserRecords
    part: Callable[[int], PartitionState]
    now: Callable[[int], float]
    _decide: Callable[[list[Ask], Outcome], None]
    _throttle: Callable[[Outcome, int], None]

    def _catalog_until(self, partition: int) -> float:
        """The time up to which catalog changes were announced to ``partition``: stored with it
        (``PartitionState.catalog_until``), or its clock when the engine created or adopted it."""
        until = self.part(partition).catalog_until
        assert until is not None  # Engine.part and Engine.adopt set it
        return until

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
        if asks or users:
            # Stored with this commit (PartitionState.drain), so a restart announces none of them
            # again. Changes that reached no one changed nothing: announced again, they reach no one.
            self.part(partition).catalog_announced = True
        first = len(out.pushes)
        if asks:
            self._decide(asks, out)
        self._throttle(out, first)
        self.decider.apply_interest_updates()
        if batch_users is None:  # every user the asks loaded is marked dirty there (timers changed)
            self.users.save(txn, users.values())

    def apply_catalog(self, records: Sequence[Inbound], txn: StateAccess, announce: bool = True) -> Outcome:
        """Fold catalog updates into the view; announce each to the owned partitions it is due for.

        With ``announce`` False (the worker's first read of the whole catalog, at every start) the
        view is filled and nothing is announced now: an item's first version is no change, and its
        later ones are logged for the partitions whose stored announced-until they are after
        (:meth:`_catalog_until`).

        A change is announced to a partition when that partition's clock passes its ``updated_at``,
        in its stream (``Engine.process``, or ``Engine.tick`` with the wall clock), so replays announce it
        at the same place whenever the catalog reader delivered it (:mod:`stream.catalog_view`).
        Partitions whose clock is already past it announce it now, at their clock (counted late).

        A tombstone (no value) removes the item: it is never pushed again, and pushes held for it
        are suppressed when they come due. A model that placed it from content forgets it, and its row
        goes to a later placement (``stream.content_items.forget_placed``): catalogued again, it is
        placed again from its new content.

        All or nothing in memory: when it raises, it raises :class:`CatalogFailure` with the catalog
        view, the items waiting for placement, the new items, the items the model forgot and the
        arrival pools as they were before the call (items the model placed meanwhile stay placed), and
        the partitions it began announcing to.
        """
        touched: set[int] = set()
        forgotten: Forgotten = []
        self.catalog.checkpoint()
        self.unplaced.checkpoint()
        self.new_items.checkpoint()
        self.catalog_asks.checkpoint()
        try:
            out = self._apply_catalog(records, txn, announce, touched, forgotten)
        except Exception as exc:
            restore_forgotten(self._content, forgotten)  # first: the rollback below asks what it knows
            self.catalog.rollback()
            self.unplaced.rollback(self._content)
            self.new_items.rollback()
            self.catalog_asks.rollback()
            raise CatalogFailure(exc, frozenset(touched)) from exc
        finally:  # a no-op after a rollback
            self.catalog.release()
            self.unplaced.release()
            self.new_items.release()
            self.catalog_asks.release()
        # Only now may later placements take the removed items' rows: until the slice held, a
        # rollback could give them back.
        reuse_forgotten(self._content, forgotten)
        return out

    def _apply_catalog(
        self,
        records: Sequence[Inbound],
        txn: StateAccess,
        announce: bool,
        touched: set[int],
        forgotten: Forgotten,
    ) -> Outcome:
        """:meth:`apply_catalog`, noting in ``touched`` each partition before it is announced to and in
        ``forgotten`` the removed items the model forgot (``stream.content_items.forget_placed``)."""
        self._start_batch()
        out = Outcome()
        late: list[tuple[int, CatalogChange]] = []
        applied: list[CatalogUpdate] = []
        returned: list[CatalogUpdate] = []  # items not in the catalog before (new, or back after removal)
        for rec in records:
            try:
                update = admit_catalog(rec.key, rec.partition, rec.value, self.settings, self.wall_clock())
                if update is not None:
                    check_image(update, self._content)
            except ContractError as exc:
                out.dead_letters.append(refused(rec, exc, self.settings))
                continue
            if update is None:  # a tombstone: the item is gone, never pushed again
                assert rec.key is not None  # admission refuses a tombstone without a key
                removed = rec.key.decode("utf-8")
                self.catalog.remove(removed)
                self.unplaced.forget(removed)
                self.new_items.forget(removed)
                forgotten += forget_placed(self._content, removed)
                out.catalog_removals += 1
                continue
            if (
                update.item_id not in self.catalog
                and len(self.catalog) >= self.settings.worker.max_catalog_items
            ):
                full = ContractError(
                    "catalog_full", f"the catalog holds worker.max_catalog_items ({len(self.catalog)}) items"
                )
                out.dead_letters.append(refused(rec, full, self.settings))
                continue
            out.catalog_updates += 1
            applied.append(update)
            if update.item_id not in self.catalog:
                returned.append(update)
            # An item's first bootstrap version holds from the beginning of time; a version read
            # again, or older than the newest, is no change (stream.catalog_view).
            is_change, previous = self.catalog.put(update, base=not announce)
            if not is_change:
                continue
            self.new_items.refile(update)  # a content-placed item moved to another category
            change = self.catalog.record_change(previous, update)
            if not announce:
                # A bootstrap's change is announced where a partition's clock passes it after its
                # stored announced-until (it came during a crash or while no worker ran), never on
                # arrival: older than that, it was announced before the restart.
                continue
            for partition in sorted(self.owned):
                if update.updated_at <= self._catalog_until(partition):
                    late.append((partition, change))
        # Before any announcement: a new item must have its place in the model when it is decided on.
        self.unplaced.offer(self._content, applied)
        self._place_waiting(out)
        # An item the model placed from content, removed (unfiled) and catalogued again, with a model
        # that does not forget (stream.content_items.ForgetsItems): filed again, as at its first
        # placement (the model still knows it, so it does not wait to be placed).
        for update in returned:
            if placed_from_content(self._content, update.item_id):
                self.new_items.add(update)
        if self._event_clock():  # with the wall clock every change is "late": that is its design
            out.catalog_late += len(late)
        for partition in sorted({p for p, _ in late}):
            touched.add(partition)
            self._announce(txn, partition, sorted(c for p, c in late if p == partition), out)
        return out
