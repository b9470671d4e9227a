"""The stream warm-up of content-placed items (model.warmup): decayed counts and the score lift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.warmup import count_feature, decayed_counts, warmed
from stream.candidates import TrendingItems

HALF_LIFE = 6 * 3600.0


def test_decayed_counts_match_the_workers_trending_counter_and_never_peek_ahead() -> None:
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 3 * 86400, 400))
    columns = rng.integers(0, 5, 400)
    kinds = rng.choice(["view", "add_to_cart", "purchase"], 400)
    weights = np.array([{"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}[k] for k in kinds])
    at = float(times[300])
    counts = decayed_counts(times, columns, weights, [at], 5, HALF_LIFE)[0]
    trending = TrendingItems(half_life_seconds=HALF_LIFE)
    for t, c, k in zip(times[:300], columns[:300], kinds[:300], strict=True):
        trending.observe(f"i{c}", str(k), float(t))
    for c in range(5):
        assert counts[c] == pytest.approx(trending.score(f"i{c}", at), rel=1e-9)
    # The event at exactly ``at`` is not counted (strictly before the case).
    same_time = decayed_counts(times, columns, weights, [at], 5, HALF_LIFE)[0]
    np.testing.assert_allclose(same_time, counts)
    later = decayed_counts(times, columns, weights, [at + 1e-6], 5, HALF_LIFE)[0]
    assert later[columns[300]] > counts[columns[300]]


def test_a_steady_rate_reads_back_as_events_per_day() -> None:
    per_day = 48.0
    times = np.arange(0.0, 10 * 86400.0, 86400.0 / per_day)
    counts = decayed_counts(
        times, np.zeros(len(times), dtype=np.int64), np.ones(len(times)), [times[-1] + 1], 1, HALF_LIFE
    )
    assert math.expm1(float(count_feature(counts, HALF_LIFE)[0, 0])) == pytest.approx(per_day, rel=0.05)


def test_warmed_lifts_only_placed_items_by_their_own_counts() -> None:
    scores = np.array([[0.5, 0.4, 0.1, 0.1]])
    placed = np.array([False, False, True, True])
    feature = np.array([[3.0, 3.0, 2.0, 0.0]])
    out = warmed(scores, feature, placed, 0.2)
    np.testing.assert_allclose(out, [[0.5, 0.4, 0.5, 0.1]])
    assert warmed(scores, feature, placed, 0.0) is scores
