"""Full-catalog next-item evaluation shared by the GRU and the baselines (protocol of the data README).

One rule is stricter than that README: a case whose target is not in the model's catalog counts as a miss
(and is reported as ``n_dropped``) instead of being left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from model.data import Cases
from model.metrics import KS, RankAccumulator, pessimistic_ranks
from model.net import SessionGRU
from model.session_memory import SessionMemory
from model.session_votes import SessionVotes, vote_term


def pad_left(segments: Sequence[np.ndarray], fill: int = -1) -> np.ndarray:
    """Stack 1-D int arrays right-aligned into (B, T), padding on the left with ``fill``."""
    width = max((len(s) for s in segments), default=0)
    out = np.full((len(segments), max(width, 1)), fill, dtype=np.int64)
    for row, seg in enumerate(segments):
        if len(seg):
            out[row, width - len(seg) :] = seg
    return out


def prefix_batch(cases: Cases, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded items and types of the prefixes of ``rows``."""
    items = [cases.items[cases.offsets[c] : cases.offsets[c + 1]] for c in rows]
    types = [cases.types[cases.offsets[c] : cases.offsets[c + 1]] for c in rows]
    return pad_left(items), np.maximum(pad_left(types), 0)


@torch.no_grad()
def model_states(model: SessionGRU, cases: Cases, rows: np.ndarray) -> torch.Tensor:
    """GRU states after reading each prefix of ``rows`` (unknown items skipped)."""
    items, types = prefix_batch(cases, rows)
    return model.encode_prefixes(torch.from_numpy(items), torch.from_numpy(types))


