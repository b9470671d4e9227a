"""Artifact round trip and integrity; the incremental scorer agrees with the training-time forward pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import ArtifactError, load_artifact
from model.scorer import IncrementalScorer
from stream.contract import EVENT_TYPES


def test_artifact_round_trip(tiny_artifact: Path) -> None:
    art = load_artifact(tiny_artifact)
    meta = json.loads((tiny_artifact / "meta.json").read_text())
    assert art.version == meta["version"] and art.version.startswith("gru-")
    assert len(art.item_ids) == meta["n_items"] > 10
    assert (tiny_artifact / "training_curve.png").stat().st_size > 0
    metrics = json.loads((tiny_artifact / "metrics.json").read_text())
    assert metrics["history"] and "ece" in metrics["calibration"]
    state = torch.load(tiny_artifact / "weights.pt", weights_only=True)
    assert set(state) == set(art.model.state_dict())


def test_corrupt_artifact_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    with (broken / "weights.pt").open("r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        IncrementalScorer.load(broken)
    (broken / "MANIFEST.json").unlink()
    with pytest.raises(ArtifactError, match="no MANIFEST"):
        IncrementalScorer.load(broken)
    with pytest.raises(ArtifactError):
        IncrementalScorer.load(tmp_path / "nowhere")


@pytest.mark.parametrize("which", ["tiny_artifact", "plain_artifact"])
def test_step_by_step_equals_forward_pass(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    scorer = IncrementalScorer.load(path)
    model = load_artifact(path).model
    assert scorer.hidden_size == model.state_width
    rng = np.random.default_rng(1)
    items = rng.integers(-1, scorer.n_items, size=(6, 5))  # includes unknown (-1) items
    types = rng.integers(0, len(EVENT_TYPES), size=(6, 5))
    states = scorer.initial_state(6)
    for t in range(5):
        states = scorer.step(states, items[:, t], types[:, t])
    with torch.no_grad():
        ref_h = model.encode_prefixes(torch.from_numpy(items), torch.from_numpy(types))
        ref_full = model.full_scores(ref_h).numpy()
    np.testing.assert_allclose(states, ref_h.numpy(), rtol=1e-5, atol=1e-5)
    cands = rng.integers(0, scorer.n_items, size=(6, 7))
    np.testing.assert_allclose(scorer.score(states, cands), np.take_along_axis(ref_full, cands, 1), atol=1e-4)
    idx, top = scorer.topk(states, 3)
    np.testing.assert_allclose(top, np.sort(ref_full, axis=1)[:, ::-1][:, :3], atol=1e-4)
    assert idx.shape == (6, 3) and idx.dtype == np.int64


def test_unknown_items_and_padding(tiny_artifact: Path) -> None:
    scorer = IncrementalScorer.load(tiny_artifact)
    idx = scorer.item_indices([scorer.item_id(0), "never-seen"])
    assert idx.tolist() == [0, -1]
    states = scorer.step(scorer.initial_state(2), np.array([0, 1]), np.array([0, 0]))
    unchanged = scorer.step(states, np.array([-1, -1]), np.array([0, 3]))
    np.testing.assert_array_equal(unchanged, states)
    cands = np.array([[0, -1], [1, 2]])
    raw = scorer.score(states, cands)
    assert raw[0, 1] == -np.inf and np.isfinite(raw[1]).all()
    prob = scorer.interest(states, cands)
    assert prob.dtype == np.float32 and prob[0, 1] == 0.0
    assert ((prob >= 0) & (prob <= 1)).all()
    with pytest.raises(IndexError):
        scorer.item_id(scorer.n_items)


def test_interest_is_monotone_in_score(tiny_artifact: Path) -> None:
    scorer = IncrementalScorer.load(tiny_artifact)
    states = scorer.step(scorer.initial_state(1), np.array([3]), np.array([0]))
    cands = np.arange(min(scorer.n_items, 30))[None, :]
    raw, prob = scorer.score(states, cands)[0], scorer.interest(states, cands)[0]
    order = np.argsort(raw)
    assert np.all(np.diff(prob[order]) >= -1e-6)
