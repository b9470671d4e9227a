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
        results: list[Scored] = [Scored([], []) for _ in asks]
        width = max((len(a.items) for a in asks), default=0)
        if width == 0:
            return results
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
        # Per row, the candidates best first (a stable sort: ties keep the ask's order; the padding
        # sorts among them but is dropped, so a row's items keep the order they have alone), only
        # those that could reach a threshold: only they go through the (Python) policy.
        ranked = np.argsort(-probs, axis=1, kind="stable")
        kept_rows, kept_at = np.nonzero(np.take_along_axis(valid & (probs >= floor), ranked, axis=1))
        kept = ranked[kept_rows, kept_at]
        kept_items = kept.tolist()
        kept_raws, kept_probs = raws[kept_rows, kept].tolist(), probs[kept_rows, kept].tolist()
        kept_ends = np.cumsum(np.bincount(kept_rows, minlength=len(asks))).tolist()
        index_rows, index_cols = np.nonzero(valid & (probs >= cfg.interest_index_min_interest))
        index_at, index_probs = index_cols.tolist(), probs[index_rows, index_cols].tolist()
        index_ends = np.cumsum(np.bincount(index_rows, minlength=len(asks))).tolist()
        kept_from = index_from = 0
        for row, ask in enumerate(asks):
            kept_to, index_to = kept_ends[row], index_ends[row]
            if ask.priors is not None:
                results[row] = self._with_priors(ask, raws[row], valid[row], floor)
            else:
                items, allowed = ask.items, ask.pushable
                top: list[tuple[str, str, float, float]] = []
                for k in range(kept_from, kept_to):
                    if len(top) >= self.max_decide:
                        break
                    i = kept_items[k]
                    if allowed is None or items[i] in allowed:
                        top.append((items[i], ask.sources[i], kept_raws[k], kept_probs[k]))
                indexed = [(items[index_at[k]], index_probs[k]) for k in range(index_from, index_to)]
                results[row] = Scored(top, indexed)
            kept_from, index_from = kept_to, index_to
        return results

    def _with_priors(self, ask: Ask, raws: np.ndarray, valid: np.ndarray, floor: float) -> Scored:
        """An ask whose trigger values its items itself (discovery, ``TriggerAsk.priors``): every item
        it names is a candidate, known to the model or not, and none of them is an interest of the
        shopper to index; an item the model lacks has no raw score."""
        n = len(ask.items)
        assert ask.priors is not None
        p_row = np.asarray(ask.priors, dtype=np.float64)
        raw_row = np.where(valid[:n], raws[:n], 0.0)
        ranked = np.argsort(-p_row, kind="stable")
        order = ranked[(p_row >= floor)[ranked]].tolist()  # best first, filtered as arrays
        if ask.pushable is not None:
            order = [i for i in order if ask.items[i] in ask.pushable]
        top = [
            (ask.items[i], ask.sources[i], float(raw_row[i]), float(p_row[i]))
            for i in order[: self.max_decide]
        ]
        return Scored(top, [])
