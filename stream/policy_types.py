"""The push policy's vocabulary: :class:`Candidate`, :class:`Verdict`, outcomes and suppression reasons.

Types only, no rules: the decision is :func:`stream.policy.decide`. Every suppression carries a reason
from :data:`SUPPRESSION_REASONS` (bounded: safe as a metric label); adding a rule adds its reason
to :data:`SuppressReason`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["emit", "hold", "suppress"]

SuppressReason = Literal[
    "no_consent",  # opted out (or unknown consent with consent_default=False)
    "holdout",  # user in the global holdout group
    "user_active",  # the shopper is on the site now (an event within active_window_seconds)
    "not_in_catalog",  # no catalog entry for the item
    "out_of_stock",  # stock re-checked at decision / release time
    "promotion_invalid",  # the promotion the push mentions no longer runs
    "expired",  # the push's expires_at <= now + min_push_lifetime_seconds (too late to be useful)
    "bought",  # the shopper bought the item (a held push: after it was decided)
    "below_threshold",  # interest < threshold (trigger threshold + responsiveness offset)
    "item_repeat",  # same item pushed within item_repeat_window_seconds
    "already_held",  # the same item already waits for the end of quiet hours
    "category_today",  # category already pushed max_per_category_per_local_day times today (local)
    "cap_7d",  # max_pushes_per_7d reached (rolling)
    "cap_24h",  # max_pushes_per_24h reached (rolling)
    "cap_local_day",  # max_pushes_per_local_day reached (calendar day, user's time zone)
    "min_gap",  # last push less than min_gap_seconds ago
    "quiet_hours",  # quiet hours and action "drop", or the push would expire before they end
    "held_limit",  # quiet hours, but max_held pushes already wait
    "not_selected",  # eligible, but another candidate won (MMR, max_pushes_per_decision)
    "throttled",  # over the global throttle's budget: waits for a later minute (stream.throttle)
    "throttle_full",  # over budget and the throttle's queue is full: dropped
    "recent_push",  # a reminder moment within reminder_push_gap_seconds of the last push: it waits
]
SUPPRESSION_REASONS: tuple[str, ...] = SuppressReason.__args__  # type: ignore[attr-defined]


@dataclass(init=False, slots=True)
class Candidate:
    """An item that could be pushed now, with the facts the policy and the explanation need.

    Treat it as immutable (use :func:`dataclasses.replace`); it is not frozen only because frozen
    dataclasses are several times slower to build, and the worker builds tens per event.
    """

    item_id: str
    trigger: str
    interest: float  # already decayed and promotion-adjusted, in [0, 1]
    raw_score: float
    features: dict[str, float]
    category: str | None
    title: str | None
    price: float | None  # effective price at decision time
    promotion_id: str | None
    discount: float  # active promotion depth, 0 without one
    in_stock: bool
    promotion_valid: bool  # True when there is no promotion to honour
    event_ts: float  # event time of what triggered the decision
    cause: str  # makes the push id deterministic (event id, catalog version, timer cause)
    source: str = "engaged"
    views: int = 0
    in_cart: bool = False
    previous_price: float | None = None  # for price_drop: the price before the drop
    expires_at: float | None = None  # the candidate's own deadline (e.g. the promotion's end)
    promotion_ends_at: float | None = None
    in_catalog: bool = True
    # Expected incremental value of pushing it (stream.response_estimates); None: rank by interest.
    value: float | None = None

    def __init__(
        self,
        item_id: str,
        trigger: str,
        interest: float,
        raw_score: float,
        features: dict[str, float],
        category: str | None,
        title: str | None,
        price: float | None,
        promotion_id: str | None,
        discount: float,
        in_stock: bool,
        promotion_valid: bool,
        event_ts: float,
        cause: str,
        source: str = "engaged",
        views: int = 0,
        in_cart: bool = False,
        previous_price: float | None = None,
        expires_at: float | None = None,
        promotion_ends_at: float | None = None,
        in_catalog: bool = True,
        value: float | None = None,
    ) -> None:
        self.item_id = item_id
        self.trigger = trigger
        self.interest = interest
        self.raw_score = raw_score
        self.features = features
        self.category = category
        self.title = title
        self.price = price
        self.promotion_id = promotion_id
        self.discount = discount
        self.in_stock = in_stock
        self.promotion_valid = promotion_valid
        self.event_ts = event_ts
        self.cause = cause
        self.source = source
        self.views = views
        self.in_cart = in_cart
        self.previous_price = previous_price
        self.expires_at = expires_at
        self.promotion_ends_at = promotion_ends_at
        self.in_catalog = in_catalog
        self.value = value


@dataclass(init=False, slots=True)
class Verdict:
    """The decision for one candidate. ``reason`` is "ok" for emits and a suppression code otherwise.

    Read only (a new one replaces it). Not frozen: several are built per decision, and a frozen
    ``__init__`` runs as bytecode at about three times the cost (``stream.native``)."""

    outcome: Outcome
    reason: str
    release_at: float | None = None
    threshold: float | None = None

    def __init__(
        self,
        outcome: Outcome,
        reason: str,
        release_at: float | None = None,
        threshold: float | None = None,
    ) -> None:
        self.outcome = outcome
        self.reason = reason
        self.release_at = release_at
        self.threshold = threshold


Similarity = Callable[[Candidate, Candidate], float]
