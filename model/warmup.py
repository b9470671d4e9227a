"""Stream warm-up of items placed from content: their own recent events lift their scores.

An item added from its content (no training history) gets the vector and bias its content maps to:
with category-only content every new item of a category scores alike, below the established items.
What sets a new item apart in the first hours is how much shoppers touch it. The warm-up adds
``gamma * log1p(weighted events per day)`` to the score of content-placed items, the rate read from
the same time-decayed count the worker keeps for trending (views 1, carts 3, purchases 5, half-life
``policy.trending_half_life_seconds``): at a steady rate ``r`` a decayed count settles at
``r * half_life / ln 2``.

``gamma`` relates a count to the model's logit scale, which differs per model, so it is chosen per
model on its own training data, never on test data: ``kairos train --items`` (``model.warmup_fit``)
trains a second model on the first 75 % of the training period and keeps the weight that ranks the
rest best, warm and cold cases together, and the artifact carries it (``metrics.json``, ``warmup``).
The worker (``stream/scoring.py``) adds the lift to the content-placed candidates of the shopper's
recent categories, where it proposes such items (``stream.engine.intake``), from the partition's
trending count captured with the ask, times the number of partitions; the weight is judged on those
categories too (:func:`in_session_categories`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The weights the warm-up tries on validation (0: off). Model scores of one state span about one
# logit between the median item and the top 20 on the datasets measured, so steps stay small.
GAMMAS: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5)


def decayed_counts(
    times: np.ndarray,
    columns: np.ndarray,
    weights: np.ndarray,
    at: Sequence[float],
    n_items: int,
    half_life_s: float,
) -> np.ndarray:
    """(len(at), n_items) time-decayed weighted event counts strictly before each time in ``at``.

    ``times`` (sorted), ``columns`` (item index) and ``weights`` (event weight) describe the events;
    events older than 20 half-lives are left out (they weigh less than 1e-6).
    """
    out = np.zeros((len(at), n_items), dtype=np.float64)
    horizon = 20.0 * half_life_s
    for row, t in enumerate(at):
        hi = int(np.searchsorted(times, t, side="left"))
        lo = int(np.searchsorted(times, t - horizon, side="left"))
        if hi > lo:
            decay = np.exp2(-(t - times[lo:hi]) / half_life_s)
            out[row] = np.bincount(columns[lo:hi], weights=weights[lo:hi] * decay, minlength=n_items)
    return out


def count_feature(decayed: np.ndarray, half_life_s: float) -> np.ndarray:
    """``log1p`` of the weighted events per day a decayed count stands for (steady state)."""
    return np.log1p(np.maximum(decayed, 0.0) * (math.log(2.0) / half_life_s * 86400.0))


def warmed(scores: np.ndarray, feature: np.ndarray, placed: np.ndarray, gamma: float) -> np.ndarray:
    """``scores`` (B, N) plus ``gamma * feature`` on the content-placed columns (``placed``, (N,) bool)."""
    if gamma == 0.0:
        return scores
    return scores + np.where(placed[None, :], gamma * feature, 0.0)


def in_session_categories(item_categories: np.ndarray, recent: Sequence[Sequence[int]]) -> np.ndarray:
    """(B, N) bool: whether each item's category (``item_categories`` (N,) codes, -1: none) is among
    the row's ``recent`` category codes. The worker proposes content-placed items from the categories
    of the shopper's recent items (``stream.content_items.NewItems``), so the lift is judged there."""
    out = np.zeros((len(recent), len(item_categories)), dtype=bool)
    for row, codes in enumerate(recent):
        if len(codes):
            out[row] = np.isin(item_categories, np.asarray(codes)) & (item_categories >= 0)
    return out
