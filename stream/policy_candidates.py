"""The push policy's candidates built from facts: scores, engagement and the catalog entry at decision time.

:func:`make_candidate` turns a scored item into a :class:`stream.policy_types.Candidate`,
:func:`with_catalog` re-checks one against the item's current catalog entry, and :func:`push_expiry`
says when a push made from it expires. (Which items become candidates at all is
``stream.candidates``.) Pure: ``now`` is an argument.
"""

from __future__ import annotations

from dataclasses import replace

from stream.contract import CatalogUpdate
from stream.engagement import EngagedItem
from stream.interest import assess
from stream.policy_config import PolicyConfig
from stream.policy_types import Candidate


def push_expiry(candidate: Candidate, now: float, config: PolicyConfig) -> float:
    """When a push made now from this candidate expires: its trigger's TTL or the candidate's own deadline."""
    expiry = now + config.ttl_of(candidate.trigger)
    if candidate.expires_at is not None:
        expiry = min(expiry, candidate.expires_at)
    return expiry


def make_candidate(
    item_id: str,
    trigger: str,
    raw_score: float,
    calibrated: float,
    now: float,
    config: PolicyConfig,
    *,
    catalog: CatalogUpdate | None,
    cause: str,
    event_ts: float,
    offset: float = 0.0,
    engaged: EngagedItem | None = None,
    session_last_ts: float | None = None,
    source: str = "engaged",
    previous_price: float | None = None,
    decay_until: float | None = None,
) -> Candidate:
    """Build a candidate from the model's scores, the user's engagement and the item's catalog entry.

    Interest decays from the last engagement with the item (else the session's last event); the active
    promotion at ``now`` raises it (see :mod:`stream.interest`). ``offset`` only fills the threshold
    features; :func:`stream.policy.decide` applies the user's offset itself. Promotion triggers expire
    with the promotion. ``decay_until``: see :func:`stream.interest.assess`.
    """
    promo = catalog.promotion if catalog is not None else None
    active = promo is not None and promo.active_at(now)
    discount = promo.discount if active and promo is not None else 0.0
    last = engaged.last_ts if engaged is not None else session_last_ts
    assessment = assess(raw_score, calibrated, last, now, discount, trigger, offset, config, decay_until)
    features = dict(assessment.features)
    views = engaged.views if engaged is not None else 0
    features["views"] = float(views)
    expires_at = None
    ends_at = None
    if active and promo is not None:
        ends_at = promo.ends_at
        features["promotion_ends_in_seconds"] = promo.ends_at - now
        if trigger in ("promotion_start", "promotion_ending"):
            expires_at = promo.ends_at
    if previous_price is not None:
        features["previous_price"] = float(previous_price)
    return Candidate(
        item_id=item_id,
        trigger=trigger,
        interest=assessment.interest,
        raw_score=float(raw_score),
        features=features,
        category=catalog.category if catalog is not None else None,
        title=catalog.title if catalog is not None else None,
        price=catalog.effective_price(now) if catalog is not None else None,
        promotion_id=promo.promotion_id if active and promo is not None else None,
        discount=discount,
        in_stock=catalog is not None and catalog.stock > 0,
        # A promotion_ending timer outlives a promotion withdrawn early: nothing is ending then.
        promotion_valid=active or trigger != "promotion_ending",
        event_ts=event_ts,
        cause=cause,
        source=source,
        views=views,
        in_cart=engaged.in_cart if engaged is not None else False,
        previous_price=previous_price,
        expires_at=expires_at,
        promotion_ends_at=ends_at,
        in_catalog=catalog is not None,
    )


def with_catalog(candidate: Candidate, catalog: CatalogUpdate | None, now: float) -> Candidate:
    """Re-check a candidate against the item's current catalog entry (stock, promotion, price)."""
    if catalog is None:
        return replace(candidate, in_catalog=False, in_stock=False)
    promo = catalog.promotion
    valid = candidate.promotion_id is None or (
        promo is not None and promo.promotion_id == candidate.promotion_id and promo.active_at(now)
    )
    return replace(
        candidate,
        in_catalog=True,
        in_stock=catalog.stock > 0,
        promotion_valid=valid,
        price=catalog.effective_price(now),
        title=catalog.title,
        category=catalog.category,
    )
