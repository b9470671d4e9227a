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
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from stream import policy as pol
from stream.candidates import (
    CoVisitationIndex,
    EngagedItem,
    Engagement,
    PromotionBoard,
    TrendingItems,
    gather_candidates,
)
from stream.contract import (
    EVENT_TYPES,
    CatalogUpdate,
    ContractError,
    DeadLetter,
    Decision,
    Event,
    Push,
    dead_letter,
    parse_catalog,
    parse_consent,
    parse_event,
)
from stream.feedback import FeedbackOutcome, apply_feedback, settle_ignored
from stream.interest import InterestIndex, catalog_triggers
from stream.partitioning import partition_for
from stream.settings import Settings
from stream.state import UserState
from stream.timers import Timer, TimerQueue, on_behaviour, schedule_promotion_ending

log = logging.getLogger(__name__)

TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}
# Browsing events that may lead to an in-session push; feedback and purchases do not.
NUDGE_TYPES = frozenset({"view", "add_to_cart", "search"})
# Events that move the GRU state (they name an item the shopper acted on).
STEP_TYPES = frozenset({"view", "add_to_cart", "remove_from_cart", "purchase"})
RELEASE_KIND = "release_held"


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


class StateAccess(Protocol):
    """Read and stage user state records (``stream.store.Transaction`` provides it)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def put(self, partition: int, key: bytes, value: bytes | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Inbound:
    """One record as read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Outcome:
    """What one batch (or tick) produced."""

    pushes: list[tuple[int, Push]] = field(default_factory=list)  # (partition, push)
    decisions: list[tuple[int, Decision]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, outcome)
    suppressions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (trigger, reason)
    feedback: list[FeedbackOutcome] = field(default_factory=list)
    interest: list[float] = field(default_factory=list)
    consent_updates: int = 0
    catalog_updates: int = 0

    def extend(self, other: Outcome) -> None:
        """Fold another outcome into this one."""
        self.pushes += other.pushes
        self.decisions += other.decisions
        self.dead_letters += other.dead_letters
        self.events.update(other.events)
        self.suppressions.update(other.suppressions)
        self.feedback += other.feedback
        self.interest += other.interest
        self.consent_updates += other.consent_updates
        self.catalog_updates += other.catalog_updates


@dataclass
class _User:
    """A user touched by the current batch: where their state lives and the decoded state."""

    user_id: str
    partition: int
    state: UserState
    engagement: Engagement
    dirty: bool = False


@dataclass(frozen=True)
class _Ask:
    """A request to score some candidates of one user and decide, with what was true when it was made.

    Candidates, the user's engagement with them and consent are captured when the ask is made (in
    stream order), so the decision is the same however the stream was cut into batches.
    """

    user: _User
    trigger: str
    cause: str
    event_ts: float
    now: float
    items: tuple[str, ...]
    sources: tuple[str, ...]
    engaged: dict[str, EngagedItem]
    session_last_ts: float | None
    consent: bool | None
    previous_price: float | None = None


@dataclass(frozen=True, slots=True)
class _Op:
    """Policy work queued for a user behind their n-th step of the batch, done in the user's order."""

    step: int
    event: Event  # the event the work belongs to
    ask: _Ask | None = None  # a decision; None: feedback and the release of held pushes


