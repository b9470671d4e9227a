"""The push decision policy: which candidate (if any) becomes a push now, which is held, and why not.

Pure: no I/O, no clock (``now`` is event time, an argument). The worker calls, per user input:

1. :func:`make_candidate` for each scored item (interest, features, catalog facts at decision time);
2. :func:`decide` -> one :class:`Verdict` per candidate (at most ``max_pushes_per_decision`` emits);
3. for an emit, :func:`build_push` then :func:`record_push`; for a hold, :func:`build_push` then
   :func:`record_hold`; and, on later inputs of that user, :func:`release_held` (then
   :func:`record_push` for what it emits).

Every suppression carries a reason from :data:`SUPPRESSION_REASONS` (bounded: safe as a metric label).
``docs/policy.md`` documents every rule with its config field.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream import rules
from stream.candidates import EngagedItem
from stream.contract import CatalogUpdate, Decision, Push, push_id
from stream.explain import explain
from stream.interest import assess, decay_factor, effective_threshold
from stream.policy_config import PolicyConfig
from stream.policy_state import HeldPush, PushRecord, UserPolicyState

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
]
SUPPRESSION_REASONS: tuple[str, ...] = SuppressReason.__args__  # type: ignore[attr-defined]

_DAY = 86400.0
_DEFAULT_CONFIG = PolicyConfig.model_validate({})


@dataclass(slots=True)
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


@dataclass(frozen=True)
class Verdict:
    """The decision for one candidate. ``reason`` is "ok" for emits and a suppression code otherwise."""

    outcome: Outcome
    reason: str
    release_at: float | None = None
    threshold: float | None = None


Similarity = Callable[[Candidate, Candidate], float]


def in_holdout(user_id: str, share: float, salt: str) -> bool:
    """Whether the user is in the holdout group: a stable hash (BLAKE2b) of salt and user id below ``share``.

    Stable across processes, runs and Python versions (Python's ``hash()`` is salted per process).
    """
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def user_zone(state: UserPolicyState, config: PolicyConfig) -> ZoneInfo:
    """The user's time zone, or the configured default when unknown or invalid."""
    zone = _zone(state.time_zone) if state.time_zone else None
    if zone is None:
        zone = _zone(config.default_time_zone)
    assert zone is not None  # the config validates its default zone
    return zone


def quiet_hours_end(now: float, zone: ZoneInfo, config: PolicyConfig) -> float | None:
    """When the quiet hours around ``now`` end (epoch seconds), or None when ``now`` is outside them.

    Quiet hours are wall-clock times in the user's zone, so across a DST change the window is an hour
    shorter or longer in real time. An end time that does not exist that night (inside a spring-forward
    gap) resolves to the first instant after the gap.
    """
    start, end = config.quiet_minutes()
    if start == end:
        return None
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute + local.second / 60.0
    if start < end:
        if not start <= minute < end:
            return None
        day = local.date()
    elif minute >= start:
        day = local.date() + timedelta(days=1)
    elif minute < end:
        day = local.date()
    else:
        return None
    release = datetime.combine(day, time(end // 60, end % 60), tzinfo=zone)
    return release.timestamp()


def current_offset(state: UserPolicyState, now: float, config: PolicyConfig) -> float:
    """The user's responsiveness offset at ``now``: it decays toward 0 with its half-life."""
    if not state.responsiveness or state.responsiveness_ts is None:
        return state.responsiveness
    return state.responsiveness * decay_factor(
        now - state.responsiveness_ts, config.responsiveness_half_life_seconds
    )


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
) -> Candidate:
    """Build a candidate from the model's scores, the user's engagement and the item's catalog entry.

    Interest decays from the last engagement with the item (else the session's last event); the active
    promotion at ``now`` raises it (see :mod:`stream.interest`). ``offset`` only fills the threshold
    features; :func:`decide` applies the user's offset itself. Promotion triggers expire with the promotion.
    """
    promo = catalog.promotion if catalog is not None else None
    active = promo is not None and promo.active_at(now)
    discount = promo.discount if active and promo is not None else 0.0
    last = engaged.last_ts if engaged is not None else session_last_ts
    assessment = assess(raw_score, calibrated, last, now, discount, trigger, offset, config)
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
        promotion_valid=True,
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


def default_similarity(a: Candidate, b: Candidate) -> float:
    """1 for the same item or the same (known) category, else 0."""
    if a.item_id == b.item_id:
        return 1.0
    return 1.0 if a.category is not None and a.category == b.category else 0.0


def _as_candidate(record: PushRecord) -> Candidate:
    # A past push seen as a candidate, so similarity functions can compare with it.
    return Candidate(
        record.item_id,
        record.trigger,
        0.0,
        0.0,
        {},
        record.category,
        None,
        None,
        None,
        0.0,
        True,
        True,
        record.created_at,
        record.push_id,
    )


def _user_facts(
    user_id: str,
    state: UserPolicyState,
    now: float,
    config: PolicyConfig,
    records: Sequence[PushRecord] | None = None,
    active: bool = False,
) -> rules.UserFacts:
    consent = state.opted_in if state.opted_in is not None else config.consent_default
    return rules.UserFacts(
        consent,
        in_holdout(user_id, config.holdout_share, config.holdout_salt),
        now,
        config,
        state.pushes if records is None else records,
        user_zone(state, config),
        active,
    )


def user_blocked(
    user_id: str, state: UserPolicyState, now: float, config: PolicyConfig, active: bool = False
) -> str | None:
    """The reason no push at all may go to this user now (the user-level rules of ``stream.rules``).

    A cheap pre-check: the worker skips scoring candidates for a blocked user. :func:`decide` applies
    the same rules, so skipping changes no outcome.
    """
    return rules.user_block(_user_facts(user_id, state, now, config, active=active), "precheck")


def _mmr(
    pool: list[Candidate],
    history: list[Candidate],
    k: int,
    lam: float,
    similarity: Similarity,
    category_room: Callable[[Candidate, list[Candidate]], bool],
) -> list[Candidate]:
    """Greedy maximal marginal relevance: relevance = interest, redundancy = max similarity to the picked.

    When the candidates carry a ``value`` (expected incremental value), relevance is that value divided
    by the pool's largest magnitude, so it lives on the same [-1, 1] scale as similarity.
    """
    chosen: list[Candidate] = []
    rest = list(pool)
    valued = [c.value for c in pool if c.value is not None]
    scale = max((abs(v) for v in valued), default=0.0)

    def relevance(c: Candidate) -> float:
        if c.value is None or not valued:
            return c.interest
        return c.value / scale if scale > 0 else 0.0

    # Each candidate's largest similarity to the context (history, then the picked ones), kept across
    # rounds: a round only compares with the one picked last. None: nothing compared yet (max of
    # nothing is 0). The same maxima as comparing with the whole context every round.
    closest: list[float | None] = [None] * len(rest)
    compared = [0] * len(rest)  # how many context entries each ``closest`` has seen
    while rest and len(chosen) < k:
        context = history + chosen
        best_i = -1
        best_value = -math.inf
        for i, c in enumerate(rest):
            if not category_room(c, chosen):
                continue
            near = closest[i]
            for o in context[compared[i] :]:
                value = similarity(c, o)
                if near is None or value > near:
                    near = value
            closest[i], compared[i] = near, len(context)
            value = lam * relevance(c) - (1.0 - lam) * (0.0 if near is None else near)
            if value > best_value + 1e-12:
                best_i, best_value = i, value
        if best_i < 0:
            break
        chosen.append(rest.pop(best_i))
        del closest[best_i], compared[best_i]
    return chosen


def decide(
    user_id: str,
    candidates: Sequence[Candidate],
    state: UserPolicyState,
    now: float,
    config: PolicyConfig,
    similarity: Similarity | None = None,
    active: bool = False,
) -> list[tuple[Candidate, Verdict]]:
    """Decide for every candidate: emit, hold (quiet hours) or suppress, with a reason code.

    The rules are :data:`stream.rules.RULES` (path "decide", in table order: consent, holdout, the
    active shopper; per candidate: catalog, stock, promotion validity, expiry, threshold (trigger
    threshold + the user's responsiveness offset), item repeat, already held, category per local day;
    per user: caps (7 d, 24 h, local day), minimum gap); then MMR picks at most
    ``max_pushes_per_decision`` among the eligible; in quiet hours those are held or dropped.
    Does not change ``state``: the caller records what it emits or holds. Verdicts come in input order.
    """
    if not candidates:
        return []
    facts = _user_facts(user_id, state, now, config, active=active)
    stopped = rules.gate(facts, "decide")
    if stopped is not None:
        return [(c, Verdict("suppress", stopped)) for c in candidates]

    zone = user_zone(state, config)
    offset = current_offset(state, now, config)
    recent = facts.history
    held_items = {h.push.item_id for h in state.held}

    verdicts: list[Verdict | None] = []
    thresholds: list[float] = []
    eligible: list[Candidate] = []
    by_trigger: dict[str, float] = {}
    # Suppressions are shared objects: most candidates of a call share a reason and a threshold.
    shared: dict[tuple[str, float], Verdict] = {}
    for c in candidates:
        threshold = by_trigger.get(c.trigger)
        if threshold is None:
            threshold = by_trigger[c.trigger] = effective_threshold(c.trigger, offset, config)
        thresholds.append(threshold)
        item = rules.ItemFacts(
            c.item_id,
            c.category,
            c.in_catalog,
            c.in_stock,
            c.promotion_valid,
            push_expiry(c, now, config),
            c.interest,
            threshold,
            c.item_id in held_items,
        )
        reason = rules.first_block(facts, item, "decide")
        if reason is None:
            eligible.append(c)
            verdicts.append(None)
        else:
            verdict = shared.get((reason, threshold))
            if verdict is None:
                verdict = shared[(reason, threshold)] = Verdict("suppress", reason, threshold=threshold)
            verdicts.append(verdict)

    # Room left under the caps; with a minimum gap, two pushes at the same instant are never allowed.
    room = min(
        config.max_pushes_per_decision,
        config.max_pushes_per_7d - recent.in_7d,
        config.max_pushes_per_24h - recent.in_24h,
        config.max_pushes_per_local_day - recent.today,
    )
    if config.min_gap_seconds > 0:
        room = min(room, 1)
    limit = config.max_per_category_per_local_day

    def category_room(c: Candidate, chosen: list[Candidate]) -> bool:
        if not limit or c.category is None:
            return True
        used = recent.categories_today.get(c.category, 0) + sum(1 for o in chosen if o.category == c.category)
        return used < limit

    history = [_as_candidate(r) for r in state.pushes[-config.mmr_history :]] if config.mmr_history else []
    chosen = _mmr(
        eligible, history, max(room, 0), config.mmr_lambda, similarity or default_similarity, category_room
    )
    chosen_ids = {id(c) for c in chosen}

    release_at = quiet_hours_end(now, zone, config)
    held_room = config.max_held - len(state.held)
    out: list[tuple[Candidate, Verdict]] = []
    for c, verdict, threshold in zip(candidates, verdicts, thresholds, strict=True):
        if verdict is None:
            if id(c) not in chosen_ids:
                verdict = Verdict("suppress", "not_selected", threshold=threshold)
            elif release_at is None:
                verdict = Verdict("emit", "ok", threshold=threshold)
            elif (
                config.quiet_hours_action == "drop"
                or push_expiry(c, now, config) <= release_at + config.min_push_lifetime_seconds
            ):
                verdict = Verdict("suppress", "quiet_hours", threshold=threshold)
            elif held_room <= 0:
                verdict = Verdict("suppress", "held_limit", threshold=threshold)
            else:
                held_room -= 1
                verdict = Verdict("hold", "quiet_hours", release_at=release_at, threshold=threshold)
        out.append((c, verdict))
    return out


def build_push(
    user_id: str, candidate: Candidate, verdict: Verdict, now: float, config: PolicyConfig, model_version: str
) -> Push:
    """The outbound push for an emitted (or held) candidate; its id is deterministic (see ``push_id``)."""
    threshold = verdict.threshold
    if threshold is None:
        threshold = effective_threshold(candidate.trigger, 0.0, config)
    return Push(
        push_id=push_id(user_id, candidate.item_id, candidate.trigger, candidate.cause),
        user_id=user_id,
        item_id=candidate.item_id,
        trigger=candidate.trigger,  # type: ignore[arg-type]
        reason=explain(candidate, Verdict("emit", "ok")),
        features={k: float(v) for k, v in candidate.features.items()},
        score=float(candidate.interest),
        threshold=float(threshold),
        model_version=model_version,
        event_ts=float(candidate.event_ts),
        created_at=float(now),
        expires_at=float(push_expiry(candidate, now, config)),
        promotion_id=candidate.promotion_id,
        title=candidate.title,
        category=candidate.category,
        price=None if candidate.price is None else float(candidate.price),
        collapse_key=collapse_key(user_id, candidate, config),
    )


def collapse_key(user_id: str, candidate: Candidate, config: PolicyConfig) -> str | None:
    """The push's collapse key from ``collapse_key_template`` (None when the template is empty)."""
    template = config.collapse_key_template
    if not template:
        return None
    key = template.format(
        user_id=user_id,
        trigger=candidate.trigger,
        item_id=candidate.item_id,
        category=candidate.category or "",
    )
    return key[:256]


_DECISION_OUTCOMES = {"emit": "emitted", "hold": "held", "suppress": "suppressed"}


def build_decision(
    user_id: str, candidate: Candidate, verdict: Verdict, now: float, config: PolicyConfig
) -> Decision:
    """The audit record of one verdict (``reason``: "ok", "quiet_hours" or the suppression code)."""
    threshold = verdict.threshold
    if threshold is None:
        threshold = effective_threshold(candidate.trigger, 0.0, config)
    return Decision(
        user_id=user_id,
        item_id=candidate.item_id,
        trigger=candidate.trigger,  # type: ignore[arg-type]
        outcome=_DECISION_OUTCOMES[verdict.outcome],  # type: ignore[arg-type]
        reason=verdict.reason,
        score=float(candidate.interest),
        threshold=float(threshold),
        ts=float(now),
    )


def record_push(
    state: UserPolicyState,
    push: Push,
    config: PolicyConfig | None = None,
    sent_at: float | None = None,
    context: str = "",
    ghost: bool = False,
) -> PushRecord:
    """Remember an emitted push (caps, repeats, feedback); prunes the history to its bounds.

    ``sent_at`` defaults to ``push.created_at``; pass the release time for a held push. Records older
    than every window that needs them (7 d, item repeat, attribution + ignore) are dropped, and at most
    ``max_push_records`` are kept.
    """
    config = config or _DEFAULT_CONFIG
    at = push.created_at if sent_at is None else sent_at
    record = PushRecord(
        push.push_id,
        push.item_id,
        push.category,
        push.trigger,
        at,
        push.expires_at,
        context=context,
        ghost=ghost,
    )
    state.pushes.append(record)
    keep = max(
        7 * _DAY,
        config.item_repeat_window_seconds,
        config.attribution_window_seconds + config.ignore_after_seconds,
    )
    state.pushes = [r for r in state.pushes if at - r.created_at < keep][-config.max_push_records :]
    return record


def record_hold(
    state: UserPolicyState,
    push: Push,
    release_at: float,
    config: PolicyConfig | None = None,
    context: str = "",
) -> None:
    """Keep a push for the end of quiet hours (bounded by ``max_held``; the oldest goes first)."""
    config = config or _DEFAULT_CONFIG
    state.held.append(HeldPush(push, release_at, context))
    if len(state.held) > config.max_held:
        del state.held[: len(state.held) - config.max_held]


def release_held(
    user_id: str,
    state: UserPolicyState,
    now: float,
    config: PolicyConfig,
    catalog: Callable[[str], CatalogUpdate | None] | None = None,
    bought: Collection[str] = (),
) -> list[tuple[Push, Verdict]]:
    """Take the held pushes whose release time has come out of ``state`` and decide them again at ``now``.

    :func:`judge_held`, then the due pushes leave ``state.held``. The caller calls :func:`record_push`
    with ``sent_at=now`` for each emit.
    """
    judged = judge_held(user_id, state, now, config, catalog, bought)
    if judged:
        state.held = [h for h in state.held if h.release_at > now]
    return [(h.push, verdict) for h, verdict in judged]


def judge_held(
    user_id: str,
    state: UserPolicyState,
    now: float,
    config: PolicyConfig,
    catalog: Callable[[str], CatalogUpdate | None] | None = None,
    bought: Collection[str] = (),
) -> list[tuple[HeldPush, Verdict]]:
    """The verdicts at ``now`` on the held pushes due by then, best score first; changes nothing.

    The rules of :data:`stream.rules.RULES` for path "release" are checked again (consent, holdout,
    catalog, stock and promotion validity through ``catalog``: item id -> entry in force, expiry,
    items the shopper bought since (``bought``), repeats, category, caps and gap; not the threshold).
    At most ``max_pushes_per_decision`` are emitted.
    """
    due = [h for h in state.held if h.release_at <= now]
    if not due:
        return []
    due.sort(key=lambda h: -h.push.score)
    emitted: list[PushRecord] = []
    out: list[tuple[HeldPush, Verdict]] = []
    for h in due:
        push = h.push
        # Each release sees the pushes released before it in this call (caps, gap, repeats).
        facts = _user_facts(user_id, state, now, config, records=state.pushes + emitted)
        entry = catalog(push.item_id) if catalog is not None else None
        promotion_valid = push.promotion_id is None or (
            entry is not None
            and entry.promotion is not None
            and entry.promotion.promotion_id == push.promotion_id
            and entry.promotion.active_at(now)
        )
        item = rules.ItemFacts(
            push.item_id,
            push.category,
            in_catalog=catalog is None or entry is not None,
            in_stock=catalog is None or (entry is not None and entry.stock > 0),
            promotion_valid=catalog is None or promotion_valid,
            expires_at=push.expires_at,
            bought=push.item_id in bought,
        )
        reason = rules.first_block(facts, item, "release")
        if reason is None and len(emitted) >= config.max_pushes_per_decision:
            reason = "not_selected"
        if reason is None:
            emitted.append(
                PushRecord(push.push_id, push.item_id, push.category, push.trigger, now, push.expires_at)
            )
            out.append((h, Verdict("emit", "ok", threshold=push.threshold)))
        else:
            out.append((h, Verdict("suppress", reason, threshold=push.threshold)))
    return out
