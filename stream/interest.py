"""Interest: from the model's calibrated probability to the number the policy compares to a threshold.

Pure functions (no clock: ``now`` is always an argument). The bounded item -> interested users map
that lets a catalog change reach the users who care is :class:`stream.interest_index.InterestIndex`.

The rule (documented in ``docs/policy.md``)::

    decay     = 0.5 ** (age / interest_half_life)          age = now - last engagement (item or session)
    m         = 1 + promotion_weight * discount            discount in [0, 1), 0 without an active promotion
    interest  = (p * decay * m) / (1 - p * decay + p * decay * m)     odds of p*decay multiplied by m
    threshold = clip(threshold_for(trigger) + offset, min_threshold, max_threshold)

Multiplying the odds keeps the result in [0, 1], leaves 0 and 1 fixed and is monotone in both p and
the discount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.policy_config import PolicyConfig


def decay_factor(age_seconds: float, half_life_seconds: float) -> float:
    """``0.5 ** (age / half_life)``; a negative age (out-of-order events) counts as 0."""
    if age_seconds <= 0.0:
        return 1.0
    return math.exp2(-age_seconds / half_life_seconds)


def promotion_adjust(p: float, discount: float, weight: float) -> float:
    """Raise a probability for a promotion: its odds are multiplied by ``1 + weight * discount``.

    The result stays in [0, 1] (0 and 1 are fixed points); ``discount`` is clipped to [0, 1].
    """
    p = min(max(p, 0.0), 1.0)
    multiplier = 1.0 + weight * min(max(discount, 0.0), 1.0)
    if p >= 1.0:
        return 1.0
    boosted = p * multiplier
    return boosted / (1.0 - p + boosted)


def interest_upper_bound(calibrated: np.ndarray, discount: np.ndarray | float, weight: float) -> np.ndarray:
    """Vectorised :func:`promotion_adjust` without decay: an upper bound of each candidate's interest.

    The worker can skip building candidates whose bound is below the lowest threshold they could face
    (``effective_threshold(trigger, offset, config)``): they would only be suppressed "below_threshold".
    """
    p = np.clip(np.asarray(calibrated, dtype=np.float64), 0.0, 1.0)
    multiplier = 1.0 + weight * np.clip(np.asarray(discount, dtype=np.float64), 0.0, 1.0)
    boosted = p * multiplier
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(p >= 1.0, 1.0, boosted / (1.0 - p + boosted))
    return np.nan_to_num(bound, nan=0.0)


def effective_threshold(trigger: str, offset: float, config: PolicyConfig) -> float:
    """The threshold a candidate of ``trigger`` must reach for a user with responsiveness ``offset``."""
    return min(max(config.threshold_for(trigger) + offset, config.min_threshold), config.max_threshold)


@dataclass(init=False, slots=True)
class Assessment:
    """Interest of one candidate and the features behind it (kept for explanations and audits).

    Read only, but not frozen: one is built per candidate of every decision, and a frozen init costs
    about three times as much."""

    interest: float
    threshold: float
    features: dict[str, float]

    def __init__(
        self,
        interest: float,
        threshold: float,
        features: dict[str, float],
    ) -> None:
        self.interest = interest
        self.threshold = threshold
        self.features = features

    @property
    def passes(self) -> bool:
        """Whether the interest reaches the threshold."""
        return self.interest >= self.threshold


def assess(
    raw_score: float,
    calibrated: float,
    last_engaged_at: float | None,
    now: float,
    discount: float,
    trigger: str,
    offset: float,
    config: PolicyConfig,
    decay_until: float | None = None,
) -> Assessment:
    """Decay, promotion adjustment and threshold for one candidate.

    ``last_engaged_at`` is the user's last engagement with the item, or else with the session; None
    means "now" (no decay). ``offset`` is the user's current responsiveness offset. ``decay_until``
    (default ``now``) is the time interest decays to: a reminder judges the interest the shopper left
    with (``stream.triggers.TriggerSpec.interest_as_left``); ``age_seconds`` stays the age at ``now``.
    """
    age = 0.0 if last_engaged_at is None else max(0.0, now - last_engaged_at)
    until = now if decay_until is None else min(decay_until, now)
    decayed_age = 0.0 if last_engaged_at is None else max(0.0, until - last_engaged_at)
    decay = decay_factor(decayed_age, config.interest_half_life_seconds)
    decayed = min(max(calibrated, 0.0), 1.0) * decay
    interest = promotion_adjust(decayed, discount, config.promotion_weight)
    base = config.threshold_for(trigger)
    threshold = effective_threshold(trigger, offset, config)
    features = {
        "raw_score": float(raw_score),
        "calibrated_p": float(calibrated),
        "age_seconds": age,
        "decay_factor": decay,
        "discount": float(discount),
        "promotion_multiplier": 1.0 + config.promotion_weight * min(max(discount, 0.0), 1.0),
        "interest": interest,
        "threshold_base": base,
        "threshold_offset": threshold - base,
        "threshold": threshold,
    }
    return Assessment(interest=interest, threshold=threshold, features=features)
