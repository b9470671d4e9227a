"""The GRU step's two paths, numpy and the native build's C (model.gru_kernel), give the same bits.

The test process runs the sources (tests/conftest.py), so the C extension is loaded here from the
current native build directly; without a build (no C compiler) these tests skip, and the worker runs
the numpy path, which is then the only one.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from model import gru_kernel
from model.scorer import IncrementalScorer
from tests.model.content_support import cold
from tests.model.native_support import bits, built_extension


@pytest.fixture(scope="module")
def kernel() -> ModuleType:
    return built_extension("model._gru_step")


def sample(rng: np.random.Generator) -> np.ndarray:
    scales = (1e-30, 1e-8, 1e-3, 0.05, 0.3, 1.0, 3.0, 9.0, 30.0)
    x = np.concatenate([rng.standard_normal(20_000) * s for s in scales]).astype(np.float32)
    special = [0.0, -0.0, 1e-45, -1e-45, 0.3465736, 0.34657362, 20.0, -20.0, 3e38, -3e38, np.inf, -np.inf]
    return np.concatenate([x, np.array(special, dtype=np.float32)])


def test_tanh_is_the_same_bits_in_c_and_numpy_and_within_an_ulp_of_the_true_value(kernel: ModuleType) -> None:
    x = sample(np.random.default_rng(3))
    ours = gru_kernel.tanh32(x)
    compiled = np.empty_like(x)
    kernel.tanh_into(compiled, x)
    assert np.array_equal(bits(ours), bits(compiled))
    true = np.tanh(x.astype(np.float64)).astype(np.float32)  # correctly rounded but for rare ties
    ulps = np.abs(bits(ours).astype(np.int64) - bits(true).astype(np.int64))
    assert ulps.max() <= 1
    assert np.array_equal(np.signbit(ours), np.signbit(x))  # odd, -0.0 included


def test_tanh_of_nan_is_one_in_both(kernel: ModuleType) -> None:
    """Not a value a trained model produces; pinned so that the two paths cannot part even there."""
    x = np.array([np.nan, -np.nan], dtype=np.float32)
    compiled = np.empty_like(x)
    kernel.tanh_into(compiled, x)
    assert np.array_equal(bits(gru_kernel.tanh32(x)), bits(compiled))


def weights(
    rng: np.random.Generator, units: int, n_items: int, emb: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    g3 = 3 * units
    return (
        (rng.standard_normal((n_items, g3)) * 0.8).astype(np.float32),
        (rng.standard_normal((4, g3)) * 0.3).astype(np.float32),
        (rng.standard_normal((units, g3)) / np.sqrt(units)).astype(np.float32),
        (rng.standard_normal(g3) * 0.1).astype(np.float32),
        (rng.standard_normal((n_items, emb))).astype(np.float32) if emb else None,
    )


@pytest.mark.parametrize(
    ("units", "emb", "window"), [(1, 0, 0), (7, 0, 1), (48, 0, 10), (16, 5, 3), (33, 8, 0)]
)
def test_a_step_is_the_same_bits_in_c_and_numpy(
    kernel: ModuleType, units: int, emb: int, window: int
) -> None:
    rng = np.random.default_rng(units * 100 + emb * 10 + window)
    n_items, n_artifact = 50, 40  # rows 40-49: items added from content (never enter the window)
    gi_item, gi_type, w_hh_t, b_hh, emb_table = weights(rng, units, n_items, emb)
    hidden = units + emb + window
    for batch in (0, 1, 5, 33):
        h = np.zeros((batch, hidden), dtype=np.float32)
        for _ in range(12):  # a chain of steps, each on the last one's states
            items = rng.integers(-1, n_items, batch)
            types = rng.integers(0, 4, batch)
            table = (gi_item, gi_type, w_hh_t, b_hh, emb_table)
            ours = gru_kernel.step_numpy(h, items, types, *table, window, n_artifact)
            compiled = np.empty_like(h)
            kernel.step(compiled, h, items, types, *table, units, window, n_artifact, 4)
            assert np.array_equal(bits(ours), bits(compiled))
            assert np.array_equal(ours[items < 0], h[items < 0])  # unknown items: unchanged
            h = ours


def test_both_paths_refuse_bad_indices_alike(kernel: ModuleType) -> None:
    rng = np.random.default_rng(5)
    gi_item, gi_type, w_hh_t, b_hh, _ = weights(rng, 4, 6, 0)
    h = np.zeros((2, 4), dtype=np.float32)
    out = np.empty_like(h)

    def both(items: list[int], types: list[int]) -> None:
        it, ty = np.array(items, dtype=np.int64), np.array(types, dtype=np.int64)
        kernel.step(out, h, it, ty, gi_item, gi_type, w_hh_t, b_hh, None, 4, 0, 6, 4)

    with pytest.raises(ValueError, match="event_types"):
        both([1, 2], [0, 4])
    with pytest.raises(ValueError, match="event_types"):
        both([-1, 2], [-1, 0])  # an unknown item's type is checked too
    with pytest.raises(IndexError):
        both([1, 6], [0, 0])
    with pytest.raises(ValueError, match="bytes"):  # a state of the wrong width
        kernel.step(np.empty((2, 5), np.float32), h, np.zeros(2, np.int64), np.zeros(2, np.int64),
                    gi_item, gi_type, w_hh_t, b_hh, None, 4, 0, 6, 4)  # fmt: skip


@pytest.mark.parametrize("which", ["tiny_artifact", "plain_artifact", "memory_artifact", "content_artifact"])
def test_the_scorer_steps_the_same_with_and_without_the_native_step(
    kernel: ModuleType, which: str, request: pytest.FixtureRequest
) -> None:
    """Trained artifacts of each architecture (last-item skip, plain, session memory, items added from
    content, which never enter the window)."""
    scorer = IncrementalScorer.load(request.getfixturevalue(which))
    if which == "content_artifact":
        assert scorer.add_items(["cold-a", "cold-b"], [cold("hiking boots"), cold("coffee beans", 3)]) == 2
    rng = np.random.default_rng(11)
    states = scorer.initial_state(9)
    for _ in range(6):
        items = rng.integers(-1, scorer.n_items, 9)
        types = rng.integers(0, 3, 9)
        scorer._kernel = None
        ours = scorer.step(states, items, types)
        scorer._kernel = kernel
        try:
            compiled = scorer.step(states, items, types)
        finally:
            scorer._kernel = None
        assert np.array_equal(bits(ours), bits(compiled))
        states = ours


def test_stacking_users_states_is_the_same_with_and_without_the_native_gather(
    kernel: ModuleType, tiny_artifact: Path
) -> None:
    scorer = IncrementalScorer.load(tiny_artifact)
    rng = np.random.default_rng(2)
    rows: list[np.ndarray | None] = [None, rng.standard_normal(scorer.hidden_size).astype(np.float32), None]
    ours = scorer.stack_states(rows)
    scorer._kernel = kernel
    assert np.array_equal(bits(scorer.stack_states(rows)), bits(ours))
    assert scorer.stack_states([]).shape == (0, scorer.hidden_size)
    with pytest.raises(ValueError, match="bytes"):
        scorer.stack_states([np.zeros(scorer.hidden_size + 1, dtype=np.float32)])
