"""Readable reasons for pushes: "You left this in your cart 2 hours ago; now 20 % off"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream.text import plain_text
from stream.triggers import TRIGGERS

if TYPE_CHECKING:
    from stream.policy_types import Candidate, Verdict


def _percent(discount: float) -> str:
    return f"{round(discount * 100)} %"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        minutes = max(1, round(seconds / 60))
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    if seconds < 36 * 3600:
        hours = round(seconds / 3600)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    days = round(seconds / 86400)  # a reminder a day or more later reads "2 days ago", not "49 hours"
    return f"{days} day{'s' if days != 1 else ''}"


# Triggers that fire after the shopper left: the explanation says how long ago they engaged.
_AFTER_LEAVING = frozenset(name for name, spec in TRIGGERS.items() if spec.after_leaving)


def explain(candidate: Candidate, verdict: Verdict) -> str:
    """The human-readable reason for a push, e.g. "You viewed this 3 times; it is now 20 % off".

    One line of plain text (:func:`stream.text.plain_text`), whatever the category it quotes holds.
    For holds and suppressions the reason code is appended so the audit trail reads on its own.
    """
    c = candidate
    why: str | None = None
    age = c.features.get("age_seconds", 0.0)
    # How long ago, for the moments after the shopper left ("left in your cart 2 hours ago").
    ago = f" {_duration(age)} ago" if c.trigger in _AFTER_LEAVING and age >= 60 else ""
    if c.trigger == "new_arrival":
        why = (
            f"New in: like the {c.category.lower()} you looked at" if c.category else "New in, picked for you"
        )
    elif c.trigger == "discovery":
        aisle = c.category.lower() if c.category else None
        why = f"Popular in {aisle}, which you looked at{ago}" if aisle else "Popular right now"
    elif c.trigger == "cart_abandonment" or c.in_cart:
        why = f"You left this in your cart{ago}"
    elif c.views >= 2:
        why = f"You viewed this {c.views} times{ago}"
    elif c.views == 1:
        why = "You viewed this"
    elif c.source == "new":
        why = f"New in {c.category}" if c.category else "New in"
    elif c.source == "covisited":
        why = "Shoppers who looked at the items you viewed also liked this"
    elif c.source == "trending":
        why = f"Trending now in {c.category}" if c.category else "Trending now"

    offer: str | None = None
    if c.trigger == "price_drop":
        if c.previous_price is not None and c.price is not None and c.price < c.previous_price:
            offer = f"the price dropped from {c.previous_price:.2f} to {c.price:.2f}"
        else:
            offer = "the price just dropped"
    elif c.trigger == "back_in_stock":
        offer = "it is back in stock"
    elif c.trigger == "promotion_ending" and c.discount > 0:
        # From the decision's time: the timer's event_ts is when it was armed, hours before.
        left = c.features.get("promotion_ends_in_seconds")
        offer = (
            f"the {_percent(c.discount)} discount ends in {_duration(left)}"
            if left and left > 0
            else (f"the {_percent(c.discount)} discount ends soon")
        )
    elif c.discount > 0:
        offer = f"it is now {_percent(c.discount)} off"

    parts = [p for p in (why, offer) if p]
    # The category is the catalog's text: the reason stays one line of plain text whatever it holds.
    text = plain_text("; ".join(parts)) if parts else "Picked for you"
    text = text[0].upper() + text[1:]
    if verdict.outcome == "hold":
        return f"{text} [held: {verdict.reason.replace('_', ' ')}]"
    if verdict.outcome == "suppress":
        return f"{text} [not sent: {verdict.reason}]"
    return text
