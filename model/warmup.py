"""Stream warm-up of items placed from content: a lift for being new in the shopper's category, and
for their own recent events.

An item added from its content (no training history) gets the vector and bias its content maps to:
with category-only content every new item of a category scores alike, at its category's *mean* item,
below the established items the shopper is looking at. The warm-up adds

    ``offset + gamma * log1p(weighted events per day)``

to the score of the content-placed items of the categories the shopper browses now: ``offset`` says
how much more likely than the category's mean item a new item of that category is to come next
(novelty: shoppers click what is new), ``gamma`` how much its own traffic says. The rate is read from
the same time-decayed count the worker keeps for trending (views 1, carts 3, purchases 5, half-life
``policy.trending_half_life_seconds``): at a steady rate ``r`` a decayed count settles at
``r * half_life / ln 2``.

Both weights relate to the model's logit scale, which differs per model, so they are chosen per
model on its own training data, never on test data: ``kairos train --items`` (``model.warmup_fit``)
trains a second model on the first 75 % of the training period, with a seeded share of the items held
back until then (placed from content, like new arrivals), and keeps the pair that ranks the rest best,
warm and cold cases together, among those that cost the warm cases at most 1 % of their Recall@20
and MRR@20; the
artifact carries them (``metrics.json``, ``warmup``). The worker (``stream/scoring.py``) adds the lift
to the content-placed candidates of the shopper's recent categories, where it proposes such items
(``stream.engine.intake``), from the partition's trending count captured with the ask, times the
number of partitions; the weights are judged on those categories too (:func:`in_session_categories`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The weights the warm-up tries on validation (0: off). Model scores of one state span about one
# logit between the median item and the top 20 on the datasets measured, so steps stay small.
GAMMAS: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5)
# The offsets (logits added to every content-placed item of the shopper's recent categories) it tries.
OFFSETS: tuple[float, ...] = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


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


def lift(feature: np.ndarray, gamma: float, offset: float = 0.0) -> np.ndarray:
    """The warm-up of content-placed items with count feature ``feature``: ``offset + gamma * feature``."""
    return offset + gamma * np.asarray(feature, dtype=np.float64)


def warmed(
    scores: np.ndarray, feature: np.ndarray, lifted: np.ndarray, gamma: float, offset: float = 0.0
) -> np.ndarray:
    """``scores`` (B, N) plus :func:`lift` on the cells ``lifted`` (bool, (N,) or (B, N): the
    content-placed items, of the session's recent categories where the worker proposes them)."""
    if gamma == 0.0 and offset == 0.0:
        return scores
    mask = lifted[None, :] if lifted.ndim == 1 else lifted
    return scores + np.where(mask, lift(feature, gamma, offset), 0.0)


def in_session_categories(item_categories: np.ndarray, recent: Sequence[Sequence[int]]) -> np.ndarray:
    """(B, N) bool: whether each item's category (``item_categories`` (N,) codes, -1: none) is among
    the row's ``recent`` category codes. The worker proposes content-placed items from the categories
    of the shopper's recent items (``stream.content_items.NewItems``), so the lift is judged there."""
    out = np.zeros((len(recent), len(item_categories)), dtype=bool)
    for row, codes in enumerate(recent):
        if len(codes):
            out[row] = np.isin(item_categories, np.asarray(codes)) & (item_categories >= 0)
    return out
