"""The policy lab: pure pushers against the in-process world, paired and reproducible."""

from __future__ import annotations

from benchmarks.policy_lab import LabConfig, compare, run_world

SMALL = LabConfig(users=300, items=200, days=1.0, warmup_days=1.0)


def test_the_lab_is_reproducible_and_pairs_arms_with_the_reference() -> None:
    arms = ["marketer_rules", "session_end", "oracle_item"]
    first = compare(SMALL, arms, [5], workers=1)
    assert compare(SMALL, arms, [5], workers=1) == first
    assert first["marketer_rules"]["vs_first_purchases"] == 0.0
    for arm in arms:
        assert first[arm]["pushes_per_user_per_day"] > 0
        assert first[arm]["quiet_hours_share"] == 0.0


def test_session_end_sends_at_most_one_push_per_shopper_and_day() -> None:
    run = run_world(SMALL, 5, "session_end")
    assert run["pushes"].sum() > 0
    # One evaluated day: a shopper's local day can straddle two UTC days, never more.
    assert run["pushes"].max() <= 2
