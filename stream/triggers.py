"""Every trigger, in one table: the moments Kairos may push at, and what each asks the decider.

A trigger turns a moment (a behaviour event, a due timer, a catalog change) into a
:class:`TriggerAsk`: which items of the user to score, what caused it (the push id derives from it)
and which of the items may be pushed. The engine (``stream.engine``) captures the user's state
with the ask, scores it and runs the policy's rules (``stream/rules.py``); a trigger decides nothing
itself. Pure functions: no I/O, no clock.

=====================  ===========  ======================================================================
trigger                source       when
=====================  ===========  ======================================================================
``in_session``         event        a behaviour event, at most once per ``decision_interval_seconds``
``cart_abandonment``   timer        ``cart_abandonment_delay_seconds`` after an add_to_cart still in cart;
                                    and a carted item at the end of a session
``browse_abandonment`` timer        with ``session_end_browse``, the end of a session
                                    (``session_end_seconds`` without activity): the items viewed
                                    ``browse_min_views`` times and not carted
``promotion_ending``   timer        ``promotion_ending_lead_seconds`` before a promotion of interest ends
``price_drop``         catalog      the item's effective price went down
``back_in_stock``      catalog      the item's stock went from 0 to positive
``promotion_start``    catalog      a promotion began on the item
``new_arrival``        catalog      a new item appeared in the catalog: shoppers interested in the items
                                    most like it (the model's item space; content-mapped when the item
                                    has no history) are asked about it
``reminder``           timer        ``reminder_seconds`` without a return after the shopper's last
                                    activity: their abandoned items not pushed yet (interest judged as
                                    they left), when the discovery pool is empty (first, with
                                    ``reminder_discovery_first`` off)
``discovery``          timer        the same moment, first (``reminder_discovery_first``; off: only when
                                    nothing was abandoned): popular items of the shopper's recent
                                    categories they have not seen (``stream.discovery``)
(both again)           timer        with ``reminder_again_seconds``, that long after the reminder moment if
                                    the shopper is still away: the same ask, its cause marked ``/again``;
                                    the first moment, within ``reminder_push_gap_seconds`` of the last
                                    push, waits until that long after it
=====================  ===========  ======================================================================

Adding a trigger: its row in :data:`TRIGGERS`, its name in ``stream.contract.Trigger`` (the wire
enumeration), for a catalog trigger its detector in :data:`CATALOG_FIRES`, for a timer its builder in
:data:`TIMER_ASKS` (and its arming in ``stream.timers``), and a test. A timer's builder gets the
shopper's discovery pool on demand (:data:`Discover`; only the reminder uses it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from stream.contract import CatalogUpdate
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.timers import REMINDER_AGAIN, Timer

Source = Literal["event", "timer", "catalog"]


@dataclass(frozen=True)
class TriggerSpec:
    """One trigger: its name (the push's ``trigger`` field), where it comes from and what it means."""

    name: str
    source: Source
    doc: str
    after_leaving: bool  # fires after the shopper left the site (explanations say when they engaged)
    # Interest is judged as the shopper left (``session_end_seconds`` after their last activity), not
    # decayed through the time they have stayed away since: staying away is what the trigger is for.
    interest_as_left: bool = False


TRIGGERS: dict[str, TriggerSpec] = {
    spec.name: spec
    for spec in (
        TriggerSpec("in_session", "event", "a behaviour event while the shopper browses", False),
        TriggerSpec("cart_abandonment", "timer", "a carted item not bought after a delay or a session", True),
        TriggerSpec("browse_abandonment", "timer", "items viewed repeatedly, not carted, session over", True),
        TriggerSpec("promotion_ending", "timer", "a promotion of interest is about to end", True),
        TriggerSpec("price_drop", "catalog", "the item's effective price went down", True),
        TriggerSpec("back_in_stock", "catalog", "the item came back in stock", True),
        TriggerSpec("promotion_start", "catalog", "a promotion began on the item", False),
        TriggerSpec("new_arrival", "catalog", "a new item like the ones the shopper cared about", True),
        TriggerSpec(
            "reminder",
            "timer",
            "the shopper stayed away: an abandoned item not pushed yet",
            True,
            interest_as_left=True,
        ),
        TriggerSpec(
            "discovery",
            "timer",
            "the shopper stayed away and left nothing: a popular item of their categories they have not seen",
            True,
            interest_as_left=True,
        ),
    )
}

# The shopper's discovery pool, (item, interest) best first (``stream.discovery.discovery_pool`` with
# the engine's catalog and popularity at the decision time), computed only when a trigger asks for it.
Discover = Callable[[Engagement], Sequence[tuple[str, float]]]


def no_discovery(engagement: Engagement) -> Sequence[tuple[str, float]]:
    """A :data:`Discover` with nothing to offer (discovery off, or a caller without a catalog)."""
    return ()


@dataclass(frozen=True)
class TriggerAsk:
    """What a trigger asks the decider to score and decide (the engine adds the user's state)."""

    trigger: str
    cause: str  # what made it fire; with the user, item and trigger it makes the push id
    event_ts: float  # the time of what caused it (the push's event_ts)
    items: tuple[str, ...]
    sources: tuple[str, ...]  # per item, the candidate source ("engaged", "timer", "catalog", ...)
    pushable: frozenset[str] | None = None  # None: every item; else the others are scored for the index only
    previous_price: float | None = None  # price_drop: the price before
    # Per item, the trigger's own interest, used instead of the model's (discovery: the model ranks
    # items the shopper never touched poorly; see stream.discovery). None: the model's.
    priors: tuple[float, ...] | None = None
    # A reminder moment's own timer: re-armed instead of decided while the shopper's last push is recent
    # (stream.rules.reminder_waits_until). None for every other trigger.
    rearm: Timer | None = None


def cart_abandonment(
    timer: Timer, engagement: Engagement, config: PolicyConfig, discover: Discover = no_discovery
) -> TriggerAsk | None:
    """The carted item is still in the cart when the delay is over: ask about it (not when the shopper
    is likely back soon, :func:`returning_shopper`)."""
    engaged = engagement.get(timer.item_id)
    if engaged is None or not engaged.in_cart or returning_shopper(engagement, config):
        return None
    return TriggerAsk(
        timer.kind, f"{timer.kind}:{timer.cause}", timer.created_at, (timer.item_id,), ("timer",)
    )


def promotion_ending(
    timer: Timer, engagement: Engagement, config: PolicyConfig, discover: Discover = no_discovery
) -> TriggerAsk | None:
    """A promotion the shopper cared about ends soon: ask about its item."""
    return TriggerAsk(
        timer.kind, f"{timer.kind}:{timer.cause}", timer.created_at, (timer.item_id,), ("timer",)
    )


def session_end(
    timer: Timer, engagement: Engagement, config: PolicyConfig, discover: Discover = no_discovery
) -> TriggerAsk | None:
    """The shopper left: their carted and repeatedly viewed items, not bought, most recent first.

    The ask's trigger is ``browse_abandonment``; a carted item's candidate becomes ``cart_abandonment``
    (:func:`candidate_trigger`). Every item the shopper engaged with is scored (up to
    ``quota_engaged``), so the item -> interested users index learns the session's interests for
    catalog triggers (a price drop of an item viewed once); only the abandoned ones (``pushable``, at
    most ``session_end_max_items``) may be pushed now; with ``session_end_browse`` off only the carted
    ones, and the viewed ones wait for the reminder. Nothing may be pushed to a shopper likely back
    soon (:func:`returning_shopper`).
    """
    items = engagement.engaged()[: config.quota_engaged]
    if not items:
        return None
    pushable = (
        frozenset()
        if returning_shopper(engagement, config)
        else frozenset(abandoned(items, engagement, config, browsed=config.session_end_browse))
    )
    return TriggerAsk(
        "browse_abandonment",
        f"session_end:{timer.cause}",
        timer.created_at,
        tuple(items),
        ("engaged",) * len(items),
        pushable,
    )


def returning_shopper(engagement: Engagement, config: PolicyConfig) -> bool:
    """Whether the shopper's last visit began less than ``returning_visit_seconds`` after the one before.

    Such a shopper is likely back soon and checks out their cart on their own, so an abandonment push
    now mostly brings forward a purchase that would happen anyway; the reminder still comes if they stay
    away. With 12 h, as many purchases from 11 % fewer pushes: policy lab +236 against +235 (eight
    worlds), the engine's push benchmark +216 against +217 (seeds 11-18; ``benchmarks/README.md``).
    """
    return config.returning_visit_seconds > 0 and engagement.returns_soon(config.returning_visit_seconds)


def abandoned(
    items: list[str], engagement: Engagement, config: PolicyConfig, browsed: bool = True
) -> list[str]:
    """Those of ``items`` (most recent first) in the cart or (``browsed``) viewed ``browse_min_views``
    times, at most ``session_end_max_items``, in the same order."""
    out: list[str] = []
    for item in items:
        e = engagement.get(item)
        if e is not None and (e.in_cart or (browsed and e.views >= config.browse_min_views)):
            out.append(item)
            if len(out) >= config.session_end_max_items:
                break
    return out


def reminder(
    timer: Timer, engagement: Engagement, config: PolicyConfig, discover: Discover = no_discovery
) -> TriggerAsk | None:
    """The shopper has stayed away ``reminder_seconds``: their abandoned items once more.

    The session end's abandoned items, all pushable, as trigger ``reminder`` (cause ``reminder:<the
    last activity>``): a trigger of its own, so its uplift is learned and its threshold set apart. An
    item pushed within ``item_repeat_window_seconds`` is stopped by that rule, so the reminder is the
    next abandoned item. When nothing was abandoned (or always, with ``reminder_discovery_first``), the
    moment is a ``discovery`` ask instead: the shopper's discovery pool (``discover``), valued by the
    pool, not the model. Nothing is asked when both are empty. The second moment
    (``stream.timers.reminder_again``) asks the same way, its cause marked ``/again`` (its own push ids).
    The first moment's ask carries its timer (``rearm``): less than ``reminder_push_gap_seconds`` after
    the shopper's last push, it waits until that long after it (``stream.rules.reminder_waits_until``).
    """
    again = timer.item_id == REMINDER_AGAIN
    cause = f"{timer.cause}/again" if again else timer.cause
    # Only the first moment may wait out a recent push: the second is this absence's last, hours after
    # the first and often blocked that day (one push per category per local day); waiting moved it into
    # the next day's budget (both waiting: +248 purchases from 8,676 pushes on seeds 11-18, over the
    # marketer's 8,208; docs/policy.md).
    rearm = None if again else timer
    items = abandoned(engagement.engaged()[: config.quota_engaged], engagement, config)
    # The pool is computed only when it may be asked about (it reads the catalog and the indexes).
    pool = discover(engagement) if not items or config.reminder_discovery_first else []
    if pool:
        return TriggerAsk(
            "discovery",
            f"discovery:{cause}",
            timer.created_at,
            tuple(item for item, _ in pool),
            ("popular",) * len(pool),
            priors=tuple(interest for _, interest in pool),
            rearm=rearm,
        )
    if not items:
        return None
    return TriggerAsk(
        "reminder",
        f"reminder:{cause}",
        timer.created_at,
        tuple(items),
        ("engaged",) * len(items),
        rearm=rearm,
    )


# Timer kind -> the trigger that turns a due timer into an ask (None: nothing to ask any more).
TIMER_ASKS: dict[str, Callable[[Timer, Engagement, PolicyConfig, Discover], TriggerAsk | None]] = {
    "cart_abandonment": cart_abandonment,
    "promotion_ending": promotion_ending,
    "session_end": session_end,
    "reminder": reminder,
}


def timer_ask(
    timer: Timer, engagement: Engagement, config: PolicyConfig, discover: Discover = no_discovery
) -> TriggerAsk | None:
    """The ask of a due timer, through its trigger in :data:`TIMER_ASKS`."""
    return TIMER_ASKS[timer.kind](timer, engagement, config, discover)


def candidate_trigger(ask_trigger: str, in_cart: bool) -> str:
    """The trigger a candidate's push carries: at a session's end a carted item is cart abandonment."""
    if ask_trigger == "browse_abandonment" and in_cart:
        return "cart_abandonment"
    return ask_trigger


# -- catalog triggers: which a change fires ---------------------------------------------------------
#
# Each detector looks at the item's previous version (None: a first sighting), its new one and the time
# the change is judged at, and returns the cause of its push (deterministic: push ids derive from it)
# or None. A cause names the catalog version (``updated_at``), so a redelivered update maps onto the
# same push ids; a new arrival's cause is the item alone, so it is announced to a shopper at most once.


def _new_arrival(previous: CatalogUpdate | None, current: CatalogUpdate, now: float) -> str | None:
    """A first sighting of an item in stock."""
    return f"arrival@{current.item_id}" if previous is None and current.stock > 0 else None


def _promotion_start(previous: CatalogUpdate | None, current: CatalogUpdate, now: float) -> str | None:
    """A promotion that was not active before is active at ``now`` (item in stock)."""
    promo = current.promotion
    if promo is None or not promo.active_at(now) or current.stock <= 0:
        return None
    before = previous.promotion if previous is not None else None
    was_active = (
        previous is not None
        and before is not None
        and before.promotion_id == promo.promotion_id
        and before.active_at(previous.updated_at)
    )
    return None if was_active else f"{promo.promotion_id}@{current.item_id}"


def _price_drop(previous: CatalogUpdate | None, current: CatalogUpdate, now: float) -> str | None:
    """The effective price fell (item in stock); a drop that is only a new promotion is promotion_start."""
    if previous is None or current.stock <= 0:
        return None
    cheaper = current.effective_price(now) < previous.effective_price(previous.updated_at) - 1e-9
    only_the_promotion = (
        _promotion_start(previous, current, now) is not None and current.price >= previous.price
    )
    if not cheaper or only_the_promotion:
        return None
    return f"{current.item_id}@{current.updated_at:.3f}"


def _back_in_stock(previous: CatalogUpdate | None, current: CatalogUpdate, now: float) -> str | None:
    """Stock went from 0 to more."""
    if previous is None or previous.stock != 0 or current.stock <= 0:
        return None
    return f"{current.item_id}@{current.updated_at:.3f}"


# Catalog trigger -> its detector, in the order a change's asks are made.
CATALOG_FIRES: dict[str, Callable[[CatalogUpdate | None, CatalogUpdate, float], str | None]] = {
    "new_arrival": _new_arrival,
    "promotion_start": _promotion_start,
    "price_drop": _price_drop,
    "back_in_stock": _back_in_stock,
}


def catalog_triggers(
    previous: CatalogUpdate | None, current: CatalogUpdate, now: float
) -> list[tuple[str, str]]:
    """The triggers a catalog change fires, each with its cause (:data:`CATALOG_FIRES`, in order).

    A first sighting fires no price_drop or back_in_stock.
    """
    fired: list[tuple[str, str]] = []
    for trigger, fires in CATALOG_FIRES.items():
        cause = fires(previous, current, now)
        if cause is not None:
            fired.append((trigger, cause))
    return fired
