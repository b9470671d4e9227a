"""The session memory's candidate terms: the native build's C (model/neighbour_lookup.c) gives the same
bits as the numpy (model.session_memory, both of its neighbour lookups), so a worker with and without
the build scores alike.

The test process runs the sources (tests/conftest.py), so the C extension is loaded here from the
current native build directly; without a build (no C compiler) these tests skip, and the worker runs
the numpy lookups, which are then the only ones.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from model import session_memory
from model.scorer import IncrementalScorer
from model.session_memory import SessionMemory
from tests.model.native_support import bits, built_extension


@pytest.fixture(scope="module")
def kernel() -> ModuleType:
    return built_extension("model._neighbour_lookup")


def table(rng: np.random.Generator, n_items: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A neighbour table as build_neighbours makes one: each row's entries sorted by item, some rows
    padded with the index n_items and weight 0, the weights of a row summing to 1."""
    idx = np.full((n_items, k), n_items, dtype=np.int32)
    w = np.zeros((n_items, k), dtype=np.float32)
    for row in range(n_items):
        used = int(rng.integers(0, k + 1))
        if used:
            idx[row, :used] = np.sort(rng.choice(n_items, size=used, replace=False))
            raw = rng.random(used).astype(np.float32) + 0.01
            w[row, :used] = raw / raw.sum()
    return torch.from_numpy(idx), torch.from_numpy(w)


