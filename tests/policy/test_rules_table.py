"""The one table of rules (``stream/rules.py``): its shape, and that every path goes through it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from stream import rules
from stream.policy import SUPPRESSION_REASONS, PushRecord, UserPolicyState, user_blocked
from stream.policy_config import PolicyConfig
from tests.policy.conftest import T0

UTC = ZoneInfo("UTC")
STAGES = ("user", "item", "cap")


def test_every_rule_has_a_known_unique_reason_and_the_table_is_in_stage_order() -> None:
    reasons = [r.reason for r in rules.RULES]
    assert len(reasons) == len(set(reasons))
    assert set(reasons) <= set(SUPPRESSION_REASONS)
    stages = [STAGES.index(r.stage) for r in rules.RULES]
    assert stages == sorted(stages)
    assert all(r.doc and r.paths <= {"decide", "release", "precheck"} for r in rules.RULES)


def test_each_path_takes_the_rules_marked_for_it() -> None:
    by_path = {p: [r.reason for r in rules.RULES if p in r.paths] for p in ("decide", "release", "precheck")}
    # A held push is not judged again on its threshold, nor blocked by itself being held.
    assert {"below_threshold", "already_held"} <= set(by_path["decide"]) - set(by_path["release"])
    # The pre-check before scoring has user-level rules only: no item is known yet.
    assert all(
        rules.RULES[[r.reason for r in rules.RULES].index(x)].stage != "item" for x in by_path["precheck"]
    )
    assert {"no_consent", "holdout", "user_active", "cap_24h", "min_gap"} <= set(by_path["precheck"])


def _facts(pushes: list[PushRecord], active: bool = False, consent: bool = True) -> rules.UserFacts:
    cfg = PolicyConfig.model_validate({"max_pushes_per_24h": 1, "min_gap_seconds": 0})
    return rules.UserFacts(consent, False, T0, cfg, pushes, UTC, active)


def test_the_first_rule_in_table_order_gives_the_reason() -> None:
    capped = [PushRecord("p1", "i9", "misc", "in_session", T0 - 60, T0 + 3600)]
    item = rules.ItemFacts("i1", "misc", True, False, True, T0 + 3600, interest=0.9, threshold=0.5)
    # Out of stock (an item rule) comes before the 24 h cap; the active shopper before both.
    assert rules.first_block(_facts(capped), item, "decide") == "out_of_stock"
    assert rules.first_block(_facts(capped, active=True), item, "decide") == "user_active"
    assert rules.user_block(_facts(capped), "precheck") == "cap_24h"
    assert rules.gate(_facts(capped), "decide") is None
    assert rules.gate(_facts([], consent=False), "decide") == "no_consent"
    fine = rules.ItemFacts("i1", "misc", True, True, True, T0 + 3600, interest=0.9, threshold=0.5)
    assert rules.first_block(_facts([]), fine, "decide") is None
    assert rules.first_block(_facts([]), fine, "release") is None


def test_gate_then_item_block_then_cap_block_is_first_block() -> None:
    """How ``stream.policy.decide`` reads the table (the user stage once, the cap stage once per user):
    the same reason as ``first_block`` for every item and history."""
    histories = [
        [],
        [PushRecord("p1", "i9", "misc", "in_session", T0 - 60, T0 + 3600)],  # the 24 h cap
        [PushRecord("p1", "i1", "misc", "in_session", T0 - 60, T0 + 3600)],  # ... and the same item
    ]
    items = [
        rules.ItemFacts("i1", "misc", in_catalog, in_stock, True, T0 + ttl, interest, 0.5, held, bought)
        for in_catalog in (True, False)
        for in_stock in (True, False)
        for ttl in (30.0, 3600.0)
        for interest in (0.1, 0.9)
        for held in (True, False)
        for bought in (True, False)
    ]
    cfg = PolicyConfig.model_validate(
        {"max_pushes_per_24h": 1, "item_repeat_window_seconds": 3600, "max_per_category_per_local_day": 0}
    )
    checked = set()
    for pushes in histories:
        facts = rules.UserFacts(True, False, T0, cfg, pushes, UTC)
        for path in ("decide", "release"):
            assert rules.gate(facts, path) is None
            for item in items:
                reason = rules.item_block(facts, item, path) or rules.cap_block(facts, path)
                assert reason == rules.first_block(facts, item, path)
                checked.add(reason)
    assert {None, "cap_24h", "item_repeat", "out_of_stock", "below_threshold", "already_held"} <= checked


def test_the_history_is_summarised_only_when_a_rule_needs_it() -> None:
    facts = _facts([PushRecord("p1", "i9", "misc", "in_session", T0 - 60, T0 + 3600)], active=True)
    assert rules.user_block(facts, "precheck") == "user_active"
    assert "history" not in vars(facts)  # stopped at a user rule: no scan of the push history


def test_the_worker_precheck_sees_the_active_shopper_first() -> None:
    state = UserPolicyState(opted_in=True)
    state.pushes.append(PushRecord("p1", "i9", "misc", "in_session", T0 - 60, T0 + 3600))
    cfg = PolicyConfig.model_validate({"max_pushes_per_24h": 1})
    assert user_blocked("u1", state, T0, cfg) == "cap_24h"
    assert user_blocked("u1", state, T0, cfg, active=True) == "user_active"


def test_a_reminder_moment_waits_a_gap_after_the_last_push_ghosts_included() -> None:
    gap = 86400.0
    cfg = PolicyConfig()
    assert cfg.reminder_push_gap_seconds == gap  # a day by default

    def record(at: float, ghost: bool = False, recovered: bool = False) -> PushRecord:
        return PushRecord("p", "i", "c", "reminder", at, at + 3600, ghost=ghost, recovered=recovered)

    assert rules.reminder_waits_until([], T0, cfg) is None
    assert rules.reminder_waits_until([record(T0 - 3600)], T0, cfg) == T0 - 3600 + gap
    assert rules.reminder_waits_until([record(T0 - 7200), record(T0 - 60)], T0, cfg) == T0 - 60 + gap
    assert rules.reminder_waits_until([record(T0 - gap)], T0, cfg) is None  # (now - gap, now]
    assert rules.reminder_waits_until([record(T0 - 3600, ghost=True)], T0, cfg) == T0 - 3600 + gap
    # A push read back at recovery and not yet met again by its own decision is not seen before its time.
    assert rules.reminder_waits_until([record(T0 + 60, recovered=True)], T0, cfg) is None
    off = PolicyConfig.model_validate({"reminder_push_gap_seconds": 0})
    assert rules.reminder_waits_until([record(T0 - 60)], T0, off) is None
