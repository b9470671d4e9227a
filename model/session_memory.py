"""Session memory: a bounded window of the user's recent items, scored as repeats and item neighbours.

The GRU alone under-ranks items the user already looked at in this session: on Diginetica a fifth of the
next items are re-visits, and on yoochoose a third. The window adds two terms to the GRU's score of an
item ``i`` (both fixed functions, their weights are hyper-parameters chosen on validation):

* **repeat**: ``repeat_bonus * sum_j decay**j [window_j == i]`` (``j`` = 0 for the newest item), so a
  re-visit is boosted by how recently and how often it was seen (``repeat_mode`` "sum": an item viewed
  three times counts more than one viewed once), or ``max_j`` instead of ``sum_j`` (``"max"``: only the
  most recent view counts; better where bursts of identical clicks carry no extra signal, as on
  yoochoose);
* **neighbours**: ``neighbour_weight * log(neighbour_floor + sum_j w_j N[window_j, i])``, with ``w`` the
  window's decay weights normalised to sum 1 and ``N`` a sparse item-to-item table built from the
  training sessions: for each item its ``k`` strongest successors within ``max_distance`` steps
  (weight 1/distance; predecessors count too, times ``backward``), each row normalised to sum 1.
  A log-linear blend: it multiplies the GRU's probability by how well the item follows the recent
  items, and shifts items without any association by the same constant.

A third term, the session-kNN votes of the training sessions most like the window, lives in
:mod:`model.session_votes`; :class:`SessionMemory` adds it when the model has one.

The window lives in the user's state vector as ``index + 1`` floats (0 = empty, so an all-zero state is
an empty session and a reset is a multiplication by 0); float32 holds integers exactly below 2**24,
which bounds the catalog (checked). Serving cost per event stays constant: one shift of the window per
step, and ``W * log k`` work per scored candidate.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import torch

from stream import native

if TYPE_CHECKING:  # building neighbours is training work; the scorer imports this module
    from model.data import EncodedSessions
    from model.session_votes import SessionVotes


# float32 represents every integer up to 2**24 exactly; window slots hold index + 1.
MAX_WINDOW_ITEMS = 2**24 - 1
# Window slots (users x window) up to which the serving lookup searches the flattened neighbour table
# (SessionMemory._neighbour_weights); measured crossover about 16 users of a 10-item window.
_FLAT_LOOKUP_MAX_ROWS = 100
# Neighbour entries (items x k) up to which that flattened table is kept: 12 bytes each (an int64 key
# and the float32 weight), 48 MB at this bound; larger catalogs always use the per-row search.
_FLAT_LOOKUP_MAX_ENTRIES = 4_000_000


def build_neighbours(
    sessions: EncodedSessions, n_items: int, k: int, max_distance: int, backward: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The item-to-item successor table: ``(idx, weight)``, both (n_items, k), int32 and float32.

    For every pair of items ``a`` then ``b`` (``b != a``) at most ``max_distance`` steps apart in a
    session, ``b`` gains ``1 / distance`` in ``a``'s row (and ``a`` gains ``backward / distance`` in
    ``b``'s row: items seen just before are weaker evidence, but evidence). Each row keeps its ``k``
    heaviest entries, normalised to sum 1, **sorted by item index** (so a candidate is found by binary
    search); unused slots hold index ``n_items`` and weight 0.
    """
    if k < 1 or max_distance < 1:
        raise ValueError("neighbour k and max_distance must be >= 1")
    src_parts: list[np.ndarray] = []
    dst_parts: list[np.ndarray] = []
    w_parts: list[np.ndarray] = []
    offsets, items = sessions.offsets, sessions.items
    session_of = np.repeat(np.arange(len(sessions)), np.diff(offsets))
    for d in range(1, max_distance + 1):
        if len(items) <= d:
            break
        same = session_of[:-d] == session_of[d:]
        a, b = items[:-d][same], items[d:][same]
        ok = (a >= 0) & (b >= 0) & (a != b)
        src_parts.append(a[ok])
        dst_parts.append(b[ok])
        w_parts.append(np.full(int(ok.sum()), 1.0 / d))
        if backward > 0:
            src_parts.append(b[ok])
            dst_parts.append(a[ok])
            w_parts.append(np.full(int(ok.sum()), backward / d))
    idx = np.full((n_items, k), n_items, dtype=np.int32)
    weight = np.zeros((n_items, k), dtype=np.float32)
    if not src_parts or not sum(len(p) for p in src_parts):
        return torch.from_numpy(idx), torch.from_numpy(weight)
    src, dst, w = np.concatenate(src_parts), np.concatenate(dst_parts), np.concatenate(w_parts)
    keys, inverse = np.unique(src * n_items + dst, return_inverse=True)
    sums = np.bincount(inverse, weights=w)
    s, t = keys // n_items, keys % n_items
    order = np.lexsort((t, -sums, s))  # by row, heaviest first, ties by item index (deterministic)
    s, t, sums = s[order], t[order], sums[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)
    keep = rank < k
    s, t, sums, rank = s[keep], t[keep], sums[keep], rank[keep]
    idx[s, rank] = t
    weight[s, rank] = sums
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)
    by_item = np.argsort(idx, axis=1, kind="stable")
    return torch.from_numpy(np.take_along_axis(idx, by_item, 1)), torch.from_numpy(
        np.take_along_axis(weight, by_item, 1)
    )


