"""The engine: one batch of inbound records in, an :class:`Outcome` out. No Kafka here.

:class:`Engine` takes one batch of raw inbound records (what the faust agent read), the state
transaction to read and write user state through, and returns an :class:`Outcome`: the pushes,
dead letters and audit decisions to produce, and the counts the metrics need. The agent does the
I/O around it, which keeps the engine testable with a dict-backed store and a real model.

Per event, in order: validate (else dead letter), drop redeliveries (same ``event_id``), apply
feedback and consent, update engagement, timers and the worker-wide indexes, advance the user's
GRU state by exactly one step, then (for browsing events) score the user's candidates and let the
policy decide. Pass 1 (``stream.engine.intake``) walks the batch in stream order; pass 2
(``stream.engine.rounds``) runs the GRU steps and scoring batched across users in rounds, round
``r`` holding each user's ``r``-th event, so each user still sees its events in order and every
decision depends only on the events before it, never on batch boundaries.

This module keeps what needs the whole batch: the partitions' clocks and the places where pass 2
must close (a new minute after work that may schedule a timer, a learning epoch, a catalog change the
clock passed that reaches someone or may once the queued decisions are made, an erasure) and the
periodic tick. The :class:`Engine`'s other parts are mixins, one module each: due timers
(``stream.engine.due_timers``), the throttle (``stream.engine.throttling``), catalog updates coming in
and their announcements (``stream.engine.catalog_flow``), model swaps and items placed from their
content (``stream.engine.content_placement``), and partitions: recovery, adoption, release and
applied offsets (``stream.engine.partitions``). Elsewhere: the triggers that turn moments into asks
(``stream.triggers``), the model calls (``stream.scoring``), the decisions (``stream.decider``,
which runs the rules of ``stream.rules``), a catalog change's asks (``stream.engine.catalog_asks``),
user records (``stream.engine.users``), the catalog by time (``stream.catalog_view``) and the
batch's units of work and output (``stream.asks``, ``stream.outcome``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter

from stream.asks import Ask, BatchUser, Work
from stream.catalog_view import CATALOG_RETENTION_SECONDS, CatalogView
from stream.content_items import Unplaced, content_scorer
from stream.decider import Decider
from stream.engine.batch_walk import walk_batch
from stream.engine.catalog_asks import CatalogAsks
from stream.engine.catalog_flow import CatalogAnnouncementMixin
from stream.engine.content_placement import ContentPlacementMixin
from stream.engine.due_timers import DueTimersMixin
from stream.engine.intake import Intake
from stream.engine.partitions import PartitionsMixin
from stream.engine.ports import Scorer, StateAccess
from stream.engine.rounds import resolve
from stream.engine.throttling import ThrottleMixin
from stream.engine.users import UserRecords
from stream.event_decoder import ValidEvent
from stream.new_items import NewItems
from stream.outcome import Inbound, Outcome
from stream.partition_state import PartitionState
from stream.scoring import AskScorer
from stream.settings import Settings

log = logging.getLogger(__name__)


class Engine(ContentPlacementMixin, CatalogAnnouncementMixin, DueTimersMixin, ThrottleMixin, PartitionsMixin):
    """Holds the model, the catalog view and the partitions' shared state; processes batches.

    The mixins are its parts, each in its module (see the module docstring): they share its attributes.
    """

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
        self._ask_seq = 0  # numbers asks and queued work in stream order
        self.new_items = NewItems()  # items placed from content, by category (a candidate source)
        self.unplaced = Unplaced()  # catalogued items the model lacks, placed a few per tick
        # Model calls, and the decisions (stream.scoring, stream.decider).
        self.scoring = AskScorer(scorer, self.cfg, settings.topics.partitions)
        self.decider = Decider(
            self.cfg,
            lambda: self._catalog,
            self.part,
            lambda: self.scorer.version,
            settings.worker.audit_decisions,
            event_clock=settings.worker.clock == "event",
        )
        # The batch's parts, each in its module: user records, pass 1, the asks of catalog changes.
        self.users = UserRecords(
            settings, self.part, lambda: self.parts, lambda: self.scorer, self.scoring.step
        )
        self.intake = Intake(
            settings,
            self.part,
            self.decider,
            lambda: self._catalog,
            self.new_items,
            self._next_ask_seq,
            self._decision_time,
            self._warm_items,
        )
        self.catalog_asks = CatalogAsks(
            self.cfg, lambda: self._catalog, lambda: self._content, self.users, self.intake
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
            state.catalog_until = self.now(partition)  # nothing before its creation to announce
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

    # -- batches --------------------------------------------------------------------------------

    def process(self, records: Sequence[Inbound], txn: StateAccess) -> Outcome:
        """Apply one batch of events and consent updates; stage the new states in ``txn``.

        Pass 1 walks the records in stream order: validation, deduplication, bookkeeping, the
        partition's clock, indexes and due timers, and the candidates of each decision. Pass 2 runs
        the GRU steps in rounds (round ``r``: each user's ``r``-th step, batched across users) and,
        after each round, scores and decides what was queued behind those steps, per user in order.
        An erasure (a consent tombstone) closes the work before it, so nothing of the erased user
        survives it.

        Each user record is decoded once per batch and staged once, at its end, however often pass 2
        closes in between (a new minute, a learning epoch, a catalog change, an erasure): in a replay,
        where event time runs far ahead of wall time, nearly every event closes it, and re-encoding
        every user and partition row at each close cost more than the rest of the engine.
        """
        started = perf_counter()
        self._start_batch()
        out = Outcome()
        walk_batch(self, records, txn, out)  # compiled by the native build: it runs per record
        out.users_warm, out.users_read = self.users.drain_loads()
        if out.late_timers:
            log.warning("%d timers scheduled at or before their partition's clock", out.late_timers)
        stage = out.stage_seconds
        measured = sum(stage.values())
        stage["engine_other"] += max(perf_counter() - started - measured, 0.0)
        return out

    def _replaces_facts(self, user: BatchUser, event: ValidEvent) -> bool:
        """Whether this event changes what the user's queued policy work reads from the live state
        (pass 2 runs after the whole of pass 1): an expiry replaces the state, a new time zone moves
        quiet hours and send time. Both are rare, so the work before it is finished first."""
        if self.users.expired(user.state, self.part(user.partition).watermark):
            return True
        zone = event.context.time_zone if event.context is not None else None
        return bool(zone) and zone != user.state.policy.time_zone

    def _finish(self, work: Work, txn: StateAccess, out: Outcome) -> None:
        """Pass 2 of the work gathered so far, then stage its states."""
        self._resolve(work, out)
        self._save(txn, work.users.values(), out)

    def _close(self, work: Work, out: Outcome) -> Work:
        """Pass 2 of the work so far, but for the clock's sake only: the GRU steps of users with no
        decision queued move on to the returned work (:func:`stream.engine.rounds.resolve`).

        Only where the next input is an event or a due timer, which queue their work behind those
        steps. An erasure, an expiry, a consent or a catalog announcement reads or replaces user
        records directly, so those close with :meth:`_resolve`, which runs every step.
        """
        carried = self._resolve(work, out, carry=True)
        return Work(work.users, steps=carried)

    def _resolve(self, work: Work, out: Outcome, carry: bool = False) -> dict[str, list[tuple[str, int]]]:
        """Pass 2 of the work gathered so far: steps, scores and decisions, pushes in stream order.

        Returns the steps carried to the next work (``carry``; see :meth:`_close`)."""
        first, first_decision = len(out.pushes), len(out.decisions)
        carried = resolve(work.users, work.steps, work.ops, out, self.scoring, self.decider, self.cfg, carry)
        # Rounds decide users in an order that depends on batching; emit in stream order instead
        # (a stable sort: one decision's pushes and audit records keep their own order).
        order = self.decider.push_order
        out.pushes[first:] = sorted(out.pushes[first:], key=lambda pushed: order.get(pushed[1].push_id, 0))
        order.clear()
        audited = self.decider.decision_order
        out.decisions[first_decision:] = sorted(
            out.decisions[first_decision:], key=lambda decided: audited.get(id(decided[1]), 0)
        )
        audited.clear()
        self._throttle(out, first)
        self.decider.apply_interest_updates()
        return carried

    def _save(self, txn: StateAccess, users: Iterable[BatchUser], out: Outcome) -> None:
        """Stage the changed users and the partitions' changed shared rows."""
        t = perf_counter()
        self.users.save(txn, users)
        out.stage_seconds["state_write"] += perf_counter() - t

    def sweep_expired(self, txn: StateAccess, limit: int = 10_000) -> int:
        """Remove users inactive for longer than the TTL from owned partitions; returns how many.

        Expiry itself is decided lazily (an inactive user's next event starts over, a timer or
        catalog change skips them), so when the sweep runs changes nothing a user sees: it only
        reclaims the storage. An opt-out outlives expiry (it is never forgotten).
        """
        return self.users.sweep(txn, self.owned, self.now, limit)

    def _start_batch(self) -> None:
        # A batch that raised half-way (a bug) must not leave its queued work to the next one.
        self.decider.index_ops.clear()
        self.decider.push_order.clear()
        self.decider.already_out.clear()
        self.decider.decision_order.clear()

    def _next_ask_seq(self) -> int:
        self._ask_seq += 1
        return self._ask_seq

    def _decide(self, asks: list[Ask], out: Outcome) -> None:
        """Score and decide asks that wait for no GRU step (catalog changes, timers)."""
        for ask, scored in zip(asks, self.scoring.score(asks), strict=True):
            self.decider.decide(ask, scored, out)

    # -- catalog and timers ---------------------------------------------------------------------

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
        out.users_warm, out.users_read = self.users.drain_loads()
        return out
