"""One partition's share of a catalog change: the promotion-ending timers it arms and the asks of the
users who care (interested in the item, or, for a new arrival, in the items most like it).

Which triggers a change fires is decided in ``stream.triggers`` (``catalog_triggers``); when a change
is announced to a partition is the engine's (``stream.engine.core``, ``stream.catalog_view``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet

from stream import triggers
from stream.asks import Ask, BatchUser
from stream.catalog_view import CatalogView
from stream.content_items import ContentScorer, arrival_pool, arrival_users, placed_from_content
from stream.contract import CatalogUpdate
from stream.engine.intake import Intake
from stream.engine.ports import StateAccess
from stream.engine.users import UserRecords
from stream.partition_state import PartitionState
from stream.policy_config import PolicyConfig
from stream.timers import schedule_promotion_ending

# Arrival pools kept at most (one per new item; cleared whole when full or on a model swap).
MAX_ARRIVAL_POOLS = 1024


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
        self._arrival_pools: dict[tuple[str, float], list[str]] = {}

    def forget_pools(self) -> None:
        """Drop the arrival pools (a new model places items elsewhere)."""
        self._arrival_pools.clear()

    def asks(
        self,
        txn: StateAccess,
        part: PartitionState,
        at: float,
        previous: CatalogUpdate | None,
        update: CatalogUpdate,
        users: dict[str, BatchUser],
    ) -> list[Ask]:
        """The partition's asks for a change judged at ``at``; arms its promotion-ending timers."""
        partition = part.partition
        fired, newcomers, interested = self._audience(part, at, previous, update)
        if not fired and update.promotion is None:
            return []
        if update.promotion is not None and update.promotion.active_at(at):
            schedule_promotion_ending(part.timers, interested, update.item_id, update.promotion, at, self.cfg)
        asks: list[Ask] = []
        prev_price = previous.effective_price(previous.updated_at) if previous is not None else None
        for trigger, cause in fired:
            for user_id in newcomers if trigger == "new_arrival" else interested:
                user = self._records.load(txn, partition, user_id, users)
                user.dirty = True  # timers changed
                if self._records.expired(user.state, at):
                    continue
                price = prev_price if trigger == "price_drop" else None
                asked = triggers.TriggerAsk(
                    trigger, cause, update.updated_at, (update.item_id,), ("catalog",), previous_price=price
                )
                asks.append(self._intake.ask(user, asked, at))
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
        _, newcomers, interested = self._audience(part, at, previous, update, fired)
        return bool(newcomers or interested)

    def _audience(
        self,
        part: PartitionState,
        at: float,
        previous: CatalogUpdate | None,
        update: CatalogUpdate,
        fired: list[tuple[str, str]] | None = None,
    ) -> tuple[list[tuple[str, str]], list[str], list[str]]:
        """The triggers a change fires at ``at`` (``fired``, when the caller has them), the users a new
        arrival goes to, and the users interested in the item (the interest index); no users when it
        fires nothing and promotes nothing."""
        if fired is None:
            fired = triggers.catalog_triggers(previous, update, at)
        if not fired and update.promotion is None:
            return fired, [], []
        newcomers = [u for t, _ in fired if t == "new_arrival" for u in self.arrival_users(part, update, at)]
        interested = [
            u for u, _, _ in part.interest.users_for(update.item_id, at, self.cfg.interest_index_min_interest)
        ]
        return fired, newcomers, interested

    def arrival_users(self, part: PartitionState, update: CatalogUpdate, at: float) -> list[str]:
        """Users of the partition to ask about a new item (stream.content_items)."""
        if len(part.interest) == 0:
            return []
        pool = self.arrival_pool(update)
        return arrival_users(pool, part.interest, at, self.cfg) if pool else []

    def arrival_pool(self, update: CatalogUpdate) -> list[str]:
        """The items whose users hear of a new arrival (empty when it goes to no one), computed once
        per item, not once per partition: a pool costs a catalog-wide scan."""
        content = self._content()
        if self.cfg.new_arrival_max_users == 0 or not placed_from_content(content, update.item_id):
            return []  # the model was trained on it (it has a history), or cannot place it
        key = (update.item_id, update.updated_at)
        pool = self._arrival_pools.get(key)
        if pool is None:
            catalog = self._catalog()
            # The category as of the arrival's time, so every partition (and worker) sees the same.
            peers = [
                item
                for item in catalog.in_category(update.category)
                if (then := catalog.at(item, update.updated_at)) is not None
                and then.category == update.category
            ]
            pool = arrival_pool(content, update.item_id, peers, self.cfg.new_arrival_similar_items)
            if len(self._arrival_pools) >= MAX_ARRIVAL_POOLS:
                self._arrival_pools.clear()
            self._arrival_pools[key] = pool
        return pool