def push_window(window: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The window after ``items`` (B,) were seen: newest first, the oldest slot drops out."""
    return torch.cat([(items + 1).to(window.dtype)[:, None], window[:, :-1]], dim=1)


@functools.lru_cache(maxsize=8)
def decay_powers(decay: float, width: int) -> torch.Tensor:
    """``decay ** [0, 1, ..., width - 1]`` (float32), newest slot first; computed once per (decay,
    width): it was a tenth of the neighbour lookup per scoring call. Shared: never change it in place."""
    with torch.inference_mode(False):  # a plain tensor, usable inside and outside inference mode
        return decay ** torch.arange(width, dtype=torch.float32)


def window_weights(window: torch.Tensor, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (B, W) int64 with -1 for empty slots, decay weights (B, W) with 0 for empty slots)."""
    idx = window.round().to(torch.int64) - 1
    return idx, decay_powers(decay, window.shape[1])[None, :] * (idx >= 0)


def _window_sum(terms: np.ndarray) -> np.ndarray:
    """Sum (B, W, C) over the window, slot by slot in window order: the same bits for a (row, candidate)
    whatever B and C. numpy's ``.sum(axis=1)`` orders its additions by the array's shape (pairwise
    along a contiguous axis, one slot at a time along a strided one), so a candidate alone and the same
    candidate in a wider call differed in the last bit."""
    total = np.zeros((terms.shape[0], terms.shape[2]), dtype=terms.dtype)
    for slot in range(terms.shape[1]):
        total += terms[:, slot, :]
    return total


class SessionMemory:
    """The repeat, neighbour and session-kNN vote terms of states' windows; pure functions of the window."""

    def __init__(
        self,
        n_items: int,
        decay: float,
        repeat_bonus: float,
        repeat_mode: str,
        neighbour_weight: float,
        neighbour_floor: float,
        neighbour_idx: torch.Tensor,
        neighbour_w: torch.Tensor,
        votes: SessionVotes | None = None,
    ) -> None:
        self.n_items = n_items
        self.decay = decay
        self.repeat_bonus = repeat_bonus
        if repeat_mode not in ("sum", "max"):
            raise ValueError(f"repeat_mode must be 'sum' or 'max', not {repeat_mode!r}")
        self.repeat_max = repeat_mode == "max"
        self.neighbour_weight = neighbour_weight
        self.neighbour_floor = neighbour_floor
        self.idx = neighbour_idx
        self.w = neighbour_w
        self.use_neighbours = neighbour_weight > 0 and neighbour_idx.shape[1] > 0
        self.votes = votes  # the session-kNN term (model.session_votes), or None
        # The neighbour table flattened for the serving path's lookup (:meth:`candidates`): the key of
        # (item a, neighbour b) is a * (n_items + 1) + b, so each row's block of keys lies above the
        # previous row's (b <= n_items, the padding) and the whole array is sorted; built on first use.
        self._flat: tuple[np.ndarray, np.ndarray] | None = None
        # The compiled lookup when the native build is loaded, and the table as it reads it (int32 and
        # float32, contiguous; built on first use).
        self._native = native.installed("model._neighbour_lookup")
        self._native_table: tuple[np.ndarray, np.ndarray] | None = None

    def _flat_table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is None:
            table = self.idx.numpy().astype(np.int64)
            rows = np.arange(len(table), dtype=np.int64)[:, None] * (self.n_items + 1)
            self._flat = ((rows + table).ravel(), np.ascontiguousarray(self.w.numpy()).ravel())
        return self._flat

    def _parts(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, powers = window_weights(window, self.decay)
        norm = powers / powers.sum(dim=1, keepdim=True).clamp(min=1e-12)
        return idx, idx.clamp(min=0), powers, norm

    def dense(self, window: torch.Tensor) -> torch.Tensor:
        """The memory terms for every item: (B, n_items)."""
        idx, safe, powers, norm = self._parts(window)
        b = len(window)
        out = torch.zeros((b, self.n_items), dtype=torch.float32)
        if self.repeat_bonus:
            rep = torch.zeros((b, self.n_items + 1), dtype=torch.float32)
            target = torch.where(idx >= 0, idx, torch.full_like(idx, self.n_items))  # empty -> spare column
            if self.repeat_max:
                rep.scatter_reduce_(1, target, powers, reduce="amax")
            else:
                rep.scatter_add_(1, target, powers)
            out += self.repeat_bonus * rep[:, : self.n_items]
        if self.use_neighbours:
            mass = torch.zeros((b, self.n_items + 1), dtype=torch.float32)
            rows = self.idx[safe].reshape(b, -1).long()  # padding index n_items lands in the spare column
            mass.scatter_add_(1, rows, (self.w[safe] * norm[:, :, None]).reshape(b, -1))
            out += self.neighbour_weight * torch.log(self.neighbour_floor + mass[:, : self.n_items])
        if self.votes is not None:
            out += self.votes.dense(idx.numpy())
        return out

    def candidates(self, window: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """The memory terms of candidate items (B, C) float32, in numpy (the serving path, ``model.scorer``).

        Row by row: every operation reduces within a row, so a row's terms do not depend on the other
        rows of the call (the engine scores any number of asks at once and a user's scores must not
        depend on who else was scored); numpy costs about a third of torch's fixed cost per call, which
        the engine pays for every round of asks. ``cands`` must be valid indices (>= 0).
        """
        idx = np.rint(window).astype(np.int64) - 1
        powers = decay_powers(self.decay, window.shape[1]).numpy()[None, :] * (idx >= 0)
        out = np.zeros(cands.shape, dtype=np.float32)
        if self.repeat_bonus:
            out += self.repeat_bonus * self._repeat_terms(idx, cands, powers)
        if self.use_neighbours:
            norm = powers / np.maximum(powers.sum(axis=1, keepdims=True), 1e-12)
            mass = self._neighbour_mass(np.maximum(idx, 0), cands, norm)
            out += self.neighbour_weight * np.log(self.neighbour_floor + mass)
        if self.votes is not None:
            out += self.votes.candidates(idx, torch.from_numpy(cands)).numpy()
        return out

    def _repeat_terms(self, idx: np.ndarray, cands: np.ndarray, powers: np.ndarray) -> np.ndarray:
        """(B, C) float32: over the window's slots, in slot order, the sum (or with ``repeat_max`` the
        maximum) of the slot's decay weight where it holds the candidate. One C call with the native
        build, the same bits (``model/neighbour_lookup.c``)."""
        b, w = idx.shape
        if self._native is not None and w:
            out = np.empty(cands.shape, dtype=np.float32)
            self._native.repeat(
                out,
                np.ascontiguousarray(idx, dtype=np.int64),
                np.ascontiguousarray(cands, dtype=np.int64),
                np.ascontiguousarray(powers, dtype=np.float32),
                b,
                w,
                cands.shape[1],
                self.repeat_max,
            )
            return out
        weighted = (idx[:, :, None] == cands[:, None, :]) * powers[:, :, None]
        return weighted.max(axis=1) if self.repeat_max else _window_sum(weighted)

    def _neighbour_mass(self, safe: np.ndarray, cands: np.ndarray, norm: np.ndarray) -> np.ndarray:
        """(B, C) float32: over the window's slots, in slot order, the sum of the candidate's weight in
        the slot item's neighbour row times the slot's normalised weight ``norm`` (B, W). One C call with
        the native build, the same bits (``model/neighbour_lookup.c``): a few µs where the numpy lookup
        alone takes 15 µs for one user and 1.5 ms for 128."""
        if self._native is None:
            return _window_sum(self._neighbour_weights(safe, cands) * norm[:, :, None])
        if self._native_table is None:
            self._native_table = (
                np.ascontiguousarray(self.idx.numpy(), dtype=np.int32),
                np.ascontiguousarray(self.w.numpy(), dtype=np.float32),
            )
        table, weights = self._native_table
        rows = np.ascontiguousarray(safe, dtype=np.int64)
        b, w = rows.shape
        out = np.empty(cands.shape, dtype=np.float32)
        self._native.mass(
            out,
            rows,
            np.ascontiguousarray(cands, dtype=np.int64),
            table,
            weights,
            np.ascontiguousarray(norm, dtype=np.float32),
            table.shape[1],
            b,
            w,
            cands.shape[1],
        )
        return out

    def _neighbour_weights(self, safe: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """(B, W, C) float32: the weight of each candidate in each window item's neighbour row (0 when
        it is not there). Two lookups that give the same values, chosen by the batch's size:

        * few rows (the engine's usual round of one to a few asks): one binary search per (window item,
          candidate) over the whole flattened table, a handful of numpy calls whatever the batch (the
          per-row search cost about 110 µs for one user, 53 this way), while the catalog is small
          enough to keep the flattened table (``_FLAT_LOOKUP_MAX_ENTRIES``);
        * many rows: each window item's row gathered and searched by torch, row by row in one call,
          which stays in cache where the flat search's probes into the whole table do not (64 users:
          600 µs against 960).
        """
        b, w = safe.shape
        if b * w <= _FLAT_LOOKUP_MAX_ROWS and self.idx.numel() <= _FLAT_LOOKUP_MAX_ENTRIES:
            keys, weights = self._flat_table()
            c = cands.astype(np.int64)
            query = safe[:, :, None] * (self.n_items + 1) + c[:, None, :]
            pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
            # A candidate beyond the padding index would fall in the next row's block: never found.
            found = (keys[pos] == query) & (c <= self.n_items)[:, None, :]
            return weights[pos] * found
        table, weights = self.idx.numpy(), self.w.numpy()
        rows = table[safe]  # (B, W, k), each row sorted by item index
        # A copy: torch takes only writable arrays (a broadcast view is read-only).
        query = np.broadcast_to(cands.astype(rows.dtype)[:, None, :], (b, w, cands.shape[1])).copy()
        # torch's search runs per row of a batch (numpy's is one-dimensional) in one call.
        pos = torch.searchsorted(torch.from_numpy(rows), torch.from_numpy(query)).numpy()
        pos = np.minimum(pos, rows.shape[2] - 1)
        found = np.take_along_axis(rows, pos, 2) == query
        return np.take_along_axis(weights[safe], pos, 2) * found
