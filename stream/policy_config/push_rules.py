"""The policy's settings for the rules a candidate must pass: threshold, caps, consent, quiet hours.

Part of :class:`stream.policy_config.PolicyConfig` (env ``KAIROS_POLICY__*``); ``docs/policy.md``
explains each rule.
"""

from __future__ import annotations

import re
from string import Formatter
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from stream.contract import TRIGGERS

_COLLAPSE_FIELDS = ("user_id", "trigger", "item_id", "category")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class PushRulesConfig(BaseModel):
    """Interest threshold, emission limits, consent, time zone, quiet hours, holdout and diversity."""

    # --- threshold and interest -------------------------------------------------------------------
    # Interest is P(the user acts on the item within the next few events); its base rate is ~8 % on
    # the simulated shop, so 0.12 means "half as likely again as an average engaged item".
    threshold: float = Field(
        0.12,
        ge=0.0,
        le=1.0,
        description="Interest (calibrated probability, 0-1) a candidate must reach to be pushed.",
    )
    trigger_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"cart_abandonment": 0.08, "promotion_ending": 0.10},
        description="Per-trigger thresholds that replace `threshold` for those triggers (JSON object).",
    )
    min_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="Lowest threshold after the responsiveness offset."
    )
    max_threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="Highest threshold after the responsiveness offset."
    )
    interest_half_life_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        description="Interest halves per this much time since the last engagement with item/session.",
    )
    promotion_weight: float = Field(
        2.0, ge=0.0, description="Promotion boost: interest odds are multiplied by 1 + weight x discount."
    )

    # --- emission limits --------------------------------------------------------------------------
    min_gap_seconds: float = Field(3600.0, description="At most one push per user per this many seconds.")
    item_repeat_window_seconds: float = Field(
        7 * 86400.0, description="Never push the same item to the same user twice within this window."
    )
    push_ttl_seconds: float = Field(
        3600.0,
        description="A push expires this long after it is created; one at or below "
        "min_push_lifetime_seconds suppresses every push it applies to as expired.",
    )
    trigger_ttl_seconds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-trigger time to live replacing push_ttl_seconds (JSON object): a reminder of an "
        "abandoned cart stays worth reading for hours, long enough to wait out quiet hours or for the "
        "shopper's usual hour; an in-session nudge does not.",
    )
    min_push_lifetime_seconds: float = Field(
        900.0,
        ge=0.0,
        description="Never emit (or release) a push with less than this long left before it expires.",
    )
    max_pushes_per_24h: int = Field(3, ge=0, description="Most pushes per user in any rolling 24 hours.")
    max_pushes_per_7d: int = Field(10, ge=0, description="Most pushes per user in any rolling 7 days.")
    max_pushes_per_local_day: int = Field(
        2, ge=0, description="Most pushes per user per calendar day in their zone."
    )
    max_per_category_per_local_day: int = Field(
        1, ge=0, description="Most pushes per category per user per local calendar day (0 disables the rule)."
    )
    max_pushes_per_decision: int = Field(
        1, ge=1, description="Most pushes one decision (one input) may emit."
    )

    max_pushes_per_minute: float = Field(
        0.0,
        ge=0,
        description="Global throttle: pushes per minute the fleet sends at most (one worker owning every "
        "partition: that worker); split evenly over the partitions; excess pushes wait; 0 disables it.",
    )
    throttle_max_queued: int = Field(
        1000,
        ge=0,
        description="Pushes waiting for throttle budget per partition (beyond, or beyond 512 KiB of them as "
        "stored: dropped, counted).",
    )
    collapse_key_template: str = Field(
        "kairos-{user_id}",
        description="Each push's collapse_key: a newer push replaces an undelivered older one with the same "
        "key; plain placeholders {user_id}, {trigger}, {item_id}, {category} (no format spec, conversion, "
        "index or attribute); a key that is not 1-64 visible ASCII "
        "characters (APNs' limit) is sent as kairos- and its BLAKE2b digest; empty: no key.",
    )

    # --- consent, time zone, quiet hours, holdout -----------------------------------------------------
    consent_default: bool = Field(
        True, description="Consent assumed for users with no consent record (opt-in by default for the demo)."
    )
    default_time_zone: str = Field("UTC", description="IANA time zone for users whose events carry none.")
    quiet_hours_start: str = Field(
        "22:00", description="Local time (HH:MM) quiet hours begin; equal to end: none."
    )
    quiet_hours_end: str = Field("08:00", description="Local time (HH:MM) quiet hours end.")
    quiet_hours_action: Literal["hold", "drop"] = Field(
        "hold",
        description="In quiet hours: hold the push until they end (if not expired by then) or drop it.",
    )
    max_held: int = Field(2, ge=0, description="Most pushes held for the end of quiet hours per user.")
    holdout_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of users in the global holdout group (they receive nothing)."
    )
    holdout_salt: str = Field(
        "kairos-holdout-v1", description="Salt of the holdout hash; change it to reshuffle."
    )

    # --- diversity ---------------------------------------------------------------------------------
    mmr_lambda: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="MMR trade-off: 1 = pure interest, 0 = pure novelty against recent pushes.",
    )
    mmr_history: int = Field(
        5, ge=0, description="Recent pushes the MMR similarity term compares candidates with."
    )

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"expected HH:MM (00:00-23:59), got {value!r}")
        return value

    @field_validator("collapse_key_template")
    @classmethod
    def _collapse_template(cls, value: str) -> str:
        rule = "collapse_key_template may use {user_id}, {trigger}, {item_id}, {category}"
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in Formatter().parse(value)]
        except ValueError as exc:
            raise ValueError(f"{rule}: {exc}") from exc
        for name, spec, conversion in fields:
            if name is None:
                continue  # literal text
            if name not in _COLLAPSE_FIELDS or spec or conversion:
                # A format spec could build a huge string per push ({user_id:>99999999}); an index or
                # attribute ({user_id[0]}, {user_id.upper}) reaches into the value. A long key is
                # digested anyway (stream.push_records.collapse_key).
                plain = "each plain (no format spec, conversion, index or attribute)"
                field = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                raise ValueError(f"{rule}, {plain}: {{{field}}}")
        return value

    @field_validator("default_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Europe" is a folder
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("trigger_thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for trigger, threshold in value.items():
            if trigger not in TRIGGERS:
                raise ValueError(f"unknown trigger {trigger!r}; known: {', '.join(TRIGGERS)}")
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold of {trigger} must lie in [0, 1], got {threshold}")
        return value

    @field_validator("trigger_ttl_seconds")
    @classmethod
    def _ttls(cls, value: dict[str, float]) -> dict[str, float]:
        for trigger, ttl in value.items():
            if trigger not in TRIGGERS:
                raise ValueError(f"unknown trigger {trigger!r}; known: {', '.join(TRIGGERS)}")
            if not ttl > 0.0:
                raise ValueError(f"time to live of {trigger} must be positive, got {ttl}")
        return value

    def ttl_of(self, trigger: str) -> float:
        """The time to live of a push of ``trigger`` (``trigger_ttl_seconds``, else ``push_ttl_seconds``)."""
        return self.trigger_ttl_seconds.get(trigger, self.push_ttl_seconds)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_threshold > self.max_threshold:
            raise ValueError("min_threshold must not exceed max_threshold")
        return self

    def threshold_for(self, trigger: str) -> float:
        """The base threshold of a trigger (before the user's responsiveness offset)."""
        return self.trigger_thresholds.get(trigger, self.threshold)

    def quiet_minutes(self) -> tuple[int, int]:
        """Quiet hours as minutes after local midnight: (start, end)."""
        sh, sm = self.quiet_hours_start.split(":")
        eh, em = self.quiet_hours_end.split(":")
        return int(sh) * 60 + int(sm), int(eh) * 60 + int(em)
