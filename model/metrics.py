"""Next-item ranking metrics over the whole catalog: Recall@K and MRR@K with pessimistic ties."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS: tuple[int, ...] = (1, 5, 10, 20)


def pessimistic_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target: the number of items scoring >= the target (ties count against it).

    ``scores`` is (B, n_items); a NaN target score ranks last.
    """
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    ranks = (scores >= target_scores).sum(axis=1).astype(np.int64)
    ranks[np.isnan(target_scores[:, 0])] = scores.shape[1]
    return ranks


class RankAccumulator:
    """Accumulates ranks and reports ``recall@K``, ``mrr@K`` for each K, plus ``n_cases``."""

    def __init__(self, ks: Sequence[int] = KS) -> None:
        self.ks = tuple(ks)
        self.hits = dict.fromkeys(self.ks, 0.0)
        self.rr = dict.fromkeys(self.ks, 0.0)
        self.n = 0

    def add(self, ranks: np.ndarray) -> None:
        """Add a batch of 1-based ranks."""
        ranks = np.asarray(ranks)
        inv = 1.0 / ranks
        for k in self.ks:
            within = ranks <= k
            self.hits[k] += float(within.sum())
            self.rr[k] += float(inv[within].sum())
        self.n += len(ranks)

    def result(self) -> dict[str, float]:
        """Mean Recall@K and MRR@K (0 when there were no cases) and the case count."""
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"recall@{k}"] = self.hits[k] / self.n if self.n else 0.0
            out[f"mrr@{k}"] = self.rr[k] / self.n if self.n else 0.0
        out["n_cases"] = self.n
        return out
