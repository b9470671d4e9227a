"""The engine's side of the global push throttle: the batch's pushes admitted in stream order.

:class:`ThrottleMixin` gives :class:`stream.engine.core.Engine` the partition's share of the throttle
(``stream.throttle``): pushes over the budget wait (or are dropped when the queue is full), and when a
partition's clock enters a new minute, what waits goes out while the budget allows, each outside its
user's quiet hours.
"""

from __future__ import annotations

from collections.abc import Callable

from stream.asks import BatchUser
from stream.contract import Push
from stream.decider import Decider
from stream.engine.ports import StateAccess
from stream.engine.users import UserRecords
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.policy_config import PolicyConfig
from stream.push_records import record_sent
from stream.user_facts import quiet_hours_end, zone_named


class ThrottleMixin:
    """Engine mixin: admit pushes through the partition's throttle; release those waiting."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    cfg: PolicyConfig
    part: Callable[[int], PartitionState]
    decider: Decider
    users: UserRecords

    def _throttle(self, out: Outcome, first: int) -> None:
        """Admit the pushes from ``first`` on in stream order; those over budget wait (stream.throttle),
        each with its user's time zone and last event's time (``Decider.push_users``)."""
        kept: list[tuple[int, Push]] = []
        users = self.decider.push_users
        already_out = self.decider.already_out
        for partition, push in out.pushes[first:]:
            throttle = self.part(partition).throttle
            sent = push.push_id in already_out  # recovered after a crash: counted, not sent again
            if throttle.admit(push.created_at):
                if not sent:
                    kept.append((partition, push))
            elif throttle.enqueue(push, *users.get(push.push_id, (None, None)), sent=sent):
                out.suppressions[(push.trigger, "throttled")] += 1
            else:
                out.suppressions[(push.trigger, "throttle_full")] += 1
        out.pushes[first:] = kept
        users.clear()
        already_out.clear()

    def _release_throttled(
        self, part: PartitionState, out: Outcome, txn: StateAccess, users: dict[str, BatchUser]
    ) -> None:
        """The partition's clock entered a new minute: waiting pushes go out while budget allows, none
        in its user's quiet hours (it waits on, or with ``quiet_hours_action`` "drop" is dropped) nor
        while its user is on the site (it waits on: ``active_window_seconds``, as a held push).

        A push that goes out is recorded in its user's state as sent now, as a held push is when it is
        released: its user's caps, gap and repeats count from when they got it, so a push decided
        meanwhile does not reach them at the same time. (``users``: the batch's loaded users.)"""
        cfg = self.cfg

        def quiet(zone: str | None, at: float) -> bool:
            return quiet_hours_end(at, zone_named(zone, cfg), cfg) is not None

        start, end = cfg.quiet_minutes()
        released = part.throttle.release(
            part.watermark,
            cfg.min_push_lifetime_seconds,
            quiet if start != end else None,
            cfg.quiet_hours_action == "drop",
            cfg.active_window_seconds,
        )
        out.pushes += [(part.partition, push) for push in released.pushes]
        for push in released.pushes + released.sent:  # sent: out before a crash, counted as then
            user = self.users.load(txn, part.partition, push.user_id, users)
            if record_sent(user.state.policy, push):
                user.dirty = True
        for push in released.expired:
            out.suppressions[(push.trigger, "expired")] += 1
        for push in released.quiet:
            out.suppressions[(push.trigger, "quiet_hours")] += 1
