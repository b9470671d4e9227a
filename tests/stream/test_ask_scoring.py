"""AskScorer.score cuts a round's score matrix into per-ask results as the per-ask rule says.

The rule, written out ask by ask in :func:`expected` (as the engine applied it until 2026-12-07): a
candidate is valid when the model knows it and both its scores are finite; the indexed interests are
the valid ones at or above ``interest_index_min_interest`` in the ask's order; the top are the valid
ones at or above the floor, best first by interest with ties in the ask's order, filtered by
``pushable``, at most ``max_decide``. An ask with priors takes them as its interests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from stream.asks import Ask, BatchUser, Scored
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.scoring import AskScorer
from stream.state import UserState


class MatrixScorer:
    """Gives the scores it was handed for the asks' candidates (unknown items: index -1)."""

    def __init__(self, index: dict[str, int], raws: np.ndarray, probs: np.ndarray) -> None:
        self.index, self.raws, self.probs = index, raws, probs

    def initial_state(self, n: int) -> np.ndarray:
        return np.zeros((n, 2), dtype=np.float32)

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        return np.array([self.index.get(i, -1) for i in item_ids], dtype=np.int64)

    def score_and_interest(
        self, states: np.ndarray, candidates: np.ndarray, lift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        valid = candidates >= 0
        raw = np.where(valid, self.raws[: len(states), : candidates.shape[1]], -np.inf).astype(np.float32)
        return raw, np.where(valid, self.probs[: len(states), : candidates.shape[1]], 0.0).astype(np.float32)


def expected(
    asks: list[Ask], raws: np.ndarray, probs: np.ndarray, cands: np.ndarray, cfg: PolicyConfig
) -> list[Scored]:
    """The per-ask rule (module doc), one ask at a time."""
    floor = min(cfg.min_threshold, cfg.interest_index_min_interest) / (1.0 + cfg.promotion_weight)
    out = []
    for row, ask in enumerate(asks):
        n = len(ask.items)
        p_row, raw_row = probs[row, :n], raws[row, :n]
        valid = (cands[row, :n] >= 0) & np.isfinite(raw_row) & np.isfinite(p_row)
        if ask.priors is None:
            hits = np.flatnonzero(valid & (p_row >= cfg.interest_index_min_interest))
            indexed = [(ask.items[i], float(p_row[i])) for i in hits]
        else:
            p_row = np.asarray(ask.priors, dtype=np.float64)
            raw_row = np.where(valid, raw_row, 0.0)
            valid = np.ones(n, dtype=bool)
            indexed = []
        ranked = np.argsort(-p_row, kind="stable")
        order = ranked[(valid & (p_row >= floor))[ranked]].tolist()
        if ask.pushable is not None:
            order = [i for i in order if ask.items[i] in ask.pushable]
        top = [(ask.items[i], ask.sources[i], float(raw_row[i]), float(p_row[i])) for i in order[:5]]
        out.append(Scored(top, indexed))
    return out


def _ask(rng: random.Random, n: int, catalog: list[str]) -> Ask:
    user = BatchUser("u", 0, UserState(), Engagement())
    items = tuple(rng.sample(catalog, n))
    pushable = frozenset(rng.sample(items, rng.randint(0, n))) if rng.random() < 0.3 else None
    values = [0.0, 0.05, 0.125, 0.2, 0.2, 0.7]
    priors = tuple(rng.choice(values) for _ in items) if rng.random() < 0.2 else None
    return Ask(
        user, "in_session", "c", 0.0, 0.0, items, tuple("s" for _ in items), {}, None, True,
        pushable=pushable, priors=priors,
    )  # fmt: skip


@pytest.mark.parametrize("floor", [0.125, 0.0])  # 0: every candidate with any value is kept
def test_a_rounds_results_are_each_asks_own_rule_whatever_the_round(floor: float) -> None:
    rng = random.Random(7)
    cfg = PolicyConfig(min_threshold=floor, interest_index_min_interest=0.25, promotion_weight=0.0)
    catalog = [f"i{k}" for k in range(40)]
    index = {item: k for k, item in enumerate(catalog) if k % 7}  # every 7th item unknown to the model
    for _ in range(200):
        asks = [_ask(rng, rng.randint(0, 12), catalog) for _ in range(rng.randint(1, 9))]
        width = max(len(a.items) for a in asks)
        # Few distinct values (ties), each bound itself (the floor 0.125, the index's 0.25), values
        # between and below them, and the non-finite an overflow gives.
        grid = [0.0, 0.05, 0.125, 0.2, 0.25, 0.5, 0.5, 0.9, np.nan, np.inf]
        probs = np.array([[rng.choice(grid) for _ in range(width)] for _ in asks], dtype=np.float32)
        raws = np.array([[rng.choice([1.0, -2.5, np.inf, -np.inf]) for _ in range(width)] for _ in asks])
        scorer = MatrixScorer(index, raws, probs)
        got = AskScorer(scorer, cfg).score(asks, [None] * len(asks))  # type: ignore[arg-type]
        cands = np.full((len(asks), width), -1, dtype=np.int64)
        for row, ask in enumerate(asks):
            cands[row, : len(ask.items)] = scorer.item_indices(ask.items)
        raw, prob = scorer.score_and_interest(np.zeros((len(asks), 2)), cands)
        assert got == expected(asks, raw, prob, cands, cfg)
