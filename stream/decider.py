"""The decider: from an ask's scored candidates to a plan (emit, hold, suppress with a reason), then
the one place that carries plans out.

:meth:`Decider.plan` builds an ask's candidates (``stream.policy.make_candidate``), values them by
their expected incremental effect (``stream.response_estimates``) and runs the rules
(``stream/rules.py`` through ``stream.policy.decide``); :meth:`Decider.plan_release` judges held
pushes that came due through the same rules. Both return a :class:`stream.plan.Plan` and change
nothing. ``Decider.apply`` (``stream.decider_apply``) carries a plan out: pushes with their stream
order, holds with their release timers, suppressions by reason, the audit trail, the holdout's
"ghost" pushes, the outcome estimates' updates and the interest index's updates (applied in stream
order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from stream import policy as pol
from stream import rules, triggers
from stream.asks import Ask, BatchUser, Scored, SeenAt, next_minute
from stream.beta_draws import pick_uniform
from stream.catalog_view import CatalogView
from stream.contract import CatalogUpdate, Push
from stream.covisitation import snapshot_similarity
from stream.decider_apply import ApplyMixin
from stream.feedback import FeedbackOutcome
from stream.learning import Update
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.plan import Action, Plan, Step, duplicate_step, on_minute
from stream.policy_config import PolicyConfig
from stream.response_estimates import context_key
from stream.send_time import EngagementHours, earliest_send_time, learned, send_at


class Decider(ApplyMixin):
    """Decides asks and releases held pushes for the engine (see the module docstring)."""

    def __init__(
        self,
        config: PolicyConfig,
        catalog: Callable[[], CatalogView],
        part: Callable[[int], PartitionState],
        version: Callable[[], str],
        audit_decisions: bool,
        event_clock: bool = False,
    ) -> None:
        self.cfg = config
        self.event_clock = event_clock  # timers fire by the event-time clock (late ones are counted)
        self._catalog = catalog  # the engine's view (it may be replaced)
        self.part = part
        self.version = version  # the serving model's version (it changes on a model swap)
        self.audit_decisions = audit_decisions
        # Holdout users are decided as if they were not (then nothing is sent): their "ghost"
        # pushes are the no-push baseline of the outcome estimates.
        self.ghost_cfg = config.model_copy(update={"holdout_share": 0.0})
        self.push_order: dict[str, int] = {}  # push id -> seq of what caused it (current batch)
        # Push id -> its user's time zone (None: unknown) and last event's time (None: none), for the
        # throttle's queue (stream.throttle); only while the partition throttles, taken by
        # Engine._throttle.
        self.push_users: dict[str, tuple[str | None, float | None]] = {}
        # Recovered pushes whose decision, made again, passes them through the throttle as it did
        # before the crash (they went out then): Engine._throttle counts them and sends none.
        self.already_out: set[str] = set()
        self.decision_order: dict[int, int] = {}  # id of an audit Decision -> the same seq
        # Interest-index changes of the current batch: (stream seq, partition, user, rows or the
        # bought item, time); see apply_interest_updates.
        self.index_ops: list[tuple[int, int, str, list[tuple[str, float]] | str, float]] = []

    @staticmethod
    def _candidate_trigger(ask: Ask, item: str) -> str:
        """The trigger a candidate's push carries (``stream.triggers.candidate_trigger``)."""
        engaged = ask.engaged.get(item)
        return triggers.candidate_trigger(ask.trigger, engaged is not None and engaged.in_cart)

    def active(self, last_ts: float | None, now: float) -> bool:
        """Whether the shopper is on the site: a behaviour event within ``active_window_seconds``."""
        window = self.cfg.active_window_seconds
        return window > 0 and last_ts is not None and now - last_ts < window

    def learn(self, user: BatchUser, fb: FeedbackOutcome, seq: int) -> None:
        """An attributed purchase teaches the outcome estimates of the context it was decided in."""
        if fb.kind != "purchase" or not fb.context:
            return
        kind = "ghost_conversion" if fb.ghost else "conversion"
        self.part(user.partition).learning.add(seq, Update(kind, fb.context, fb.decided_at, fb.revenue))

    def _send_time(self, ask: Ask, verdict: pol.Verdict, push: Push, now: float, held: int) -> pol.Verdict:
        """An emit waits for the shopper's usual hour when one is near (a hold with reason send_time);
        ``held``: the pushes already waiting, those planned by this decision included."""
        cfg = self.cfg
        pstate = ask.user.state.policy
        if verdict.outcome != "emit" or not cfg.send_time_enabled or ask.send_hours is None:
            return verdict
        if held >= cfg.max_held:
            return verdict
        hours = EngagementHours.from_list(ask.send_hours, cfg.send_time_half_life_seconds)
        at = send_at(hours, now, pol.user_zone(pstate, cfg), push.expires_at, cfg)
        if at <= now:
            return verdict
        return pol.Verdict("hold", "send_time", release_at=at, threshold=verdict.threshold)

    def earliest_timer(self, ask: Ask, pushes_may_change: bool) -> float | None:
        """The earliest time a timer that :meth:`plan` may schedule for ``ask`` can fall due, or None
        when it can schedule none (most decisions: no quiet hours, no learned send time, no recent push).

        The engine runs its second pass before a partition's clock reaches this time, and only then
        (``stream.asks.Work.first_due``): deciding is deferred past as much of the stream as it safely
        can, yet every timer exists before the clock can pass it. A bound, not the time: it is known
        before the candidates are scored. Each way a plan schedules a timer has its own term:

        * a reminder moment that waits for a recent push to age (:func:`stream.rules.reminder_waits_until`):
          ``reminder_push_gap_seconds`` after the oldest push within that gap (its last one can only be
          later), or at once when ``pushes_may_change`` (a decision or release queued before this one
          may add a push);
        * a hold for quiet hours: their end (the policy holds only when the ask's time is in them);
        * a hold for send time: the first instant a send time can be (:func:`send_at` returns ``now``
          in quiet hours and for a shopper with too few observations).

        A timer is due on a whole minute after the decision's (:func:`stream.plan.on_minute`).
        ``pushes_may_change`` must be true when the user has held pushes or an earlier queued decision.
        """
        cfg = self.cfg
        now = ask.now
        pstate = ask.user.state.policy
        bounds: list[float] = []
        gap = cfg.reminder_push_gap_seconds
        if ask.rearm is not None and gap > 0:
            if pushes_may_change:
                bounds.append(now)
            else:
                recent = [r.created_at for r in pstate.pushes if now - r.created_at < gap]
                if recent:
                    bounds.append(min(recent) + gap)
        zone = pol.user_zone(pstate, cfg)
        quiet_end = pol.quiet_hours_end(now, zone, cfg)
        if quiet_end is not None:
            if cfg.quiet_hours_action == "hold":
                bounds.append(quiet_end)
        elif ask.send_hours is not None:
            hours = EngagementHours.from_list(ask.send_hours, cfg.send_time_half_life_seconds)
            if learned(hours, now, cfg):
                bounds.append(earliest_send_time(now, zone, cfg))
        if not bounds:
            return None
        return max(on_minute(min(bounds)), next_minute(now))

    def decide(self, ask: Ask, ranked: Scored, out: Outcome) -> None:
        """Decide an ask's scored candidates and apply the plan (:meth:`plan`, then :meth:`apply`)."""
        self.apply(self.plan(ask, ranked), out)

    def plan(self, ask: Ask, ranked: Scored) -> Plan:
        """What the policy decides for an ask's scored candidates: emit, hold or suppress each, with
        the audit and the state changes, as a :class:`Plan`. Changes nothing (see :meth:`apply`)."""
        cfg = self.cfg
        user = ask.user
        pstate = user.state.policy
        plan = Plan(user, ask.now, ask.seq, clock=ask.clock)
        # Decide on the consent in force when the ask was made (a later record in the batch may change it).
        # (The rules never change the state they read: the live one serves when the consent is the same.)
        view = pstate if pstate.opted_in == ask.consent else replace(pstate, opted_in=ask.consent)
        if ask.trigger == "in_session":
            # Pushes decided since the ask was made (earlier events of this batch) may block it now.
            blocked = pol.user_blocked(user.user_id, view, ask.now, cfg)
            if blocked is not None:
                plan.steps.append(Step("suppress", ask.trigger, "", blocked, audit=False))
                return plan
        if ask.rearm is not None:
            wait = rules.reminder_waits_until(view.pushes, ask.now, cfg)
            if wait is not None:  # the moment comes back, and is scored again, once the push is old enough
                plan.steps.append(
                    Step(
                        "wait", ask.trigger, "", "recent_push", release_at=wait, audit=False, timer=ask.rearm
                    )
                )
                return plan
        plan.interest = [p for _, _, _, p in ranked.top]
        plan.index_rows = ranked.indexed
        scored = ranked.top
        if not scored:
            if ask.items and ask.pushable != frozenset():  # candidates, none near a threshold
                plan.steps.append(Step("suppress", ask.trigger, "", "below_threshold", audit=False))
            return plan
        offset = pol.current_offset(pstate, ask.now, cfg)
        # A reminder judges the interest the shopper left with (stream.triggers.TriggerSpec).
        as_left = triggers.TRIGGERS[ask.trigger].interest_as_left
        left = ask.event_ts + cfg.session_end_seconds if as_left else None
        candidates = [
            pol.make_candidate(
                item,
                self._candidate_trigger(ask, item),
                raw,
                p,
                ask.now,
                cfg,
                catalog=self._catalog().at(item, ask.now),
                cause=ask.cause,
                event_ts=ask.event_ts,
                offset=offset,
                engaged=ask.engaged.get(item),
                session_last_ts=ask.session_last_ts,
                source=source,
                previous_price=ask.previous_price,
                decay_until=left,
            )
            for item, source, raw, p in scored
        ]
        candidates = self._valued(ask, candidates)
        ghost = pol.in_holdout(user.user_id, cfg.holdout_share, cfg.holdout_salt)
        snap = ask.covisited
        verdicts = pol.decide(
            user.user_id,
            candidates,
            view,
            ask.now,
            self.ghost_cfg if ghost else cfg,
            similarity=lambda a, b: max(
                pol.default_similarity(a, b), snapshot_similarity(snap, a.item_id, b.item_id)
            ),
            active=self.active(ask.session_last_ts, ask.now),
        )
        known = {r.push_id for r in pstate.pushes} | {h.push.push_id for h in pstate.held}
        # Pushes read back after a crash that went out after now: held (or throttled) in the run
        # without it. Their decision, made again here, holds them as it did then, so the release
        # meets the record, completes it at the time it completed then and sends nothing.
        later = {r.push_id for r in pstate.pushes if r.recovered and r.created_at > ask.now}
        held = len(pstate.held)  # with the holds planned so far (send time stops at max_held)
        for cand, verdict in verdicts:
            if ghost:
                if verdict.outcome != "suppress":
                    push = pol.build_push(user.user_id, cand, verdict, ask.now, cfg, self.version())
                    if push.push_id not in known:
                        plan.steps.append(
                            Step(
                                "ghost",
                                cand.trigger,
                                cand.item_id,
                                "ok",
                                push=push,
                                context=self._context(cand),
                            )
                        )
                verdict = pol.Verdict("suppress", "holdout", threshold=verdict.threshold)
            if verdict.outcome == "suppress":
                plan.steps.append(
                    Step(
                        "suppress",
                        cand.trigger,
                        cand.item_id,
                        verdict.reason,
                        cand.interest,
                        verdict.threshold,
                    )
                )
                continue
            push = pol.build_push(user.user_id, cand, verdict, ask.now, cfg, self.version())
            if push.push_id in known and push.push_id not in later:  # a replayed input: it exists
                plan.steps.append(duplicate_step(push, self._context(cand)))
                continue
            verdict = self._send_time(ask, verdict, push, ask.now, held)
            action: Action = "emit" if verdict.outcome == "emit" else "hold"
            if push.push_id in later and action == "emit":  # throttled then: it went out later
                plan.steps.append(duplicate_step(push, self._context(cand)))
                continue
            held += action == "hold"
            plan.steps.append(
                Step(
                    action,
                    cand.trigger,
                    cand.item_id,
                    verdict.reason,
                    cand.interest,
                    verdict.threshold,
                    push=push,
                    release_at=verdict.release_at,
                    context=self._context(cand),
                )
            )
        return plan

    @staticmethod
    def _context(cand: pol.Candidate) -> str:
        return context_key(cand.trigger, cand.in_cart, cand.views, cand.discount)

    def _valued(self, ask: Ask, candidates: list[pol.Candidate]) -> list[pol.Candidate]:
        """The candidates (just built for this ask) with their expected incremental value filled in
        (stream.response_estimates).

        Value = a Thompson sample of the push's uplift in the candidate's context (one draw per context,
        seeded by the user and the cause, so a replay draws the same) times the model's calibrated
        interest, which tells the items of one context apart. An exploring decision (a deterministic
        ``exploration_share`` of seeds) ranks the candidates uniformly at random instead.
        """
        if not candidates:
            return candidates
        # The candidates were built for this call alone: their value is filled in place (a
        # dataclasses.replace per candidate cost a tenth of the decide stage).
        responses = self.part(ask.user.partition).learning.estimates
        seed = hashlib.blake2b(f"{ask.user.user_id}\x1f{ask.cause}".encode(), digest_size=16).digest()
        if responses.explore(seed):
            order = sorted(range(len(candidates)), key=lambda i: candidates[i].item_id)
            first = order[pick_uniform(seed, len(order))]
            for i, c in enumerate(candidates):
                c.value = 1.0 if i == first else 0.0
            return candidates
        samples: dict[str, float] = {}
        for c in candidates:
            ctx = self._context(c)
            if ctx not in samples:
                samples[ctx] = responses.score(ctx, ask.now, seed)
            c.value = samples[ctx] * c.interest
        return candidates

    def release_held(
        self, user: BatchUser, now: float, out: Outcome, seq: int, seen: SeenAt | None = None
    ) -> None:
        """Release the user's held pushes due at ``now`` (:meth:`plan_release`, then :meth:`apply`)."""
        plan = self.plan_release(user, now, seq, seen)
        if plan is not None:
            self.apply(plan, out)

    def plan_release(self, user: BatchUser, now: float, seq: int, seen: SeenAt | None = None) -> Plan | None:
        """What becomes of the held pushes due at ``now``: emitted, suppressed (through the rules of
        path "release"), or deferred while the shopper is on the site or in quiet hours. None when
        nothing is due. Changes nothing (see :meth:`apply`).

        ``seen``: the engagement as it was where the release was queued in the batch (default: as it
        is now); the batch's later events must not decide it, or batching would.
        """
        pstate = user.state.policy
        if not pstate.held:
            return None
        if not any(h.release_at <= now for h in pstate.held):
            return None
        if seen is None:
            seen = SeenAt.of(user.engagement, now)
        plan = Plan(user, now, seq, clock=seen.clock)
        # Not while the shopper is on the site (they wait until the shopper has been away a while),
        # and never into quiet hours (a deferral can end inside them): then they wait again.
        last = seen.last_ts
        again = now
        reason = None
        if self.active(last, now):
            assert last is not None
            # Rounded here already, so the quiet-hours check sees the minute the timer fires at.
            again, reason = on_minute(last + self.cfg.active_window_seconds), "user_active"
        quiet_end = pol.quiet_hours_end(again, pol.user_zone(pstate, self.cfg), self.cfg)
        if quiet_end is not None:
            again, reason = quiet_end, reason or "quiet_hours"
        if reason is not None:
            for h in pstate.held:
                if h.release_at <= now:
                    plan.steps.append(
                        Step("defer", h.push.trigger, h.push.item_id, reason, push=h.push, release_at=again)
                    )
            plan.steps.append(Step("suppress", pstate.held[0].push.trigger, "", reason, audit=False))
            return plan
        plan.released_until = now
        bought = seen.bought
        recorded = {r.push_id for r in pstate.pushes}  # a held push is recorded once released
        for h, verdict in pol.judge_held(user.user_id, pstate, now, self.cfg, self._catalog_at(now), bought):
            push = h.push
            if verdict.outcome != "emit":
                plan.steps.append(Step("suppress", push.trigger, push.item_id, verdict.reason, audit=False))
                continue
            released = push.model_copy(update={"created_at": now})
            if push.push_id in recorded:  # released before a crash, read back at recovery
                plan.steps.append(duplicate_step(released, h.context))
                continue
            plan.steps.append(
                Step("emit", push.trigger, push.item_id, "ok", push=released, context=h.context, audit=False)
            )
        return plan

    def _catalog_at(self, now: float) -> Callable[[str], CatalogUpdate | None]:
        """The catalog lookup of a decision at ``now`` (each item's version in force then)."""
        return lambda item_id: self._catalog().at(item_id, now)
