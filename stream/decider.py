"""The decider: from an ask's scored candidates to what happens (emit, hold, suppress with a reason).

For each ask it builds the candidates (``stream.policy.make_candidate``), values them by their
expected incremental effect (``stream.response_estimates``), runs the rules (``stream/rules.py``
through ``stream.policy.decide``) and records the outcome: pushes with their stream order, holds
with their release timers, suppressions by reason, the audit trail, the holdout's "ghost" pushes,
the outcome estimates' updates and the interest index's updates (applied in stream order). Held
pushes come back through :meth:`Decider.release_held`, through the same rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from stream import policy as pol
from stream import triggers
from stream.asks import Ask, BatchUser, Scored
from stream.candidates import snapshot_similarity
from stream.catalog_view import CatalogView
from stream.contract import CatalogUpdate, Decision, Push
from stream.feedback import FeedbackOutcome
from stream.learning import Update
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.policy_config import PolicyConfig
from stream.response_estimates import context_key, pick_uniform
from stream.send_time import EngagementHours, send_at
from stream.timers import Timer

RELEASE_KIND = "release_held"  # the timer kind that brings held pushes back


class Decider:
    """Decides asks and releases held pushes for the engine (see the module docstring)."""

    def __init__(
        self,
        config: PolicyConfig,
        catalog: Callable[[], CatalogView],
        part: Callable[[int], PartitionState],
        version: Callable[[], str],
        audit_decisions: bool,
    ) -> None:
        self.cfg = config
        self._catalog = catalog  # the engine's view (it may be replaced)
        self.part = part
        self.version = version  # the serving model's version (it changes on a model swap)
        self.audit_decisions = audit_decisions
        # Holdout users are decided as if they were not (then nothing is sent): their "ghost"
        # pushes are the no-push baseline of the outcome estimates.
        self.ghost_cfg = config.model_copy(update={"holdout_share": 0.0})
        self.push_order: dict[str, int] = {}  # push id -> seq of what caused it (current batch)
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

    def _send_time(self, ask: Ask, verdict: pol.Verdict, push: Push, now: float) -> pol.Verdict:
        """An emit waits for the shopper's usual hour when one is near (a hold with reason send_time)."""
        cfg = self.cfg
        pstate = ask.user.state.policy
        if verdict.outcome != "emit" or not cfg.send_time_enabled or ask.send_hours is None:
            return verdict
        if len(pstate.held) >= cfg.max_held:
            return verdict
        hours = EngagementHours.from_list(ask.send_hours, cfg.send_time_half_life_seconds)
        at = send_at(hours, now, pol.user_zone(pstate, cfg), push.expires_at, cfg)
        if at <= now:
            return verdict
        return pol.Verdict("hold", "send_time", release_at=at, threshold=verdict.threshold)

    def index_interest(self, ask: Ask, scored: Scored, out: Outcome) -> None:
        """Queue the ask's interest for the item -> users index (applied in stream order, see below)."""
        out.interest += [p for _, _, _, p in scored.top]
        if scored.indexed:
            self.index_ops.append((ask.seq, ask.user.partition, ask.user.user_id, scored.indexed, ask.now))

    def apply_interest_updates(self) -> None:
        """Apply the queued index changes in the order their causes had in the stream.

        Scoring runs in rounds across users, whose order depends on how the stream was cut into
        batches; the index (its per-item caps and update order) must not. Within a batch nothing
        reads the index (only catalog changes do, between batches), so deferring is exact.
        """
        for _, partition, user_id, rows, now in sorted(self.index_ops, key=lambda op: op[0]):
            index = self.part(partition).interest
            if isinstance(rows, str):  # a purchase: the user is no longer a prospect for the item
                index.discard(rows, user_id)
                continue
            for item, interest in rows:
                index.update(item, user_id, interest, now)
        self.index_ops.clear()

    def decide(self, ask: Ask, ranked: Scored, out: Outcome) -> None:
        """Run the policy on an ask's scored candidates: emit, hold or suppress each, with its audit."""
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
        self.index_interest(ask, ranked, out)
        scored = ranked.top
        if not scored:
            if ask.items and ask.pushable != frozenset():  # candidates, none near a threshold
                out.suppressions[(ask.trigger, "below_threshold")] += 1
            return
        offset = pol.current_offset(pstate, ask.now, cfg)
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
        learning = self.part(user.partition).learning
        for cand, verdict in verdicts:
            if ghost:
                if verdict.outcome != "suppress":
                    self._record_ghost(ask, cand, verdict, known, out)
                verdict = pol.Verdict("suppress", "holdout", threshold=verdict.threshold)
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
            push = pol.build_push(user.user_id, cand, verdict, ask.now, cfg, self.version())
            if push.push_id in known:  # a replayed input: the push already exists
                out.suppressions[(cand.trigger, "duplicate")] += 1
                continue
            verdict = self._send_time(ask, verdict, push, ask.now)
            user.dirty = True
            ctx = self._context(cand)
            if verdict.outcome == "emit":
                pol.record_push(pstate, push, cfg, context=ctx)
                learning.add(ask.seq, Update("push", ctx, ask.now))
                out.pushes.append((user.partition, push))
                self.push_order[push.push_id] = ask.seq
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
                pol.record_hold(pstate, push, verdict.release_at, cfg, context=ctx)
                self.part(user.partition).timers.schedule(
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

    def _record_ghost(
        self, ask: Ask, cand: pol.Candidate, verdict: pol.Verdict, known: set[str], out: Outcome
    ) -> None:
        """A holdout user's decision that would have sent ``cand``: remembered, never sent."""
        user = ask.user
        push = pol.build_push(user.user_id, cand, verdict, ask.now, self.cfg, self.version())
        if push.push_id in known:
            return
        ctx = self._context(cand)
        pol.record_push(user.state.policy, push, self.cfg, sent_at=ask.now, context=ctx, ghost=True)
        self.part(user.partition).learning.add(ask.seq, Update("ghost", ctx, ask.now))
        user.dirty = True

    def release_held(self, user: BatchUser, now: float, out: Outcome, seq: int) -> None:
        pstate = user.state.policy
        if not pstate.held:
            return
        if not any(h.release_at <= now for h in pstate.held):
            return
        # Not while the shopper is on the site (they wait until the shopper has been away a while),
        # and never into quiet hours (a deferral can end inside them): then they wait again.
        last = user.engagement.last_ts
        again = now
        reason = None
        if self.active(last, now):
            assert last is not None
            again, reason = last + self.cfg.active_window_seconds, "user_active"
        quiet_end = pol.quiet_hours_end(again, pol.user_zone(pstate, self.cfg), self.cfg)
        if quiet_end is not None:
            again, reason = quiet_end, reason or "quiet_hours"
        if reason is not None:
            for h in pstate.held:
                if h.release_at <= now:
                    h.release_at = again
                    self.part(user.partition).timers.schedule(
                        Timer(again, user.user_id, RELEASE_KIND, h.push.item_id, h.push.push_id, now)
                    )
            user.dirty = True
            out.suppressions[(pstate.held[0].push.trigger, reason)] += 1
            return
        contexts = {h.push.push_id: h.context for h in pstate.held}
        in_force = self._catalog_at(now)
        for push, verdict in pol.release_held(user.user_id, pstate, now, self.cfg, in_force):
            user.dirty = True
            if verdict.outcome == "emit":
                released = push.model_copy(update={"created_at": now})
                ctx = contexts.get(push.push_id, "")
                pol.record_push(pstate, released, self.cfg, sent_at=now, context=ctx)
                if ctx:
                    self.part(user.partition).learning.add(seq, Update("push", ctx, now))
                out.pushes.append((user.partition, released))
                self.push_order[released.push_id] = seq
            else:
                out.suppressions[(push.trigger, verdict.reason)] += 1

    def _catalog_at(self, now: float) -> Callable[[str], CatalogUpdate | None]:
        """The catalog lookup of a decision at ``now`` (each item's version in force then)."""
        return lambda item_id: self._catalog().at(item_id, now)

    def _audit(
        self,
        user: BatchUser,
        item: str,
        trigger: str,
        outcome: str,
        reason: str,
        score: float,
        threshold: float | None,
        now: float,
        out: Outcome,
    ) -> None:
        if not self.audit_decisions:
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
