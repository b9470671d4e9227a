"""The engine's due timers: each partition's timers queued as work when its clock passes them.

:class:`DueTimersMixin` gives :class:`stream.engine.core.Engine` :meth:`~DueTimersMixin._fire_due`:
a due timer (cart abandonment, session end, promotion ending, the release of held pushes) becomes an
ask or a release queued behind its user's steps, decided at the clock that passed it. The timers
themselves are ``stream.timers``; their asks come from ``stream.triggers``.
"""

from __future__ import annotations

from collections.abc import Callable

from stream import timers, triggers
from stream.asks import Op, SeenAt, Work
from stream.engine.intake import Intake
from stream.engine.ports import StateAccess
from stream.engine.users import UserRecords
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.plan import RELEASE_KIND
from stream.policy_config import PolicyConfig


class DueTimersMixin:
    """Engine mixin: queue a partition's due timers as work."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    cfg: PolicyConfig
    users: UserRecords
    intake: Intake
    _next_ask_seq: Callable[[], int]

    def _fire_due(self, txn: StateAccess, part: PartitionState, now: float, work: Work, out: Outcome) -> None:
        """Queue the partition's timers due at ``now``, each behind its user's steps so far.

        A timer is decided at ``now``, the clock that passed its due time (with the event clock, the
        partition's watermark): that is when its push can go out, so quiet hours, expiry and the
        active rule are judged then. (Deciding at the due time made a quiet partition, whose clock
        jumps, emit pushes stamped in the past, some into quiet hours: push_outcomes found 2 of 823.)
        The user's state is as it was before the input that moved the clock, so a replay decides the
        same.
        """
        due = part.timers.pop_due(now, limit=self.cfg.max_timers)
        if not due:  # the common case: the clock moves on every event, a timer seldom falls due
            return
        discover = self.intake.discover(part.partition, now, out)  # the reminder's pool, computed on demand
        for timer in due:
            at = now
            user = self.users.load(txn, part.partition, timer.user_id, work.users)
            user.dirty = True  # the fired timer leaves the stored state
            position = len(work.steps_of(timer.user_id))
            if self.users.expired(user.state, at):
                continue
            if timer.kind == RELEASE_KIND:
                seen = SeenAt.of(user.engagement, part.watermark)
                work.queue(user, Op(position, now=at, seq=self._next_ask_seq(), seen=seen), at)
                continue
            # The ask of a due timer comes from its trigger (``stream.triggers.TIMER_ASKS``).
            again = timers.reminder_again(timer, self.cfg)
            if again is not None:
                part.timers.schedule(again)
            asked = triggers.timer_ask(timer, user.engagement, self.cfg, discover)
            if asked is not None:
                self.intake.queue_ask(work, user, Op(position, ask=self.intake.ask(user, asked, at)))
