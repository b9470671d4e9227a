"""Session memory: the neighbour table, the window, and dense vs candidate scoring agreeing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.data import EncodedSessions
from model.session_memory import SessionMemory, build_neighbours, push_window, window_weights


def _sessions(seqs: list[list[int]]) -> EncodedSessions:
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    return EncodedSessions(offsets=offsets, items=items, types=np.zeros_like(items))


def test_neighbours_weigh_successors_by_distance_within_sessions_only() -> None:
    # 0->1 twice at distance 1, 0->2 once at distance 2; 2 | 3 are different sessions; 4 repeats itself.
    idx, w = build_neighbours(
        _sessions([[0, 1, 2], [0, 1], [2], [3], [4, 4]]), n_items=5, k=3, max_distance=2
    )
    assert idx[0].tolist() == [1, 2, 5] and w[0].tolist() == pytest.approx([0.8, 0.2, 0.0])
    assert idx[1].tolist() == [2, 5, 5] and w[1].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert idx[2].tolist() == [5, 5, 5] and not w[2].any()  # no cross-session pair 2 -> 3
    assert not w[4].any()  # self-transitions are the repeat term's job


def test_neighbours_keep_the_k_heaviest_sorted_by_item() -> None:
    idx, w = build_neighbours(
        _sessions([[0, 3], [0, 3], [0, 1], [0, 2], [0, 2], [0, 2]]), 4, k=2, max_distance=1
    )
    assert idx[0].tolist() == [2, 3]  # 2 (x3) and 3 (x2) beat 1 (x1), stored by item index
    assert w[0].tolist() == pytest.approx([0.6, 0.4])


def test_window_is_newest_first_bounded_and_zero_means_empty() -> None:
    window = torch.zeros((1, 3))
    for item in (7, 0, 9, 4):
        window = push_window(window, torch.tensor([item]))
    assert window.tolist() == [[5.0, 10.0, 1.0]]  # index + 1; 7 fell out
    idx, powers = window_weights(torch.tensor([[5.0, 0.0, 0.0]]), 0.5)
    assert idx.tolist() == [[4, -1, -1]] and powers.tolist() == [[1.0, 0.0, 0.0]]


def test_dense_and_candidate_scores_agree() -> None:
    rng = np.random.default_rng(0)
    n = 30
    seqs = [list(rng.integers(0, n, size=int(rng.integers(2, 8)))) for _ in range(200)]
    idx, w = build_neighbours(_sessions(seqs), n, k=6, max_distance=3)
    memory = SessionMemory(n, 0.8, 1.5, "sum", 0.4, 0.01, idx, w)
    window = torch.tensor([[3, 5, 3, 0], [0, 0, 0, 0], [30, 1, 2, 29]], dtype=torch.float32)
    dense = memory.dense(window)
    cands = torch.arange(n).repeat(3, 1)
    np.testing.assert_allclose(
        memory.candidates(window.numpy(), cands.numpy()), dense.numpy(), rtol=1e-5, atol=1e-5
    )
    latest = SessionMemory(n, 0.8, 1.5, "max", 0.4, 0.01, idx, w)
    np.testing.assert_allclose(
        latest.candidates(window.numpy(), cands.numpy()), latest.dense(window).numpy(), rtol=1e-5, atol=1e-5
    )
    # "max" counts only the most recent view of item 2; "sum" adds its older view (decay 0.8**2).
    assert float(dense[0, 2] - latest.dense(window)[0, 2]) == pytest.approx(1.5 * 0.64, abs=1e-5)
    with pytest.raises(ValueError, match="repeat_mode"):
        SessionMemory(n, 0.8, 1.5, "mean", 0.4, 0.01, idx, w)
    # Item 2 (slot 0, index + 1 = 3) is also at slot 2: the repeat term counts both, decayed.
    neighbour = 0.4 * np.log(0.01 + _mass(idx, w, [2, 4, 2], [1, 0.8, 0.64], 2))
    assert float(dense[0, 2]) - neighbour == pytest.approx(1.5 * (1 + 0.64), abs=1e-5)
    # An empty window adds the same constant to every item: the ranking is the GRU's.
    assert torch.allclose(dense[1], torch.full((n,), 0.4 * float(np.log(0.01))))


def test_both_neighbour_lookups_give_the_same_bits_whatever_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The serving path searches the flattened table for a few users and each gathered row for many
    (``model.session_memory._FLAT_LOOKUP_MAX_ROWS``); a user's terms must not depend on which ran,
    with empty slots, padding (items with fewer than k neighbours) and candidates past the padding."""
    import model.session_memory as sm

    rng = np.random.default_rng(3)
    n = 40
    seqs = [list(rng.integers(0, n, size=int(rng.integers(2, 6)))) for _ in range(60)]
    idx, w = build_neighbours(_sessions(seqs), n, k=8, max_distance=2)
    assert (idx == n).any()  # some rows are padded
    memory = SessionMemory(n, 0.8, 1.5, "sum", 0.4, 0.01, idx, w)
    window = rng.integers(0, n + 1, size=(12, 5)).astype(np.float32)  # 0: an empty slot
    cands = rng.integers(0, n + 3, size=(12, 9))  # n: the padding index; above it: added items
    cands[:, 0] = idx.numpy()[np.maximum(window[:, 0].astype(np.int64) - 1, 0), 0]  # a sure hit
    # An added item one past the padding, next to an item whose next row holds item 0: in the flat
    # table its key is that row's (a + 1, 0), which must not count.
    a = next(a for a in range(n - 1) if (idx[a + 1] == 0).any())
    window[1, 0], cands[1, 1] = a + 1, n + 1
    results = []
    for rows in (0, 10_000):  # never the flat search, always it
        monkeypatch.setattr(sm, "_FLAT_LOOKUP_MAX_ROWS", rows)
        results.append(memory.candidates(window, cands))
    assert results[0].dtype == results[1].dtype == np.float32
    assert np.array_equal(results[0].view(np.uint32), results[1].view(np.uint32))
    one_by_one = np.concatenate([memory.candidates(window[i : i + 1], cands[i : i + 1]) for i in range(12)])
    assert np.array_equal(one_by_one.view(np.uint32), results[0].view(np.uint32))


