"""Metrics on hand-made cases: ties are pessimistic, K may exceed the catalog, dropped cases counted."""

from __future__ import annotations

import numpy as np
import pytest

from model.data import ItemIndex, SessionLog, cases_from_sessions, encode
from model.evaluate import evaluate_scores
from model.metrics import RankAccumulator, pessimistic_ranks


def test_ranks_count_ties_against_the_target() -> None:
    scores = np.array([[0.5, 0.5, 0.1], [0.9, 0.2, 0.2], [1.0, 1.0, 1.0]])
    ranks = pessimistic_ranks(scores, np.array([0, 1, 2]))
    assert ranks.tolist() == [2, 3, 3]


def test_recall_and_mrr_by_hand() -> None:
    acc = RankAccumulator(ks=(1, 2, 5))
    acc.add(np.array([1, 2, 4]))
    res = acc.result()
    assert res["recall@1"] == pytest.approx(1 / 3)
    assert res["recall@2"] == pytest.approx(2 / 3)
    assert res["mrr@2"] == pytest.approx((1 + 0.5) / 3)
    assert res["mrr@5"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert res["n_cases"] == 3


def test_k_larger_than_catalog_counts_every_case() -> None:
    scores = np.array([[0.0, 1.0], [1.0, 0.0]])
    acc = RankAccumulator(ks=(20,))
    acc.add(pessimistic_ranks(scores, np.array([0, 0])))
    assert acc.result()["recall@20"] == 1.0
    assert acc.result()["mrr@20"] == pytest.approx((0.5 + 1.0) / 2)


def test_nan_target_ranks_last() -> None:
    ranks = pessimistic_ranks(np.array([[np.nan, 0.1, 0.2]]), np.array([0]))
    assert ranks.tolist() == [3]


def test_unknown_targets_count_as_misses() -> None:
    index = ItemIndex.build(SessionLog(items=[["a", "b", "c"]]))
    cases = cases_from_sessions(encode(SessionLog(items=[["a", "x", "b", "zz"]]), index))
    # a -> x (x unknown: dropped), a x -> b (kept, x stays -1 in the prefix), ... -> zz (dropped)
    assert len(cases) == 1 and cases.n_dropped == 2
    assert cases.items.tolist() == [index.index("a"), -1]
    res = evaluate_scores(lambda rows: np.tile(np.arange(3.0), (len(rows), 1)), cases)
    # The two unrankable cases are misses: 3 cases, one ranked (b: rank 2 of 3, only c scores higher).
    assert res["n_cases"] == 3 and res["n_dropped"] == 2
    assert res["recall@1"] == 0.0 and res["recall@5"] == pytest.approx(1 / 3)
    assert res["mrr@20"] == pytest.approx(0.5 / 3)


def test_empty_accumulator_reports_zero() -> None:
    assert RankAccumulator().result()["recall@20"] == 0.0


def test_platt_recovers_a_known_logistic_and_lowers_ece() -> None:
    from model.calibration import expected_calibration_error, platt_apply, platt_fit

    rng = np.random.default_rng(0)
    x = rng.normal(-8.0, 3.0, size=20_000)  # log-probabilities are large negative numbers
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(0.8 * x + 4.0)))).astype(float)
    a, b = platt_fit(x, y)
    assert a == pytest.approx(0.8, abs=0.08) and b == pytest.approx(4.0, abs=0.5)
    assert expected_calibration_error(platt_apply(x, a, b), y) < 0.02


def test_platt_survives_separable_data() -> None:
    from model.calibration import platt_apply, platt_fit

    x = np.array([-30.0, -20.0, -10.0, -1.0, -0.5, -0.1])
    y = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    a, b = platt_fit(x, y)
    p = platt_apply(x, a, b)
    assert np.isfinite([a, b]).all() and p[:3].max() < 0.5 < p[3:].min()
