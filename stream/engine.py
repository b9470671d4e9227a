"""The decision core of the worker: events in, user state advanced, pushes out. No Kafka here.

:class:`Engine` takes one batch of raw inbound records (what the faust agent read), the state
transaction to read and write user state through, and returns an :class:`Outcome`: the pushes,
dead letters and audit decisions to produce, and the counts the metrics need. The agent does the
I/O around it, which keeps this file testable with a dict-backed store and a real model.

Per event, in order: validate (else dead letter), drop redeliveries (same ``event_id``), apply
feedback and consent, update engagement, timers and the worker-wide indexes, advance the user's
GRU state by exactly one step, then (for browsing events) score the user's candidates and let the
policy decide. GRU steps and scoring are batched across users: the batch is cut into rounds, round
``r`` holding each user's ``r``-th event, so each user still sees its events in order and every
decision depends only on the events before it, never on batch boundaries.

The engine orchestrates; each concern has its own module: the triggers that turn moments into asks
(``stream.triggers``), the model calls (``stream.scoring``), the decisions (``stream.decider``, which
runs the rules of ``stream.rules``), the catalog by time (``stream.catalog_view``) and the batch's
units of work and output (``stream.asks``, ``stream.outcome``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Protocol

import numpy as np

from stream import policy as pol
from stream import triggers
from stream.admission import admit_catalog, admit_consent, admit_event
from stream.asks import Ask, BatchUser, Op, Work
from stream.candidates import (
    EngagedItem,
    Engagement,
    gather_candidates,
)
from stream.catalog_view import CATALOG_RETENTION_SECONDS, CatalogChange, CatalogView
from stream.content_items import (
    NewItems,
    Unplaced,
    arrival_pool,
    arrival_users,
    check_image,
    content_scorer,
    placed_from_content,
)
from stream.contract import (
    EVENT_TYPES,
    CatalogUpdate,
    ContractError,
    Event,
    Push,
)
from stream.decider import RELEASE_KIND, Decider
from stream.feedback import apply_feedback, settle_ignored
from stream.outcome import Inbound, Outcome, refused
from stream.partition_state import PartitionState
from stream.scoring import AskScorer
from stream.send_time import observation_weight, observe_stored
from stream.settings import Settings
from stream.state import UserState
from stream.timers import Timer, on_behaviour, schedule_promotion_ending

log = logging.getLogger(__name__)

TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}
# Browsing events that may lead to an in-session push; feedback and purchases do not.
NUDGE_TYPES = frozenset({"view", "add_to_cart", "search"})
# Events that move the GRU state (they name an item the shopper acted on).
STEP_TYPES = frozenset({"view", "add_to_cart", "remove_from_cart", "purchase"})


class Scorer(Protocol):
    """What the engine needs from a model (``model.scorer.IncrementalScorer`` provides it)."""

    version: str
    hidden_size: int

    def initial_state(self, n: int) -> np.ndarray: ...
    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray: ...
    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray: ...
    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...
    def interest(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def score_and_interest(self, states: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both at once; a model can override this to compute the candidate scores once."""
        return self.score(states, candidates), self.interest(states, candidates)


class PartitionRows(Protocol):
    """A partition's stored rows (``stream.store.PartitionStore`` provides it)."""

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...
    def partition_rows(self) -> Iterable[tuple[bytes, bytes]]: ...


