"""Artifact round trip and integrity; the incremental scorer agrees with the training-time forward pass."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import ArtifactError, load_artifact
from model.calibration import normaliser_sample
from model.scorer import IncrementalScorer
from stream.contract import EVENT_TYPES
from tests.model.conftest import flip_byte


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
    flip_byte(broken / "weights.pt", 100)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        IncrementalScorer.load(broken)
    (broken / "MANIFEST.json").unlink()
    with pytest.raises(ArtifactError, match="no MANIFEST"):
        IncrementalScorer.load(broken)
    with pytest.raises(ArtifactError):
        IncrementalScorer.load(tmp_path / "nowhere")


@pytest.mark.parametrize("which", ["tiny_artifact", "plain_artifact", "memory_artifact"])
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


@pytest.mark.parametrize("which", ["tiny_artifact", "plain_artifact", "memory_artifact"])
def test_a_rows_step_does_not_depend_on_its_position_among_the_rows(
    which: str, request: pytest.FixtureRequest
) -> None:
    """The worker steps users in blocks of whoever is in the batch: a user's new state must be the
    same bits wherever in the block it sits (a BLAS product would not guarantee it)."""
    scorer = IncrementalScorer.load(request.getfixturevalue(which))
    rng = np.random.default_rng(5)
    for _ in range(50):
        states = (rng.standard_normal((16, scorer.hidden_size)) * 0.5).astype(np.float32)
        items = rng.integers(-1, scorer.n_items, 16)
        types = rng.integers(0, 3, 16)
        stepped = scorer.step(states, items, types)
        order = rng.permutation(16)
        assert np.array_equal(scorer.step(states[order], items[order], types[order]), stepped[order])


@pytest.mark.parametrize("which", ["tiny_artifact", "plain_artifact", "memory_artifact"])
def test_a_rows_step_does_not_depend_on_how_many_rows_are_stepped_with_it(
    which: str, request: pytest.FixtureRequest
) -> None:
    """The engine steps each round's users in one call, however many there are (stream.scoring): a
    user's new state must be the same bits alone, in a small block or in a large one."""
    scorer = IncrementalScorer.load(request.getfixturevalue(which))
    rng = np.random.default_rng(6)
    n = 300
    states = (rng.standard_normal((n, scorer.hidden_size)) * 0.5).astype(np.float32)
    items = rng.integers(-1, scorer.n_items, n)
    types = rng.integers(0, 3, n)
    whole = scorer.step(states, items, types)
    for block in (1, 2, 3, 7, 16, 17, 64, 129):
        parts = [
            scorer.step(states[i : i + block], items[i : i + block], types[i : i + block])
            for i in range(0, n, block)
        ]
        assert np.array_equal(np.concatenate(parts), whole), block


@pytest.mark.parametrize("which", ["tiny_artifact", "plain_artifact", "memory_artifact"])
def test_a_rows_scores_do_not_depend_on_the_other_rows_or_candidates_of_the_call(
    which: str, request: pytest.FixtureRequest
) -> None:
    """The engine scores each round's asks in one call, however many (stream.scoring): a user's scores
    and interest must be the same bits alone, in any block, at any position, and beside any number of
    other candidates (a BLAS product would not guarantee it; the serving path is numpy, row by row)."""
    scorer = IncrementalScorer.load(request.getfixturevalue(which))
    rng = np.random.default_rng(7)
    n, width = 40, 9
    states = scorer.initial_state(n)
    for _ in range(12):  # real windows for the session memory: repeats and neighbours score
        states = scorer.step(states, rng.integers(0, scorer.n_items, n), rng.integers(0, 3, n))
    cands = rng.integers(-1, scorer.n_items, (n, width))
    raw, prob = scorer.score_and_interest(states, cands)
    assert (raw[cands < 0] == -np.inf).all() and (prob[cands < 0] == 0).all()
    for block in (1, 3, 16, 17):
        parts = [
            scorer.score_and_interest(states[i : i + block], cands[i : i + block]) for i in range(0, n, block)
        ]
        assert np.array_equal(np.concatenate([r for r, _ in parts]), raw), block
        assert np.array_equal(np.concatenate([p for _, p in parts]), prob), block
    order = rng.permutation(n)
    again_raw, again_prob = scorer.score_and_interest(states[order], cands[order])
    assert np.array_equal(again_raw, raw[order]) and np.array_equal(again_prob, prob[order])
    narrow_raw, narrow_prob = scorer.score_and_interest(states, cands[:, :4])
    assert np.array_equal(narrow_raw, raw[:, :4]) and np.array_equal(narrow_prob, prob[:, :4])


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


