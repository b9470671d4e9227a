"""Training internals: the session-parallel plan, masking of accidental hits, the losses."""

from __future__ import annotations

import numpy as np
import torch

from model.config import TrainConfig
from model.data import EncodedSessions
from model.net import SessionGRU
from model.train import bpr_max_loss, ce_loss, plan_epoch, sampled_logits


def sessions(lengths: list[int]) -> EncodedSessions:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.arange(offsets[-1], dtype=np.int64)
    return EncodedSessions(offsets=offsets, items=items, types=np.zeros_like(items))


def test_plan_covers_every_transition_once_and_resets_at_session_starts() -> None:
    data = sessions([3, 2, 5, 2, 4])
    plan = plan_epoch(data, n_lanes=2, rng=np.random.default_rng(0), shuffle=True)
    pairs = {
        (int(i), int(t)) for i, t in zip(plan.inputs.ravel(), plan.targets.ravel(), strict=True) if t >= 0
    }
    expected = {
        (int(i), int(i) + 1)
        for s in range(len(data))
        for i in data.items[data.offsets[s] : data.offsets[s + 1] - 1]
    }
    assert pairs == expected
    assert int((plan.targets >= 0).sum()) == len(expected)
    starts = set(data.offsets[:-1].tolist())
    assert {int(i) for i in plan.inputs[plan.resets]} == starts


def test_accidental_hits_are_masked_and_losses_are_finite() -> None:
    torch.manual_seed(0)
    model = SessionGRU(10, 8, TrainConfig(embedding_size=4, hidden_size=4))
    out = torch.randn(3, 4)
    targets = torch.tensor([1, 2, 1])
    negatives = torch.tensor([2, 5])
    logits = sampled_logits(model, out, targets, negatives, None)
    assert logits.shape == (3, 5)
    # row 0 (target 1): column 2 holds item 1 again -> masked; row 1 (target 2): column 3 holds 2 -> masked
    assert torch.isinf(logits[0, 2]) and torch.isinf(logits[1, 3]) and torch.isinf(logits[2, 0])
    assert torch.isfinite(logits.diagonal()).all()
    for loss in (ce_loss(logits), bpr_max_loss(logits, 1.0)):
        assert torch.isfinite(loss)
        loss.backward(retain_graph=True)