def test_a_rows_terms_do_not_depend_on_the_width_of_the_call() -> None:
    """A user's candidates are scored in one call with the round's other asks, padded to the widest:
    a candidate's term must be the same bits alone as among many. (numpy orders a reduction by the
    array's shape: summed with ``.sum(axis=1)`` over the window, one candidate alone and the same one
    in a row of ten differed in the last bit, and a replay's interest index with them.)"""
    rng = np.random.default_rng(5)
    n = 50
    seqs = [list(rng.integers(0, n, size=int(rng.integers(3, 9)))) for _ in range(400)]
    idx, w = build_neighbours(_sessions(seqs), n, k=10, max_distance=3)
    for mode in ("sum", "max"):
        memory = SessionMemory(n, 0.8, 1.5, mode, 0.4, 0.01, idx, w)
        window = rng.integers(1, n + 1, size=(16, 10)).astype(np.float32)  # full windows: many hits
        cands = rng.integers(0, n, size=(16, 12))
        cands[:, 1:4] = idx.numpy()[window[:, 1:4].astype(np.int64) - 1, 0]  # sure hits
        wide = memory.candidates(window, cands)
        for i in range(16):
            for j in range(12):
                alone = memory.candidates(window[i : i + 1], cands[i : i + 1, j : j + 1])
                assert alone.view(np.uint32)[0, 0] == wide.view(np.uint32)[i, j], (mode, i, j)


def _mass(idx: torch.Tensor, w: torch.Tensor, window: list[int], powers: list[float], item: int) -> float:
    total = sum(powers)
    return sum(p / total * float(w[a][idx[a] == item].sum()) for a, p in zip(window, powers, strict=True))


def test_memory_model_trains_round_trips_and_ranks_revisits_better(tmp_path: Path) -> None:
    """Sessions that keep returning to their first item: the repeat term must help the trained GRU."""
    from model.artifact import load_artifact, save_artifact
    from model.config import TrainConfig
    from model.data import ItemIndex, SessionLog, cases_from_sessions, encode
    from model.evaluate import evaluate_model
    from model.train import train

    rng = np.random.default_rng(5)
    seqs = []
    for _ in range(600):
        home = int(rng.integers(0, 60))
        seq = [home]
        for _ in range(int(rng.integers(3, 8))):
            seq.append(int(rng.integers(0, 60)))
            seq.append(home)
        seqs.append([str(i) for i in seq])
    log = SessionLog(items=seqs[:500], times=None, types=None)
    index = ItemIndex.build(log)
    cfg = TrainConfig(
        embedding_size=8,
        hidden_size=8,
        n_negatives=16,
        batch_size=16,
        epochs=1,
        threads=1,
        session_window=4,
        repeat_bonus=2.0,
        neighbour_weight=0.3,
        neighbour_k=8,
    )
    model = train(encode(log, index), index, cfg, progress=False).model
    assert model.neighbour_w.sum() > 0  # the table was built from the training sessions
    cases = cases_from_sessions(encode(SessionLog(items=seqs[500:], times=None, types=None), index))
    with_memory = evaluate_model(model, cases)
    save_artifact(
        tmp_path / "art", model, index.ids, cfg, {}, "0" * 64, {"feature": "logit", "a": 1.0, "b": 0.0}
    )
    loaded = load_artifact(tmp_path / "art").model
    assert torch.equal(loaded.neighbour_idx, model.neighbour_idx)
    assert evaluate_model(loaded, cases)["mrr@20"] == pytest.approx(with_memory["mrr@20"])
    loaded.memory_cfg = cfg.model_copy(update={"repeat_bonus": 0.0, "neighbour_weight": 0.0})
    alone = evaluate_model(loaded, cases)
    assert with_memory["mrr@20"] > alone["mrr@20"] + 0.05
