"""Forward decay: time-decayed counts that are written once and never touched again to decay.

Decayed counts use *forward decay*: an observation at ``ts`` adds ``w * 2 ** ((ts - landmark) / half_life)``,
so stored values never need to be touched again to decay, their order is the order of the decayed
values, and the decayed value at ``now`` is ``stored * 2 ** (-(now - landmark) / half_life)``. The
landmark moves forward (rescaling every value once) before the exponent could overflow.
"""

from __future__ import annotations

import math
import operator

# Rescale forward-decayed values when the landmark is this many half-lives behind (2**60 ~ 1e18).
REBASE_HALF_LIVES = 60.0

_value = operator.itemgetter(1)


def best_first(counts: dict[str, float]) -> list[tuple[str, float]]:
    """``counts`` as (id, value) pairs, highest value first, then by id (ties never depend on insertion).

    Two C-level sorts instead of a Python key per entry: by id, then stably by value descending (a
    ``reverse`` sort keeps the order of equal values), which gives the order of the key ``(-value, id)``.
    """
    ranked = sorted(counts.items())
    ranked.sort(key=_value, reverse=True)
    return ranked


class ForwardDecay:
    """The landmark arithmetic shared by the decayed counters."""

    def __init__(self, half_life_seconds: float, landmark: float | None = None) -> None:
        self.half_life_seconds = half_life_seconds
        self.landmark = landmark

    def weight(self, ts: float) -> tuple[float, float | None]:
        """Forward-decayed weight of one unit at ``ts``, and a rescale factor when the landmark moved."""
        if self.landmark is None:
            self.landmark = ts
        exponent = (ts - self.landmark) / self.half_life_seconds
        rescale = None
        if exponent > REBASE_HALF_LIVES:
            rescale = math.exp2(-exponent)
            self.landmark = ts
            exponent = 0.0
        return math.exp2(exponent), rescale

    def at(self, stored: float, now: float) -> float:
        """The decayed value at ``now`` of a stored forward-decayed value."""
        if self.landmark is None:
            return 0.0
        # A time before the landmark (out-of-order or far-future events moved it) reads as the landmark:
        # decayed values never grow backwards, and the exponent cannot overflow.
        return stored * math.exp2(-max(now - self.landmark, 0.0) / self.half_life_seconds)
