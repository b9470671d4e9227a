"""The policy's settings for its timers: cart abandonment, session end, reminders, discovery, promotions.

Part of :class:`stream.policy_config.PolicyConfig` (env ``KAIROS_POLICY__*``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class TimersConfig(BaseModel):
    """When the timer triggers fire and what they may push."""

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
    discovery_max_category_items: int = Field(
        50_000,
        ge=1,
        description="A category with more catalogued items than this is left out of discovery pools "
        "(counted: kairos_discovery_categories_left_out_total): valuing it scans every item of it, again "
        "after any change to one of them, which held the event loop about 2 s per 200,000 items.",
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

    @property
    def visit_gap_seconds(self) -> float:
        """Time without activity after which the shopper's next activity begins a new visit."""
        return self.session_end_seconds or 1800.0
