"""Learning from outcomes: contexts, decayed Beta posteriors, Thompson scores, exploration, persistence."""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import pytest

from stream.beta_draws import beta_cdf, beta_ppf, beta_sample, pick_uniform
from stream.contract import TRIGGERS
from stream.partition_state import is_partition_row
from stream.policy_config import PolicyConfig
from stream.response_estimates import (
    CONTEXTS,
    ENGAGEMENT_LEVELS,
    RESPONSE_PREFIX,
    ResponseEstimates,
    context_key,
)
from tests.policy.conftest import T0

DAY = 86400.0
CART = "cart_abandonment/in_cart/full_price"
BROWSE = "in_session/viewed_once/discounted"


def make(**overrides: Any) -> ResponseEstimates:
    """A table with the default response settings, overridable."""
    return ResponseEstimates.from_config(PolicyConfig.model_validate(overrides))


def seed(user: str, cause: str) -> bytes:
    """The seed the engine passes: BLAKE2b of user id and cause."""
    return hashlib.blake2b(f"{user}\x1f{cause}".encode(), digest_size=16).digest()


def feed(
    table: ResponseEstimates, ctx: str, at: float, pushes: int, push_conv: int, ghosts: int, ghost_conv: int
):
    """Record outcomes, all decided at ``at``."""
    for i in range(pushes):
        table.record_push(ctx, at)
        if i < push_conv:
            table.record_conversion(ctx, at, 50.0)
    for i in range(ghosts):
        table.record_ghost(ctx, at)
        if i < ghost_conv:
            table.record_ghost_conversion(ctx, at, 50.0)


# -- contexts ------------------------------------------------------------------------------------------


def test_context_key_buckets_engagement_and_offer():
    assert context_key("cart_abandonment", True, 5, 0.2) == "cart_abandonment/in_cart/discounted"
    assert context_key("in_session", False, 2, 0.0) == "in_session/viewed_2plus/full_price"
    assert context_key("in_session", False, 1, 0.0) == "in_session/viewed_once/full_price"
    assert context_key("price_drop", False, 0, 0.1) == "price_drop/not_engaged/discounted"
    with pytest.raises(ValueError, match="unknown trigger"):
        context_key("spam", False, 0, 0.0)


def test_contexts_are_bounded_and_cover_every_key():
    assert len(CONTEXTS) == len(TRIGGERS) * 4 * 2
    keys = {
        context_key(t, cart, views, disc)
        for t in TRIGGERS
        for cart in (True, False)
        for views in (0, 1, 2, 9)
        for disc in (0.0, 0.3)
    }
    assert keys == set(CONTEXTS)
    assert set(PolicyConfig().response_prior_rates) == set(ENGAGEMENT_LEVELS)


def test_unknown_context_is_refused():
    with pytest.raises(ValueError, match="unknown context"):
        make().record_push("in_session/bored/full_price", T0)


def test_prior_rates_setting_is_validated():
    with pytest.raises(ValueError):
        PolicyConfig.model_validate({"response_prior_rates": {"in_cart": 0.1}})
    with pytest.raises(ValueError):
        PolicyConfig.model_validate(
            {
                "response_prior_rates": {
                    "in_cart": 1.0,
                    "viewed_2plus": 0.1,
                    "viewed_once": 0.1,
                    "not_engaged": 0.1,
                }
            }
        )


# -- Beta helpers -------------------------------------------------------------------------------------


def test_beta_cdf_and_quantiles_match_closed_forms():
    assert beta_ppf(0.3, 1.0, 1.0) == pytest.approx(0.3, abs=1e-12)  # uniform
    assert beta_ppf(0.25, 2.0, 1.0) == pytest.approx(0.5, abs=1e-12)  # cdf x**2
    assert beta_cdf(0.5, 3.0, 3.0) == pytest.approx(0.5, abs=1e-12)  # symmetric
    assert beta_cdf(0.2, 1.0, 4.0) == pytest.approx(1 - 0.8**4, abs=1e-12)  # cdf 1 - (1 - x)**4
    # Large counts stay accurate (the continued fraction on the right side of the mean).
    a, b = 2000.0, 8000.0
    assert beta_cdf(beta_ppf(0.95, a, b), a, b) == pytest.approx(0.95, abs=1e-9)


