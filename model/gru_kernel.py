"""The serving GRU step, row by row, with arithmetic fixed to the last bit: numpy here, C when built.

The stream worker steps every user on every event (:meth:`model.scorer.IncrementalScorer.step`). A
step is a few small products and gates, and in numpy it is some thirty calls whatever the number of
rows: most of its cost is the calls, not the arithmetic. ``model/gru_step.c`` does the same step in
one call; the native build (``stream.native_build``) compiles it to ``model._gru_step`` beside the
compiled hot modules.

Both paths must give the same bits: a worker with the native build and one without (or the tests,
which run the sources) must store and decide the same, and a replay on any machine must repeat. So
the arithmetic is defined here by IEEE operations in a fixed order, which C and numpy both round
exactly (no ``einsum``, BLAS or SIMD library function, whose order or polynomial varies with the
library and the CPU):

* the hidden product sums ``g[j] * w[j, k]`` over ``j`` in order, in float32, first term first;
* ``tanh`` is computed in float64 from ``exp`` by a range reduction to ``[-ln 2 / 2, ln 2 / 2]`` and
  a degree-8 Taylor polynomial (relative error below 1e-10, so within one float32 ulp of the true
  value), then rounded to float32; the sigmoid is ``0.5 + 0.5 * tanh(0.5 * x)`` in float32;
* C is compiled without contraction into fused multiply-adds (``-ffp-contract=off``).

``tests/model/test_gru_kernel.py`` holds the two paths to the same bytes and ``tanh32`` within an ulp
of ``numpy.tanh``.
"""

from __future__ import annotations

import math

import numpy as np

# exp(y) = 2**k * exp(r): k = round(y / ln 2) by adding and removing 1.5 * 2**52 (round to nearest even
# in IEEE double, the same in C and numpy), r = y - k * ln 2 with ln 2 split in two (fdlibm's split).
INV_LN2 = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
ROUND = 6755399441055744.0
# tanh(20) is 1 in float32 (and in float64 to 17 digits): |2x| is clamped here, so k <= 58.
CLAMP = 40.0
POW2 = np.array([2.0**k for k in range(59)], dtype=np.float64)
# 1/n! for n = 1..8 (Horner from the top); the C source spells the same quotients.
# Rows per block of the numpy hidden product (its temporary is rows * U * 3U float32).
_PRODUCT_ROWS = 128
EXP_COEFFS = tuple(1.0 / math.factorial(n) for n in range(1, 9))


def tanh32(x: np.ndarray) -> np.ndarray:
    """tanh of a float32 array, as ``model/gru_step.c``'s ``tanh32`` computes it (same bits)."""
    d = np.asarray(x, dtype=np.float32).astype(np.float64)
    y = 2.0 * np.abs(d)
    y = np.where(y < CLAMP, y, CLAMP)  # NaN too becomes CLAMP, as in C
    k = (y * INV_LN2 + ROUND) - ROUND
    r = (y - k * LN2_HI) - k * LN2_LO
    q = np.full_like(r, EXP_COEFFS[7])
    for c in EXP_COEFFS[6::-1]:
        q = q * r + c
    p = q * r  # exp(r) - 1
    ki = k.astype(np.int64)
    em1 = np.where(ki == 0, p, (1.0 + p) * POW2[ki] - 1.0)  # exp(y) - 1
    return np.copysign(em1 / (em1 + 2.0), d).astype(np.float32)


def step_numpy(
    h: np.ndarray,
    items: np.ndarray,
    types: np.ndarray,
    gi_item: np.ndarray,
    gi_type: np.ndarray,
    w_hh_t: np.ndarray,
    b_hh: np.ndarray,
    emb: np.ndarray | None,
    window: int,
    n_artifact: int,
) -> np.ndarray:
    """One GRU step per row of ``h`` (B, H) float32; see :meth:`model.scorer.IncrementalScorer.step`."""
    units = w_hh_t.shape[0]
    known = items >= 0
    safe = np.where(known, items, 0)
    g = h[:, :units]
    gi = gi_item[safe] + gi_type[types]
    gh = _hidden_product(g, w_hh_t) + b_hh
    rz = 0.5 + 0.5 * tanh32(0.5 * (gi[:, : 2 * units] + gh[:, : 2 * units]))
    r, z = rz[:, :units], rz[:, units:]
    n = tanh32(gi[:, 2 * units :] + r * gh[:, 2 * units :])
    parts = [n + z * (g - n)]
    if emb is not None:
        parts.append(emb[safe])
    if window:
        last = h[:, h.shape[1] - window :]
        # The window, newest first (model.session_memory.push_window); added items are not pushed.
        pushed = np.concatenate([(safe + 1).astype(np.float32)[:, None], last[:, :-1]], axis=1)
        artifact = safe < n_artifact
        parts.append(pushed if artifact.all() else np.where(artifact[:, None], pushed, last))
    new = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    return new if known.all() else np.where(known[:, None], new, h)


def _hidden_product(g: np.ndarray, w_hh_t: np.ndarray) -> np.ndarray:
    """``g @ w_hh_t`` (B, 3U) summed over ``j`` in order, first term first, as the C step sums it.

    The products of a block of rows are taken in one operation and then added slot by slot (half the
    numpy calls of a product and a sum per slot); blocks bound the (rows, U, 3U) temporary."""
    units = w_hh_t.shape[0]
    out = np.empty((len(g), w_hh_t.shape[1]), dtype=np.float32)
    for start in range(0, len(g), _PRODUCT_ROWS):
        products = g[start : start + _PRODUCT_ROWS, :, None] * w_hh_t  # (rows, U, 3U) float32
        acc = products[:, 0].copy()
        for j in range(1, units):
            acc += products[:, j]
        out[start : start + _PRODUCT_ROWS] = acc
    return out
