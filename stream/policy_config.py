"""Settings of the push decision policy (read through ``Settings.policy``, env ``KAIROS_POLICY__*``).

Every field has a default and a one-line description; ``docs/policy.md`` explains each rule. Dict
fields are read from the environment as JSON (``KAIROS_POLICY__TRIGGER_THRESHOLDS='{"price_drop": 0.4}'``).
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from stream.contract import TRIGGERS

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class PolicyConfig(BaseModel):
    """Every push rule is configurable; defaults are conservative."""

    # --- threshold and interest -------------------------------------------------------------------
    # Interest is P(the user acts on the item within the next few events); its base rate is ~8 % on
    # the simulated shop, so 0.12 means "half as likely again as an average engaged item".
    threshold: float = Field(
        0.12, description="Interest (calibrated probability) a candidate must reach to be pushed."
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
    push_ttl_seconds: float = Field(3600.0, description="A push expires this long after it is created.")
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
        1000, ge=0, description="Pushes waiting for throttle budget per partition (beyond: dropped, counted)."
    )
    collapse_key_template: str = Field(
        "kairos-{user_id}",
        description="Each push's collapse_key: a newer push replaces an undelivered older one with the same "
        "key; placeholders {user_id}, {trigger}, {item_id}, {category}; a key that is not 1-64 visible ASCII "
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

    # --- candidates ------------------------------------------------------------------------------
    max_candidates: int = Field(50, ge=1, description="Most candidates scored per user per event.")
    quota_engaged: int = Field(
        20, ge=0, description="Most candidates from the user's recently engaged items."
    )
    quota_covisited: int = Field(
        20, ge=0, description="Most candidates from items co-visited with the session's."
    )
    quota_promoted: int = Field(5, ge=0, description="Most candidates from items on active promotion.")
    quota_new: int = Field(
        3,
        ge=0,
        description="Most candidates from new items (placed from content) in the categories the user views.",
    )
    quota_trending: int = Field(
        10, ge=0, description="Most candidates from trending items (little-history users)."
    )
    trending_min_history: int = Field(
        3, ge=0, description="Users with fewer engaged items than this also get trending candidates."
    )
    engagement_max_items: int = Field(20, ge=1, description="Engaged items remembered per user.")
    engagement_max_purchases: int = Field(
        20,
        ge=0,
        description="Bought items remembered per user after they leave the engaged items (never proposed"
        " again); 0: a purchase is forgotten with its engaged item.",
    )
    covisit_top_n: int = Field(
        20,
        ge=1,
        le=200,
        description="Co-visited neighbours kept per item (at most 200: an item's stored row holds twice as"
        " many, and must stay far below a broker's message size limit).",
    )
    covisit_max_items: int = Field(
        100_000, ge=1, description="Items the co-visitation index keeps (least recent go)."
    )
    covisit_window: int = Field(
        5, ge=1, description="An item co-occurs with this many previous items of the session."
    )
    covisit_half_life_seconds: float = Field(
        7 * 86400.0, gt=0, description="Half-life of co-visitation counts."
    )
    trending_max_items: int = Field(10_000, ge=1, description="Items the trending counter keeps.")
    trending_half_life_seconds: float = Field(6 * 3600.0, gt=0, description="Half-life of trending counts.")
    trending_refresh_seconds: float = Field(
        30.0, ge=0, description="The trending top list is recomputed this often."
    )

    # --- catalog triggers (interest index) ---------------------------------------------------------------
    interest_index_per_item: int = Field(
        200, ge=1, description="Users with the highest interest kept per item."
    )
    new_arrival_similar_items: int = Field(
        20,
        ge=0,
        le=1000,
        description="A new item is announced to the users interested in this many of the most similar items.",
    )
    new_arrival_max_users: int = Field(
        200, ge=0, description="Most users (highest interest first) asked about one new item, per partition."
    )
    interest_index_max_entries: int = Field(
        500_000, ge=1, description="Most (item, user) entries in the index."
    )
    interest_index_min_interest: float = Field(
        0.2, ge=0.0, le=1.0, description="Interest a scored candidate needs to enter the item -> users index."
    )
    interest_index_half_life_seconds: float = Field(
        2 * 86400.0, gt=0, description="Half-life of stored interest when a catalog change looks up users."
    )

    # --- timers ----------------------------------------------------------------------------------
    cart_abandonment_delay_seconds: float = Field(
        1800.0,
        gt=0,
        description="A carted item not bought nor removed after this long triggers cart_abandonment.",
    )
    session_end_seconds: float = Field(
        1800.0,
        ge=0,
        description="A session counts as ended after this long without a behaviour event; its carted "
        "and repeatedly viewed items are then considered for a push (0 disables session_end).",
    )
    reminder_seconds: float = Field(
        86400.0,
        ge=0,
        description="A shopper who has not come back this long after their last behaviour event gets "
        "one more abandonment push (an abandoned item not pushed yet); 0 disables reminders.",
    )
    reminder_again_seconds: float = Field(
        8 * 3600.0,
        ge=0,
        description="A shopper still away this long after their reminder moment gets one more, the same way "
        "(discovery first; an item pushed within item_repeat_window_seconds is never pushed again); "
        "0 disables.",
    )
    reminder_push_gap_seconds: float = Field(
        86_400.0,
        ge=0,
        description="The reminder moment (its reminder or discovery push; not the second moment) that comes "
        "less than this long after the shopper's last push waits until this long after it, unless they "
        "come back first: a push within a day of another is opened less and opted out of more (on the "
        "simulated shop a day's wait kept purchases level and cut expected opt-outs by 8 %, "
        "docs/policy.md); 0 disables.",
    )
    discovery_items: int = Field(
        10,
        ge=0,
        description="At a reminder moment with nothing abandoned, up to this many unengaged popular "
        "items of the shopper's recent categories are considered for a discovery push "
        "(stream/discovery.py); 0 disables.",
    )
    reminder_discovery_first: bool = Field(
        True,
        description="At a reminder moment, ask about the discovery pool whenever it has items, and about "
        "the abandoned items only when it is empty (off: abandoned items first).",
    )
    discovery_discount_weight: float = Field(
        3.0, ge=0, description="Weight of the item's discount (0-1) in a discovery candidate's value."
    )
    discovery_category_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of log(a category's share of the shopper's recent items / the largest "
        "share) in a discovery candidate's value (the category they browse most is most likely what "
        "they shop for now); 0, the default, weighs the recent categories alike.",
    )
    discovery_price_weight: float = Field(
        0.9,
        ge=0,
        description="Weight of log(price / the category's median price), subtracted from a discovery "
        "candidate's value (cheaper than the category's usual price is worth more).",
    )
    browse_min_views: int = Field(
        2, ge=1, description="Views of an item (not carted) that make it a browse-abandonment candidate."
    )
    session_end_browse: bool = Field(
        False,
        description="Whether a session's end may push a repeatedly viewed, not carted item "
        "(browse_abandonment); off, only carted items go then and the viewed ones wait for the reminder.",
    )
    session_end_max_items: int = Field(
        8, ge=1, description="Most abandoned items (most recent first) considered at a session's end."
    )
    returning_visit_seconds: float = Field(
        43200.0,
        ge=0,
        description="A shopper whose visit began less than this after their previous one is likely back "
        "soon and to find their cart on their own: the session end and the cart timer push nothing to "
        "them (the reminder still comes if they stay away). A visit begins after session_end_seconds "
        "(1800 when that is 0) without activity. 0 disables.",
    )
    active_window_seconds: float = Field(
        1800.0,
        ge=0,
        description="A shopper with a behaviour event this recently is on the site: nothing is pushed "
        "to them now (0 disables the rule, which re-enables in-session nudges).",
    )
    promotion_ending_lead_seconds: float = Field(
        3 * 3600.0, gt=0, description="promotion_ending fires this long before a promotion's ends_at."
    )
    max_timers: int = Field(
        500_000, ge=1, description="Most pending timers per worker (new ones are refused beyond)."
    )
    max_timers_per_user: int = Field(
        20, ge=1, description="Most pending timers per user (the latest due go first)."
    )

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
        21 * 86400.0, gt=0, description="Half-life of the per-hour engagement counts (old habits fade)."
    )
    send_time_open_weight: float = Field(
        3.0,
        ge=0.0,
        description="Weight of a push open or click in the engagement hours (behaviour events: 1).",
    )

    @property
    def visit_gap_seconds(self) -> float:
        """Time without activity after which the shopper's next activity begins a new visit."""
        return self.session_end_seconds or 1800.0

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"expected HH:MM (00:00-23:59), got {value!r}")
        return value

    @field_validator("collapse_key_template")
    @classmethod
    def _collapse_template(cls, value: str) -> str:
        try:
            value.format(user_id="u", trigger="t", item_id="i", category="c")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"collapse_key_template may use {{user_id}}, {{trigger}}, {{item_id}}, {{category}}: {exc}"
            ) from exc
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

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
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