# -- updates and decay ------------------------------------------------------------------------------------


def test_counts_decay_with_the_half_life():
    table = make(response_half_life_seconds=DAY)
    table.record_push(CART, T0)
    table.record_push(CART, T0 + DAY)  # weighs twice the first
    table.record_conversion(CART, T0 + DAY, 80.0)
    at_2nd = table.estimate(CART, T0 + DAY).push
    assert at_2nd.decisions == pytest.approx(1.5)  # 0.5 (one half-life old) + 1
    assert at_2nd.conversions == pytest.approx(1.0)
    assert at_2nd.revenue == pytest.approx(80.0)
    later = table.estimate(CART, T0 + 3 * DAY).push
    assert later.decisions == pytest.approx(1.5 / 4)
    assert later.conversions == pytest.approx(0.25)
    # Posterior: Beta(s*m + c, s*(1-m) + n - c) with s = 50, m = 0.10 (in_cart).
    a, b = table.posterior(CART, T0 + DAY, push=True)
    assert (a, b) == (pytest.approx(5.0 + 1.0), pytest.approx(45.0 + 0.5))
    # A time before the landmark reads as the landmark: values never grow backwards.
    assert table.estimate(CART, T0 - 10 * DAY).push.decisions == pytest.approx(1.5 * 2.0)


def test_landmark_rebase_keeps_values():
    table = make(response_half_life_seconds=60.0)
    table.record_push(CART, T0)
    table.record_push(CART, T0 + 3600.0 * 2)  # 120 half-lives later: the landmark moves
    assert table.estimate(CART, T0 + 7200.0).push.decisions == pytest.approx(1.0)
    assert math.isfinite(table.posterior(CART, T0 + 7200.0, True)[1])


def test_priors_dominate_without_data_and_data_with_lots():
    table = make()
    empty = table.estimate(CART, T0)
    assert empty.push.mean == pytest.approx(0.10)
    assert empty.no_push.mean == pytest.approx(0.10)
    assert empty.uplift == pytest.approx(0.0)
    assert empty.push.low < 0.10 < empty.push.high
    assert table.estimate(BROWSE, T0).push.mean == pytest.approx(0.02)  # the viewed_once family
    feed(table, CART, T0, pushes=20_000, push_conv=6_000, ghosts=20_000, ghost_conv=2_000)
    est = table.estimate(CART, T0)
    assert est.push.mean == pytest.approx(0.30, abs=0.002)
    assert est.no_push.mean == pytest.approx(0.10, abs=0.002)
    assert est.uplift == pytest.approx(0.20, abs=0.003)
    assert est.push.high - est.push.low < 0.02
    assert est.uplift_low < est.uplift < est.uplift_high
    assert est.revenue_per_conversion == pytest.approx(50.0)


def test_prior_lift_shifts_the_push_arm_only():
    table = make(response_prior_lift=0.02)
    est = table.estimate(CART, T0)
    assert est.push.mean == pytest.approx(0.12)
    assert est.no_push.mean == pytest.approx(0.10)
    assert est.uplift == pytest.approx(0.02)


@pytest.mark.parametrize(("push_conv", "ghost_conv", "sign"), [(300, 100, 1), (100, 300, -1)])
def test_uplift_sign_follows_treatment_vs_ghosts(push_conv: int, ghost_conv: int, sign: int):
    table = make()
    feed(table, CART, T0, pushes=1000, push_conv=push_conv, ghosts=1000, ghost_conv=ghost_conv)
    est = table.estimate(CART, T0, level=0.95)
    assert math.copysign(1.0, est.uplift) == sign
    assert (est.uplift_low > 0) if sign > 0 else (est.uplift_high < 0)  # the interval excludes 0
    samples = [table.score(CART, T0, seed("u", str(i))) for i in range(200)]
    assert sum(1 for s in samples if s * sign > 0) >= 195