def evaluate_scores(
    score_fn: Callable[[np.ndarray], np.ndarray], cases: Cases, batch_size: int = 512, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Rank each target among all items with ``score_fn(rows) -> (len(rows), n_items)`` scores.

    Cases are visited shortest prefix first (less padding); the metrics do not depend on the order.
    Returns ``recall@K``, ``mrr@K``, ``n_cases`` and ``n_dropped``. A case whose target the model cannot
    rank (``cases.n_dropped``: the target is not in the model's catalog) is a **miss**: it counts in
    ``n_cases`` and in every denominator, so a smaller catalog cannot flatter the figures;
    ``n_dropped`` says how many there were.
    """
    acc = RankAccumulator(ks)
    order = np.argsort(np.diff(cases.offsets), kind="stable")
    for a in range(0, len(order), batch_size):
        rows = order[a : a + batch_size]
        acc.add(pessimistic_ranks(score_fn(rows), cases.targets[rows]))
    out = acc.result()
    ranked = int(out["n_cases"])
    total = ranked + cases.n_dropped
    if cases.n_dropped and total:
        for key in out:
            if "@" in key:
                out[key] *= ranked / total  # hits / total: the unrankable cases add nothing but the count
    out["n_cases"] = total
    out["n_dropped"] = cases.n_dropped
    return out


def evaluate_model(model: SessionGRU, cases: Cases, batch_size: int = 512) -> dict[str, float]:
    """Evaluate the GRU: read each prefix, score the whole catalog."""
    was_training = model.training
    model.eval()

    def score(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.full_scores(model_states(model, cases, rows)).numpy()

    try:
        return evaluate_scores(score, cases, batch_size)
    finally:
        model.train(was_training)


def evaluate_baseline(baseline: object, cases: Cases, batch_size: int = 256) -> dict[str, float]:
    """Evaluate a fitted :class:`model.baselines.Baseline` on the same path."""
    from model.baselines import Baseline

    assert isinstance(baseline, Baseline)

    def score(rows: np.ndarray) -> np.ndarray:
        sub = subset_cases(cases, rows)
        return baseline.scores(sub, 0, len(rows))

    return evaluate_scores(score, cases, batch_size)


def subset_cases(cases: Cases, rows: np.ndarray) -> Cases:
    """The cases at ``rows`` as a new :class:`Cases` (``n_dropped`` reset to 0)."""
    lengths = (cases.offsets[rows + 1] - cases.offsets[rows]).astype(np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    segs_i = [cases.items[cases.offsets[c] : cases.offsets[c + 1]] for c in rows]
    segs_t = [cases.types[cases.offsets[c] : cases.offsets[c + 1]] for c in rows]
    return Cases(
        offsets=offsets,
        items=np.concatenate(segs_i) if segs_i else np.zeros(0, np.int64),
        types=np.concatenate(segs_t) if segs_t else np.zeros(0, np.int64),
        targets=cases.targets[rows],
        n_dropped=0,
    )


class CaseShares:
    """The session-kNN vote shares of every case's window, computed once.

    A case's window is the last ``width`` known items of its prefix (what the model's state holds), so
    the shares do not depend on the GRU's weights: the tuner computes them once for all the settings
    and epochs it scores, and keeps them sparse (a dense row per case would not fit a large catalog).
    """

    def __init__(self, votes: SessionVotes, cases: Cases, width: int, max_entries: int = 30_000_000) -> None:
        self.n_items = votes.n_items
        self.votes, self.cases, self.width = votes, cases, width
        # Kept up to max_entries (item, share) pairs, 8 bytes each: long sessions make long vote lists,
        # and the cases past the cap are voted again whenever they are scored instead.
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        kept = 0
        for a in range(0, len(cases), 512):
            rows = np.arange(a, min(a + 512, len(cases)))
            for items, share in self._shares(rows):
                kept += len(items)
                if kept > max_entries:
                    return
                self.parts.append((items.astype(np.int32), share.astype(np.float32)))

    def _shares(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(items, shares) of each case at ``rows``, voted as one batch."""
        windows = []
        for c in rows.tolist():
            prefix = self.cases.items[self.cases.offsets[c] : self.cases.offsets[c + 1]]
            windows.append(prefix[prefix >= 0][-self.width :])
        row, items, share = self.votes.batch_shares(pad_left(windows))
        bounds = np.searchsorted(row, np.arange(len(rows) + 1))
        return [(items[x:y], share[x:y]) for x, y in zip(bounds[:-1], bounds[1:], strict=True)]

    def dense(self, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), n_items) shares of the cases at ``rows``."""
        out = np.zeros((len(rows), self.n_items), dtype=np.float32)
        missing = np.array([c for c in rows.tolist() if c >= len(self.parts)], dtype=np.int64)
        again = dict(zip(missing.tolist(), self._shares(missing), strict=True)) if len(missing) else {}
        for r, c in enumerate(rows.tolist()):
            items, share = self.parts[c] if c < len(self.parts) else again[c]
            out[r, items] = share
        return torch.from_numpy(out)


def evaluate_memory_settings(
    model: SessionGRU,
    cases: Cases,
    tables: dict[tuple[float, int], tuple[torch.Tensor, torch.Tensor]],
    settings: list[dict[str, Any]],
    knn: CaseShares | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Recall@20 / MRR@20 of the GRU alone and with each session-memory setting added to its scores.

    ``model`` needs a session window (its memory weights are ignored); a setting is a dict of
    ``window_decay``, ``repeat_bonus``, ``repeat_mode``, ``neighbour_weight``, ``neighbour_floor``,
    ``neighbour_backward``, ``neighbour_distance``, and ``tables`` maps (backward weight, distance) to
    its neighbour table; with ``knn`` (the cases' session-kNN shares) a setting may also have
    ``knn_weight`` and ``knn_floor``. The GRU's scores are computed once per batch and each setting only
    adds its terms (as in ``benchmarks/memory_sweep.py``), so many settings cost little more than one.
    Every case here is rankable (the tuner's validation cases).
    """
    model.eval()
    n = model.n_items
    memories = [
        SessionMemory(
            n,
            s["window_decay"],
            s["repeat_bonus"],
            s["repeat_mode"],
            s["neighbour_weight"],
            s["neighbour_floor"],
            *tables[(s["neighbour_backward"], s["neighbour_distance"])],
        )
        for s in settings
    ]
    voted = any(s.get("knn_weight", 0.0) > 0 for s in settings)
    if voted and knn is None:
        raise ValueError("a setting has knn_weight > 0 but no session-kNN shares were given")
    ranks: list[list[np.ndarray]] = [[] for _ in range(len(settings) + 1)]
    for a in range(0, len(cases), 512):
        rows = np.arange(a, min(a + 512, len(cases)))
        targets = cases.targets[rows]
        with torch.no_grad():
            states = model_states(model, cases, rows)
            base = model.full_scores(states, with_memory=False)
            window = model.window_of(states)
            ranks[0].append(pessimistic_ranks(base.numpy(), targets))
            shares = knn.dense(rows) if knn is not None and voted else None
            for i, (memory, s) in enumerate(zip(memories, settings, strict=True), start=1):
                full = base + memory.dense(window)
                if shares is not None and s.get("knn_weight", 0.0) > 0:
                    full = full + vote_term(shares, s["knn_weight"], s["knn_floor"])
                ranks[i].append(pessimistic_ranks(full.numpy(), targets))
    out = []
    for parts in ranks:
        r = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        hit = r <= 20
        out.append(
            {
                "recall@20": float(hit.mean()) if len(r) else 0.0,
                "mrr@20": float(np.where(hit, 1.0 / np.maximum(r, 1), 0.0).mean()) if len(r) else 0.0,
            }
        )
    return out[0], out[1:]
