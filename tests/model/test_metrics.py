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


def test_unknown_targets_are_dropped_and_counted() -> None:
    index = ItemIndex.build(SessionLog(items=[["a", "b", "c"]]))
    cases = cases_from_sessions(encode(SessionLog(items=[["a", "x", "b", "zz"]]), index))
    # a -> x (x unknown: dropped), a x -> b (kept, x stays -1 in the prefix), ... -> zz (dropped)
    assert len(cases) == 1 and cases.n_dropped == 2
    assert cases.items.tolist() == [index.index("a"), -1]
    res = evaluate_scores(lambda rows: np.tile(np.arange(3.0), (len(rows), 1)), cases)
    assert res["n_cases"] == 1 and res["n_dropped"] == 2


def test_empty_accumulator_reports_zero() -> None:
    assert RankAccumulator().result()["recall@20"] == 0.0