def test_old_outcomes_fade_so_the_estimate_follows_drift():
    table = make(response_half_life_seconds=7 * DAY)
    feed(table, CART, T0, pushes=2000, push_conv=600, ghosts=2000, ghost_conv=200)
    assert table.estimate(CART, T0).uplift > 0.15
    later = T0 + 70 * DAY  # ten half-lives: the old outcomes weigh 1/1024
    feed(table, CART, later, pushes=2000, push_conv=200, ghosts=2000, ghost_conv=200)
    assert table.estimate(CART, later).uplift == pytest.approx(0.0, abs=0.01)


# -- Thompson score and exploration ---------------------------------------------------------------------


def test_same_seed_same_sample_different_seeds_differ():
    table = make()
    feed(table, CART, T0, pushes=100, push_conv=20, ghosts=100, ghost_conv=10)
    s = seed("u1", "ev-1")
    assert table.score(CART, T0, s) == table.score(CART, T0, s)
    assert make().score(CART, T0, s) == make().score(CART, T0, s)  # a fresh table (a replay) too
    draws = {table.score(CART, T0, seed("u1", f"ev-{i}")) for i in range(50)}
    assert len(draws) == 50
    # Contexts draw independently from the same seed.
    assert table.score(CART, T0, s) != table.score("cart_abandonment/in_cart/discounted", T0, s)


def test_a_sample_is_the_one_a_generator_seeded_by_its_seed_alone_draws():
    """The table re-seeds one generator per sample (cheaper than a new one): the draws are those of a
    fresh ``random.Random`` with the sample's seed, whatever was drawn before (a replay decides the same)."""
    table = make()
    feed(table, CART, T0, pushes=100, push_conv=20, ghosts=100, ghost_conv=10)
    s = seed("u1", "ev-1")
    digest = hashlib.blake2b(b"thompson\x1f" + s + b"\x1f" + CART.encode(), digest_size=16).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    (a1, b1), (a0, b0) = table.posterior(CART, T0, True), table.posterior(CART, T0, False)
    expected = beta_sample(rng, a1, b1) - beta_sample(rng, a0, b0)
    assert table.score(CART, T0, s) == expected
    for i in range(20):  # other samples in between
        table.score(CART, T0, seed("u2", f"ev-{i}"))
    assert table.score(CART, T0, s) == expected


def test_thompson_samples_follow_the_posterior():
    table = make()
    feed(table, CART, T0, pushes=400, push_conv=100, ghosts=400, ghost_conv=40)
    est = table.estimate(CART, T0)
    samples = [table.score(CART, T0, seed("u", str(i))) for i in range(4000)]
    mean = sum(samples) / len(samples)
    var = sum((x - mean) ** 2 for x in samples) / len(samples)
    half = (est.uplift_high - est.uplift) / 1.6449  # the 90 % interval's sd
    assert mean == pytest.approx(est.uplift, abs=0.003)
    assert math.sqrt(var) == pytest.approx(half, rel=0.08)


def test_small_prior_parameters_still_sample():
    # Shape < 1 (a rare family with a weak prior) goes through the boosted Gamma draw.
    table = make(response_prior_strength=2.0)
    samples = [table.score("price_drop/not_engaged/full_price", T0, bytes([i])) for i in range(200)]
    assert all(-1.0 <= s <= 1.0 for s in samples)
    assert len(set(samples)) == 200


def test_exploration_share_over_many_seeds():
    table = make(exploration_share=0.05)
    n = 20_000
    share = sum(table.explore(seed(f"u{i}", "ev")) for i in range(n)) / n
    assert share == pytest.approx(0.05, abs=0.006)  # about 4 standard errors
    s = seed("u7", "ev-3")
    assert table.explore(s) == table.explore(s)
    assert not make(exploration_share=0.0).explore(s)
    assert all(make(exploration_share=1.0).explore(seed(f"u{i}", "ev")) for i in range(100))


