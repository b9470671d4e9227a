"""The policy's settings for where candidates come from: quotas, co-visitation, trending, the interest index.

Part of :class:`stream.policy_config.PolicyConfig` (env ``KAIROS_POLICY__*``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class CandidatesConfig(BaseModel):
    """Candidate sources and their quotas, and the item -> users index the catalog triggers ask."""

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
    new_arrival_asks_per_user_hour: int = Field(
        10,
        ge=1,
        description="Most new items one user is asked about per hour of the partition's clock: of a burst of "
        "new items (a season's import, a broken producer) each user hears of the first ones that reach them "
        "only.",
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
