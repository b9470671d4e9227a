"""Calibration of the interest probability: P(candidate occurs within the next ``horizon`` events).

Feature: the candidate's log-probability under the model's softmax over the whole catalog
(``score - logsumexp(all scores)``), which unlike the raw score is comparable across users. A Platt
scaling ``sigmoid(a * logp + b)`` is fitted on validation sessions; the candidates of each position are
the model's top ``n_top`` items, the items that really occur in the next ``horizon`` events, and
``n_random`` popularity-sampled items (a mix like what the stream asks about). Half of the positions fit,
the other half measures the expected calibration error (ECE, 15 equal-width bins).
"""

from __future__ import annotations

import numpy as np
import torch

from model.data import EncodedSessions
from model.evaluate import pad_left
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


@torch.no_grad()
def calibration_pairs(
    model: SessionGRU,
    sessions: EncodedSessions,
    horizon: int,
    counts: np.ndarray,
    n_top: int = 20,
    n_random: int = 20,
    max_positions: int = 10_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log-probability feature, label, position id) for candidates at validation positions."""
    rng = np.random.default_rng(seed)
    prefixes, futures = [], []
    for s in range(len(sessions)):
        a, b = sessions.offsets[s], sessions.offsets[s + 1]
        items = sessions.items[a:b]
        for pos in range(1, b - a):
            future = items[pos : pos + horizon]
            future = future[future >= 0]
            if len(future):
                prefixes.append(s)
                futures.append((a, a + pos, future))
    if len(futures) > max_positions:
        keep = rng.choice(len(futures), size=max_positions, replace=False)
        futures = [futures[i] for i in sorted(keep)]
    q = counts / counts.sum()
    xs, ys, ids = [], [], []
    batch = 512
    for start in range(0, len(futures), batch):
        chunk = futures[start : start + batch]
        items = pad_left([sessions.items[a:e] for a, e, _ in chunk])
        types = np.maximum(pad_left([sessions.types[a:e] for a, e, _ in chunk]), 0)
        h = model.encode_prefixes(torch.from_numpy(items), torch.from_numpy(types))
        logp = torch.log_softmax(model.full_scores(h), dim=1).numpy()
        top = np.argpartition(-logp, n_top, axis=1)[:, :n_top]
        rand = rng.choice(len(q), size=(len(chunk), n_random), p=q)
        for row, (_, _, future) in enumerate(chunk):
            cands = np.unique(np.concatenate([top[row], future, rand[row]]))
            xs.append(logp[row, cands])
            ys.append(np.isin(cands, future).astype(np.float64))
            ids.append(np.full(len(cands), start + row))
    if not xs:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys), np.concatenate(ids)


def fit_calibration(
    model: SessionGRU, sessions: EncodedSessions, horizon: int, counts: np.ndarray, seed: int = 0
) -> dict[str, float | int | str]:
    """Fit Platt scaling on half the validation positions, report ECE on the other half.

    Falls back to an identity-like mapping (a=1, b=0) when there is no usable validation data.
    """
    x, y, ids = calibration_pairs(model, sessions, horizon, counts, seed=seed)
    if len(x) < 20 or y.min() == y.max():
        return {
            "method": "platt",
            "feature": "log_softmax",
            "horizon": horizon,
            "a": 1.0,
            "b": 0.0,
            "n_fit": 0,
            "n_check": 0,
            "ece_raw": float("nan"),
            "ece": float("nan"),
        }
    fit = ids % 2 == 0
    a, b = platt_fit(x[fit], y[fit])
    check = ~fit if (~fit).any() else fit
    return {
        "method": "platt",
        "feature": "log_softmax",
        "horizon": horizon,
        "a": a,
        "b": b,
        "n_fit": int(fit.sum()),
        "n_check": int(check.sum()),
        "positive_rate": float(y[check].mean()),
        "ece_raw": float(expected_calibration_error(np.exp(x[check]), y[check])),
        "ece": float(expected_calibration_error(platt_apply(x[check], a, b), y[check])),
    }
