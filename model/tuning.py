"""The hyper-parameter search of ``kairos train`` without a preset: GRU settings, epochs, session memory.

Everything is chosen on a validation split cut from the training data (the time-ordered tail, or the
``--valid`` file), never on a test file: this module is never given one. The split is scored the way a
test is: a validation case whose target the training part never saw cannot be ranked and is left out
(counted in the record), and such items in a prefix are skipped (:func:`model.data.mask_unseen`).

* **Stage 1, the GRU** (:func:`~model.tuning_space.default_candidates`, a fixed ordered list built from
  the presets in ``model/configs`` plus a few variations): successive halving by epochs. Every
  candidate tried trains :data:`RUNG_EPOCHS`\\ [0] epochs on the training part; the better half (at
  least two) goes on to :data:`RUNG_EPOCHS`\\ [1]; the best one then trains on while its validation
  MRR@20 improves (up to :data:`MAX_EPOCHS`). Each epoch is scored on the validation cases with session
  memory applied (the best of the presets' memory settings), because the memory changes which GRU is
  best.
* **Stage 2, the session memory**: its terms are fixed functions added to the GRU's scores
  (:mod:`model.session_memory`, and the session-kNN votes of :mod:`model.session_votes`), so they are
  searched after training on the stage-1 winner, by evaluation only: coordinate ascent over
  :data:`~model.tuning_space.MEMORY_GRID` from the best preset setting, on Recall@20 + MRR@20
  (:func:`~model.tuning_space._memory_key`). A weight of 0 is always among the values, so a term that
  does not help the shop's own validation cases is left out; where plain session-kNN is strong, its
  votes join the GRU instead of beating it.

**The budget** (seconds of wall clock, the final training on all the data is outside it) decides how
far down the ordered lists the search gets, nothing else: before a candidate's first epoch, the cost of
its rung and of the rest of the plan is estimated from the epochs measured so far, and the search stops
taking candidates when that would overrun (the first candidate always runs). The number tried is
printed and recorded. With the same data, seed and number of candidates tried, the choice is the same.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model.baselines import SessionKNN
from model.config import TrainConfig
from model.data import Cases, EncodedSessions, ItemIndex
from model.evaluate import CaseShares, evaluate_baseline, evaluate_memory_settings, subset_cases
from model.session_memory import build_neighbours
from model.session_votes import SessionVotes, build_session_index
from model.train import Trainer
from model.tuning_space import (
    MEMORY_GRID,
    MEMORY_PRESETS,
    _key,
    _memory_key,
    _rank_key,
    default_candidates,
    memory_fields,
)

DEFAULT_BUDGET_SECONDS = 1800.0
RUNG_EPOCHS = (2, 4)  # epochs of every candidate tried, then of the better half
MAX_EPOCHS = 10  # the winner of the rungs trains on while validation improves, at most this many epochs
SESSION_WINDOW = 10  # recent items kept for the memory terms (the presets' window)
VALID_CASES = 10_000  # the latest validation cases scored (enough to separate candidates, cheap to rank)
MEMORY_EVALS_RESERVED = 30  # memory settings stage 2 is expected to score; their time is kept free

MEMORY_PASSES = 3  # coordinate-ascent passes at most (it usually settles in two)


def _say(message: str) -> None:
    print(message, flush=True)  # flushed: a log file shows the search as it goes


@dataclass
class TuningResult:
    """The configuration to train on all the data, and the record of how it was chosen."""

    config: TrainConfig
    record: dict[str, Any]


@dataclass
class _Candidate:
    name: str
    settings: dict[str, Any]
    trainer: Trainer | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_score: tuple[float, float] = (-1.0, -1.0)
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    stopped: str = ""


def survivors(n_tried: int) -> int:
    """How many of ``n_tried`` candidates go on to the second rung: the better half, at least two.

    Comparing after two epochs favours fast learners (a higher learning rate leads early and may
    finish behind), so a single candidate never decides alone when there were two or more.
    """
    return min(n_tried, max(2, math.ceil(n_tried / 2)))


class Tuner:
    """Runs the two stages within a budget; see the module docstring."""

    def __init__(
        self,
        sessions: EncodedSessions,
        index: ItemIndex,
        valid_cases: Cases,
        base: TrainConfig,
        budget_seconds: float,
        say: Callable[[str], None] = _say,
        candidates: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        self.sessions, self.index, self.base, self.say = sessions, index, base, say
        # Cases whose target the training part never saw (see model.data.mask_unseen) are left out:
        # every setting misses them alike, so they would only dilute the comparison. Counted, though.
        self.n_dropped = valid_cases.n_dropped
        latest = np.arange(max(0, len(valid_cases) - VALID_CASES), len(valid_cases))
        self.cases = subset_cases(valid_cases, latest)  # n_dropped 0: every figure is over rankable cases
        self.budget = budget_seconds
        self.started = time.perf_counter()
        self.candidates = [_Candidate(n, s) for n, s in (candidates or default_candidates())]
        self.presets = [memory_fields(p) for p in MEMORY_PRESETS]
        n = len(index)
        self.tables = {
            (back, dist): build_neighbours(sessions, n, base.neighbour_k, dist, back)
            for back in MEMORY_GRID["neighbour_backward"]
            for dist in MEMORY_GRID["neighbour_distance"]
        }
        # The session-kNN votes of every validation case's window: they do not depend on the GRU, so
        # they are computed once here, and stage 2 weighs them in (model.session_votes).
        t0 = time.perf_counter()
        votes = SessionVotes(
            build_session_index(sessions, n, base.knn_sample), base.knn_k, base.knn_sample, 1.0, 1.0
        )
        self.knn = CaseShares(votes, self.cases, SESSION_WINDOW)
        self.knn_seconds = time.perf_counter() - t0
        self.unit_seconds: list[float] = []  # seconds of each candidate's first epoch + its scoring
        self.setting_seconds = 0.0  # seconds to score one memory setting (measured in stage 1)

    def elapsed(self) -> float:
        """Seconds since the tuner started (building the neighbour tables included)."""
        return time.perf_counter() - self.started

    def _config(self, cand: _Candidate) -> TrainConfig:
        # The window is kept in the state for the memory terms; they are added at scoring time only
        # (they never enter the training loss), so training builds no neighbour table here.
        return self.base.model_copy(
            update={
                **cand.settings,
                "session_window": SESSION_WINDOW,
                "neighbour_weight": 0.0,
                "knn_weight": 0.0,
            }
        )

    def _epoch(self, cand: _Candidate) -> None:
        """Train ``cand`` one more epoch and score it on validation."""
        if cand.trainer is None:
            cand.trainer = Trainer(self.sessions, self.index, self._config(cand))
        record = cand.trainer.run_epoch(progress=False)
        t0 = time.perf_counter()
        gru, with_memory = evaluate_memory_settings(cand.trainer.model, self.cases, self.tables, self.presets)
        eval_seconds = time.perf_counter() - t0
        self.setting_seconds = max(self.setting_seconds, eval_seconds / (len(self.presets) + 1))
        best = max(range(len(with_memory)), key=lambda i: (_rank_key(with_memory[i]), -i))
        entry: dict[str, Any] = {
            "epoch": int(record["epoch"]),
            "loss": record["loss"],
            "train_seconds": record["seconds"],
            "eval_seconds": eval_seconds,
            "valid_gru_alone": gru,
            "valid_with_memory": {MEMORY_PRESETS[i]: m for i, m in enumerate(with_memory)},
            "valid": with_memory[best],
            "memory_preset": MEMORY_PRESETS[best],
        }
        cand.epochs.append(entry)
        if len(cand.epochs) == 1:
            self.unit_seconds.append(record["seconds"] + eval_seconds)
        score = _rank_key(with_memory[best])
        if score > cand.best_score:
            cand.best_score, cand.best_epoch = score, entry["epoch"]
            cand.best_state = copy.deepcopy(cand.trainer.model.state_dict())
        self.say(
            f"[tune] {cand.name}: epoch {entry['epoch']} {record['seconds']:.0f} s + {eval_seconds:.0f} s, "
            f"valid R@20 {100 * entry['valid']['recall@20']:.2f} MRR@20 {100 * entry['valid']['mrr@20']:.2f} "
            f"(GRU alone {100 * gru['recall@20']:.2f} / {100 * gru['mrr@20']:.2f})"
        )

    def _unit(self, cand: _Candidate) -> float:
        """Estimated seconds of one more epoch (and its scoring) of ``cand``."""
        if cand.epochs:
            last = cand.epochs[-1]
            return float(last["train_seconds"] + last["eval_seconds"])
        return float(np.mean(self.unit_seconds)) if self.unit_seconds else 0.0

    def _fits(self, seconds: float) -> bool:
        reserve = MEMORY_EVALS_RESERVED * self.setting_seconds
        return self.elapsed() + seconds + reserve <= self.budget

    def _train_to(self, cand: _Candidate, epochs: int) -> None:
        while len(cand.epochs) < epochs:
            # Nothing measured yet: the first epoch always runs (it is what the estimates come from).
            if self.unit_seconds and not self._fits(self._unit(cand)):
                cand.stopped = f"budget: stopped at {len(cand.epochs)} epochs"
                return
            self._epoch(cand)

    def stage1(self) -> _Candidate:
        """Successive halving over the candidates; returns the best (its best epoch's state loaded)."""
        first, second = RUNG_EPOCHS
        tried: list[_Candidate] = []
        for i, cand in enumerate(self.candidates):
            if i > 0:
                unit = self._unit(cand)
                plan = first * unit + survivors(i + 1) * (second - first) * unit
                if not self._fits(plan):
                    self.say(
                        f"[tune] budget: {i} of {len(self.candidates)} candidates tried "
                        f"(the next would need ~{plan:.0f} s more; {self.elapsed():.0f} s spent)"
                    )
                    break
            tried.append(cand)
            self._train_to(cand, first)
            cand.stopped = cand.stopped or f"rung 1 ({first} epochs)"
        ranked = sorted(tried, key=lambda c: (c.best_score, -self.candidates.index(c)), reverse=True)
        keep = ranked[: survivors(len(tried))]
        for cand in ranked[len(keep) :]:
            cand.trainer = None  # eliminated: free its optimiser state (its best epoch stays recorded)
        for cand in keep:
            cand.stopped = ""
            self._train_to(cand, second)
            cand.stopped = cand.stopped or f"rung 2 ({second} epochs)"
        best = max(keep, key=lambda c: (c.best_score, -self.candidates.index(c)))
        # Train on while the last epoch was the best so far (still improving) and the budget allows.
        while best.best_epoch == len(best.epochs) and len(best.epochs) < MAX_EPOCHS:
            if not self._fits(self._unit(best)):
                best.stopped = f"budget: stopped at {len(best.epochs)} epochs"
                break
            self._epoch(best)
            best.stopped = f"trained on while improving ({len(best.epochs)} epochs)"
        for cand in tried:
            cand.trainer = None if cand is not best else cand.trainer
        return best

    def stage2(self, best: _Candidate) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
        """Coordinate ascent over the memory weights on ``best``'s model; (setting, figures, tried)."""
        assert best.trainer is not None and best.best_state is not None
        model = best.trainer.model
        model.load_state_dict(best.best_state)
        scored: dict[tuple[Any, ...], dict[str, float]] = {}
        order: list[dict[str, Any]] = []

        def run(settings: list[dict[str, Any]]) -> None:
            new, seen = [], set()
            for s in settings:
                k = _key(s)
                if k not in scored and k not in seen:
                    new.append(s)
                    seen.add(k)
            if new:
                _, figures = evaluate_memory_settings(model, self.cases, self.tables, new, self.knn)
                for s, m in zip(new, figures, strict=True):
                    scored[_key(s)] = m
                    order.append({**s, **m})

        run(self.presets)
        current = max(self.presets, key=lambda s: _memory_key(scored[_key(s)]))
        stopped = ""
        for _ in range(MEMORY_PASSES):
            changed = False
            for name, values in MEMORY_GRID.items():
                options = [{**current, name: v} for v in values]
                todo = sum(1 for o in options if _key(o) not in scored)
                if self.elapsed() + todo * self.setting_seconds > self.budget:
                    stopped = "budget"
                    break
                run(options)
                top = max(options, key=lambda o: _memory_key(scored[_key(o)]))
                if _memory_key(scored[_key(top)]) > _memory_key(scored[_key(current)]):
                    current, changed = top, True
            if stopped or not changed:
                break
        if stopped:
            self.say(f"[tune] budget: memory search stopped after {len(order)} settings")
        return current, scored[_key(current)], order

    def anchor(self) -> dict[str, Any]:
        """Session-kNN on the same validation cases: the simple baseline the choice should beat.

        On some data this plain neighbour vote is the strongest model of all, so the record says where
        the choice stands against it on the user's own data (it decides nothing; scored after the
        search, outside the budget's planning).
        """
        t0 = time.perf_counter()
        knn = evaluate_baseline(SessionKNN().fit(self.sessions, len(self.index)), self.cases)
        return {
            "name": SessionKNN.name,
            "recall@20": knn["recall@20"],
            "mrr@20": knn["mrr@20"],
            "seconds": time.perf_counter() - t0,
        }

    def run(self) -> TuningResult:
        """Both stages; the configuration for the final training and the record."""
        n_valid = len(self.cases)
        self.say(
            f"[tune] budget {self.budget:.0f} s; {len(self.candidates)} GRU candidates in order; "
            f"validation: {n_valid} cases ({self.n_dropped} more whose target the training part never "
            f"saw, left out); training part: {len(self.sessions)} sessions"
        )
        best = self.stage1()
        stage1_seconds = self.elapsed()
        memory, figures, tried_memory = self.stage2(best)
        stage2_seconds = self.elapsed() - stage1_seconds
        anchor = self.anchor()
        uses_memory = any(memory[k] > 0 for k in ("repeat_bonus", "neighbour_weight", "knn_weight"))
        config = self.base.model_copy(
            update={
                **best.settings,
                **memory,
                "session_window": SESSION_WINDOW if uses_memory else 0,
                "epochs": best.best_epoch,
                "select_best": False,
                "train_on_all": True,
                "max_valid_cases": min(self.base.max_valid_cases, VALID_CASES),
            }
        )
        gru_alone = best.epochs[best.best_epoch - 1]["valid_gru_alone"]
        reason = (
            f"best validation MRR@20 of {sum(1 for c in self.candidates if c.epochs)} GRU candidates "
            f"(successive halving, epochs {list(RUNG_EPOCHS)}, then on while improving), at epoch "
            f"{best.best_epoch}; memory weights by coordinate ascent over {len(tried_memory)} settings "
            "(objective: validation Recall@20 + MRR@20)"
        )
        record: dict[str, Any] = {
            "budget_seconds": self.budget,
            "seconds": self.elapsed(),
            "stage1_seconds": stage1_seconds,
            "stage2_seconds": stage2_seconds,
            "knn_shares_seconds": self.knn_seconds,
            "final_training_in_budget": False,
            "n_valid_cases": n_valid,
            "n_valid_dropped": self.n_dropped,
            "n_train_sessions": len(self.sessions),
            "n_candidates": len(self.candidates),
            "n_candidates_tried": sum(1 for c in self.candidates if c.epochs),
            "candidates": [
                {
                    "name": c.name,
                    "settings": c.settings,
                    "epochs": c.epochs,
                    "best_epoch": c.best_epoch,
                    "best_valid_mrr@20": c.best_score[0] if c.epochs else None,
                    "stopped": c.stopped or ("not tried (budget)" if not c.epochs else ""),
                }
                for c in self.candidates
            ],
            "memory_search": tried_memory,
            "anchor": anchor,
            "choice": {
                "candidate": best.name,
                "epochs": best.best_epoch,
                "gru": best.settings,
                "memory": memory,
                "valid_gru_alone": gru_alone,
                "valid": figures,
                "reason": reason,
            },
        }
        self.say(
            f"[tune] chose {best.name}, {best.best_epoch} epochs, memory {json.dumps(memory)}: valid "
            f"R@20 {100 * figures['recall@20']:.2f} MRR@20 {100 * figures['mrr@20']:.2f} (GRU alone "
            f"{100 * gru_alone['recall@20']:.2f} / {100 * gru_alone['mrr@20']:.2f}; session-kNN "
            f"{100 * anchor['recall@20']:.2f} / {100 * anchor['mrr@20']:.2f}); tuning took "
            f"{record['seconds']:.0f} s of {self.budget:.0f}"
        )
        return TuningResult(config=config, record=record)


def tune(
    sessions: EncodedSessions,
    index: ItemIndex,
    valid_cases: Cases,
    base: TrainConfig,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    say: Callable[[str], None] = _say,
    candidates: list[tuple[str, dict[str, Any]]] | None = None,
) -> TuningResult:
    """Choose GRU settings, epochs and memory weights on ``valid_cases`` within ``budget_seconds``.

    ``sessions`` is the training part only (the validation tail held out), ``base`` supplies every
    setting the search does not (seed, threads, data options). See the module docstring.
    """
    if len(valid_cases) == 0:
        raise ValueError(
            "tuning needs validation cases: the validation split has no session of 2+ events whose "
            "next item the training part has seen"
        )
    return Tuner(sessions, index, valid_cases, base, budget_seconds, say, candidates).run()
