"""Carrying plans out: the one place a decision changes state and output.

:class:`ApplyMixin` gives :class:`stream.decider.Decider` :meth:`~ApplyMixin.apply` (pushes with their
stream order, holds with their release timers, suppressions by reason, the audit trail, the holdout's
"ghost" pushes, the outcome estimates' updates) and :meth:`~ApplyMixin.apply_interest_updates` (the
interest index's updates, in stream order). Plans themselves are ``stream.plan``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from stream import policy as pol
from stream.asks import next_minute
from stream.contract import Decision, Push
from stream.learning import Update
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.plan import RELEASE_KIND, Plan, Step, on_minute
from stream.policy_config import PolicyConfig
from stream.push_records import prune_records
from stream.timers import REMINDER_AGAIN, Timer


class ApplyMixin:
    """Decider mixin: apply plans and the batch's interest-index changes."""

    # What it uses of the decider (stream.decider.Decider): its attributes.
    cfg: PolicyConfig
    part: Callable[[int], PartitionState]
    event_clock: bool
    audit_decisions: bool
    push_order: dict[str, int]
    push_users: dict[str, tuple[str | None, float | None]]
    already_out: set[str]
    decision_order: dict[int, int]
    index_ops: list[tuple[int, int, str, list[tuple[str, float]] | str, float]]

    def apply(self, plan: Plan, out: Outcome) -> None:
        """Carry out a plan: the one place a decision changes state and output.

        In step order: suppressions counted (and audited), the holdout's ghost pushes remembered,
        emits recorded (caps, feedback, outcome estimates) and output in the plan's stream order,
        holds kept with their release timers, deferred holds re-timed, released holds taken out.
        """
        user = plan.user
        pstate = user.state.policy
        part = self.part(user.partition)
        out.interest += plan.interest
        if plan.index_rows:
            self.index_ops.append((plan.seq, user.partition, user.user_id, plan.index_rows, plan.now))
        if plan.released_until is not None:
            pstate.held = [h for h in pstate.held if h.release_at > plan.released_until]
            user.dirty = True
        for step in plan.steps:
            if step.action == "wait":
                self._rearm(part, plan, step, out)
                out.suppressions[(step.trigger, step.reason)] += 1
                continue
            if step.action == "suppress":
                out.suppressions[(step.trigger, step.reason)] += 1
                if step.reason == "duplicate" and step.push is not None:
                    completed = self._complete_recovered(plan, step)
                    if completed and part.throttle.enabled:
                        # It took the throttle's budget then (or waited for it): it does so again,
                        # and Engine._throttle leaves it out of the output.
                        self._output(plan, part, step.push, out)
                        self.already_out.add(step.push.push_id)
                if step.audit:
                    self._audit(plan, step, "suppressed", out)
                continue
            user.dirty = True
            assert step.push is not None
            if step.action == "defer":
                due = self._schedule_release(part, plan, step, out)
                for h in pstate.held:
                    if h.push.push_id == step.push.push_id:
                        h.release_at = due
                continue
            if step.action == "ghost":
                pol.record_push(
                    pstate, step.push, self.cfg, sent_at=plan.now, context=step.context, ghost=True
                )
                part.learning.add(plan.seq, Update("ghost", step.context, plan.now))
            elif step.action == "emit":
                pol.record_push(pstate, step.push, self.cfg, sent_at=plan.now, context=step.context)
                if step.context:
                    part.learning.add(plan.seq, Update("push", step.context, plan.now))
                self._output(plan, part, step.push, out)
                if step.audit:
                    self._audit(plan, step, "emitted", out)
            else:  # hold
                due = self._schedule_release(part, plan, step, out)
                pol.record_hold(pstate, step.push, due, self.cfg, context=step.context)
                self._audit(plan, step, "held", out)

    def _output(self, plan: Plan, part: PartitionState, push: Push, out: Outcome) -> None:
        """A push into the output, at its decision's place in the stream (``Engine._resolve`` sorts by
        it) and, when the partition throttles, with what its wait needs: it may not go out into its
        user's quiet hours nor visit (``Engine._throttle``)."""
        out.pushes.append((plan.user.partition, push))
        self.push_order[push.push_id] = plan.seq
        if part.throttle.enabled:
            self.push_users[push.push_id] = (plan.user.state.policy.time_zone, plan.user.engagement.last_ts)

    def _complete_recovered(self, plan: Plan, step: Step) -> bool:
        """The decision that emitted a push recovered after a crash (``recovered``), made again on the
        redelivered input: record what it recorded then, its context, its time and the push in the
        outcome estimates, so the state is the uninterrupted run's: the record moves to the end of the
        history, where the decision put it, at the decision's time (a push that waited for the
        throttle's budget went out later: the release moves it there again, as it did then), and the
        history is pruned as it was then (recovery recorded the pushes read back without pruning: a
        later one would have dropped an earlier one's record, or records an earlier decision read).
        True when it did; once: any other duplicate changes nothing."""
        assert step.push is not None
        user = plan.user
        pstate = user.state.policy
        for record in pstate.pushes:
            if record.push_id == step.push.push_id and record.recovered:
                record.recovered = False
                record.context = step.context
                record.created_at = plan.now
                pstate.pushes.remove(record)
                pstate.pushes.append(record)
                prune_records(pstate, plan.now, self.cfg)
                user.dirty = True
                if step.context:
                    self.part(user.partition).learning.add(plan.seq, Update("push", step.context, plan.now))
                return True
        return False

    def _rearm(self, part: PartitionState, plan: Plan, step: Step, out: Outcome) -> None:
        """A reminder moment that waits (``stream.rules.reminder_waits_until``): its timer again, due on
        a whole minute at the step's time; the second moment goes with a first one that waits (it is
        armed again when the first fires). Not when the shopper came back since the moment (their
        return re-armed the reminder, later in the batch): the return decides, as it does when the
        batch ends at the moment."""
        timer = step.timer
        assert timer is not None and step.release_at is not None
        user_id = plan.user.user_id
        if part.timers.get(user_id, "reminder", "") is not None:
            return
        plan.user.dirty = True  # the timers are stored with the user
        if timer.item_id != REMINDER_AGAIN:
            part.timers.cancel(user_id, "reminder", REMINDER_AGAIN)
        due = on_minute(step.release_at)
        self._check_due(part, plan, due, out)
        part.timers.schedule(replace(timer, due_at=due))

    def _check_due(self, part: PartitionState, plan: Plan, due: float, out: Outcome) -> None:
        """Count a timer that the partition's event-time clock passed between the decision's place in
        the stream and pass 2 making it: it fires at the next input, not where a batch of one would
        fire it. The engine closes pass 2 before the clock reaches ``Decider.earliest_timer`` of its
        queued decisions; a new way for a plan to schedule a timer must add its term there. (A timer
        already due where its decision was made, as a late event's can be, is late in any batching.)"""
        if self.event_clock and plan.clock < due <= part.watermark:
            out.late_timers += 1

    def _schedule_release(self, part: PartitionState, plan: Plan, step: Step, out: Outcome) -> float:
        """The release timer of a hold or deferral, due on a whole minute (:func:`on_minute`) after the
        decision's minute (the engine closes pass 2 before its clock can reach it: the queued work's
        ``stream.asks.Work.first_due``, so the timer exists before the clock passes it); its time."""
        assert step.release_at is not None and step.push is not None
        due = max(on_minute(step.release_at), next_minute(plan.now))
        self._check_due(part, plan, due, out)
        part.timers.schedule(
            Timer(due, plan.user.user_id, RELEASE_KIND, step.item_id, step.push.push_id, plan.now)
        )
        return due

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

    def _audit(self, plan: Plan, step: Step, outcome: str, out: Outcome) -> None:
        if not self.audit_decisions:
            return
        user = plan.user
        decision = Decision(
            user_id=user.user_id,
            item_id=step.item_id,
            trigger=step.trigger,  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            reason=step.reason,
            score=float(step.score),
            threshold=float(step.threshold or 0.0),
            ts=plan.now,
        )
        self.decision_order[id(decision)] = plan.seq
        out.decisions.append((user.partition, decision))