def _with_calibration(src: Path, dst: Path, calibration: dict[str, object]) -> Path:
    """A copy of an artifact whose meta.json carries ``calibration``, with its manifest re-signed."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    meta["calibration"] = calibration
    (dst / "meta.json").write_text(json.dumps(meta))
    manifest = json.loads((dst / "MANIFEST.json").read_text())
    manifest["files"] = {
        name: hashlib.sha256((dst / name).read_bytes()).hexdigest() for name in manifest["files"]
    }
    (dst / "MANIFEST.json").write_text(json.dumps(manifest))
    return dst


def _stepped(scorer: IncrementalScorer, n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    states = scorer.initial_state(n)
    for _ in range(3):
        states = scorer.step(states, rng.integers(0, scorer.n_items, n), np.zeros(n, dtype=np.int64))
    return states


def test_normaliser_sample_has_a_fixed_size_and_estimates_the_logsumexp() -> None:
    rng = np.random.default_rng(0)
    for n_items in (5_000, 50_000):
        counts = rng.zipf(1.5, size=n_items).astype(np.float64)
        items, logw = normaliser_sample(counts, n_head=256, n_tail=768)
        assert len(items) == len(logw) == 1024 and len(np.unique(items)) == 1024
        scores = torch.from_numpy(rng.normal(0.0, 1.0, size=(8, n_items)))
        full = torch.logsumexp(scores, dim=1)
        est = torch.logsumexp(scores[:, items] + torch.from_numpy(logw), dim=1)
        assert torch.all((est - full).abs() < 0.25)
    small_items, small_logw = normaliser_sample(np.ones(100))
    assert small_items.tolist() == list(range(100)) and not small_logw.any()  # small catalog: exact


def test_interest_reads_only_the_candidates_rows(tiny_artifact: Path, tmp_path: Path) -> None:
    """interest never touches catalog rows beyond the candidates: its cost does not grow with n_items."""
    base = IncrementalScorer.load(tiny_artifact)
    counts = np.arange(base.n_items, 0, -1, dtype=np.float64)
    items, logw = normaliser_sample(counts, n_head=5, n_tail=10)  # a true sample of the 40 items
    sampled = {
        "method": "platt",
        "feature": "sampled_log_softmax",
        "horizon": 3,
        "a": 0.8,
        "b": -0.5,
        "norm_items": items.tolist(),
        "norm_logw": logw.tolist(),
    }
    logit = {"method": "platt", "feature": "logit", "horizon": 3, "a": 0.8, "b": -0.5}
    for name, cal in (("sampled", sampled), ("logit", logit), ("own", None)):
        path = tiny_artifact if cal is None else _with_calibration(tiny_artifact, tmp_path / name, cal)
        scorer = IncrementalScorer.load(path)
        assert scorer.calibration_feature in ("sampled_log_softmax", "logit")
        states = _stepped(scorer, 4)
        cands = np.array([[0, 1, 2], [3, 4, -1], [5, 6, 7], [0, 8, 9]])
        expected = scorer.interest(states, cands)
        # Poison every catalog row that is not a candidate: a full-catalog pass would produce NaN.
        poisoned = torch.full_like(scorer._out, float("nan"))
        poisoned[:10] = scorer._out[:10]
        scorer._out = poisoned
        got = scorer.interest(states, cands)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert np.isfinite(got).all() and got[1, 2] == 0.0


@pytest.mark.parametrize("which", ["tiny_artifact", "memory_artifact"])
def test_sampled_feature_is_the_raw_score_minus_the_sample_logsumexp(
    which: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """x = (blended) score - logsumexp of the GRU-only scores over the sample (model.calibration)."""
    artifact: Path = request.getfixturevalue(which)
    counts = np.arange(40, 0, -1, dtype=np.float64)
    items, logw = normaliser_sample(counts, n_head=5, n_tail=10)
    cal = {
        "feature": "sampled_log_softmax",
        "horizon": 3,
        "a": 1.3,
        "b": 0.2,
        "norm_items": items.tolist(),
        "norm_logw": logw.tolist(),
    }
    path = _with_calibration(artifact, tmp_path / "s", cal)
    scorer = IncrementalScorer.load(path)
    states = _stepped(scorer, 3)
    cands = np.array([[0, 1], [2, 3], [4, 5]])
    full = scorer.score(states, np.tile(np.arange(scorer.n_items), (3, 1))).astype(np.float64)
    with torch.no_grad():
        base = load_artifact(path).model.full_scores(torch.from_numpy(states), with_memory=False)
    norm = np.log(np.exp(base.numpy().astype(np.float64)[:, items] + logw).sum(axis=1, keepdims=True))
    x = np.take_along_axis(full, cands, 1) - norm
    np.testing.assert_allclose(scorer.interest(states, cands), 1 / (1 + np.exp(-(1.3 * x + 0.2))), rtol=1e-4)


def test_old_log_softmax_artifacts_score_as_before(tiny_artifact: Path, tmp_path: Path) -> None:
    cal = {"method": "platt", "feature": "log_softmax", "horizon": 3, "a": 0.9, "b": 0.1}
    path = _with_calibration(tiny_artifact, tmp_path / "old", cal)
    scorer = IncrementalScorer.load(path)
    model = load_artifact(path).model
    states = _stepped(scorer, 5)
    cands = np.random.default_rng(4).integers(0, scorer.n_items, size=(5, 6))
    with torch.no_grad():
        logp = torch.log_softmax(model.full_scores(torch.from_numpy(states)), dim=1).numpy()
    x = np.take_along_axis(logp, cands, 1)
    np.testing.assert_allclose(scorer.interest(states, cands), 1 / (1 + np.exp(-(0.9 * x + 0.1))), rtol=1e-4)
    legacy = {k: v for k, v in cal.items() if k != "feature"}  # no feature key at all: log_softmax
    assert (
        IncrementalScorer.load(
            _with_calibration(tiny_artifact, tmp_path / "older", legacy)
        ).calibration_feature
        == "log_softmax"
    )
    with pytest.raises(ArtifactError, match="calibration feature"):
        IncrementalScorer.load(
            _with_calibration(tiny_artifact, tmp_path / "bad", {**cal, "feature": "magic"})
        )


def test_score_and_interest_together_equal_each_alone(tiny_artifact: Path) -> None:
    scorer = IncrementalScorer.load(tiny_artifact)
    states = _stepped(scorer, 3)
    cands = np.array([[0, 1, -1], [2, -1, 3], [1, 2, 0]], dtype=np.int64)[: len(states)]
    raw, prob = scorer.score_and_interest(states, cands)
    np.testing.assert_array_equal(raw, scorer.score(states, cands))
    np.testing.assert_array_equal(prob, scorer.interest(states, cands))


def test_serving_loads_no_training_code() -> None:
    """The worker's scorer imports neither the data pipeline, training nor evaluation (issue 12)."""
    import subprocess
    import sys

    code = (
        "import sys, model.scorer; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('model', 'sklearn', 'transformers', 'sentence_transformers'))))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "model.scorer" in loaded
    assert loaded.isdisjoint(
        {
            "model.data",
            "model.train",
            "model.evaluate",
            "model.metrics",
            "model.baselines",
            "model.content_fit",
        }
    )
    assert not any(m.split(".")[0] in ("sklearn", "transformers", "sentence_transformers") for m in loaded)
