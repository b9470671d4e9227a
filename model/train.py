"""Training: session-parallel mini-batches, sampled softmax / BPR-max with popularity-sampled negatives.

Each epoch deals the sessions (in time order unless ``shuffle``) to ``batch_size`` lanes (a lane
takes the next session when its current one ends and its state is reset). Every ``bptt`` steps the
loss of all those steps is computed at once against the in-batch targets plus ``n_negatives``
items drawn ~ popularity**alpha.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.config import TrainConfig
from model.data import Cases, EncodedSessions, ItemIndex, assign_lanes
from model.evaluate import evaluate_model, subset_cases
from model.net import SessionGRU
from model.progress import Progress
from model.session_memory import build_neighbours
from model.session_votes import build_session_index
from stream.contract import EVENT_TYPES


@dataclass
class EpochPlan:
    """One epoch of session-parallel steps, each array (T, B); -1 marks an idle lane."""

    inputs: np.ndarray
    targets: np.ndarray
    types: np.ndarray
    resets: np.ndarray


def plan_epoch(
    sessions: EncodedSessions, n_lanes: int, rng: np.random.Generator, shuffle: bool = False
) -> EpochPlan:
    """Lay sessions out in lanes (in order, or shuffled); an event's target is its session's next event."""
    order = rng.permutation(len(sessions)) if shuffle else np.arange(len(sessions))
    pairs = sessions.lengths()[order] - 1
    keep = pairs > 0
    order, pairs = order[keep], pairs[keep]
    lanes = assign_lanes(pairs, n_lanes)
    width = max((int(pairs[lane].sum()) if lane else 0) for lane in lanes)
    inputs = np.full((width, n_lanes), -1, dtype=np.int64)
    targets = np.full((width, n_lanes), -1, dtype=np.int64)
    types = np.zeros((width, n_lanes), dtype=np.int64)
    resets = np.zeros((width, n_lanes), dtype=bool)
    for b, lane in enumerate(lanes):
        if not lane:
            continue
        sess = order[lane]
        counts = pairs[lane]
        total = int(counts.sum())
        firsts = np.cumsum(counts) - counts
        pos = np.repeat(sessions.offsets[sess] - firsts, counts) + np.arange(total)
        inputs[:total, b] = sessions.items[pos]
        targets[:total, b] = sessions.items[pos + 1]
        types[:total, b] = sessions.types[pos]
        resets[firsts, b] = True
    return EpochPlan(inputs, targets, types, resets)


def sampled_logits(
    model: SessionGRU,
    out: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    logq: torch.Tensor | None,
) -> torch.Tensor:
    """Logits (N, N + n_neg): column i is row i's target; other rows' targets and samples are negatives.

    A negative equal to the row's own target (an accidental hit) is masked to -inf.
    """
    cands = torch.cat([targets, negatives])
    emb, bias = model.candidate_rows(cands)
    logits = out @ emb.T + bias
    if logq is not None:
        logits = logits - logq[cands]
    n = len(targets)
    hit = cands[None, :] == targets[:, None]
    hit[torch.arange(n), torch.arange(n)] = False
    return logits.masked_fill(hit, float("-inf"))


def ce_loss(logits: torch.Tensor) -> torch.Tensor:
    """Sampled softmax cross-entropy with the positive on the diagonal."""
    return F.cross_entropy(logits, torch.arange(len(logits)))


def bpr_max_loss(logits: torch.Tensor, bpreg: float) -> torch.Tensor:
    """BPR-max: -log sum_j s_j sigmoid(r_i - r_j) + bpreg sum_j s_j r_j^2, s = softmax over negatives.

    Written with few passes over the (N, M) matrix (it is the training step's largest tensor).
    Masked (-inf) negatives get weight 0; clamping them to a large finite value keeps 0 * r^2 at 0.
    """
    n = len(logits)
    diag = torch.arange(n)
    pos = logits[diag, diag][:, None]
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[diag, diag] = True
    neg = logits.masked_fill(own, float("-inf"))
    weights = torch.softmax(neg, dim=1)
    finite_neg = neg.clamp(min=-1e4)
    hinge = (weights * torch.sigmoid(pos - finite_neg)).sum(dim=1)
    reg = (weights * finite_neg.square()).sum(dim=1)
    return (-torch.log(hinge + 1e-24) + bpreg * reg).mean()


@dataclass
class TrainResult:
    """The trained model (best epoch) and what happened."""

    model: SessionGRU
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0
    events_per_second: float = 0.0
    neighbour_seconds: float = 0.0  # neighbour table + session-kNN index (not in train_seconds)


class Trainer:
    """One model's optimisation, an epoch at a time, resumable and interleavable with other trainers.

    Everything random (weight init, the negatives buffer, epoch plans, dropout) is drawn from the
    trainer's own numpy generator and its own copy of torch's global RNG state, swapped in for each
    epoch: so trainers can take turns (the tuner's successive halving) and each one's epochs are the
    same as an uninterrupted run with the same seed.
    """

    def __init__(self, sessions: EncodedSessions, index: ItemIndex, cfg: TrainConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.sessions = sessions
        n_items = len(index)
        model = SessionGRU(n_items, len(EVENT_TYPES), cfg)
        self.neighbour_seconds = 0.0
        if model.neighbour_idx.shape[1]:
            t_nb = time.perf_counter()
            model.set_neighbours(
                *build_neighbours(
                    sessions, n_items, cfg.neighbour_k, cfg.neighbour_distance, cfg.neighbour_backward
                )
            )
            self.neighbour_seconds = time.perf_counter() - t_nb
        if model.uses_votes:  # the session-kNN index: data like the neighbour table, timed with it
            t_nb = time.perf_counter()
            model.set_session_index(build_session_index(sessions, n_items, cfg.knn_sample))
            self.neighbour_seconds += time.perf_counter() - t_nb
        self.model = model
        sparse_params = [model.item_emb] + ([model.bias] if cfg.item_bias else [])
        if model.out_emb is not None:
            sparse_params.append(model.out_emb)
        sparse_ids = {id(p) for p in sparse_params}
        dense_params = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
        self.opt_sparse = torch.optim.SparseAdam(sparse_params, lr=cfg.learning_rate)
        self.opt_dense = torch.optim.Adam(dense_params, lr=cfg.learning_rate)

        counts = np.bincount(sessions.items, minlength=n_items).astype(np.float64)
        q = counts**cfg.sample_alpha
        q /= q.sum()
        self.logq = (
            torch.from_numpy(np.log(q + 1e-12).astype(np.float32)) * cfg.logq if cfg.logq > 0 else None
        )
        # A large pre-drawn buffer of popularity samples, refilled when used up.
        self.buffer_size = max(cfg.n_negatives * 2000, 1)
        self.buffer = torch.from_numpy(self.rng.choice(n_items, size=self.buffer_size, p=q).astype(np.int64))
        self.cursor = 0
        self.epochs_done = 0
        self.torch_rng = torch.get_rng_state()

    def run_epoch(self, progress: bool = False) -> dict[str, float]:
        """Train one more epoch; return its record (epoch, loss, seconds, events_per_second)."""
        cfg, model = self.cfg, self.model
        torch.set_num_threads(cfg.threads)
        torch.set_rng_state(self.torch_rng)
        self.epochs_done += 1
        epoch = self.epochs_done
        model.sparse = True
        model.train()
        t0 = time.perf_counter()
        plan = plan_epoch(self.sessions, cfg.batch_size, self.rng, cfg.shuffle)
        inputs = torch.from_numpy(plan.inputs)
        targets = torch.from_numpy(plan.targets)
        types = torch.from_numpy(plan.types)
        keep = torch.from_numpy(~plan.resets).float()
        steps = plan.inputs.shape[0]
        bar = Progress(int((plan.targets >= 0).sum()), f"epoch {epoch}/{cfg.epochs}") if progress else None
        h = torch.zeros(cfg.batch_size, model.state_width)
        loss_sum, loss_n, done = 0.0, 0, 0
        for c0 in range(0, steps, cfg.bptt):
            c1 = min(c0 + cfg.bptt, steps)
            h = h.detach()
            outs = []
            for t in range(c0, c1):
                h = model.step(h * keep[t][:, None], inputs[t], types[t])
                outs.append(h)
            tg = targets[c0:c1].reshape(-1)
            valid = tg >= 0
            if not bool(valid.any()):
                continue
            out = model.output(torch.cat(outs)[valid])
            tv = tg[valid]
            if self.cursor + cfg.n_negatives > self.buffer_size:
                self.buffer = self.buffer[torch.randperm(self.buffer_size)]
                self.cursor = 0
            negatives = self.buffer[self.cursor : self.cursor + cfg.n_negatives]
            self.cursor += cfg.n_negatives
            logits = sampled_logits(model, out, tv, negatives, self.logq)
            loss = ce_loss(logits) if cfg.loss == "ce" else bpr_max_loss(logits, cfg.bpreg)
            self.opt_sparse.zero_grad(set_to_none=True)
            self.opt_dense.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_sparse.step()
            self.opt_dense.step()
            n = int(valid.sum())
            loss_sum += loss.item() * n
            loss_n += n
            done += n
            if bar is not None:
                bar.update(done, loss_sum / max(loss_n, 1))
        if bar is not None:
            bar.close(loss_sum / max(loss_n, 1))
        seconds = time.perf_counter() - t0
        model.sparse = False
        model.eval()
        self.torch_rng = torch.get_rng_state()
        return {
            "epoch": epoch,
            "loss": loss_sum / max(loss_n, 1),
            "seconds": seconds,
            "events_per_second": len(self.sessions.items) / max(seconds, 1e-9),
        }


def train(
    sessions: EncodedSessions,
    index: ItemIndex,
    cfg: TrainConfig,
    valid_cases: Cases | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a :class:`SessionGRU`; early-stop on validation MRR@20 when ``valid_cases`` is given.

    ``train_seconds`` counts the optimisation only (not validation); ``events_per_second`` is training
    events (rows) times epochs run over that time, the way GRU4Rec reports rows/s.
    """
    trainer = Trainer(sessions, index, cfg)
    model = trainer.model
    if valid_cases is not None and len(valid_cases) > cfg.max_valid_cases:
        valid_cases = subset_cases(
            valid_cases, np.arange(len(valid_cases) - cfg.max_valid_cases, len(valid_cases))
        )
    n_events = int(len(sessions.items))
    result = TrainResult(model=model, neighbour_seconds=trainer.neighbour_seconds)
    best_score, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, cfg.epochs + 1):
        record = trainer.run_epoch(progress)
        result.train_seconds += record["seconds"]
        if valid_cases is not None and len(valid_cases):
            metrics = evaluate_model(model, valid_cases)
            record.update({f"valid_{k}": v for k, v in metrics.items() if "@" in k})
            score = metrics["mrr@20"]
        else:
            score = float(epoch)  # no validation: keep the last epoch
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), checkpoint_dir / f"epoch-{epoch:03d}.pt")
        if not cfg.select_best:
            best_state, result.best_epoch = copy.deepcopy(model.state_dict()), epoch
        elif score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            stale += 1
            if stale > cfg.patience:
                break
    model.load_state_dict(best_state)
    model.sparse = False
    model.eval()
    result.events_per_second = n_events * len(result.history) / max(result.train_seconds, 1e-9)
    return result
