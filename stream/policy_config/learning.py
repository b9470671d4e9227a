"""The policy's settings for what it learns from answers: responsiveness, outcome estimates, send time.

Part of :class:`stream.policy_config.PolicyConfig` (env ``KAIROS_POLICY__*``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class LearningConfig(BaseModel):
    """Feedback and each user's responsiveness, learning from push outcomes, and send time per shopper."""

    # --- feedback and responsiveness ---------------------------------------------------------------------
    attribution_window_seconds: float = Field(
        86400.0,
        gt=0,
        description="A purchase of the pushed item this soon after the push is attributed to it.",
    )
    max_push_records: int = Field(
        50, ge=1, description="Pushes remembered per user (caps, repeats, attribution)."
    )
    ignore_after_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        description="A push with no open, click or dismiss after this long counts as ignored.",
    )
    responsiveness_open: float = Field(
        -0.02, le=0.0, description="Threshold offset change when a push is opened."
    )
    responsiveness_click: float = Field(
        -0.04, le=0.0, description="Threshold offset change when a push is clicked."
    )
    responsiveness_purchase: float = Field(
        -0.08, le=0.0, description="Offset change for an attributed purchase."
    )
    responsiveness_dismiss: float = Field(
        0.05, ge=0.0, description="Threshold offset change when a push is dismissed."
    )
    responsiveness_ignore: float = Field(
        0.03, ge=0.0, description="Threshold offset change when a push is ignored."
    )
    responsiveness_min: float = Field(-0.15, le=0.0, description="Lowest per-user threshold offset.")
    responsiveness_max: float = Field(0.3, ge=0.0, description="Highest per-user threshold offset.")
    responsiveness_half_life_seconds: float = Field(
        14 * 86400.0,
        gt=0,
        description="The offset decays toward 0 with this half-life (old behaviour fades).",
    )

    # --- learning from outcomes (stream/response_estimates.py) ----------------------------------------
    learning_frozen: bool = Field(
        False,
        description="Freeze learning: no updates, no exploration, rank by the posterior mean uplift.",
    )
    exploration_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of decisions that pick uniformly among eligible candidates."
    )
    learning_epoch_seconds: float = Field(
        3600.0,
        gt=0,
        description="Outcome estimates change only when a partition's clock enters a new epoch of this "
        "length (exact replays; see stream/learning.py).",
    )
    response_half_life_seconds: float = Field(
        14 * 86400.0, gt=0, description="Half-life of the push / no-push outcome counts per context."
    )
    response_prior_strength: float = Field(
        50.0, gt=0, description="Weight of the prior conversion rates, in pseudo-decisions per arm."
    )
    # Engagement family -> prior conversion rate within the attribution window (both arms).
    response_prior_rates: dict[str, float] = Field(
        default_factory=lambda: {
            "in_cart": 0.10,
            "viewed_2plus": 0.05,
            "viewed_once": 0.02,
            "not_engaged": 0.01,
        },
        description="Prior conversion rate per engagement family (JSON object; see docs/policy.md).",
    )
    response_prior_lift: float = Field(
        0.0, ge=-1.0, le=1.0, description="Prior conversion rate a push adds (absolute; 0: no prior uplift)."
    )
    # --- send time per shopper (stream/send_time.py) ---------------------------------------------------
    send_time_enabled: bool = Field(
        True, description="Delay a decided push to the shopper's usual engagement hour (else send at once)."
    )
    send_time_min_observations: float = Field(
        8.0, ge=0.0, description="Decayed, weighted observations a shopper needs before send time is learned."
    )
    send_time_min_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Send now when this hour's engagement is at least this share of the best reachable hour.",
    )
    send_time_horizon_seconds: float = Field(
        12 * 3600.0, gt=0, le=7 * 86400.0, description="Longest a decided push may wait for a better hour."
    )
    send_time_half_life_seconds: float = Field(
        21 * 86400.0,
        ge=1.0,
        description="Half-life of the per-hour engagement counts (old habits fade); at least 1 (the counts "
        "are kept from a whole-second landmark).",
    )
    send_time_open_weight: float = Field(
        3.0,
        ge=0.0,
        le=1_000_000.0,
        description="Weight of a push open or click in the engagement hours (behaviour events: 1); 0 to "
        "1000000.",
    )

    @field_validator("response_prior_rates")
    @classmethod
    def _prior_rates(cls, value: dict[str, float]) -> dict[str, float]:
        families = ("in_cart", "viewed_2plus", "viewed_once", "not_engaged")
        unknown = sorted(set(value) - set(families))
        missing = [f for f in families if f not in value]
        if unknown or missing:
            raise ValueError(f"expected exactly {', '.join(families)}; unknown {unknown}, missing {missing}")
        for family, rate in value.items():
            if not 0.0 < rate < 1.0:
                raise ValueError(f"prior rate of {family} must lie in (0, 1), got {rate}")
        return value