class StateAccess(Protocol):
    """Read and stage user state records (``stream.store.Transaction`` provides it)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def put(self, partition: int, key: bytes, value: bytes | None) -> None: ...


def _minute(ts: float) -> int:
    """The minute of the event-time clock ``ts`` falls in (the throttle releases once per minute)."""
    return int(ts // 60.0)


def _forgotten(state: UserState) -> UserState:
    """What is kept of an expired user: an opt-out, never forgotten (an opt-in may be: forgetting it
    can only mean fewer pushes, and keeping every consent would make the state grow forever)."""
    kept = UserState()
    if state.policy.opted_in is False:
        kept.policy.opted_in = False
        kept.policy.consent_ts = state.policy.consent_ts
    return kept


class Engine:
    """Holds the model, the catalog view and the partitions' shared state; processes batches."""

    def __init__(self, settings: Settings, scorer: Scorer, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cfg = settings.policy
        self.scorer = scorer
        self._content = content_scorer(scorer)  # the model when it places items from content
        self.clock = clock
        # Admission compares input times with the real wall clock (future skew), even when the
        # decision clock is injected; tests replace it like ``clock``.
        self.wall_clock: Callable[[], float] = time.time
        # Item versions by time and the changes each partition announces when its clock passes them.
        self._catalog = CatalogView()
        # Clock, indexes and timers per partition (see stream.partition_state): decisions never
        # depend on which partitions this worker owns, nor on restarts.
        self.parts: dict[int, PartitionState] = {}
        self.owned: set[int] = set()  # partitions whose users this engine may touch
        self._ask_seq = 0
        # New arrival -> the items whose users hear of it (stream.content_items.arrival_pool).
        self._arrival_pools: dict[tuple[str, float], list[str]] = {}
        self.new_items = NewItems()  # items placed from content, by category (a candidate source)
        self.unplaced = Unplaced()  # catalogued items the model lacks, placed a few per tick
        # Model calls in fixed-size chunks, and the decisions (stream.scoring, stream.decider).
        self.scoring = AskScorer(scorer, self.cfg, settings.worker.model_chunk_rows)
        self.decider = Decider(
            self.cfg,
            lambda: self._catalog,
            self.part,
            lambda: self.scorer.version,
            settings.worker.audit_decisions,
        )

    @property
    def catalog(self) -> CatalogView:
        """Item versions by time and the changes not yet announced everywhere (stream.catalog_view)."""
        return self._catalog

    @catalog.setter
    def catalog(self, view: CatalogView) -> None:
        self._catalog = view  # the decider reads it through the engine

    def part(self, partition: int) -> PartitionState:
        """The shared state of a partition (empty until the partition is adopted or first used)."""
        state = self.parts.get(partition)
        if state is None:
            state = PartitionState.empty(partition, self.cfg, self.settings.topics.partitions)
            self.parts[partition] = state
        return state

    # -- clocks ---------------------------------------------------------------------------------

    def now(self, partition: int) -> float:
        """A partition's decision clock: its event-time watermark, or the wall clock when later
        (``worker.clock``)."""
        state = self.parts.get(partition)
        watermark = 0.0 if state is None else state.watermark
        if self.settings.worker.clock == "event":
            return watermark
        return max(watermark, self.clock())

    def _event_clock(self) -> bool:
        return self.settings.worker.clock == "event"

    def _decision_time(self, event_ts: float) -> float:
        if self.settings.worker.clock == "event":
            return event_ts
        return max(event_ts, self.clock())

    # -- model swap -----------------------------------------------------------------------------

    def swap_model(self, scorer: Scorer) -> None:
        """Serve a new model from the next batch on; states re-derive lazily (see ``_sync_model``)."""
        self.scorer = scorer
        self.scoring.scorer = scorer
        self._content = content_scorer(scorer)
        self._arrival_pools.clear()
        # The new model knows none of the items the old one placed from their content.
        self.new_items.clear()
        self.unplaced.clear()
        self.unplaced.offer(
            self._content, (u for item in list(self.catalog.items()) if (u := self.catalog.latest(item)))
        )
        self._place_waiting(Outcome())

    def _place_waiting(self, out: Outcome) -> None:
        """Place up to ``model.content_items_per_tick`` waiting items; file them as new items."""
        placed = self.unplaced.place_some(self._content, self.settings.model.content_items_per_tick)
        for update in placed:
            if placed_from_content(self._content, update.item_id):
                self.new_items.add(update)
                out.content_items_added += 1

    # -- state ----------------------------------------------------------------------------------

    def _load(self, txn: StateAccess, partition: int, user_id: str, cache: dict[str, BatchUser]) -> BatchUser:
        user = cache.get(user_id)
        if user is None:
            raw = txn.get(partition, user_id.encode("utf-8"))
            state = UserState() if raw is None else UserState.from_bytes(raw)
            engagement = Engagement.from_dict(state.engagement, self.cfg.engagement_max_items)
            user = BatchUser(user_id, partition, state, engagement)
            self._sync_model(user)
            cache[user_id] = user
        return user

    def _save(self, txn: StateAccess, users: Iterable[BatchUser]) -> None:
        for user in users:
            if user.dirty:
                part = self.part(user.partition)
                user.state.engagement = user.engagement.to_dict()
                user.state.timers = [t.to_list() for t in part.timers.timers_for(user.user_id)]
                txn.put(user.partition, user.user_id.encode("utf-8"), user.state.to_bytes())
                clock = user.state.expiry_clock()
                if clock is not None:
                    part.last_seen[user.user_id] = clock
                user.dirty = False
        # The partitions' changed index rows go into the same transaction as the user records.
        for partition in sorted(self.parts):
            self._stage_rows(txn, partition)

    def _stage_rows(self, txn: StateAccess, partition: int) -> None:
        """Stage a partition's changed shared rows (indexes, clock, offsets) in the transaction."""
        for key, value in self.part(partition).drain().items():
            txn.put(partition, key, value)

    def _sync_model(self, user: BatchUser) -> None:
        """Re-derive a state made by another model version from the session's recent items.

        Runs at most ``worker.recent_items`` steps once per user after a model swap; the normal
        path never re-runs history.
        """
        state = user.state
        if state.hidden is None or state.model_version == self.scorer.version:
            return
        hidden = self.scorer.initial_state(1)
        session = [r for r in state.recent if r.session_id == state.session_id]
        if session:
            items = self.scorer.item_indices([r.item_id for r in session])
            types = np.array([TYPE_INDEX[r.type] for r in session], dtype=np.int64)
            for i in range(len(session)):
                hidden = self.scoring.step(hidden, items[i : i + 1], types[i : i + 1])
        state.hidden = hidden[0]
        state.model_version = self.scorer.version

    # -- batches --------------------------------------------------------------------------------

    def process(self, records: Sequence[Inbound], txn: StateAccess) -> Outcome:
        """Apply one batch of events and consent updates; stage the new states in ``txn``.

        Pass 1 walks the records in stream order: validation, deduplication, bookkeeping, the
        partition's clock, indexes and due timers, and the candidates of each decision. Pass 2 runs
        the GRU steps in rounds (round ``r``: each user's ``r``-th step, batched across users) and,
        after each round, scores and decides what was queued behind those steps, per user in order.
        An erasure (a consent tombstone) closes the work before it, so nothing of the erased user
        survives it.
        """
        started = perf_counter()
        self._start_batch()
        out = Outcome()
        stage = out.stage_seconds
        topics = self.settings.topics
        work = Work()
        for rec in records:
            self.part(rec.partition).observe_offset(rec.topic, rec.offset)
            try:
                if rec.topic == topics.consent:
                    consent = admit_consent(
                        rec.key, rec.partition, rec.value, self.settings, self.wall_clock()
                    )
                    if consent is None:  # a tombstone: erase the user (what came before is decided first)
                        assert rec.key is not None  # admission refuses a tombstone without a key
                        self._finish(work, txn, out)
                        work = Work()
                        self._erase(txn, rec.partition, rec.key.decode("utf-8"), out)
                        continue
                    user = self._load(txn, rec.partition, consent.user_id, work.users)
                    if user.state.policy.apply_consent(consent):
                        user.dirty = True
                        if not consent.opted_in:
                            self.part(rec.partition).timers.cancel_user(consent.user_id)
                    out.consent_updates += 1
                    continue
                t = perf_counter()
                event = admit_event(rec.key, rec.partition, rec.value, self.settings, self.wall_clock())
                stage["parse"] += perf_counter() - t
            except ContractError as exc:
                out.dead_letters.append(refused(rec, exc, self.settings))
                out.events[("invalid", "dead_letter")] += 1
                continue
            part = self.part(rec.partition)
            new_minute = part.throttle.enabled and _minute(event.ts) > _minute(part.watermark)
            # The clock enters a minute after that of the partition's earliest queued policy work: a
            # timer that work schedules (a hold's release, always on a whole minute) may be due by now.
            timers_due = _minute(event.ts) > work.first_minute.get(rec.partition, _minute(event.ts))
            if part.learning.enters_new_epoch(max(part.watermark, event.ts)) or new_minute or timers_due:
                # Decisions before this input read the old epoch's outcome estimates (stream.learning),
                # took their throttle budget (stream.throttle) and scheduled their timers before anything
                # is released.
                self._finish(work, txn, out)
                work = Work()
            announced_until = self._catalog_until(rec.partition)  # before the clock moves
            moved = part.advance(event.ts)
            part.learning.advance(part.watermark)
            if new_minute:
                self._release_throttled(part, out)
            if moved and self.catalog.changes_between(announced_until, self.now(rec.partition)):
                # Catalog changes the clock passed are announced here, in stream order, after what
                # came before (its interest updates included) and before the timers due now.
                self._finish(work, txn, out)
                work = Work()
                self._announce_due(txn, rec.partition, out)
            elif moved:
                part.catalog_until = self.now(rec.partition)
            if moved and self._event_clock():
                # Event time: what fell due up to this event's time happens before it, in stream order.
                self._fire_due(txn, part, part.watermark, work, out)
            t = perf_counter()
            user = self._load(txn, rec.partition, event.user_id, work.users)
            t1 = perf_counter()
            stage["state_read"] += t1 - t
            candidates = stage["candidates"]
            self._expire_if_inactive(user, event.ts)
            self._bookkeep(user, event, work, out)
            stage["bookkeeping"] += perf_counter() - t1 - (stage["candidates"] - candidates)
        self._finish(work, txn, out)
        measured = sum(stage.values())
        stage["engine_other"] += max(perf_counter() - started - measured, 0.0)
        return out

    def mark_applied(self, rec: Inbound, txn: StateAccess) -> None:
        """Record ``rec`` as applied without applying it (it was dead-lettered by the caller)."""
        part = self.part(rec.partition)
        part.observe_offset(rec.topic, rec.offset)
        self._stage_rows(txn, rec.partition)

    def applied(self, rec: Inbound) -> bool:
        """Whether ``rec`` was already applied to its partition's state (a redelivery to skip).

        The partition's input offsets are written with the states of the batch that applied them,
        so this holds across rebalances, restarts and moves to another worker.
        """
        part = self.parts.get(rec.partition)
        return part is not None and part.applied(rec.topic, rec.offset)

    def _finish(self, work: Work, txn: StateAccess, out: Outcome) -> None:
        """Pass 2 of the work gathered so far, then stage its states."""
        first = len(out.pushes)
        self._resolve(work.users, work.steps, work.ops, out)
        # Rounds decide users in an order that depends on batching; emit in stream order instead.
        order = self.decider.push_order
        out.pushes[first:] = sorted(out.pushes[first:], key=lambda pushed: order.get(pushed[1].push_id, 0))
        order.clear()
        self._throttle(out, first)
        self.decider.apply_interest_updates()
        t = perf_counter()
        self._save(txn, work.users.values())
        out.stage_seconds["state_write"] += perf_counter() - t

    def _throttle(self, out: Outcome, first: int) -> None:
        """Admit the pushes from ``first`` on in stream order; those over budget wait (stream.throttle)."""
        kept: list[tuple[int, Push]] = []
        for partition, push in out.pushes[first:]:
            throttle = self.part(partition).throttle
            if throttle.admit(push.created_at):
                kept.append((partition, push))
            elif throttle.enqueue(push):
                out.suppressions[(push.trigger, "throttled")] += 1
            else:
                out.suppressions[(push.trigger, "throttle_full")] += 1
        out.pushes[first:] = kept

    def _release_throttled(self, part: PartitionState, out: Outcome) -> None:
        """The partition's clock entered a new minute: waiting pushes go out while budget allows."""
        released, expired = part.throttle.release(part.watermark, self.cfg.min_push_lifetime_seconds)
        out.pushes += [(part.partition, push) for push in released]
        for push in expired:
            out.suppressions[(push.trigger, "expired")] += 1

    def _fire_due(self, txn: StateAccess, part: PartitionState, now: float, work: Work, out: Outcome) -> None:
        """Queue the partition's timers due at ``now``, each behind its user's steps so far.

        A timer is decided at ``now``, the clock that passed its due time (with the event clock, the
        partition's watermark): that is when its push can go out, so quiet hours, expiry and the
        active rule are judged then. (Deciding at the due time made a quiet partition, whose clock
        jumps, emit pushes stamped in the past, some into quiet hours: push_outcomes found 2 of 823.)
        The user's state is as it was before the input that moved the clock, so a replay decides the
        same.
        """
        for timer in part.timers.pop_due(now, limit=self.cfg.max_timers):
            at = now
            user = self._load(txn, part.partition, timer.user_id, work.users)
            user.dirty = True  # the fired timer leaves the stored state
            position = len(work.steps_of(timer.user_id))
            if self._expired(user.state, at):
                continue
            if timer.kind == RELEASE_KIND:
                work.queue(user, Op(position, now=at, seq=self._next_ask_seq()), at)
                continue
            ask = self._timer_ask(user, timer, at)
            if ask is not None:
                work.queue(user, Op(position, ask=ask), at)

    def _timer_ask(self, user: BatchUser, timer: Timer, now: float) -> Ask | None:
        """The ask of a due timer, from its trigger (``stream.triggers.TIMER_ASKS``)."""
        asked = triggers.timer_ask(timer, user.engagement, self.cfg)
        return None if asked is None else self._ask(user, asked, now)

    # -- expiry and erasure -----------------------------------------------------------------------

    def _expired(self, state: UserState, now: float) -> bool:
        """A user inactive for longer than ``worker.user_ttl_seconds`` is treated as gone."""
        return state.n_events > 0 and now - state.last_event_ts > self.settings.worker.user_ttl_seconds

    def _expire_if_inactive(self, user: BatchUser, now: float) -> None:
        """Start over a user who comes back after the TTL (the same as if the sweep had removed them)."""
        if self._expired(user.state, now):
            self.part(user.partition).timers.cancel_user(user.user_id)
            user.state = _forgotten(user.state)
            user.engagement = Engagement(self.cfg.engagement_max_items)
            user.dirty = True

    def _erase(self, txn: StateAccess, partition: int, user_id: str, out: Outcome) -> None:
        """Erase a user: state (RocksDB and a changelog tombstone), timers, index entries, held pushes."""
        part = self.part(partition)
        part.timers.cancel_user(user_id)
        part.interest.purge_users({user_id})
        part.last_seen.pop(user_id, None)
        txn.put(partition, user_id.encode("utf-8"), None)  # the batch's closing _save stages the rows
        out.erasures += 1

    def sweep_expired(self, txn: StateAccess, limit: int = 10_000) -> int:
        """Remove users inactive for longer than the TTL from owned partitions; returns how many.

        Expiry itself is decided lazily (an inactive user's next event starts over, a timer or
        catalog change skips them), so when the sweep runs changes nothing a user sees: it only
        reclaims the storage. An opt-out outlives expiry (it is never forgotten).
        """
        removed = 0
        for partition in sorted(self.owned):
            part = self.part(partition)
            now = self.now(partition)
            ttl = self.settings.worker.user_ttl_seconds
            gone = sorted(u for u, ts in part.last_seen.items() if now - ts > ttl)[: limit - removed]
            if not gone:
                continue
            for user_id in gone:
                key = user_id.encode("utf-8")
                raw = txn.get(partition, key)
                part.timers.cancel_user(user_id)
                del part.last_seen[user_id]
                if raw is None:
                    continue
                kept = _forgotten(UserState.from_bytes(raw))
                txn.put(partition, key, kept.to_bytes() if kept.policy.opted_in is False else None)
            part.interest.purge_users(set(gone))
            self._stage_rows(txn, partition)
            removed += len(gone)
            if removed >= limit:
                break
        return removed

    def _bookkeep(self, user: BatchUser, event: Event, work: Work, out: Outcome) -> None:
        """Pass 1 for one event: everything but the GRU step and the decision, which are queued."""
        steps = work.steps_of(user.user_id)
        state = user.state
        if state.seen(event.event_id):
            out.events[(event.type, "duplicate")] += 1
            return
        user.dirty = True
        new_session = (
            state.n_events == 0
            or (event.session_id is not None and event.session_id != state.session_id)
            or event.ts - state.last_event_ts > self.settings.worker.session_gap_seconds
        )
        if new_session:
            steps.append(("", -1))  # a reset, ordered among the user's steps
            state.session_id = event.session_id or f"{event.user_id}@{event.ts:.0f}"
        state.remember_event(event.event_id, event.ts, self.settings.worker.dedupe_event_ids)
        if event.context is not None:
            state.policy.observe_time_zone(event.context.time_zone)
        self._observe_hour(state, event)
        item = event.item_id
        part = self.part(user.partition)
        if item is not None and event.type in STEP_TYPES:
            previous = user.engagement.recent(self.cfg.covisit_window)
            if event.type in ("view", "add_to_cart"):
                part.covisitation.observe(item, previous, event.ts)
            part.trending.observe(item, event.type, event.ts)
            if event.type == "purchase":
                self.decider.index_ops.append(
                    (self._next_ask_seq(), user.partition, user.user_id, item, event.ts)
                )
        user.engagement.observe(event.type, item, event.ts)
        on_behaviour(part.timers, user.user_id, event.type, item, event.event_id, event.ts, self.cfg)
        if item is not None and event.type in STEP_TYPES:
            state.remember_item(
                item, event.type, event.ts, state.session_id, self.settings.worker.recent_items
            )
            steps.append((item, TYPE_INDEX[event.type]))
        out.events[(event.type, "processed")] += 1
        work.queue(user, Op(len(steps), event, seq=self._next_ask_seq()), event.ts)
        if event.type in NUDGE_TYPES:
            ask = self._maybe_ask(user, event, out)
            if ask is not None:
                work.queue(user, Op(len(steps), event, ask), ask.now)

    def _observe_hour(self, state: UserState, event: Event) -> None:
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

    def _resolve(
        self,
        users: dict[str, BatchUser],
        steps: dict[str, list[tuple[str, int]]],
        ops: dict[str, list[Op]],
        out: Outcome,
    ) -> None:
        """Pass 2: GRU steps in rounds, each followed by the decisions queued behind it."""
        stage = out.stage_seconds
        depth = max((len(s) for s in steps.values()), default=0)
        for r in range(depth + 1):
            if r > 0:
                t = perf_counter()
                self._step_round([(users[u], s[r - 1]) for u, s in steps.items() if len(s) >= r], out)
                stage["step"] += perf_counter() - t
            due = [(users[u], op) for u, queue in ops.items() for op in queue if op.step == r]
            if not due:
                continue
            asks = [op.ask for _, op in due if op.ask is not None]
            t = perf_counter()
            scored = dict(zip(map(id, asks), self.scoring.score(asks), strict=True))
            t1 = perf_counter()
            stage["score"] += t1 - t
            for user, op in due:
                if op.ask is not None:
                    self.decider.decide(op.ask, scored[id(op.ask)], out)
                    continue
                if op.event is None:  # a due release timer
                    self.decider.release_held(user, op.now, out, op.seq)
                    continue
                # Feedback needs the pushes decided on this user's earlier events, hence pass 2.
                pstate = user.state.policy
                fb = apply_feedback(pstate, op.event, self.cfg)
                if fb is not None:
                    self.decider.learn(user, fb, op.seq)
                    if not fb.ghost:
                        out.feedback.append(fb)
                out.feedback += settle_ignored(pstate, op.event.ts, self.cfg)
                self.decider.release_held(user, op.event.ts, out, op.seq)
            stage["decide"] += perf_counter() - t1

    def _step_round(self, batch: list[tuple[BatchUser, tuple[str, int]]], out: Outcome) -> None:
        """One GRU step for each user of the round (a reset clears the state instead)."""
        rows = [(user, item, kind) for user, (item, kind) in batch if kind >= 0]
        for user, (_, kind) in batch:
            if kind < 0:
                user.state.hidden = None
        if not rows:
            return
        indices = self.scorer.item_indices([item for _, item, _ in rows])
        for unknown in np.flatnonzero(indices < 0):
            name = EVENT_TYPES[rows[int(unknown)][2]]
            out.events[(name, "processed")] -= 1
            out.events[(name, "unknown_item")] += 1
        init = self.scorer.initial_state(1)[0]
        hidden = np.stack([u.state.hidden if u.state.hidden is not None else init for u, _, _ in rows])
        new_hidden = self.scoring.step(hidden, indices, np.asarray([k for _, _, k in rows], dtype=np.int64))
        for i, (user, _, _) in enumerate(rows):
            user.state.hidden = new_hidden[i]
            user.state.model_version = self.scorer.version

    # -- decisions ------------------------------------------------------------------------------

    def _maybe_ask(self, user: BatchUser, event: Event, out: Outcome) -> Ask | None:
        """An in-session decision for this event, unless it is too late, too soon, or the user is blocked.

        Gathering and scoring a user's candidates is the costly part of an event, so it runs at most
        once per ``decision_interval_seconds`` of event time per user (always on add_to_cart), and
        not for users no push may reach now. Both depend on event times only.
        """
        state = user.state
        now = self._decision_time(event.ts)
        if now - event.ts > self.settings.worker.max_event_lag_seconds:
            out.suppressions[("in_session", "stale_event")] += 1
            return None
        if (
            event.type != "add_to_cart"
            and event.ts - state.last_decision_ts < self.settings.worker.decision_interval_seconds
        ):
            return None
        state.last_decision_ts = event.ts
        # The event itself shows the shopper on the site: with the active rule on, nothing now.
        active = self.decider.active(event.ts, now)
        blocked = pol.user_blocked(user.user_id, state.policy, now, self.cfg, active=active)
        if blocked is not None:
            out.suppressions[("in_session", blocked)] += 1
            return None
        part = self.part(user.partition)
        t = perf_counter()
        merged = gather_candidates(
            user.engagement,
            part.covisitation,
            self.catalog,
            part.trending,
            now,
            self.cfg,
            new_items=self._new_items_for(user.engagement, now),
        )
        out.stage_seconds["candidates"] += perf_counter() - t
        items = tuple(c.item_id for c in merged)
        sources = tuple(c.source for c in merged)
        return self._ask(
            user, triggers.TriggerAsk("in_session", event.event_id, event.ts, items, sources), now
        )

    def _new_items_for(self, engagement: Engagement, now: float) -> list[str]:
        """New items (placed from content) in the categories of the user's recent items, newest first."""
        if not len(self.new_items) or not self.cfg.quota_new:
            return []
        categories: dict[str, None] = {}
        for item in engagement.recent(self.cfg.covisit_window):
            version = self.catalog.at(item, now)
            if version is not None:
                categories[version.category] = None
        # A few more than the quota: bought or already proposed items are skipped by the merge.
        return self.new_items.in_categories(categories, self.catalog, now, 2 * self.cfg.quota_new)

    def _ask(self, user: BatchUser, asked: triggers.TriggerAsk, now: float) -> Ask:
        """A trigger's ask, with what is true of the user now (captured: later inputs change it)."""
        engagement = user.engagement
        items = asked.items
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
            self._next_ask_seq(),
            self.part(user.partition).covisitation.snapshot(items),
            list(user.state.policy.send_hours) if user.state.policy.send_hours else None,
            asked.pushable,
        )

    def _start_batch(self) -> None:
        # A batch that raised half-way (a bug) must not leave its queued work to the next one.
        self.decider.index_ops.clear()
        self.decider.push_order.clear()

    def _next_ask_seq(self) -> int:
        self._ask_seq += 1
        return self._ask_seq

    def _decide(self, asks: list[Ask], out: Outcome) -> None:
        """Score and decide asks that wait for no GRU step (catalog changes, timers)."""
        for ask, scored in zip(asks, self.scoring.score(asks), strict=True):
            self.decider.decide(ask, scored, out)

    # -- catalog and timers ---------------------------------------------------------------------

    def apply_catalog(self, records: Sequence[Inbound], txn: StateAccess, announce: bool = True) -> Outcome:
        """Fold catalog updates into the view; announce each to the owned partitions it is due for.

        With ``announce`` False (the worker's first read of the whole catalog) the view is filled
        and nothing is fired: a bootstrap is not a change.

        A change is announced to a partition when that partition's clock passes its ``updated_at``,
        in its stream (:meth:`process`, or :meth:`tick` with the wall clock), so replays announce it
        at the same place whenever the catalog reader delivered it (:mod:`stream.catalog_view`).
        Partitions whose clock is already past it announce it now, at their clock (counted late).

        A tombstone (no value) removes the item: it is never pushed again, and pushes held for it
        are suppressed when they come due.
        """
        self._start_batch()
        out = Outcome()
        late: list[tuple[int, CatalogChange]] = []
        applied: list[CatalogUpdate] = []
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
                self.catalog.remove(rec.key.decode("utf-8"))
                self.unplaced.forget(rec.key.decode("utf-8"))
                out.catalog_removals += 1
                continue
            out.catalog_updates += 1
            applied.append(update)
            # A bootstrap version holds from the beginning of time; a version read again, or older
            # than the newest, is no change (stream.catalog_view).
            is_change, previous = self.catalog.put(update, base=not announce)
            if not is_change:
                continue
            change = self.catalog.record_change(previous, update)
            for partition in sorted(self.owned):
                if update.updated_at <= self._catalog_until(partition):
                    late.append((partition, change))
        # Before any announcement: a new item must have its place in the model when it is decided on.
        self.unplaced.offer(self._content, applied)
        self._place_waiting(out)
        if self._event_clock():  # with the wall clock every change is "late": that is its design
            out.catalog_late += len(late)
        for partition in sorted({p for p, _ in late}):
            self._announce(txn, partition, sorted(c for p, c in late if p == partition), out)
        return out

    def _catalog_until(self, partition: int) -> float:
        """The time up to which catalog changes were announced to ``partition`` (its clock at first use)."""
        part = self.part(partition)
        if part.catalog_until is None:
            part.catalog_until = self.now(partition)
        return part.catalog_until

    def _announce_due(self, txn: StateAccess, partition: int, out: Outcome) -> bool:
        """Announce the logged changes the partition's clock has passed since last time; True if any."""
        until = self.now(partition)
        due = self.catalog.changes_between(self._catalog_until(partition), until)
        self.part(partition).catalog_until = until
        if due:
            self._announce(txn, partition, due, out)
        return bool(due)

    def _announce(
        self, txn: StateAccess, partition: int, changes: Sequence[CatalogChange], out: Outcome
    ) -> None:
        """Decide one partition's share of catalog changes: the asks of the users who care."""
        users: dict[str, BatchUser] = {}
        asks: list[Ask] = []
        for change in changes:
            if change.update.item_id not in self.catalog:  # removed since: nothing to announce
                continue
            asks += self._catalog_asks(txn, partition, change.previous, change.update, users)
        first = len(out.pushes)
        if asks:
            self._decide(asks, out)
        self._throttle(out, first)
        self.decider.apply_interest_updates()
        for user in users.values():
            user.dirty = True
        self._save(txn, users.values())

    def _catalog_asks(
        self,
        txn: StateAccess,
        partition: int,
        previous: CatalogUpdate | None,
        update: CatalogUpdate,
        users: dict[str, BatchUser],
    ) -> list[Ask]:
        """One partition's share of a catalog change: promotion-ending timers and trigger asks."""
        part = self.part(partition)
        # A change is judged at its own time when that is ahead of the clock (event-time replays).
        at = max(self.now(partition), update.updated_at)
        fired = triggers.catalog_triggers(previous, update, at)
        if not fired and update.promotion is None:
            return []
        newcomers = [u for t, _ in fired if t == "new_arrival" for u in self._arrival_users(part, update, at)]
        interested = [
            u for u, _, _ in part.interest.users_for(update.item_id, at, self.cfg.interest_index_min_interest)
        ]
        if update.promotion is not None and update.promotion.active_at(at):
            schedule_promotion_ending(part.timers, interested, update.item_id, update.promotion, at, self.cfg)
        asks: list[Ask] = []
        prev_price = previous.effective_price(previous.updated_at) if previous is not None else None
        for trigger, cause in fired:
            for user_id in newcomers if trigger == "new_arrival" else interested:
                user = self._load(txn, partition, user_id, users)
                user.dirty = True  # timers changed
                if self._expired(user.state, at):
                    continue
                price = prev_price if trigger == "price_drop" else None
                asked = triggers.TriggerAsk(
                    trigger, cause, update.updated_at, (update.item_id,), ("catalog",), previous_price=price
                )
                asks.append(self._ask(user, asked, at))
        if not fired:  # promotion timers only: their users' stored timers changed
            for user_id in interested:
                self._load(txn, partition, user_id, users).dirty = True
        return asks

    def _arrival_users(self, part: PartitionState, update: CatalogUpdate, at: float) -> list[str]:
        """Users of the partition to ask about a new item (stream.content_items)."""
        if len(part.interest) == 0 or self.cfg.new_arrival_max_users == 0:
            return []
        if not placed_from_content(self._content, update.item_id):
            return []  # the model was trained on it (it has a history), or cannot place it
        key = (update.item_id, update.updated_at)
        pool = self._arrival_pools.get(key)
        if pool is None:  # once per item, not once per partition: a pool costs a catalog-wide scan
            # The category as of the arrival's time, so every partition (and worker) sees the same.
            peers = [
                item
                for item in self.catalog.in_category(update.category)
                if (then := self.catalog.at(item, update.updated_at)) is not None
                and then.category == update.category
            ]
            pool = arrival_pool(self._content, update.item_id, peers, self.cfg.new_arrival_similar_items)
            if len(self._arrival_pools) >= 1024:
                self._arrival_pools.clear()
            self._arrival_pools[key] = pool
        return arrival_users(pool, part.interest, at, self.cfg)

    def tick(self, txn: StateAccess) -> Outcome:
        """Periodic work: with the wall clock, fire due timers of owned partitions; sweep expired users.

        With the event-time clock timers fire inside :meth:`process`, when the partition's
        watermark passes them, so a replay fires them at the same place in the stream.
        """
        self._start_batch()
        out = Outcome()
        self._place_waiting(out)  # the rest of a large catalog of items the model lacks
        for partition in sorted(self.owned):  # with the event clock, process() announced them already
            self._announce_due(txn, partition, out)
        if self.owned:
            # Every owned partition announced what is older; the retention keeps it for partitions
            # still recovering or adopted later, whose clocks may be behind.
            horizon = min(self._catalog_until(p) for p in self.owned) - CATALOG_RETENTION_SECONDS
            self.catalog.forget_until(horizon)
        if not self._event_clock():
            for partition in sorted(self.owned):
                work = Work()
                self._fire_due(txn, self.part(partition), self.now(partition), work, out)
                self._finish(work, txn, out)
        out.expired_users += self.sweep_expired(txn)
        return out

    # -- recovery -------------------------------------------------------------------------------

    def load_partition(self, partition: int, store: PartitionRows) -> PartitionState:
        """Read a recovered partition's shared state from its store.

        Safe in a worker thread: it reads only ``store`` and touches nothing of the engine.
        """
        state, users = PartitionState.load(
            partition, self.cfg, store.partition_rows(), store.items(), self.settings.topics.partitions
        )
        state.users_loaded = users
        return state

    def adopt(self, partition: int, loaded: PartitionState) -> None:
        """Take ownership of a loaded partition (quick, on the event loop)."""
        self.parts[partition] = loaded
        self.owned.add(partition)

    def release(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their state is in the store and changelog)."""
        for partition in partitions:
            self.owned.discard(partition)
            self.parts.pop(partition, None)

    def apply_recovered_pushes(self, partition: int, pushes: Iterable[Push], txn: StateAccess) -> int:
        """Record pushes found on the pushes topic that the recovered state does not know yet.

        They were emitted just before a crash, after the state's last changelog write: without this,
        redelivered events could emit them a second time.
        """
        if partition not in self.parts and partition not in self.owned:
            raise RuntimeError(f"partition {partition} must be adopted before its pushes are reconciled")
        users: dict[str, BatchUser] = {}
        n = 0
        for push in pushes:
            user = self._load(txn, partition, push.user_id, users)
            if any(r.push_id == push.push_id for r in user.state.policy.pushes):
                continue
            pol.record_push(user.state.policy, push, self.cfg)
            user.dirty = True
            n += 1
        self._save(txn, users.values())
        return n