class PartitionReader(Protocol):  # SHIM(ops)
    """What :meth:`Engine.load_partition` reads: a partition store's user records."""

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every user record (bookkeeping excluded)."""
        ...


class Engine:
    """Holds the model, the catalog view and the worker-wide indexes; processes batches."""

    def __init__(self, settings: Settings, scorer: Scorer, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cfg = settings.policy
        self.scorer = scorer
        self.clock = clock
        self.catalog: dict[str, CatalogUpdate] = {}
        self.covisitation = CoVisitationIndex.from_config(self.cfg)
        self.trending = TrendingItems.from_config(self.cfg)
        self.promotions = PromotionBoard()
        self.interest_index = InterestIndex.from_config(self.cfg)
        self.timers = TimerQueue.from_config(self.cfg)
        self.watermark = 0.0  # highest event time seen; the event-time clock
        self.owned: set[int] = set()  # partitions whose users this engine may touch
        self.max_decide = 5  # candidates per decision that go through the full policy

    # -- clocks ---------------------------------------------------------------------------------

    def now(self) -> float:
        """The decision clock: event time, or wall time when that is later (``worker.clock``)."""
        if self.settings.worker.clock == "event":
            return self.watermark
        return max(self.watermark, self.clock())

    def _decision_time(self, event_ts: float) -> float:
        if self.settings.worker.clock == "event":
            return event_ts
        return max(event_ts, self.clock())

    # -- model swap -----------------------------------------------------------------------------

    def swap_model(self, scorer: Scorer) -> None:
        """Serve a new model from the next batch on; states re-derive lazily (see ``_sync_model``)."""
        self.scorer = scorer

    # -- state ----------------------------------------------------------------------------------

    def _load(self, txn: StateAccess, partition: int, user_id: str, cache: dict[str, _User]) -> _User:
        user = cache.get(user_id)
        if user is None:
            raw = txn.get(partition, user_id.encode("utf-8"))
            state = UserState() if raw is None else UserState.from_bytes(raw)
            engagement = Engagement.from_dict(state.engagement, self.cfg.engagement_max_items)
            user = _User(user_id, partition, state, engagement)
            self._sync_model(user)
            cache[user_id] = user
        return user

    def _save(self, txn: StateAccess, users: Iterable[_User]) -> None:
        for user in users:
            if user.dirty:
                user.state.engagement = user.engagement.to_dict()
                user.state.timers = [t.to_list() for t in self.timers.timers_for(user.user_id)]
                txn.put(user.partition, user.user_id.encode("utf-8"), user.state.to_bytes())
                user.dirty = False

    def _sync_model(self, user: _User) -> None:
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
                hidden = self.scorer.step(hidden, items[i : i + 1], types[i : i + 1])
        state.hidden = hidden[0]
        state.model_version = self.scorer.version

    # -- batches --------------------------------------------------------------------------------

    def process(self, records: Sequence[Inbound], txn: StateAccess) -> Outcome:
        """Apply one batch of events and consent updates; stage the new states in ``txn``.

        Pass 1 walks the records in stream order: validation, deduplication, bookkeeping, the
        worker-wide indexes, and the candidates of each decision. Pass 2 runs the GRU steps in
        rounds (round ``r``: each user's ``r``-th step, batched across users) and, after each round,
        scores and decides what was queued behind those steps, per user in order.
        """
        out = Outcome()
        topics = self.settings.topics
        max_bytes = self.settings.worker.max_event_bytes
        users: dict[str, _User] = {}
        steps: dict[str, list[tuple[str, int]]] = {}
        ops: dict[str, list[_Op]] = {}
        for rec in records:
            try:
                if rec.topic == topics.consent:
                    consent = parse_consent(rec.value, max_bytes)
                    self._check_key(rec, consent.user_id)
                    user = self._load(txn, rec.partition, consent.user_id, users)
                    if user.state.policy.apply_consent(consent):
                        user.dirty = True
                        if not consent.opted_in:
                            self.timers.cancel_user(consent.user_id)
                    out.consent_updates += 1
                    continue
                event = parse_event(rec.value, max_bytes)
                self._check_key(rec, event.user_id)
            except ContractError as exc:
                out.dead_letters.append(
                    dead_letter(rec.value, rec.key, exc, rec.topic, rec.partition, rec.offset)
                )
                out.events[("invalid", "dead_letter")] += 1
                continue
            self.watermark = max(self.watermark, event.ts)
            user = self._load(txn, rec.partition, event.user_id, users)
            self._bookkeep(
                user, event, steps.setdefault(event.user_id, []), ops.setdefault(event.user_id, []), out
            )
        self._resolve(users, steps, ops, out)
        self._save(txn, users.values())
        return out

    def _check_key(self, rec: Inbound, user_id: str) -> None:
        # A record keyed by someone else sits on the wrong partition: its state would be split.
        if rec.key is not None and rec.key != user_id.encode("utf-8"):
            raise ContractError("key_mismatch", "message key does not match user_id")

    def _bookkeep(
        self, user: _User, event: Event, steps: list[tuple[str, int]], ops: list[_Op], out: Outcome
    ) -> None:
        """Pass 1 for one event: everything but the GRU step and the decision, which are queued."""
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
        item = event.item_id
        if item is not None and event.type in STEP_TYPES:
            previous = user.engagement.recent(self.cfg.covisit_window)
            if event.type in ("view", "add_to_cart"):
                self.covisitation.observe(item, previous, event.ts)
            self.trending.observe(item, event.type, event.ts)
            if event.type == "purchase":
                self.interest_index.discard(item, user.user_id)
        user.engagement.observe(event.type, item, event.ts)
        on_behaviour(self.timers, user.user_id, event.type, item, event.event_id, event.ts, self.cfg)
        if item is not None and event.type in STEP_TYPES:
            state.remember_item(
                item, event.type, event.ts, state.session_id, self.settings.worker.recent_items
            )
            steps.append((item, TYPE_INDEX[event.type]))
        out.events[(event.type, "processed")] += 1
        ops.append(_Op(len(steps), event))
        if event.type in NUDGE_TYPES:
            ask = self._maybe_ask(user, event, out)
            if ask is not None:
                ops.append(_Op(len(steps), event, ask))

    def _resolve(
        self,
        users: dict[str, _User],
        steps: dict[str, list[tuple[str, int]]],
        ops: dict[str, list[_Op]],
        out: Outcome,
    ) -> None:
        """Pass 2: GRU steps in rounds, each followed by the decisions queued behind it."""
        depth = max((len(s) for s in steps.values()), default=0)
        for r in range(depth + 1):
            if r > 0:
                self._step_round([(users[u], s[r - 1]) for u, s in steps.items() if len(s) >= r], out)
            due = [(users[u], op) for u, queue in ops.items() for op in queue if op.step == r]
            if not due:
                continue
            asks = [op.ask for _, op in due if op.ask is not None]
            scored = dict(zip(map(id, asks), self._score(asks, out), strict=True))
            for user, op in due:
                if op.ask is not None:
                    self._policy(op.ask, scored[id(op.ask)], out)
                    continue
                # Feedback needs the pushes decided on this user's earlier events, hence pass 2.
                pstate = user.state.policy
                fb = apply_feedback(pstate, op.event, self.cfg)
                if fb is not None:
                    out.feedback.append(fb)
                out.feedback += settle_ignored(pstate, op.event.ts, self.cfg)
                self._release_held(user, op.event.ts, out)

    def _step_round(self, batch: list[tuple[_User, tuple[str, int]]], out: Outcome) -> None:
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
        new_hidden = self.scorer.step(hidden, indices, np.asarray([k for _, _, k in rows], dtype=np.int64))
        for i, (user, _, _) in enumerate(rows):
            user.state.hidden = new_hidden[i]
            user.state.model_version = self.scorer.version

    # -- decisions ------------------------------------------------------------------------------

    def _maybe_ask(self, user: _User, event: Event, out: Outcome) -> _Ask | None:
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
        blocked = pol.user_blocked(user.user_id, state.policy, now, self.cfg)
        if blocked is not None:
            out.suppressions[("in_session", blocked)] += 1
            return None
        merged = gather_candidates(
            user.engagement, self.covisitation, self.promotions, self.trending, now, self.cfg
        )
        items = tuple(c.item_id for c in merged)
        return self._ask(
            user, "in_session", event.event_id, event.ts, now, items, tuple(c.source for c in merged)
        )

    def _ask(
        self,
        user: _User,
        trigger: str,
        cause: str,
        event_ts: float,
        now: float,
        items: tuple[str, ...],
        sources: tuple[str, ...],
        previous_price: float | None = None,
    ) -> _Ask:
        engagement = user.engagement
        # A copy: later events of the batch change the user's engagement before the decision runs.
        engaged = {
            i: EngagedItem(e.views, e.carts, e.in_cart, e.bought, e.last_ts)
            for i in items
            if (e := engagement.get(i)) is not None
        }
        return _Ask(
            user,
            trigger,
            cause,
            event_ts,
            now,
            items,
            sources,
            engaged,
            engagement.last_ts,
            user.state.policy.opted_in,
            previous_price,
        )

    def _decide(self, asks: list[_Ask], out: Outcome) -> None:
        """Score and decide asks that wait for no GRU step (catalog changes, timers)."""
        for ask, scored in zip(asks, self._score(asks, out), strict=True):
            self._policy(ask, scored, out)

    def _score(self, asks: list[_Ask], out: Outcome) -> list[list[tuple[str, str, float, float]]]:
        """Score every ask's candidates in one batch; per ask the few that could reach a threshold.

        Returns, per ask, (item, source, raw score, calibrated interest), best first. Also feeds the
        item -> interested users index that catalog changes use.
        """
        cfg = self.cfg
        results: list[list[tuple[str, str, float, float]]] = [[] for _ in asks]
        width = max((len(a.items) for a in asks), default=0)
        if width == 0:
            return results
        flat = [item for a in asks for item in a.items]
        flat_idx = self.scorer.item_indices(flat)
        cands = np.full((len(asks), width), -1, dtype=np.int64)
        pos = 0
        for row, ask in enumerate(asks):
            cands[row, : len(ask.items)] = flat_idx[pos : pos + len(ask.items)]
            pos += len(ask.items)
        init = self.scorer.initial_state(1)[0]
        states = np.stack([a.user.state.hidden if a.user.state.hidden is not None else init for a in asks])
        raws, probs = self.scorer.score_and_interest(states, cands)
        floor = min(cfg.min_threshold, cfg.interest_index_min_interest) / (1.0 + cfg.promotion_weight)
        for row, ask in enumerate(asks):
            n = len(ask.items)
            p_row = probs[row, :n]
            valid = cands[row, :n] >= 0
            for i in np.flatnonzero(valid & (p_row >= cfg.interest_index_min_interest)):
                self.interest_index.update(ask.items[i], ask.user.user_id, float(p_row[i]), ask.now)
            # Only candidates that could reach a threshold go through the (Python) policy.
            order = [i for i in np.argsort(-p_row, kind="stable") if valid[i] and p_row[i] >= floor]
            results[row] = [
                (ask.items[i], ask.sources[i], float(raws[row, i]), float(p_row[i]))
                for i in order[: self.max_decide]
            ]
            out.interest += [p for _, _, _, p in results[row]]
        return results

    def _policy(self, ask: _Ask, scored: list[tuple[str, str, float, float]], out: Outcome) -> None:
        cfg = self.cfg
        user = ask.user
        pstate = user.state.policy
        # Decide on the consent in force when the ask was made (a later record in the batch may change it).
        view = replace(pstate, opted_in=ask.consent)
        if ask.trigger == "in_session":
            # Pushes decided since the ask was made (earlier events of this batch) may block it now.
            blocked = pol.user_blocked(user.user_id, view, ask.now, cfg)
            if blocked is not None:
                out.suppressions[(ask.trigger, blocked)] += 1
                return
        if not scored:
            if ask.items:  # candidates, none close to a threshold (no candidate at all counts nothing)
                out.suppressions[(ask.trigger, "below_threshold")] += 1
            return
        offset = pol.current_offset(pstate, ask.now, cfg)
        candidates = [
            pol.make_candidate(
                item,
                ask.trigger,
                raw,
                p,
                ask.now,
                cfg,
                catalog=self.catalog.get(item),
                cause=ask.cause,
                event_ts=ask.event_ts,
                offset=offset,
                engaged=ask.engaged.get(item),
                session_last_ts=ask.session_last_ts,
                source=source,
                previous_price=ask.previous_price,
            )
            for item, source, raw, p in scored
        ]
        sim = self.covisitation.similarity
        verdicts = pol.decide(
            user.user_id,
            candidates,
            view,
            ask.now,
            cfg,
            similarity=lambda a, b: max(pol.default_similarity(a, b), sim(a.item_id, b.item_id)),
        )
        known = {r.push_id for r in pstate.pushes} | {h.push.push_id for h in pstate.held}
        for cand, verdict in verdicts:
            if verdict.outcome == "suppress":
                out.suppressions[(cand.trigger, verdict.reason)] += 1
                self._audit(
                    user,
                    cand.item_id,
                    cand.trigger,
                    "suppressed",
                    verdict.reason,
                    cand.interest,
                    verdict.threshold,
                    ask.now,
                    out,
                )
                continue
            push = pol.build_push(user.user_id, cand, verdict, ask.now, cfg, self.scorer.version)
            if push.push_id in known:  # a replayed input: the push already exists
                out.suppressions[(cand.trigger, "duplicate")] += 1
                continue
            user.dirty = True
            if verdict.outcome == "emit":
                pol.record_push(pstate, push, cfg)
                out.pushes.append((user.partition, push))
                self._audit(
                    user,
                    cand.item_id,
                    cand.trigger,
                    "emitted",
                    "ok",
                    cand.interest,
                    verdict.threshold,
                    ask.now,
                    out,
                )
            else:
                assert verdict.release_at is not None
                pol.record_hold(pstate, push, verdict.release_at, cfg)
                self.timers.schedule(
                    Timer(verdict.release_at, user.user_id, RELEASE_KIND, push.item_id, push.push_id, ask.now)
                )
                self._audit(
                    user,
                    cand.item_id,
                    cand.trigger,
                    "held",
                    verdict.reason,
                    cand.interest,
                    verdict.threshold,
                    ask.now,
                    out,
                )

    def _release_held(self, user: _User, now: float, out: Outcome) -> None:
        pstate = user.state.policy
        if not pstate.held:
            return
        for push, verdict in pol.release_held(user.user_id, pstate, now, self.cfg, self.catalog.get):
            user.dirty = True
            if verdict.outcome == "emit":
                released = push.model_copy(update={"created_at": now})
                pol.record_push(pstate, released, self.cfg, sent_at=now)
                out.pushes.append((user.partition, released))
            else:
                out.suppressions[(push.trigger, verdict.reason)] += 1

    def _audit(
        self,
        user: _User,
        item: str,
        trigger: str,
        outcome: str,
        reason: str,
        score: float,
        threshold: float | None,
        now: float,
        out: Outcome,
    ) -> None:
        if not self.settings.worker.audit_decisions:
            return
        out.decisions.append(
            (
                user.partition,
                Decision(
                    user_id=user.user_id,
                    item_id=item,
                    trigger=trigger,  # type: ignore[arg-type]
                    outcome=outcome,  # type: ignore[arg-type]
                    reason=reason,
                    score=float(score),
                    threshold=float(threshold or 0.0),
                    ts=now,
                ),
            )
        )

    # -- catalog and timers ---------------------------------------------------------------------

    def apply_catalog(self, records: Sequence[Inbound], txn: StateAccess) -> Outcome:
        """Fold catalog updates into the view and reach interested users of owned partitions."""
        out = Outcome()
        users: dict[str, _User] = {}
        asks: list[_Ask] = []
        now = self.now()
        for rec in records:
            try:
                update = parse_catalog(rec.value, self.settings.worker.max_event_bytes)
                if rec.key is not None and rec.key != update.item_id.encode("utf-8"):
                    raise ContractError("key_mismatch", "message key does not match item_id")
            except ContractError as exc:
                out.dead_letters.append(
                    dead_letter(rec.value, rec.key, exc, rec.topic, rec.partition, rec.offset)
                )
                continue
            out.catalog_updates += 1
            previous = self.catalog.get(update.item_id)
            self.catalog[update.item_id] = update
            self.promotions.update(update)
            # A change is judged at its own time when that is ahead of the clock (event-time replays).
            at = max(now, update.updated_at)
            fired = catalog_triggers(previous, update, at)
            if not fired and update.promotion is None:
                continue
            interested = self.interest_index.users_for(
                update.item_id, at, self.cfg.interest_index_min_interest
            )
            owned = [
                (u, p)
                for u, _, _ in interested
                if (p := partition_for(u, self.settings.topics.partitions)) in self.owned
            ]
            if update.promotion is not None and update.promotion.active_at(at):
                schedule_promotion_ending(
                    self.timers, [u for u, _ in owned], update.item_id, update.promotion, at, self.cfg
                )
            for trigger, cause in fired:
                prev_price = previous.effective_price(previous.updated_at) if previous is not None else None
                for user_id, partition in owned:
                    user = self._load(txn, partition, user_id, users)
                    user.dirty = True  # timers changed
                    previous_price = prev_price if trigger == "price_drop" else None
                    asks.append(
                        self._ask(
                            user,
                            trigger,
                            cause,
                            update.updated_at,
                            at,
                            (update.item_id,),
                            ("catalog",),
                            previous_price,
                        )
                    )
        if asks:
            self._decide(asks, out)
        for user in users.values():
            user.dirty = True
        self._save(txn, users.values())
        return out

    def tick(self, txn: StateAccess) -> Outcome:
        """Fire due timers (cart abandonment, promotion ending, held-push release) at the current clock."""
        out = Outcome()
        now = self.now()
        due = self.timers.pop_due(now, limit=10_000)
        if not due:
            return out
        users: dict[str, _User] = {}
        asks: list[_Ask] = []
        for timer in due:
            partition = partition_for(timer.user_id, self.settings.topics.partitions)
            if partition not in self.owned:
                continue
            user = self._load(txn, partition, timer.user_id, users)
            user.dirty = True
            if timer.kind == RELEASE_KIND:
                self._release_held(user, now, out)
                continue
            engaged = user.engagement.get(timer.item_id)
            if timer.kind == "cart_abandonment" and (engaged is None or not engaged.in_cart):
                continue
            cause = f"{timer.kind}:{timer.cause}"
            asks.append(
                self._ask(user, timer.kind, cause, timer.created_at, now, (timer.item_id,), ("timer",))
            )
        if asks:
            self._decide(asks, out)
        self._save(txn, users.values())
        return out

    # -- recovery -------------------------------------------------------------------------------

    # SHIM(ops): the lead's engine rewrite replaces load_partition/adopt; the worker calls
    # ``loaded = await asyncio.to_thread(engine.load_partition, p, store)`` then ``engine.adopt(p, loaded)``.
    def load_partition(self, partition: int, store: PartitionReader) -> list[tuple[bytes, bytes]]:
        """Read a recovered partition's user records (thread-safe: reads RocksDB, mutates nothing)."""
        return list(store.items())

    # SHIM(ops): ``records`` is what :meth:`load_partition` returned.
    def adopt(self, partition: int, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Take ownership of a recovered partition: rebuild its users' timers; return the user count."""
        self.owned.add(partition)
        n = 0
        for _key, value in records:
            state = UserState.from_bytes(value)
            self.timers.extend(Timer.from_list(row) for row in state.timers)
            self.watermark = max(self.watermark, state.last_event_ts)
            n += 1
        return n

    def release(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their timers go with them)."""
        gone = set(partitions)
        self.owned -= gone
        if not gone:
            return
        for timer in self.timers.pop_due(float("inf")):
            if partition_for(timer.user_id, self.settings.topics.partitions) not in gone:
                self.timers.schedule(timer)

    def apply_recovered_pushes(self, partition: int, pushes: Iterable[Push], txn: StateAccess) -> int:
        """Record pushes found on the pushes topic that the recovered state does not know yet.

        They were emitted just before a crash, after the state's last changelog write: without this,
        redelivered events could emit them a second time.
        """
        users: dict[str, _User] = {}
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
