"""One partition's share of a catalog change: the promotion-ending timers it arms and the asks of the
users who care (interested in the item, or, for a new arrival, in the items most like it).

Which triggers a change fires is decided in ``stream.triggers`` (``catalog_triggers``); when a change
is announced to a partition is the engine's (``stream.engine.core``, ``stream.catalog_view``).

**Bursts of new items.** A producer may publish thousands of new items at once (a season's import; a
broken or hostile producer more), most in a few categories. What a new arrival costs stays small and
independent of the burst:

* Its pool (the items whose users hear of it, ``stream.content_items.arrival_pool``) is computed once
  per item version for every partition: the pools of an announcement's new arrivals all at once
  (:meth:`CatalogAsks.prepare_pools`; a model with ``similar_items_many`` finds the similar items of
  a whole burst with one matrix product, the same lists), kept in a least-recently-used map of at
  least :data:`MAX_ARRIVAL_POOLS`, more while the catalog's change log or the latest announcement
  holds more, so a burst announced partition after partition is never computed again (the map used
  to be cleared whole when full: a burst of more than 1,024 arrivals was computed once per partition).
* Its category peers are the category's items the model was trained on (only those can be similar
  items, ``ContentScorer.similar_items``), read from the catalog once per category and generation of
  its items (``CatalogView.generation_of``), then once per span of times over which they read the
  same (:meth:`CatalogAsks.category_peers`); the burst's own items, which the model knows only from their
  content, are never scanned per arrival (that scan made a burst of N new items of one category cost
  N² catalog lookups, once per partition).
* The users of a partition it reaches: one pass over the pool's interest-index entries
  (``InterestIndex.best_of``), the best ``new_arrival_max_users`` picked without sorting them all.

One decision changes with a burst, on purpose: **a user is asked about at most
``new_arrival_asks_per_user_hour`` new items per hour of the partition's clock** (default 10), the
first that reach them in announcement order; the others skip that user (counted:
``Outcome.arrival_asks_capped``, ``kairos_new_arrival_asks_capped_total``). Without it a burst of N new
items asks each interested user N times: every ask is scored and decided, and only the first that
passes can be pushed anyway (``min_gap_seconds``). The count is kept per partition and stored with
it (``PartitionState.arrivals_asked``, one row per user asked), so a restart, a move of the partition
or its re-read after a failure counts on where it was. Ordinary arrivals (a few new items an hour)
never reach it; price, stock and promotion changes are not bounded (their users are the item's own
interested users, at most ``interest_index_per_item`` per item and partition).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from stream import triggers
from stream.asks import Ask, BatchUser
from stream.catalog_view import CatalogView
from stream.content_items import (
    ContentScorer,
    arrival_audience,
    arrival_pool,
    arrival_pools,
    placed_from_content,
)
from stream.contract import CatalogUpdate
from stream.engine.intake import Intake
from stream.engine.ports import StateAccess
from stream.engine.users import UserRecords
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.policy_config import PolicyConfig
from stream.timers import schedule_promotion_ending

# Arrival pools kept at least (one per new item version; least recently used first out, all on a
# model swap): more while the catalog's change log holds more changes (see CatalogAsks._keep_pool).
MAX_ARRIVAL_POOLS = 1024
# The bound new_arrival_asks_per_user_hour counts per hour of the partition's clock.
ARRIVAL_HOUR_SECONDS = 3600.0
# Peer lists kept per category and generation of its items (one per span of times asked about).
MAX_PEER_SPANS = 16


class _CategoryPeers:
    """The items of one category the model was trained on (as of the category's ``generation``,
    ``CatalogView.generation_of``), and the peers among them found so far, each with the span of times
    ``[lo, hi)`` over which they hold."""

    __slots__ = ("generation", "members", "spans")

    def __init__(self, generation: int, members: list[str]) -> None:
        self.generation = generation
        self.members = members
        self.spans: list[tuple[float, float, list[str]]] = []

    def at(self, catalog: CatalogView, category: str, t: float) -> list[str]:
        """The members in ``category`` at ``t`` (as of their version in force then)."""
        for since, until, found in self.spans:
            if since <= t < until:
                return found
        lo, hi = -math.inf, math.inf
        peers: list[str] = []
        for item in self.members:
            version, since, until = catalog.at_span(item, t)
            lo, hi = max(lo, since), min(hi, until)
            if version is not None and version.category == category:
                peers.append(item)
        if len(self.spans) >= MAX_PEER_SPANS:
            del self.spans[0]
        self.spans.append((lo, hi, peers))
        return peers


class CatalogAsks:
    """Turns a catalog change into the asks of one partition's users (and their timers)."""

    def __init__(
        self,
        config: PolicyConfig,
        catalog: Callable[[], CatalogView],
        content: Callable[[], ContentScorer | None],
        records: UserRecords,
        intake: Intake,
    ) -> None:
        self.cfg = config
        self._catalog = catalog
        self._content = content
        self._records = records
        self._intake = intake
        # New arrival -> the items whose users hear of it (stream.content_items.arrival_pool).
        self._arrival_pools: OrderedDict[tuple[str, float], list[str]] = OrderedDict()
        self._announcing = 0  # arrivals of the latest announcement (prepare_pools): kept at least
        # Since checkpoint(): each pool kept or dropped, with what it was before (None: not kept).
        self._pools_undo: dict[tuple[str, float], list[str] | None] | None = None
        self._announcing_before = 0
        # Category -> its peers (category_peers), valid for one catalog view and model, and while the
        # category's generation holds.
        self._peers: dict[str, _CategoryPeers] = {}
        self._peers_source: tuple[CatalogView, ContentScorer] | None = None

    def forget_pools(self) -> None:
        """Drop the arrival pools and peers (a new model places items elsewhere, and knows others)."""
        if self._pools_undo is not None:
            for key, pool in self._arrival_pools.items():
                self._pools_undo.setdefault(key, pool)
        self._arrival_pools.clear()
        self._peers.clear()
        self._peers_source = None

    def asks(
        self,
        txn: StateAccess,
        part: PartitionState,
        at: float,
        previous: CatalogUpdate | None,
        update: CatalogUpdate,
        users: dict[str, BatchUser],
        out: Outcome | None = None,
    ) -> list[Ask]:
        """The partition's asks for a change judged at ``at``; arms its promotion-ending timers.

        A user already asked about ``new_arrival_asks_per_user_hour`` new items in the clock's hour
        (``PartitionState.arrivals_in``: the partition's clock only moves forward, so a change judged in
        an earlier hour counts in the current one) is not asked about another (counted in
        ``out.arrival_asks_capped``); they keep their place among the ``new_arrival_max_users`` the new
        item goes to.
        """
        partition = part.partition
        asked = part.arrivals_in(int(at // ARRIVAL_HOUR_SECONDS))
        fired, newcomers, interested, left_out = self._audience(part, at, previous, update, asked=asked)
        if not fired and update.promotion is None:
            return []
        if out is not None:
            out.arrival_asks_capped += left_out
        if update.promotion is not None and update.promotion.active_at(at):
            schedule_promotion_ending(part.timers, interested, update.item_id, update.promotion, at, self.cfg)
        asks: list[Ask] = []
        prev_price = previous.effective_price(previous.updated_at) if previous is not None else None
        for trigger, cause in fired:
            arrival = trigger == "new_arrival"
            for user_id in newcomers if arrival else interested:
                user = self._records.load(txn, partition, user_id, users)
                user.dirty = True  # timers changed
                if self._records.expired(user.state, at):
                    continue
                if arrival:
                    part.ask_arrival(user_id)
                price = prev_price if trigger == "price_drop" else None
                moment = triggers.TriggerAsk(
                    trigger, cause, update.updated_at, (update.item_id,), ("catalog",), previous_price=price
                )
                asks.append(self._intake.ask(user, moment, at))
        if not fired:  # promotion timers only: their users' stored timers changed
            for user_id in interested:
                self._records.load(txn, partition, user_id, users).dirty = True
        return asks

    def reaches_anyone(
        self,
        part: PartitionState,
        at: float,
        previous: CatalogUpdate | None,
        update: CatalogUpdate,
        indexing: AbstractSet[str] = frozenset(),
    ) -> bool:
        """Whether :meth:`asks` would do anything for this change in the partition (ask a user, or arm
        a promotion's timers for one), now or once decisions that index ``indexing`` items are made.

        Reads what :meth:`asks` reads and changes nothing. Queued decisions add interest-index entries
        only for the items they score (``stream.asks.Work.indexing``); nothing else they write adds to
        an audience, so they matter only when one of those items is the change's own or, for a new
        arrival, one whose users hear of it.
        """
        fired = triggers.catalog_triggers(previous, update, at)
        if not fired and update.promotion is None:
            return False
        if indexing:
            if update.item_id in indexing:
                return True
            if any(t == "new_arrival" for t, _ in fired) and not indexing.isdisjoint(
                self.arrival_pool(update)
            ):
                return True
        _, newcomers, interested, _ = self._audience(part, at, previous, update, fired)
        return bool(newcomers or interested)

    def _audience(
        self,
        part: PartitionState,
        at: float,
        previous: CatalogUpdate | None,
        update: CatalogUpdate,
        fired: list[tuple[str, str]] | None = None,
        asked: Mapping[str, int] | None = None,
    ) -> tuple[list[tuple[str, str]], list[str], list[str], int]:
        """The triggers a change fires at ``at`` (``fired``, when the caller has them), the users a new
        arrival goes to (less those at the hourly bound, with ``asked``: :meth:`arrival_users`), the
        users interested in the item (the interest index), and how many the bound left out; no users
        when it fires nothing and promotes nothing."""
        if fired is None:
            fired = triggers.catalog_triggers(previous, update, at)
        if not fired and update.promotion is None:
            return fired, [], [], 0
        newcomers: list[str] = []
        left_out = 0
        if any(t == "new_arrival" for t, _ in fired):
            newcomers, left_out = self.arrival_users(part, update, at, asked)
        interested = [
            u for u, _, _ in part.interest.users_for(update.item_id, at, self.cfg.interest_index_min_interest)
        ]
        return fired, newcomers, interested, left_out

    def arrival_users(
        self, part: PartitionState, update: CatalogUpdate, at: float, asked: Mapping[str, int] | None = None
    ) -> tuple[list[str], int]:
        """Users of the partition to ask about a new item (stream.content_items.arrival_audience), less
        those ``asked`` about the hour's bound of new items, and how many that left out."""
        if len(part.interest) == 0:
            return [], 0
        pool = self.arrival_pool(update)
        return arrival_audience(pool, part.interest, at, self.cfg, asked) if pool else ([], 0)

    def arrival_pool(self, update: CatalogUpdate) -> list[str]:
        """The items whose users hear of a new arrival (empty when it goes to no one), computed once
        per item version, not once per partition (kept in a bounded LRU, :meth:`_keep_pool`)."""
        content = self._content()
        if self.cfg.new_arrival_max_users == 0 or not placed_from_content(content, update.item_id):
            return []  # the model was trained on it (it has a history), or cannot place it
        key = (update.item_id, update.updated_at)
        pool = self._arrival_pools.get(key)
        if pool is not None:
            self._arrival_pools.move_to_end(key)
            return pool
        # The category as of the arrival's time, so every partition (and worker) sees the same.
        peers = self.category_peers(update.category, update.updated_at)
        pool = arrival_pool(content, update.item_id, peers, self.cfg.new_arrival_similar_items)
        self._keep_pool(key, pool)
        return pool

    def prepare_pools(self, updates: Iterable[CatalogUpdate]) -> None:
        """Compute the pools of these new arrivals that are not kept yet, all at once
        (``stream.content_items.arrival_pools``: one matrix product for a burst): the same pools
        :meth:`arrival_pool` computes one at a time."""
        content = self._content()
        if content is None or self.cfg.new_arrival_max_users == 0:
            return
        announced = {(u.item_id, u.updated_at): u for u in updates}
        self._announcing = len(announced)
        todo = [(key, u) for key, u in announced.items() if key not in self._arrival_pools]
        if len(todo) < 2:
            return  # one at a time is as good
        arrivals = [(u.item_id, self.category_peers(u.category, u.updated_at)) for _, u in todo]
        pools = arrival_pools(content, arrivals, self.cfg.new_arrival_similar_items)
        indices = content.item_indices([u.item_id for _, u in todo]).tolist()
        for (key, _), pool, index in zip(todo, pools, indices, strict=True):
            if index >= content.n_artifact_items:  # placed from content: what arrival_pool keeps
                self._keep_pool(key, pool)

    def _keep_pool(self, key: tuple[str, float], pool: list[str]) -> None:
        """Keep a pool, dropping the least recently used beyond the bound: :data:`MAX_ARRIVAL_POOLS`, or
        as many as the catalog's change log holds or the latest announcement had arrivals, when more (a
        burst larger than the bound is announced partition after partition: an LRU smaller than the
        burst would keep none of it)."""
        undo = self._pools_undo
        if undo is not None and key not in undo:
            undo[key] = self._arrival_pools.get(key)
        self._arrival_pools[key] = pool
        limit = max(MAX_ARRIVAL_POOLS, self._catalog().pending_changes(), self._announcing)
        while len(self._arrival_pools) > limit:
            dropped, was = self._arrival_pools.popitem(last=False)
            if undo is not None and dropped not in undo:
                undo[dropped] = was

    def checkpoint(self) -> None:
        """Start journaling the arrival pools: a pool is computed from the catalog view as it is, so
        one computed during a catalog slice the engine failed on goes with the slice (:meth:`rollback`).
        The category peers need no journal: they are kept per category generation, which the view's
        rollback takes care of (``CatalogView.rollback``)."""
        self._pools_undo = {}
        self._announcing_before = self._announcing

    def release(self) -> None:
        """End the journal, keeping the pools computed since :meth:`checkpoint`."""
        self._pools_undo = None

    def rollback(self) -> None:
        """The pools as they were at :meth:`checkpoint` (their order of use aside); ends the journal."""
        undo, self._pools_undo = self._pools_undo, None
        if undo is None:
            raise RuntimeError("rollback without a checkpoint")
        for key, pool in undo.items():
            if pool is None:
                self._arrival_pools.pop(key, None)
            else:
                self._arrival_pools[key] = pool
        self._announcing = self._announcing_before

    def category_peers(self, category: str, t: float) -> list[str]:
        """The items of ``category`` a new arrival of it at ``t`` is compared with (sorted by id): those
        the model was trained on (only those can be similar items: ``ContentScorer.similar_items``)
        whose version in force at ``t`` is in the category (``CatalogView.in_category`` lists them all).

        Read from the catalog once per category and generation of its items
        (``CatalogView.generation_of``: changes to other categories keep it), then once per span of
        times over which every one of them reads the same (``CatalogView.at_span``): a burst of
        arrivals in one category shares one list, and its own items, which the model knows only from
        their content, are never scanned per arrival.
        """
        catalog, content = self._catalog(), self._content()
        if content is None:
            return []
        was = self._peers_source
        if was is None or was[0] is not catalog or was[1] is not content:
            self._peers.clear()
            self._peers_source = (catalog, content)
        generation = catalog.generation_of(category)
        entry = self._peers.get(category)
        if entry is None or entry.generation != generation:
            members = catalog.in_category(category)
            trained = content.n_artifact_items
            indices = content.item_indices(members).tolist()
            known = [m for m, i in zip(members, indices, strict=True) if 0 <= i < trained]
            entry = self._peers[category] = _CategoryPeers(generation, known)
        return entry.at(catalog, category, t)
