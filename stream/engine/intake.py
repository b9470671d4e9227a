"""Pass 1 for one behaviour event: everything but the GRU step and the decision, which are queued.

Deduplication, sessions, the shopper's engagement and local hours, the partition's indexes and
timers, and, for browsing events, the in-session ask with its candidates. Asks capture what is true
of the user when they are made (:func:`capture_ask`), so a decision is the same however the stream
was cut into batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter

from stream import policy as pol
from stream import triggers
from stream.asks import Ask, BatchUser, Op, SeenAt, Work
from stream.candidates import gather_candidates
from stream.catalog_view import CatalogView
from stream.decider import Decider
from stream.discovery import CategoryMoment, CategoryPrices, discovery_pool
from stream.engagement import EngagedItem, Engagement
from stream.engine.users import TYPE_INDEX
from stream.event_decoder import ValidEvent
from stream.new_items import NewItems
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.send_time import observation_weight, observe_stored
from stream.settings import Settings
from stream.state import UserState
from stream.timers import ACTIVITY_TYPES, on_behaviour

# Browsing events that may lead to an in-session push; feedback and purchases do not.
NUDGE_TYPES = frozenset({"view", "add_to_cart", "search"})
# Events that move the GRU state (they name an item the shopper acted on).
STEP_TYPES = frozenset({"view", "add_to_cart", "remove_from_cart", "purchase"})


def capture_ask(
    user: BatchUser,
    asked: triggers.TriggerAsk,
    now: float,
    seq: int,
    part: PartitionState,
    warm: Sequence[str] = (),
) -> Ask:
    """A trigger's ask, with what is true of the user now (captured: later inputs change it).

    ``warm``: the ask's content-placed items whose partition event counts the model's stream warm-up
    reads (``model.warmup``); their counts are captured now, as the stream stood at the ask.
    """
    engagement = user.engagement
    items = asked.items
    counts = {item: part.trending.score(item, now) for item in warm} if warm else None
    # A copy: later events of the batch change the user's engagement before the decision runs.
    engaged = {
        i: EngagedItem(e.views, e.carts, e.in_cart, e.bought, e.last_ts)
        for i in items
        if (e := engagement.get(i)) is not None
    }
    return Ask(
        user,
        asked.trigger,
        asked.cause,
        asked.event_ts,
        now,
        items,
        asked.sources,
        engaged,
        engagement.last_ts,
        user.state.policy.opted_in,
        asked.previous_price,
        seq,
        part.covisitation.snapshot(items),
        list(user.state.policy.send_hours) if user.state.policy.send_hours else None,
        asked.pushable,
        counts,
        asked.priors,
        asked.rearm,
        part.watermark,
    )


class Intake:
    """Pass 1 of the engine's batches, event by event in stream order.

    ``next_seq`` numbers asks and queued work in stream order (shared with the engine's timers and
    catalog asks); ``decision_time`` maps an event time to the decision clock (``worker.clock``).
    """

    def __init__(
        self,
        settings: Settings,
        part: Callable[[int], PartitionState],
        decider: Decider,
        catalog: Callable[[], CatalogView],
        new_items: NewItems,
        next_seq: Callable[[], int],
        decision_time: Callable[[float], float],
        warm_items: Callable[[Sequence[str]], list[str]] = lambda items: [],
    ) -> None:
        self.settings = settings
        self.cfg = settings.policy
        self._part = part
        self._decider = decider
        self._catalog = catalog
        self._new_items = new_items
        self._next_seq = next_seq
        self._decision_time = decision_time
        self._warm_items = warm_items  # the content-placed items among some, when the model warms them
        self._prices = CategoryPrices()  # the catalog's part of discovery values, across moments

    def ask(self, user: BatchUser, asked: triggers.TriggerAsk, now: float) -> Ask:
        """:func:`capture_ask` with the next sequence number, the user's partition and warm items.

        Warm items are the ask's content-placed items in the categories of the user's recent items:
        the stream warm-up's weight was chosen for those (``model.warmup_fit``).
        """
        seq = self._next_seq()
        warm = self._warm_items(asked.items)
        if warm:
            catalog = self._catalog()
            mine = self.recent_categories(user.engagement, now)
            warm = [i for i in warm if (v := catalog.at(i, now)) is not None and v.category in mine]
        return capture_ask(user, asked, now, seq, self._part(user.partition), warm)

    def queue_ask(self, work: Work, user: BatchUser, op: Op) -> None:
        """Queue a decision with the earliest time a timer of its plan may fall due (before pass 2
        runs, the clock must not reach it: ``stream.asks.Work.first_due``)."""
        assert op.ask is not None
        may_change = bool(user.state.policy.held) or work.asks_queued(user.user_id)
        work.queue(user, op, op.ask.now, self._decider.earliest_timer(op.ask, may_change))

    def discover(self, partition: int, now: float, out: Outcome) -> triggers.Discover:
        """The shopper's discovery pool at ``now`` (``stream.discovery``), computed when a trigger asks:
        the catalog as at ``now``, the partition's popularity as the stream stands (in stream order).

        Valid for one moment (the due timers of one clock, between two inputs): the shoppers asking
        then share each category's item values. Categories left out for their size are counted in
        ``out.discovery_categories_left_out``.
        """
        trending = self._part(partition).trending
        values: dict[str, CategoryMoment] = {}

        def pool(engagement: Engagement) -> list[tuple[str, float]]:
            categories = self.recent_category_counts(engagement, now)
            catalog = self._catalog()
            left_out: list[str] = []
            found = discovery_pool(
                engagement,
                categories,
                catalog,
                trending.popularity_at(now),  # read when asked: the counts as the stream stands
                now,
                self.cfg,
                values,
                self._prices,
                left_out,
            )
            out.discovery_categories_left_out += len(left_out)
            return found

        return pool

    def recent_categories(self, engagement: Engagement, now: float) -> dict[str, None]:
        """The categories of the user's ``covisit_window`` most recent items, as catalogued at ``now``."""
        return dict.fromkeys(self.recent_category_counts(engagement, now))

    def recent_category_counts(self, engagement: Engagement, now: float) -> dict[str, int]:
        """How many of the user's ``covisit_window`` most recent items each category has (catalogued at
        ``now``), most recent category first."""
        catalog = self._catalog()
        counts: dict[str, int] = {}
        for item in engagement.recent(self.cfg.covisit_window):
            version = catalog.at(item, now)
            if version is not None:
                counts[version.category] = counts.get(version.category, 0) + 1
        return counts

    def bookkeep(self, user: BatchUser, event: ValidEvent, work: Work, out: Outcome) -> None:
        """Pass 1 for one event: everything but the GRU step and the decision, which are queued."""
        steps = work.steps_of(user.user_id)
        state = user.state
        if state.seen(event.event_id):
            out.events[(event.type, "duplicate")] += 1
            return
        user.dirty = True
        worker = self.settings.worker
        # The event's fields as locals: each read of a msgspec field from compiled code is a generic
        # attribute lookup, and this function reads them some twenty times per event.
        etype, ts, item, session_id = event.type, event.ts, event.item_id, event.session_id
        new_session = (
            state.n_events == 0
            or (session_id is not None and session_id != state.session_id)
            or ts - state.last_event_ts > worker.session_gap_seconds
        )
        if new_session:
            steps.append(("", -1))  # a reset, ordered among the user's steps
            state.session_id = session_id or f"{event.user_id}@{ts:.0f}"
        state.remember_event(event.event_id, ts, worker.dedupe_event_ids)
        part = self._part(user.partition)
        if event.context is not None:
            zone = event.context.time_zone
            if zone and zone != state.policy.time_zone:
                state.policy.observe_time_zone(zone)
                # Their pushes waiting for the throttle's budget keep their quiet hours in this zone.
                part.throttle.rezone(user.user_id, zone)
        part.throttle.touch(user.user_id, ts)  # and do not go out while the user is on the site
        self.observe_hour(state, event)
        is_step = etype in STEP_TYPES
        if item is not None and is_step:
            previous = user.engagement.recent(self.cfg.covisit_window)
            if etype == "view" or etype == "add_to_cart":
                part.covisitation.observe(item, previous, ts)
            part.trending.observe(item, etype, ts)
            if etype == "purchase":
                self._decider.index_ops.append((self._next_seq(), user.partition, user.user_id, item, ts))
        user.engagement.observe(etype, item, ts)
        if etype in ACTIVITY_TYPES:
            user.engagement.observe_visit(ts, self.cfg.visit_gap_seconds)
        on_behaviour(part.timers, user.user_id, etype, item, event.event_id, ts, self.cfg)
        if item is not None and is_step:
            state.remember_item(item, etype, ts, state.session_id, worker.recent_items)
            steps.append((item, TYPE_INDEX[etype]))
        out.events[(etype, "processed")] += 1
        seq = self._next_seq()  # numbered even when nothing is queued: the numbers are the stream's
        pstate = state.policy
        if pstate.pushes or pstate.held or work.asks_queued(user.user_id):
            # Its feedback and the release of held pushes at its time; with no push or hold, and
            # no decision queued that could make one, both are nothing (most events).
            seen = SeenAt.of(user.engagement, part.watermark)
            work.queue(user, Op(len(steps), event, seq=seq, seen=seen), ts)
        if etype in NUDGE_TYPES:
            ask = self.maybe_ask(user, event, part, out)
            if ask is not None:
                self.queue_ask(work, user, Op(len(steps), event, ask))

    def observe_hour(self, state: UserState, event: ValidEvent) -> None:
        """Count the event in the shopper's local engagement hours (send time, stream.send_time)."""
        cfg = self.cfg
        weight = observation_weight(event.type, cfg)
        if not cfg.send_time_enabled or weight <= 0:
            return
        state.policy.send_hours = observe_stored(
            state.policy.send_hours,
            event.ts,
            pol.user_zone(state.policy, cfg),
            weight,
            cfg.send_time_half_life_seconds,
        )

    def maybe_ask(self, user: BatchUser, event: ValidEvent, part: PartitionState, out: Outcome) -> Ask | None:
        """An in-session decision for this event (of ``part``, the user's partition), unless it is too
        late, too soon, or the user is blocked.

        Gathering and scoring a user's candidates is the costly part of an event, so it runs at most
        once per ``decision_interval_seconds`` of event time per user (always on add_to_cart), and
        not for users no push may reach now. Both depend on event times only. Too late: more than
        ``max_event_lag_seconds`` behind the wall clock, or with the event clock behind the partition's
        clock (its latest event time, in stream order).
        """
        state = user.state
        worker = self.settings.worker
        now = self._decision_time(event.ts)
        # How late the event is: behind the wall clock, or with the event clock behind its partition's
        # clock (the stream's present: there a decision would read catalog versions as of an hour the
        # partition has left, which the tick may already have forgotten, CatalogView.forget_until).
        present = part.watermark if worker.clock == "event" else now
        if present - event.ts > worker.max_event_lag_seconds:
            out.suppressions[("in_session", "stale_event")] += 1
            return None
        if (
            event.type != "add_to_cart"
            and event.ts - state.last_decision_ts < worker.decision_interval_seconds
        ):
            return None
        state.last_decision_ts = event.ts
        # The event itself shows the shopper on the site: with the active rule on, nothing now.
        active = self._decider.active(event.ts, now)
        blocked = pol.user_blocked(user.user_id, state.policy, now, self.cfg, active=active)
        if blocked is not None:
            out.suppressions[("in_session", blocked)] += 1
            return None
        t = perf_counter()
        merged = gather_candidates(
            user.engagement,
            part.covisitation,
            self._catalog(),
            part.trending,
            now,
            self.cfg,
            new_items=self.new_items_for(user.engagement, now),
        )
        out.stage_seconds["candidates"] += perf_counter() - t
        items = tuple(c.item_id for c in merged)
        sources = tuple(c.source for c in merged)
        return self.ask(
            user, triggers.TriggerAsk("in_session", event.event_id, event.ts, items, sources), now
        )

    def new_items_for(self, engagement: Engagement, now: float) -> list[str]:
        """New items (placed from content) in the categories of the user's recent items, newest first."""
        if not len(self._new_items) or not self.cfg.quota_new:
            return []
        categories = self.recent_categories(engagement, now)
        # A few more than the quota: bought or already proposed items are skipped by the merge.
        return self._new_items.in_categories(categories, self._catalog(), now, 2 * self.cfg.quota_new)
