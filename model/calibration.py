"""Calibration of the interest probability: P(candidate occurs within the next ``horizon`` events).

A Platt scaling ``sigmoid(a * x + b)`` of a per-candidate feature ``x``, fitted on validation sessions.
The candidates of each position are the model's top ``n_top`` items, the items that really occur in the
next ``horizon`` events, and ``n_random`` popularity-sampled items (a mix like what the stream asks
about). Half of the positions fit, the other half measures the expected calibration error (ECE, 15
equal-width bins). Features (``FEATURES``):

* ``log_softmax`` (artifacts before the cheap features; still loadable): ``score - logsumexp`` over the
  whole catalog. Comparable across users but costs a (D x n_items) product per user on the hot path.
* ``sampled_log_softmax``: ``score - m(h)`` where ``m`` is the logsumexp over a fixed sample of items
  chosen at training time (the ``n_head`` most popular exactly, plus ``n_tail`` others drawn uniformly and
  weighted by how many they stand for). Its cost is fixed, whatever the catalog size.
* ``logit``: the raw score ``h . e_i + b_i`` alone (cheapest; not normalised across users).

Training fits every feature and keeps the cheap one with the lower held-out ECE; ``metrics.json`` reports
the ECE of all three (``ece_by_feature``) so the price of dropping the full softmax is visible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # fitting needs these; serving (model.scorer reads FEATURES) must not load them
    from model.data import EncodedSessions
    from model.net import SessionGRU


def _logistic_loss(a: float, b: float, x: np.ndarray, y: np.ndarray, ridge: float) -> float:
    z = a * x + b
    # log(1 + e^z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * ridge * a * a)


def platt_fit(x: np.ndarray, y: np.ndarray, iters: int = 100, ridge: float = 1e-4) -> tuple[float, float]:
    """Logistic regression of ``y`` on ``x``: returns (a, b) with P(y=1) = sigmoid(a x + b).

    The feature is standardised first and Newton steps are halved until the loss decreases, so
    (nearly) separable data or extreme feature values cannot make it diverge.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x)
    x, y = x[finite], y[finite]
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    u = (x - mu) / sd
    a, b = 0.0, float(np.log((y.mean() + 1e-6) / (1.0 - y.mean() + 1e-6)))
    loss = _logistic_loss(a, b, u, y, ridge)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * u + b, -50.0, 50.0)))
        w = p * (1.0 - p)
        g = np.array([np.mean((p - y) * u) + ridge * a, np.mean(p - y)])
        hess = np.array([[np.mean(w * u * u) + ridge, np.mean(w * u)], [np.mean(w * u), np.mean(w) + 1e-12]])
        step = np.linalg.solve(hess, g)
        scale = 1.0
        while scale > 1e-6:
            na, nb = a - scale * float(step[0]), b - scale * float(step[1])
            new_loss = _logistic_loss(na, nb, u, y, ridge)
            if new_loss <= loss:
                break
            scale *= 0.5
        else:
            break
        improved = loss - new_loss
        a, b, loss = na, nb, new_loss
        if improved < 1e-12:
            break
    # back to the raw feature: a u + b = (a / sd) x + (b - a mu / sd)
    return a / sd, b - a * mu / sd


