"""The cold-items benchmark's ranking arithmetic: pessimistic ranks and tie counts of the targets,
Recall@K and MRR@K of a list of ranks, the paired hit counts of two methods on the same cases with
their sign test, and the model's scores of the whole catalog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from benchmarks.cold_start.config import K
from model.scorer import IncrementalScorer


def ranks_and_ties(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pessimistic 1-based ranks and how many other items score exactly the target's score."""
    t = scores[np.arange(len(targets)), targets][:, None]
    return (scores >= t).sum(axis=1), (scores == t).sum(axis=1) - 1


def summary(ranks: np.ndarray) -> dict[str, float]:
    """Recall@K and MRR@K (K = 20 and 10) and the case count."""
    out: dict[str, float] = {"n": int(len(ranks))}
    for k in (10, K):
        out[f"recall@{k}"] = float(np.mean(ranks <= k)) if len(ranks) else 0.0
        out[f"mrr@{k}"] = float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0))) if len(ranks) else 0.0
    return out


def paired_hits(ranks: Mapping[str, Sequence[int]], ref: str) -> dict[str, list[int]]:
    """Per method: [cases only ``ref`` has in its top K, cases only the method has] (the same cases)."""
    if ref not in ranks:
        return {}
    hit = np.array(ranks[ref]) <= K
    out = {}
    for name, r in ranks.items():
        other = np.array(r) <= K
        if name != ref and len(other) == len(hit):
            out[name] = [int(np.sum(hit & ~other)), int(np.sum(other & ~hit))]
    return out


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test p-value of ``a`` against ``b`` discordant cases."""
    n = a + b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def full_scores(scorer: IncrementalScorer, states: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float64 model scores of the first ``n`` catalog items (all of them: ``n`` = n_items)."""
    return scorer.catalog_scores(states)[:, :n].astype(np.float64)
