"""The engine's side of the global push throttle: the batch's pushes admitted in stream order.

:class:`ThrottleMixin` gives :class:`stream.engine.core.Engine` the partition's share of the throttle
(``stream.throttle``): pushes over the budget wait (or are dropped when the queue is full), and when a
partition's clock enters a new minute, what waits goes out while the budget allows.
"""

from __future__ import annotations

from collections.abc import Callable

from stream.contract import Push
from stream.outcome import Outcome
from stream.partition_state import PartitionState
from stream.policy_config import PolicyConfig


class ThrottleMixin:
    """Engine mixin: admit pushes through the partition's throttle; release those waiting."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    cfg: PolicyConfig
    part: Callable[[int], PartitionState]

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
