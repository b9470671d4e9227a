"""The push decision policy: which candidate (if any) becomes a push now, which is held, and why not.

Pure: no I/O, no clock (``now`` is event time, an argument). The worker calls, per user input:

1. :func:`make_candidate` for each scored item (interest, features, catalog facts at decision time);
2. :func:`decide` -> one :class:`Verdict` per candidate (at most ``max_pushes_per_decision`` emits);
3. for an emit, :func:`build_push` then :func:`record_push`; for a hold, :func:`build_push` then
   :func:`record_hold`; and, on later inputs of that user, :func:`release_held` (then
   :func:`record_push` for what it emits).

Every suppression carries a reason from :data:`SUPPRESSION_REASONS` (bounded: safe as a metric label).
``docs/policy.md`` documents every rule with its config field.

This module holds the decision itself: :func:`decide` (the rules, then MMR diversity among the
eligible) and :func:`user_blocked` (the cheap pre-check), and re-exports the policy's other names
from their homes, so ``from stream.policy import ...`` keeps working:

* ``stream.policy_types``: :class:`Candidate`, :class:`Verdict`, the outcomes and suppression reasons;
* ``stream.policy_candidates``: :func:`make_candidate`, :func:`with_catalog`, :func:`push_expiry`;
* ``stream.user_facts``: :func:`in_holdout`, :func:`user_zone`, :func:`quiet_hours_end`,
  :func:`current_offset` (what the rules know of a user);
* ``stream.push_records``: :func:`build_push`, :func:`collapse_key`, :func:`build_decision`,
  :func:`record_push`, :func:`record_hold`, :func:`release_held`, :func:`judge_held`;
* ``stream.policy_state`` (the records in the user's state) and ``stream.explain``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from stream import rules
from stream.explain import explain
from stream.interest import effective_threshold
from stream.policy_candidates import make_candidate, push_expiry, with_catalog
from stream.policy_config import PolicyConfig
from stream.policy_state import HeldPush, PushRecord, UserPolicyState, seen_at
from stream.policy_types import SUPPRESSION_REASONS, Candidate, Outcome, Similarity, SuppressReason, Verdict
from stream.push_records import (
    build_decision,
    build_push,
    collapse_key,
    judge_held,
    record_hold,
    record_push,
    release_held,
)
from stream.user_facts import current_offset, in_holdout, quiet_hours_end, user_facts, user_zone

__all__ = [
    "SUPPRESSION_REASONS",
    "Candidate",
    "HeldPush",
    "Outcome",
    "PushRecord",
    "Similarity",
    "SuppressReason",
    "UserPolicyState",
    "Verdict",
    "build_decision",
    "build_push",
    "collapse_key",
    "current_offset",
    "decide",
    "default_similarity",
    "explain",
    "in_holdout",
    "judge_held",
    "make_candidate",
    "push_expiry",
    "quiet_hours_end",
    "record_hold",
    "record_push",
    "release_held",
    "user_blocked",
    "user_zone",
    "with_catalog",
]


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


def user_blocked(
    user_id: str, state: UserPolicyState, now: float, config: PolicyConfig, active: bool = False
) -> str | None:
    """The reason no push at all may go to this user now (the user-level rules of ``stream.rules``).

    A cheap pre-check: the worker skips scoring candidates for a blocked user. :func:`decide` applies
    the same rules, so skipping changes no outcome.
    """
    return rules.user_block(user_facts(user_id, state, now, config, active=active), "precheck")


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
    facts = user_facts(user_id, state, now, config, active=active)
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
    capped: str | None = None
    caps_checked = False
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
        # The gate passed: the item stage per candidate, then the cap stage (checked once).
        reason = rules.item_block(facts, item, "decide")
        if reason is None:
            if not caps_checked:
                capped, caps_checked = rules.cap_block(facts, "decide"), True
            reason = capped
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

    seen = seen_at(state.pushes, now)
    history = [_as_candidate(r) for r in seen[-config.mmr_history :]] if config.mmr_history else []
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