def platt_apply(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """Calibrated probabilities for features ``x``."""
    return 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -50.0, 50.0)))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |mean prediction - frequency| over equal-width probability bins."""
    edges = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for k in range(bins):
        mask = edges == k
        if mask.any():
            total += mask.sum() * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return total / max(len(p), 1)


CHEAP_FEATURES = ("sampled_log_softmax", "logit")
FEATURES = ("log_softmax",) + CHEAP_FEATURES


def normaliser_sample(
    counts: np.ndarray, n_head: int = 256, n_tail: int = 768, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Items and log-weights whose weighted logsumexp estimates the logsumexp over the whole catalog.

    The ``n_head`` most frequent items are taken exactly (weight 1: they hold much of the mass); the rest
    of the catalog is represented by ``n_tail`` items drawn uniformly without replacement, each weighted
    by ``len(rest) / n_tail``. A catalog no larger than ``n_head + n_tail`` is taken whole (exact).
    The size never exceeds ``n_head + n_tail``, so the hot path's cost does not grow with the catalog.
    """
    counts = np.asarray(counts, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    if len(order) <= n_head + n_tail:
        return np.sort(order).astype(np.int64), np.zeros(len(order), dtype=np.float64)
    head, rest = order[:n_head], order[n_head:]
    rng = np.random.default_rng(seed)
    tail = np.sort(rng.choice(rest, size=n_tail, replace=False))
    logw = np.concatenate([np.zeros(n_head), np.full(n_tail, np.log(len(rest) / n_tail))])
    return np.concatenate([head, tail]).astype(np.int64), logw


@torch.no_grad()
def calibration_pairs(
    model: SessionGRU,
    sessions: EncodedSessions,
    horizon: int,
    counts: np.ndarray,
    norm_items: np.ndarray | None = None,
    norm_logw: np.ndarray | None = None,
    n_top: int = 20,
    n_random: int = 20,
    max_positions: int = 10_000,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """({feature name: values}, label, position id) for candidates at validation positions.

    ``sampled_log_softmax`` is present only when ``norm_items``/``norm_logw`` are given.
    """
    from model.data import MAX_PREFIX  # training-side only (see the imports above)
    from model.evaluate import pad_left

    rng = np.random.default_rng(seed)
    futures = []
    for s in range(len(sessions)):
        a, b = sessions.offsets[s], sessions.offsets[s + 1]
        items = sessions.items[a:b]
        for pos in range(1, b - a):
            future = items[pos : pos + horizon]
            future = future[future >= 0]
            if len(future):
                futures.append((a, a + pos, future))
    if len(futures) > max_positions:
        keep = rng.choice(len(futures), size=max_positions, replace=False)
        futures = [futures[i] for i in sorted(keep)]
    q = counts / counts.sum()
    names = ["log_softmax", "logit"] + (["sampled_log_softmax"] if norm_items is not None else [])
    xs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    ys, ids = [], []
    batch = 512
    for start in range(0, len(futures), batch):
        chunk = futures[start : start + batch]
        # The latest MAX_PREFIX events, as a test case reads them: a whole long session is quadratic.
        items = pad_left([sessions.items[max(a, e - MAX_PREFIX) : e] for a, e, _ in chunk])
        types = np.maximum(pad_left([sessions.types[max(a, e - MAX_PREFIX) : e] for a, e, _ in chunk]), 0)
        h = model.encode_prefixes(torch.from_numpy(items), torch.from_numpy(types))
        base = model.full_scores(h, with_memory=False)
        memory = model.memory()
        full = base if memory is None else base + memory.dense(model.window_of(h))
        logit = full.numpy()
        logp = torch.log_softmax(full, dim=1).numpy()
        sampled = None
        if norm_items is not None and norm_logw is not None:
            # The normaliser estimates the GRU's partition function; the session-memory terms are left
            # out of it so that the hot path can compute it from the sample alone (scorer.interest).
            weighted = base[:, torch.from_numpy(norm_items)] + torch.from_numpy(norm_logw).float()
            sampled = logit - torch.logsumexp(weighted, dim=1, keepdim=True).numpy()
        if n_top < logp.shape[1]:
            top = np.argpartition(-logp, n_top, axis=1)[:, :n_top]
        else:  # argpartition needs n_top < n_items; a catalog this small is its own top list
            top = np.tile(np.arange(logp.shape[1]), (len(chunk), 1))
        rand = rng.choice(len(q), size=(len(chunk), n_random), p=q)
        for row, (_, _, future) in enumerate(chunk):
            cands = np.unique(np.concatenate([top[row], future, rand[row]]))
            xs["log_softmax"].append(logp[row, cands])
            xs["logit"].append(logit[row, cands])
            if sampled is not None:
                xs["sampled_log_softmax"].append(sampled[row, cands])
            ys.append(np.isin(cands, future).astype(np.float64))
            ids.append(np.full(len(cands), start + row))
    if not ys:
        return {name: np.zeros(0) for name in names}, np.zeros(0), np.zeros(0, np.int64)
    feats = {name: np.concatenate(v).astype(np.float64) for name, v in xs.items()}
    return feats, np.concatenate(ys), np.concatenate(ids)


def fit_calibration(
    model: SessionGRU, sessions: EncodedSessions, horizon: int, counts: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """Fit Platt scaling per feature on half the validation positions, measure ECE on the other half.

    Keeps the cheap feature (see ``CHEAP_FEATURES``) with the lower held-out ECE. Falls back to an
    identity-like mapping of the logit (a=1, b=0) when there is no usable validation data.
    """
    norm_items, norm_logw = normaliser_sample(np.asarray(counts), seed=seed)
    norm = {"norm_items": norm_items.tolist(), "norm_logw": [round(float(w), 6) for w in norm_logw]}
    x, y, ids = calibration_pairs(model, sessions, horizon, counts, norm_items, norm_logw, seed=seed)
    if len(y) < 20 or y.min() == y.max():
        return {
            "method": "platt",
            "feature": "logit",
            "horizon": horizon,
            "a": 1.0,
            "b": 0.0,
            "n_fit": 0,
            "n_check": 0,
            "ece_raw": float("nan"),
            "ece": float("nan"),
            "ece_by_feature": {},
        }
    fit = ids % 2 == 0
    check = ~fit if (~fit).any() else fit
    params: dict[str, tuple[float, float]] = {}
    eces: dict[str, float] = {}
    for name, values in x.items():
        a, b = platt_fit(values[fit], y[fit])
        params[name] = (a, b)
        eces[name] = float(expected_calibration_error(platt_apply(values[check], a, b), y[check]))
    chosen = min(CHEAP_FEATURES, key=lambda name: eces.get(name, float("inf")))
    a, b = params[chosen]
    return {
        "method": "platt",
        "feature": chosen,
        "horizon": horizon,
        "a": a,
        "b": b,
        "n_fit": int(fit.sum()),
        "n_check": int(check.sum()),
        "positive_rate": float(y[check].mean()),
        "ece_raw": float(expected_calibration_error(np.exp(x["log_softmax"][check]), y[check])),
        "ece": eces[chosen],
        "ece_by_feature": eces,
        **(norm if chosen == "sampled_log_softmax" else {}),
    }
