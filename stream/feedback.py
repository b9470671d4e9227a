"""Push feedback: attribute opens, clicks, dismissals and purchases to pushes; adapt the user's threshold.

Attribution: ``push_open`` / ``push_click`` / ``push_dismiss`` carry the ``push_id`` they answer; a
``purchase`` is attributed to the most recent push of the same item sent at most
``attribution_window_seconds`` before it (inclusive) and not yet credited with a purchase. Each push
counts each kind once, so a redelivered event changes nothing (None is returned). A push read back
after a crash and not yet met again by its own decision answers no feedback and is not settled as
ignored: in the run without the crash it did not exist yet (``stream.policy_state.unmet``).

Responsiveness: an explicit, bounded rule rather than a bandit. Each user has a threshold offset ``r``
(added to the trigger's threshold). Engagement lowers it (open -0.02, click -0.04, purchase -0.08),
dismissals (+0.05) and ignored pushes (+0.03, no reaction within ``ignore_after_seconds``) raise it;
it is clipped to [responsiveness_min, responsiveness_max] and decays toward 0 with
``responsiveness_half_life_seconds``. Why a rule: a user sees a handful of pushes a week, far too few
for a per-user bandit to learn, the rule is explainable to marketing and bounded by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.event_decoder import ValidEvent
from stream.policy_config import PolicyConfig
from stream.policy_state import PushRecord, UserPolicyState, unmet
from stream.user_facts import current_offset

FeedbackKind = Literal["open", "click", "dismiss", "purchase", "ignored"]
FEEDBACK_KINDS: tuple[str, ...] = FeedbackKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FeedbackOutcome:
    """What one feedback changed: the worker counts CTR, conversion and revenue by trigger from it."""

    kind: str  # one of FEEDBACK_KINDS
    push_id: str
    trigger: str
    item_id: str
    revenue: float  # purchases only
    seconds_after_push: float
    offset_before: float
    offset_after: float
    context: str = ""  # the push's decision context (outcome estimates)
    decided_at: float = 0.0  # when the push was sent (its estimate counts at that time)
    ghost: bool = False  # a holdout user's ghost: the no-push baseline, not a push outcome


def adjust_responsiveness(
    state: UserPolicyState, delta: float, now: float, config: PolicyConfig
) -> tuple[float, float]:
    """Add ``delta`` to the user's decayed offset, clip it to its bounds; (before, after)."""
    before = current_offset(state, now, config)
    after = min(max(before + delta, config.responsiveness_min), config.responsiveness_max)
    state.responsiveness = after
    state.responsiveness_ts = now
    return before, after


def _delta(kind: str, config: PolicyConfig) -> float:
    return {
        "open": config.responsiveness_open,
        "click": config.responsiveness_click,
        "purchase": config.responsiveness_purchase,
        "dismiss": config.responsiveness_dismiss,
        "ignored": config.responsiveness_ignore,
    }[kind]


def _outcome(
    state: UserPolicyState, record: PushRecord, kind: str, at: float, revenue: float, config: PolicyConfig
) -> FeedbackOutcome:
    if record.ghost:  # nothing was sent: the user's responsiveness is not in question
        before = after = current_offset(state, at, config)
    else:
        before, after = adjust_responsiveness(state, _delta(kind, config), at, config)
    return FeedbackOutcome(
        kind,
        record.push_id,
        record.trigger,
        record.item_id,
        revenue,
        at - record.created_at,
        before,
        after,
        record.context,
        record.created_at,
        record.ghost,
    )


def apply_feedback(state: UserPolicyState, event: ValidEvent, config: PolicyConfig) -> FeedbackOutcome | None:
    """Attribute one event to a push of this user; None when it answers none (or was already counted).

    A click also marks the push opened (a click without an open event still means it was seen), but
    only the click is reported.
    """
    at = event.ts
    if event.type in ("push_open", "push_click", "push_dismiss"):
        if event.push_id is None:
            return None
        record = next(
            (
                r
                for r in reversed(state.pushes)
                if r.push_id == event.push_id and not (r.ghost or unmet(r, at))
            ),
            None,
        )
        if record is None:
            return None
        if event.type == "push_open":
            if record.opened_at is not None:
                return None
            record.opened_at = at
            return _outcome(state, record, "open", at, 0.0, config)
        if event.type == "push_click":
            if record.clicked_at is not None:
                return None
            record.clicked_at = at
            if record.opened_at is None:
                record.opened_at = at
            return _outcome(state, record, "click", at, 0.0, config)
        if record.dismissed_at is not None:
            return None
        record.dismissed_at = at
        return _outcome(state, record, "dismiss", at, 0.0, config)
    if event.type == "purchase" and event.item_id is not None:
        for record in reversed(state.pushes):
            if (
                record.item_id == event.item_id
                and record.purchased_at is None
                and not unmet(record, at)
                and 0.0 <= at - record.created_at <= config.attribution_window_seconds
            ):
                record.purchased_at = at
                record.revenue = (event.price or 0.0) * (event.quantity or 1)
                return _outcome(state, record, "purchase", at, record.revenue, config)
    return None


def settle_ignored(state: UserPolicyState, now: float, config: PolicyConfig) -> list[FeedbackOutcome]:
    """Mark pushes with no open, click or dismiss ``ignore_after_seconds`` after sending as ignored.

    Call it on each input of the user (it scans the bounded push history). Each push is ignored once.
    """
    out: list[FeedbackOutcome] = []
    for record in state.pushes:
        if (
            not (record.ghost or unmet(record, now))
            and record.ignored_at is None
            and record.opened_at is None
            and record.clicked_at is None
            and record.dismissed_at is None
            and now - record.created_at >= config.ignore_after_seconds
        ):
            record.ignored_at = now
            out.append(_outcome(state, record, "ignored", now, 0.0, config))
    return out
