"""Model calls for a batch: GRU steps, candidate scoring, and per ask the candidates worth deciding.

A user's scores must not depend on who else was in the batch (batching, replays and partition
assignment change nothing). The scorer guarantees it: its step and its scoring compute row by row
without BLAS (``model.scorer.IncrementalScorer``; tests hold a row's bits equal alone and in blocks of
any size), so a round's users are stepped in one call and its asks scored in one call, whatever their
number. (Until 2026-12-05 scoring ran in torch, whose products round a row by the block it is in, and
every call was padded to a fixed number of rows.) A model served through this class must keep that
property (``stream.engine.ports.Scorer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from model.warmup import count_feature
from model.warmup import lift as warmup_lift
from stream.asks import Ask, Scored
from stream.policy_config import PolicyConfig

if TYPE_CHECKING:
    from stream.engine import Scorer


# Per row of a matrix, cut into one list: the kept columns best first, their raw scores and interests,
# and where each row's entries end.
_Kept = tuple[list[int], list[float], list[float], list[int]]


class AskScorer:
    """The engine's model calls (the scorer is swapped with the model)."""

    def __init__(
        self, scorer: Scorer, config: PolicyConfig, partitions: int = 1, max_decide: int = 5
    ) -> None:
        self.scorer = scorer
        self.cfg = config
        # A partition counts its own users' events; times the partitions, the shop's (warm-up lift).
        self.partitions = partitions
        self.max_decide = max_decide  # candidates per decision that go through the full policy

    def step(self, states: np.ndarray, items: np.ndarray, types: np.ndarray) -> np.ndarray:
        """One GRU step for every row, in one call: the step is row by row (module doc)."""
        return self.scorer.step(states, items, types)

    def lift(self, asks: list[Ask], width: int) -> np.ndarray | None:
        """The stream warm-up of the asks' content-placed candidates (``model.warmup``), or None.

        ``offset + gamma * log1p(events per day)``, the rate read from the partition's decayed count
        captured with the ask, times the partitions (each counts only its own users' events).
        """
        gamma = float(getattr(self.scorer, "warmup_gamma", 0.0))
        offset = float(getattr(self.scorer, "warmup_offset", 0.0))
        if (gamma <= 0.0 and offset <= 0.0) or not any(a.placed_counts for a in asks):
            return None
        cells = [
            (row, col, count)
            for row, ask in enumerate(asks)
            if ask.placed_counts
            for col, item in enumerate(ask.items)
            if (count := ask.placed_counts.get(item)) is not None
        ]
        rows, cols, counts = (np.array(column) for column in zip(*cells, strict=True))
        out = np.zeros((len(asks), width), dtype=np.float32)
        feature = count_feature(counts * self.partitions, self.cfg.trending_half_life_seconds)
        out[rows, cols] = warmup_lift(feature, gamma, offset)
        return out

    def score(self, asks: list[Ask], states: Sequence[np.ndarray | None] | None = None) -> list[Scored]:
        """Score every ask's candidates in one batch; per ask the few that could reach a threshold.

        ``states``: each ask's hidden state (None: the initial one); by default the user's current one.
        Returns, per ask, (item, source, raw score, calibrated interest) best first, and the
        candidates interesting enough for the item -> interested users index that catalog changes use.
        """
        cfg = self.cfg
        width = max((len(a.items) for a in asks), default=0)
        if width == 0:
            return [Scored([], []) for _ in asks]
        flat = [item for a in asks for item in a.items]
        flat_idx = self.scorer.item_indices(flat)
        cands = np.full((len(asks), width), -1, dtype=np.int64)
        pos = 0
        for row, ask in enumerate(asks):
            cands[row, : len(ask.items)] = flat_idx[pos : pos + len(ask.items)]
            pos += len(ask.items)
        init = self.scorer.initial_state(1)[0]
        hidden = [a.user.state.hidden for a in asks] if states is None else states
        rows = np.stack([h if h is not None else init for h in hidden])
        raws, probs = self.scorer.score_and_interest(rows, cands, self.lift(asks, width))
        floor = min(cfg.min_threshold, cfg.interest_index_min_interest) / (1.0 + cfg.promotion_weight)
        # A non-finite score is no score: an item placed from an extreme catalog image can overflow
        # float32 for some shoppers, and a push must carry finite numbers (the contract), so deciding
        # on it would fail the batch and cost its valid events. Such an item is treated like one the
        # model lacks. A row's padding (no candidate) is never valid.
        valid = (cands >= 0) & np.isfinite(raws) & np.isfinite(probs)
        # The round's matrix at once, then cut into rows: a few array calls per round, not per ask.
        kept = _best_first(probs, valid & (probs >= floor), raws)
        index_rows, index_cols = np.nonzero(valid & (probs >= cfg.interest_index_min_interest))
        index_at, index_probs = index_cols.tolist(), probs[index_rows, index_cols].tolist()
        index_ends = _row_ends(index_rows, len(asks))
        # Asks whose trigger values its items itself (discovery, ``TriggerAsk.priors``): every item it
        # names is a candidate, known to the model or not, valued by its prior (the row's padding by
        # -inf: below any floor), and none is an interest of the shopper to index; an item the model
        # lacks has no raw score.
        by_prior = [row for row, ask in enumerate(asks) if ask.priors is not None]
        prior_kept = None
        if by_prior:
            priors = np.full((len(by_prior), width), -np.inf)
            for at, row in enumerate(by_prior):
                priors[at, : len(asks[row].items)] = asks[row].priors
            prior_kept = _best_first(priors, priors >= floor, np.where(valid[by_prior], raws[by_prior], 0.0))
        prior_row = {row: at for at, row in enumerate(by_prior)}
        results: list[Scored] = []
        index_from = 0
        for row, ask in enumerate(asks):
            index_to = index_ends[row]
            at_prior = prior_row.get(row)
            if at_prior is None:
                indexed = [(ask.items[index_at[j]], index_probs[j]) for j in range(index_from, index_to)]
                results.append(Scored(self._top(ask, kept, row), indexed))
            else:
                assert prior_kept is not None
                results.append(Scored(self._top(ask, prior_kept, at_prior), []))
            index_from = index_to
        return results

    def _top(self, ask: Ask, kept: _Kept, row: int) -> list[tuple[str, str, float, float]]:
        """The ask's first ``max_decide`` kept candidates that may be pushed, as (item, source, raw
        score, interest), from its row of :func:`_best_first`."""
        items, allowed = ask.items, ask.pushable
        columns, raws, interests, ends = kept
        top: list[tuple[str, str, float, float]] = []
        for j in range(ends[row - 1] if row else 0, ends[row]):
            if len(top) >= self.max_decide:
                break
            i = columns[j]
            if allowed is None or items[i] in allowed:
                top.append((items[i], ask.sources[i], raws[j], interests[j]))
        return top


def _best_first(interest: np.ndarray, keep: np.ndarray, raws: np.ndarray) -> _Kept:
    """Per row, the ``keep`` columns in descending ``interest`` (a stable sort: ties keep the ask's
    order; a row's padding sorts among its items but is never kept, so the items keep the order they
    have alone), with their raw scores and interests, as one list of all rows' entries in row order."""
    ranked = np.argsort(-interest, axis=1, kind="stable")
    rows, at = np.nonzero(np.take_along_axis(keep, ranked, axis=1))
    columns = ranked[rows, at]
    return (
        columns.tolist(),
        raws[rows, columns].tolist(),
        interest[rows, columns].tolist(),
        _row_ends(rows, len(interest)),
    )


def _row_ends(rows: np.ndarray, n: int) -> list[int]:
    """Where each of ``n`` rows' entries end in a list of entries in row order (``rows``: each entry's
    row, ascending, as ``np.nonzero`` gives them)."""
    return np.cumsum(np.bincount(rows, minlength=n)).tolist()