def norm_of(rng: np.random.Generator, users: int, slots: int) -> np.ndarray:
    """Normalised window weights as SessionMemory.candidates makes them, some slots empty (0)."""
    powers = (0.8 ** np.arange(slots, dtype=np.float32))[None, :] * (rng.random((users, slots)) < 0.8)
    return (powers / np.maximum(powers.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def masses(
    memory: SessionMemory, kernel: ModuleType, rows: np.ndarray, cands: np.ndarray, norm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numpy with the flattened search, numpy with the per-row search, C) of the same neighbour mass."""
    memory._native = None
    saved = session_memory._FLAT_LOOKUP_MAX_ROWS
    try:
        session_memory._FLAT_LOOKUP_MAX_ROWS = 10**9
        flat = memory._neighbour_mass(rows, cands, norm)
        session_memory._FLAT_LOOKUP_MAX_ROWS = 0
        per_row = memory._neighbour_mass(rows, cands, norm)
    finally:
        session_memory._FLAT_LOOKUP_MAX_ROWS = saved
    memory._native = kernel
    try:
        compiled = memory._neighbour_mass(rows, cands, norm)
    finally:
        memory._native = None
    return flat, per_row, compiled


@pytest.mark.parametrize(
    ("n_items", "k", "users", "slots", "n_cands"),
    [
        (40, 1, 1, 1, 1),
        (40, 3, 5, 4, 9),
        (300, 16, 16, 10, 20),
        (2000, 100, 33, 10, 20),
        (50, 7, 0, 10, 20),
        (50, 7, 4, 10, 0),
    ],
)
def test_the_c_neighbour_mass_is_the_bits_of_both_numpy_lookups(
    kernel: ModuleType, n_items: int, k: int, users: int, slots: int, n_cands: int
) -> None:
    rng = np.random.default_rng(n_items + k)
    idx, w = table(rng, n_items, k)
    memory = SessionMemory(n_items, 0.8, 1.5, "sum", 0.4, 0.01, idx, w)
    rows = rng.integers(0, n_items, size=(users, slots)).astype(np.int64)
    cands = rng.integers(0, n_items, size=(users, n_cands)).astype(np.int64)
    if users and n_cands >= 3 and slots:
        cands[:, 0] = idx.numpy()[rows[:, 0], 0]  # hits (or the padding index, weight 0)
        cands[:, 1] = n_items  # the padding index itself
        cands[:, 2] = n_items + 7  # an item added from content: in no row
    norm = norm_of(rng, users, slots)
    flat, per_row, compiled = masses(memory, kernel, rows, cands, norm)
    assert compiled.shape == (users, n_cands) and compiled.dtype == np.float32
    assert np.array_equal(bits(flat), bits(compiled))
    assert np.array_equal(bits(per_row), bits(compiled))
    if users and n_cands >= 3 and slots:
        assert compiled[:, 1].tolist() == [0.0] * users and compiled[:, 2].tolist() == [0.0] * users


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_the_c_repeat_terms_are_the_bits_of_numpy(kernel: ModuleType, mode: str) -> None:
    rng = np.random.default_rng(7)
    idx, w = table(rng, 60, 4)
    memory = SessionMemory(60, 0.8, 1.5, mode, 0.4, 0.01, idx, w)
    for users, slots, n_cands in ((1, 1, 1), (3, 10, 12), (40, 10, 20), (0, 10, 5), (5, 10, 0)):
        window = rng.integers(-1, 60, size=(users, slots)).astype(np.int64)  # -1: an empty slot
        window[:, 1:] = np.where(
            rng.random((users, slots - 1)) < 0.3, window[:, :1], window[:, 1:]
        )  # repeats
        cands = rng.integers(0, 60, size=(users, n_cands)).astype(np.int64)
        if users and n_cands:
            cands[:, 0] = np.maximum(window[:, 0], 0)
        powers = (0.8 ** np.arange(slots, dtype=np.float32))[None, :] * (window >= 0)
        memory._native = None
        ours = memory._repeat_terms(window, cands, powers)
        memory._native = kernel
        try:
            compiled = memory._repeat_terms(window, cands, powers)
        finally:
            memory._native = None
        assert compiled.shape == ours.shape == (users, n_cands)
        assert np.array_equal(bits(ours), bits(compiled)), (mode, users, slots)


def test_a_row_beyond_the_table_has_no_neighbours_as_in_the_flattened_search(kernel: ModuleType) -> None:
    rng = np.random.default_rng(1)
    idx, w = table(rng, 30, 5)
    memory = SessionMemory(30, 0.8, 1.5, "sum", 0.4, 0.01, idx, w)
    rows = np.array([[3, 30, 45]], dtype=np.int64)  # 30 and 45: no such row
    cands = rng.integers(0, 30, size=(1, 6)).astype(np.int64)
    cands[0, 0] = idx.numpy()[3, 0]
    norm = np.array([[0.5, 0.3, 0.2]], dtype=np.float32)
    flat = memory._neighbour_mass(rows, cands, norm)  # a row of 3 slots: the flattened search
    memory._native = kernel
    assert np.array_equal(bits(flat), bits(memory._neighbour_mass(rows, cands, norm)))


def test_the_c_terms_refuse_buffers_of_the_wrong_size(kernel: ModuleType) -> None:
    keys, weights = np.zeros((4, 3), dtype=np.int32), np.zeros((4, 3), dtype=np.float32)
    rows, cands = np.zeros((2, 5), dtype=np.int64), np.zeros((2, 6), dtype=np.int64)
    norm = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="out has"):
        kernel.mass(np.empty((2, 5), np.float32), rows, cands, keys, weights, norm, 3, 2, 5, 6)
    with pytest.raises(ValueError, match="table_weights has"):
        kernel.mass(np.empty((2, 6), np.float32), rows, cands, keys, weights[:3], norm, 3, 2, 5, 6)
    with pytest.raises(ValueError, match="bad shape"):
        kernel.mass(np.empty((2, 6), np.float32), rows, cands, keys, weights, norm, 0, 2, 5, 6)
    with pytest.raises(ValueError, match="powers has"):
        kernel.repeat(np.empty((2, 6), np.float32), rows, cands, norm[:1], 2, 5, 6, False)
    with pytest.raises(ValueError, match="bad shape"):
        kernel.repeat(np.empty((2, 6), np.float32), rows[:, :0], cands, norm[:, :0], 2, 0, 6, True)


def test_the_memory_scorer_scores_the_same_bits_with_and_without_the_native_terms(
    kernel: ModuleType, memory_artifact: Path
) -> None:
    """A trained session-memory artifact through the scorer's hot path, a round of one user and of many."""
    scorer = IncrementalScorer.load(memory_artifact)
    memory = scorer._memory
    assert memory is not None and memory.use_neighbours
    rng = np.random.default_rng(4)
    for users in (1, 40):
        states = scorer.initial_state(users)
        for _ in range(8):
            states = scorer.step(states, rng.integers(0, scorer.n_items, users), rng.integers(0, 3, users))
        cands = rng.integers(0, scorer.n_items, size=(users, 20))
        memory._native = None
        raw, interest = scorer.score_and_interest(states, cands)
        memory._native = kernel
        try:
            raw_c, interest_c = scorer.score_and_interest(states, cands)
        finally:
            memory._native = None
        assert np.array_equal(bits(raw), bits(raw_c))
        assert np.array_equal(bits(interest), bits(interest_c))
