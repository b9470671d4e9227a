"""What the push policy knows of a user at a moment, gathered for the rules of ``stream.rules``.

Holdout membership (:func:`in_holdout`), the user's time zone (:func:`user_zone`) and the end of
their quiet hours (:func:`quiet_hours_end`), the responsiveness offset at a time
(:func:`current_offset`), and all of it with consent and push history as one
:class:`stream.rules.UserFacts` (:func:`user_facts`). Pure: ``now`` is an argument.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream import rules
from stream.interest import decay_factor
from stream.policy_config import PolicyConfig
from stream.policy_state import PushRecord, UserPolicyState
from stream.quiet_hours import quiet_end


@lru_cache(maxsize=1 << 16)  # asked at every decision of a user; a hash per ask was a visible cost
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
    return zone_named(state.time_zone, config)


def zone_named(name: str | None, config: PolicyConfig) -> ZoneInfo:
    """The time zone ``name`` (a user's, as stored), or the configured default when unknown or invalid."""
    zone = _zone(name) if name else None
    if zone is None:
        zone = _zone(config.default_time_zone)
    assert zone is not None  # the config validates its default zone
    return zone


# quiet_hours_end's answers by (now, zone, quiet hours' start and end as configured); emptied when full.
_QUIET_ENDS: dict[tuple[float, ZoneInfo, str, str], float | None] = {}
_QUIET_ENDS_MAX = 4_096


def quiet_hours_end(now: float, zone: ZoneInfo, config: PolicyConfig) -> float | None:
    """When the quiet hours around ``now`` end (epoch seconds), or None when ``now`` is outside them
    (the rule, across DST changes included: :mod:`stream.quiet_hours`).

    Remembered per instant and zone: a decision asks twice for the same ones (when it is queued, for the
    earliest timer it may schedule, and when it is decided), and the decisions of one clock share the
    instant. A pure function's cache, so it changes no answer.
    """
    key = (now, zone, config.quiet_hours_start, config.quiet_hours_end)
    if key in _QUIET_ENDS:
        return _QUIET_ENDS[key]
    if len(_QUIET_ENDS) >= _QUIET_ENDS_MAX:
        _QUIET_ENDS.clear()
    end = _QUIET_ENDS[key] = quiet_end(now, zone, *config.quiet_minutes())
    return end


def current_offset(state: UserPolicyState, now: float, config: PolicyConfig) -> float:
    """The user's responsiveness offset at ``now``: it decays toward 0 with its half-life."""
    if not state.responsiveness or state.responsiveness_ts is None:
        return state.responsiveness
    return state.responsiveness * decay_factor(
        now - state.responsiveness_ts, config.responsiveness_half_life_seconds
    )


def user_facts(
    user_id: str,
    state: UserPolicyState,
    now: float,
    config: PolicyConfig,
    records: Sequence[PushRecord] | None = None,
    active: bool = False,
) -> rules.UserFacts:
    """The user-level facts the rules read: consent, holdout, ``now``, push history (``records``, else
    the state's), time zone and whether the shopper is active."""
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
