"""Policy rules with an injected clock: consent, holdout, caps, gaps, TTL, repeats, diversity, catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stream.contract import ConsentUpdate, Promotion, push_id
from stream.engagement import EngagedItem
from stream.policy import (
    SUPPRESSION_REASONS,
    PushRecord,
    UserPolicyState,
    Verdict,
    build_decision,
    build_push,
    decide,
    explain,
    in_holdout,
    make_candidate,
    record_hold,
    record_push,
    with_catalog,
)
from tests.policy.conftest import T0, candidate, catalog, config

DAY = 86400.0


def past(item: str, at: float, category: str | None = "misc", trigger: str = "in_session") -> PushRecord:
    """A push sent at ``at``."""
    return PushRecord(f"p-{item}-{at}", item, category, trigger, at, at + 3600)


def only(verdicts: list) -> Verdict:
    assert len(verdicts) == 1
    return verdicts[0][1]


def test_emit_builds_a_deterministic_push(cfg):
    state = UserPolicyState()
    c = candidate()
    verdict = only(decide("u1", [c], state, T0, cfg))
    assert (verdict.outcome, verdict.reason, verdict.threshold) == ("emit", "ok", 0.5)
    push = build_push("u1", c, verdict, T0, cfg, "gru-test")
    assert push.push_id == push_id("u1", "i1", "in_session", c.cause)
    assert push.expires_at == T0 + cfg.push_ttl_seconds
    assert push.score == 0.8 and push.threshold == 0.5 and push.category == "shoes"
    record_push(state, push, cfg)
    assert [r.push_id for r in state.pushes] == [push.push_id]


def test_every_reason_is_a_known_code(cfg):
    state = UserPolicyState(pushes=[past("x", T0 - 10)])
    cands = [
        candidate("a", 0.1),
        candidate("b", in_stock=False),
        candidate("c", expires_at=T0),
        candidate("x"),
    ]
    for _, verdict in decide("u1", cands, state, T0, cfg):
        assert verdict.outcome == "suppress" and verdict.reason in SUPPRESSION_REASONS


def test_consent_default_and_opt_out(cfg):
    state = UserPolicyState()
    assert only(decide("u1", [candidate()], state, T0, cfg)).outcome == "emit"
    assert only(decide("u1", [candidate()], state, T0, config(consent_default=False))).reason == "no_consent"
    assert state.apply_consent(ConsentUpdate(user_id="u1", opted_in=False, ts=T0))
    assert only(decide("u1", [candidate()], state, T0, cfg)).reason == "no_consent"
    # An older update arriving late does not undo the newer opt-out.
    assert not state.apply_consent(ConsentUpdate(user_id="u1", opted_in=True, ts=T0 - 5))
    assert state.opted_in is False
    assert state.apply_consent(ConsentUpdate(user_id="u1", opted_in=True, ts=T0 + 5))
    assert only(decide("u1", [candidate()], state, T0 + 10, cfg)).outcome == "emit"


def test_opt_out_drops_held_pushes(cfg):
    state = UserPolicyState()
    record_hold(
        state, build_push("u1", candidate(), Verdict("hold", "quiet_hours"), T0, cfg, "v"), T0 + 100, cfg
    )
    state.apply_consent(ConsentUpdate(user_id="u1", opted_in=False, ts=T0 + 1))
    assert state.held == []


def test_holdout_is_stable_across_processes_and_has_its_share():
    users = [f"u{n:06d}" for n in range(40)]
    here = [in_holdout(u, 0.3, "s") for u in users]
    code = (
        "import json,sys; from stream.policy import in_holdout; "
        f"print(json.dumps([in_holdout(u, 0.3, 's') for u in {users!r}]))"
    )
    for seed in ("1", "987"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert json.loads(out.stdout) == here
    members = sum(in_holdout(f"user-{n}", 0.05, "kairos-holdout-v1") for n in range(40_000))
    assert 0.045 < members / 40_000 < 0.055
    other_salt = sum(
        in_holdout(f"user-{n}", 0.05, "x") and in_holdout(f"user-{n}", 0.05, "kairos-holdout-v1")
        for n in range(40_000)
    )
    assert other_salt < members / 5  # a new salt reshuffles the group
    assert not any(in_holdout(u, 0.0, "s") for u in users)
    assert all(in_holdout(u, 1.0, "s") for u in users)


def test_holdout_users_receive_nothing():
    cfg = config(holdout_share=1.0)
    assert only(decide("u1", [candidate()], UserPolicyState(), T0, cfg)).reason == "holdout"


def test_rolling_24h_cap_edge():
    cfg = config(
        max_pushes_per_24h=2, max_pushes_per_local_day=10, min_gap_seconds=0, max_per_category_per_local_day=0
    )
    # A push exactly 24 h ago has left the window (now - W, now].
    state = UserPolicyState(pushes=[past("a", T0 - DAY), past("b", T0 - 100)])
    assert only(decide("u1", [candidate()], state, T0, cfg)).outcome == "emit"
    state = UserPolicyState(pushes=[past("a", T0 - DAY + 1), past("b", T0 - 100)])
    assert only(decide("u1", [candidate()], state, T0, cfg)).reason == "cap_24h"


def test_rolling_7d_cap_edge():
    cfg = config(max_pushes_per_7d=2, min_gap_seconds=0, max_per_category_per_local_day=0)
    state = UserPolicyState(pushes=[past("a", T0 - 7 * DAY), past("b", T0 - 3 * DAY)])
    assert only(decide("u1", [candidate()], state, T0, cfg)).outcome == "emit"
    state = UserPolicyState(pushes=[past("a", T0 - 7 * DAY + 1), past("b", T0 - 3 * DAY)])
    assert only(decide("u1", [candidate()], state, T0, cfg)).reason == "cap_7d"


def test_min_gap_edge(cfg):
    assert (
        only(decide("u1", [candidate()], UserPolicyState(pushes=[past("a", T0 - 3600)]), T0, cfg)).outcome
        == "emit"
    )
    assert (
        only(decide("u1", [candidate()], UserPolicyState(pushes=[past("a", T0 - 3599)]), T0, cfg)).reason
        == "min_gap"
    )


def test_ttl_is_exclusive_at_now(cfg):
    assert only(decide("u1", [candidate(expires_at=T0)], UserPolicyState(), T0, cfg)).reason == "expired"
    assert only(decide("u1", [candidate(expires_at=T0 + 1)], UserPolicyState(), T0, cfg)).outcome == "emit"
    assert (
        only(decide("u1", [candidate()], UserPolicyState(), T0, config(push_ttl_seconds=0))).reason
        == "expired"
    )


def test_item_repeat_window_edge(cfg):
    week = cfg.item_repeat_window_seconds
    state = UserPolicyState(pushes=[past("i1", T0 - week + 1)])
    assert only(decide("u1", [candidate("i1")], state, T0, cfg)).reason == "item_repeat"
    state = UserPolicyState(pushes=[past("i1", T0 - week)])
    assert only(decide("u1", [candidate("i1")], state, T0, cfg)).outcome == "emit"


def test_stock_and_promotion_are_rechecked_from_the_catalog(cfg):
    promo = Promotion(promotion_id="p1", discount=0.2, starts_at=T0 - 100, ends_at=T0 + 100)
    c = make_candidate(
        "i1", "promotion_start", 1.0, 0.9, T0, cfg, catalog=catalog(promotion=promo), cause="c", event_ts=T0
    )
    assert c.promotion_id == "p1" and c.expires_at == T0 + 100
    assert only(decide("u1", [c], UserPolicyState(), T0, cfg)).outcome == "emit"
    later = T0 + 50
    assert (
        only(
            decide(
                "u1",
                [with_catalog(c, catalog(stock=0, promotion=promo), later)],
                UserPolicyState(),
                later,
                cfg,
            )
        ).reason
        == "out_of_stock"
    )
    assert only(decide("u1", [with_catalog(c, catalog(), later)], UserPolicyState(), later, cfg)).reason == (
        "promotion_invalid"
    )
    assert (
        only(decide("u1", [with_catalog(c, None, later)], UserPolicyState(), later, cfg)).reason
        == "not_in_catalog"
    )
    # The push expires with the promotion even when the TTL is longer.
    assert (
        build_push("u1", c, Verdict("emit", "ok"), T0, config(push_ttl_seconds=9999), "v").expires_at
        == T0 + 100
    )


def test_per_trigger_threshold_and_responsiveness_offset(cfg):
    state = UserPolicyState()
    cart = candidate(interest=0.4, trigger="cart_abandonment")
    assert only(decide("u1", [cart], state, T0, cfg)).outcome == "emit"
    assert only(decide("u1", [candidate(interest=0.4)], state, T0, cfg)).reason == "below_threshold"
    state.responsiveness, state.responsiveness_ts = 0.1, T0
    verdict = only(decide("u1", [cart], state, T0, cfg))
    assert verdict.reason == "below_threshold" and abs(verdict.threshold - 0.45) < 1e-9
    # Thresholds stay inside [min_threshold, max_threshold] whatever the offset.
    state.responsiveness = 5.0
    assert only(decide("u1", [cart], state, T0, cfg)).threshold == cfg.max_threshold


def test_one_push_per_category_per_local_day(cfg):
    state = UserPolicyState(pushes=[past("old", T0 - 2 * 3600, category="shoes")])
    verdicts = decide(
        "u1", [candidate("s", 0.9, category="shoes"), candidate("h", 0.7, category="hats")], state, T0, cfg
    )
    assert [(c.item_id, v.outcome, v.reason) for c, v in verdicts] == [
        ("s", "suppress", "category_today"),
        ("h", "emit", "ok"),
    ]


def test_at_most_one_emit_per_decision_by_default(cfg):
    verdicts = decide(
        "u1",
        [candidate("a", 0.6, category="x"), candidate("b", 0.9, category="y")],
        UserPolicyState(),
        T0,
        cfg,
    )
    assert [(c.item_id, v.reason) for c, v in verdicts] == [("a", "not_selected"), ("b", "ok")]


def test_mmr_chooses_diverse_items():
    base = {
        "min_gap_seconds": 0,
        "max_per_category_per_local_day": 0,
        "max_pushes_per_decision": 2,
        "max_pushes_per_24h": 10,
        "max_pushes_per_local_day": 10,
    }
    cands = [
        candidate("a", 0.9, category="shoes"),
        candidate("b", 0.88, category="shoes"),
        candidate("c", 0.7, category="hats"),
    ]
    picked = [
        c.item_id
        for c, v in decide("u1", cands, UserPolicyState(), T0, config(mmr_lambda=0.5, **base))
        if v.outcome == "emit"
    ]
    assert picked == ["a", "c"]
    greedy = [
        c.item_id
        for c, v in decide("u1", cands, UserPolicyState(), T0, config(mmr_lambda=1.0, **base))
        if v.outcome == "emit"
    ]
    assert greedy == ["a", "b"]


def test_mmr_compares_with_recent_pushes_and_a_caller_similarity():
    cfg = config(mmr_lambda=0.5)
    yesterday = UserPolicyState(pushes=[past("z", T0 - 1.5 * DAY, category="shoes")])
    cands = [candidate("a", 0.9, category="shoes"), candidate("c", 0.75, category="hats")]
    verdicts = decide("u1", cands, yesterday, T0, cfg)
    assert [c.item_id for c, v in verdicts if v.outcome == "emit"] == ["c"]

    # A co-visitation similarity supplied by the caller: "c" is often bought with the pushed "z".
    def covisit(x, y):
        return 1.0 if {x.item_id, y.item_id} == {"c", "z"} else 0.0

    verdicts = decide("u1", cands, yesterday, T0, cfg, similarity=covisit)
    assert [c.item_id for c, v in verdicts if v.outcome == "emit"] == ["a"]


def test_make_candidate_decays_and_boosts(cfg):
    engaged = EngagedItem(views=3, last_ts=T0 - cfg.interest_half_life_seconds)
    c = make_candidate(
        "i1", "in_session", 2.0, 0.8, T0, cfg, catalog=catalog(), cause="e1", event_ts=T0, engaged=engaged
    )
    assert abs(c.interest - 0.4) < 1e-9 and c.features["decay_factor"] == 0.5 and c.views == 3
    promo = Promotion(promotion_id="p", discount=0.25, starts_at=T0 - 1, ends_at=T0 + 10)
    boosted = make_candidate(
        "i1",
        "in_session",
        2.0,
        0.8,
        T0,
        cfg,
        catalog=catalog(promotion=promo),
        cause="e1",
        event_ts=T0,
        engaged=engaged,
    )
    assert 0.4 < boosted.interest <= 1.0 and boosted.discount == 0.25 and boosted.price == 75.0


def test_explanations_read_well(cfg):
    promo = Promotion(promotion_id="p", discount=0.2, starts_at=T0 - 1, ends_at=T0 + 3 * 3600)
    engaged = EngagedItem(views=3, last_ts=T0)
    c = make_candidate(
        "i1",
        "in_session",
        1,
        0.9,
        T0,
        cfg,
        catalog=catalog(promotion=promo),
        cause="e",
        event_ts=T0,
        engaged=engaged,
    )
    assert explain(c, Verdict("emit", "ok")) == "You viewed this 3 times; it is now 20 % off"
    drop = make_candidate(
        "i1",
        "price_drop",
        1,
        0.9,
        T0,
        cfg,
        catalog=catalog(price=99.0),
        cause="e",
        event_ts=T0,
        engaged=EngagedItem(views=1, last_ts=T0),
        previous_price=120.0,
    )
    assert explain(drop, Verdict("emit", "ok")) == "You viewed this; the price dropped from 120.00 to 99.00"
    cart = make_candidate(
        "i1",
        "cart_abandonment",
        1,
        0.9,
        T0,
        cfg,
        catalog=catalog(),
        cause="e",
        event_ts=T0,
        engaged=EngagedItem(carts=1, in_cart=True, last_ts=T0),
    )
    assert explain(cart, Verdict("emit", "ok")) == "You left this in your cart"
    reminder = make_candidate(
        "i1",
        "reminder",
        1,
        0.9,
        T0 + 2 * 86400,
        cfg,
        catalog=catalog(),
        cause="e",
        event_ts=T0,
        engaged=EngagedItem(carts=1, in_cart=True, last_ts=T0),
    )
    assert explain(reminder, Verdict("emit", "ok")) == "You left this in your cart 2 days ago"
    ending = make_candidate(
        "i1", "promotion_ending", 1, 0.9, T0, cfg, catalog=catalog(promotion=promo), cause="e", event_ts=T0
    )
    assert explain(ending, Verdict("emit", "ok")) == "The 20 % discount ends in 3 hours"
    # The timer was armed (event_ts) seven hours before it fired: the time left is the decision's.
    late = make_candidate(
        "i1",
        "promotion_ending",
        1,
        0.9,
        T0,
        cfg,
        catalog=catalog(promotion=promo),
        cause="e",
        event_ts=T0 - 7 * 3600,
    )
    assert explain(late, Verdict("emit", "ok")) == "The 20 % discount ends in 3 hours"
    back = make_candidate(
        "i1",
        "back_in_stock",
        1,
        0.9,
        T0,
        cfg,
        catalog=catalog(),
        cause="e",
        event_ts=T0,
        engaged=EngagedItem(views=2, last_ts=T0),
    )
    assert explain(back, Verdict("suppress", "min_gap")) == (
        "You viewed this 2 times; it is back in stock [not sent: min_gap]"
    )


def test_state_round_trips_through_json(cfg):
    state = UserPolicyState(
        opted_in=True, consent_ts=T0, time_zone="Europe/Berlin", responsiveness=0.05, responsiveness_ts=T0
    )
    push = build_push("u1", candidate(), Verdict("emit", "ok", threshold=0.5), T0, cfg, "v1")
    record_push(state, push, cfg)
    state.pushes[0].opened_at = T0 + 5
    record_hold(
        state, build_push("u1", candidate("i2"), Verdict("hold", "quiet_hours"), T0, cfg, "v1"), T0 + 9, cfg
    )
    restored = UserPolicyState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert UserPolicyState.from_dict(UserPolicyState().to_dict()) == UserPolicyState()


def test_push_history_is_bounded():
    cfg = config(max_push_records=5)
    state = UserPolicyState()
    for n in range(20):
        record_push(state, build_push("u1", candidate(f"i{n}"), Verdict("emit", "ok"), T0 + n, cfg, "v"), cfg)
    assert [r.item_id for r in state.pushes] == [f"i{n}" for n in range(15, 20)]
    record_push(
        state, build_push("u1", candidate("late"), Verdict("emit", "ok"), T0 + 30 * DAY, cfg, "v"), cfg
    )
    assert [r.item_id for r in state.pushes] == ["late"]  # older than every window that needs them


def test_decisions_for_the_audit_topic(cfg):
    state = UserPolicyState(pushes=[past("x", T0 - 10)])
    [(c, verdict)] = decide("u1", [candidate("i9")], state, T0, cfg)
    decision = build_decision("u1", c, verdict, T0, cfg)
    assert (decision.outcome, decision.reason, decision.score, decision.threshold) == (
        "suppressed",
        "min_gap",
        0.8,
        0.5,
    )
    [(c, verdict)] = decide("u1", [candidate("i9")], UserPolicyState(), T0, cfg)
    assert build_decision("u1", c, verdict, T0, cfg).outcome == "emitted"


def test_a_push_with_too_little_time_left_is_not_emitted() -> None:
    cfg = config(min_push_lifetime_seconds=600.0, push_ttl_seconds=3600.0)
    fresh = candidate(expires_at=T0 + 601)
    late = candidate(item_id="i2", expires_at=T0 + 600)
    verdicts = decide("u1", [fresh], UserPolicyState(), T0, cfg)
    assert verdicts[0][1].outcome == "emit"
    assert decide("u1", [late], UserPolicyState(), T0, cfg)[0][1].reason == "expired"
