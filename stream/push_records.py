"""Pushes and holds from verdicts: the outbound push, its audit record, and the user's records of both.

After :func:`stream.policy.decide`: for an emit, :func:`build_push` then :func:`record_push`; for a
hold, :func:`build_push` then :func:`record_hold`; on later inputs of that user,
:func:`release_held` (the verdicts of :func:`judge_held`), then :func:`record_push` for what it
emits. :func:`build_decision` is the audit record of any verdict, :func:`collapse_key` the push's
collapse key. Pure but for the ``UserPolicyState`` the record functions are given: ``now`` is an
argument.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection

from stream import rules
from stream.contract import CatalogUpdate, Decision, Push, push_id
from stream.explain import explain
from stream.interest import effective_threshold
from stream.policy_candidates import push_expiry
from stream.policy_config import PolicyConfig
from stream.policy_state import HeldPush, PushRecord, UserPolicyState
from stream.policy_types import Candidate, Verdict
from stream.text import VISIBLE_ASCII_CLASS
from stream.user_facts import user_facts

_DAY = 86400.0
_DEFAULT_CONFIG = PolicyConfig.model_validate({})


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


# A collapse key goes into an HTTP/2 header (APNs ``apns-collapse-id``, at most 64 bytes; FCM's
# ``collapse_key``): visible ASCII only (stream.text.VISIBLE_ASCII), so no id or category can break or
# overflow the header.
_HEADER_SAFE_KEY = re.compile(VISIBLE_ASCII_CLASS + "{1,64}")


def collapse_key(user_id: str, candidate: Candidate, config: PolicyConfig) -> str | None:
    """The push's collapse key from ``collapse_key_template`` (None when the template is empty).

    A key that is not 1 to 64 visible ASCII characters (a long or non-ASCII id, a category with
    spaces or control characters) is sent as ``kairos-`` and 32 hex digits of its BLAKE2b digest:
    the same key gives the same digest, so pushes still collapse exactly as the template says.
    """
    template = config.collapse_key_template
    if not template:
        return None
    key = template.format(
        user_id=user_id,
        trigger=candidate.trigger,
        item_id=candidate.item_id,
        category=candidate.category or "",
    )
    if _HEADER_SAFE_KEY.fullmatch(key):
        return key
    return "kairos-" + hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


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
    prune: bool = True,
) -> PushRecord:
    """Remember an emitted push (caps, repeats, feedback); prunes the history to its bounds.

    ``sent_at`` defaults to ``push.created_at``; pass the release time for a held push. Records older
    than every window that needs them (7 d, item repeat, attribution + ignore) are dropped, and at most
    ``max_push_records`` are kept (:func:`prune_records`). ``prune=False`` for a push read back at
    recovery: its decision, made again, prunes when it completes the record, as it did the first time.
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
    if prune:
        prune_records(state, at, config)
    return record


def prune_records(state: UserPolicyState, at: float, config: PolicyConfig) -> None:
    """Drop the records that no window needs at ``at`` any more; keep at most ``max_push_records``."""
    keep = max(
        7 * _DAY,
        config.item_repeat_window_seconds,
        config.attribution_window_seconds + config.ignore_after_seconds,
    )
    state.pushes = [r for r in state.pushes if at - r.created_at < keep][-config.max_push_records :]


def record_sent(state: UserPolicyState, push: Push) -> bool:
    """A push recorded at its decision went out later (released from the throttle's queue, at
    ``push.created_at``): its record moves to that time, so the caps, gap and repeats count from when
    the user got it. True when the record changed."""
    for record in state.pushes:
        if record.push_id == push.push_id and record.created_at != push.created_at:
            record.created_at = push.created_at
            return True
    return False


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
        facts = user_facts(user_id, state, now, config, records=state.pushes + emitted)
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