def test_pick_uniform_is_uniform_and_deterministic():
    counts = [0, 0, 0, 0]
    for i in range(8000):
        counts[pick_uniform(seed(f"u{i}", "ev"), 4)] += 1
    assert all(1800 < c < 2200 for c in counts)
    assert pick_uniform(b"x", 7) == pick_uniform(b"x", 7)
    with pytest.raises(ValueError):
        pick_uniform(b"x", 0)


# -- frozen ----------------------------------------------------------------------------------------------


def test_frozen_never_explores_scores_the_mean_and_ignores_updates():
    learning = make(exploration_share=1.0)
    feed(learning, CART, T0, pushes=300, push_conv=90, ghosts=300, ghost_conv=30)
    rows = learning.drain()
    frozen = make(exploration_share=1.0, learning_frozen=True)
    frozen.load(rows.items())  # type: ignore[arg-type]
    est = frozen.estimate(CART, T0)
    assert frozen.score(CART, T0, b"a") == pytest.approx(est.uplift)
    assert frozen.score(CART, T0, b"b") == frozen.score(CART, T0, b"a")
    assert not any(frozen.explore(seed(f"u{i}", "ev")) for i in range(1000))
    feed(frozen, CART, T0 + DAY, pushes=500, push_conv=0, ghosts=0, ghost_conv=0)
    assert frozen.drain() == {}
    # The clock stops too: decay cannot move a frozen estimate.
    assert frozen.estimate(CART, T0 + 60 * DAY) == est
    assert frozen.score(CART, T0 + 60 * DAY, b"c") == frozen.score(CART, T0, b"a")


# -- persistence ----------------------------------------------------------------------------------------


def test_rows_round_trip_to_identical_estimates():
    table = make()
    feed(table, CART, T0, pushes=40, push_conv=9, ghosts=12, ghost_conv=2)
    feed(table, BROWSE, T0 + DAY, pushes=25, push_conv=1, ghosts=3, ghost_conv=0)
    rows = table.drain()
    assert all(is_partition_row(key) and key.startswith(RESPONSE_PREFIX) for key in rows)
    assert all(value is not None for value in rows.values())
    assert table.drain() == {}  # drained rows are forgotten
    # Later changes drain only their context (and the meta row when the clock moved).
    table.record_push(BROWSE, T0 + 2 * DAY)
    more = table.drain()
    assert set(more) == {RESPONSE_PREFIX, RESPONSE_PREFIX + BROWSE.encode()}
    rows.update(more)
    restored = make()
    restored.load([*rows.items(), (b"user-1", b"{}"), (b"\x00p", b"{}")])  # type: ignore[list-item]
    assert len(restored) == 2
    now = T0 + 5 * DAY
    for ctx in (CART, BROWSE, "price_drop/not_engaged/full_price"):
        assert restored.estimate(ctx, now) == table.estimate(ctx, now)
        assert restored.score(ctx, now, b"s") == table.score(ctx, now, b"s")
    # And they keep learning identically.
    for t in (table, restored):
        t.record_push(CART, now)
    assert restored.estimate(CART, now) == table.estimate(CART, now)
    assert restored.drain() == table.drain()


def test_a_damaged_context_row_is_skipped_alone():
    """The row stays stored, so raising on it reset every context of the partition at each load."""
    table = make()
    feed(table, CART, T0, pushes=40, push_conv=9, ghosts=12, ghost_conv=2)
    feed(table, BROWSE, T0 + DAY, pushes=25, push_conv=1, ghosts=3, ghost_conv=0)
    rows = table.drain()
    rows[RESPONSE_PREFIX + BROWSE.encode()] = b"\x00garbage"
    restored = make()
    restored.load(list(rows.items()))  # type: ignore[arg-type]
    now = T0 + 5 * DAY
    assert restored.estimate(CART, now) == table.estimate(CART, now)
    assert restored.estimate(BROWSE, now) == make().estimate(BROWSE, now)  # starts over
