"""The model's item space as neighbours: the known items closest (cosine of output embeddings) to an item.

A new item placed from its content is announced to the users of the items most like it
(``stream.content_items.arrival_pool``). :class:`ItemNeighboursMixin` gives
:class:`model.scorer.IncrementalScorer` those queries, one item at a time or many at once (a burst of
new items: one matrix product, the same lists); :func:`nearest_known` is the one ranking both use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def nearest_known(
    unit_out: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, exclude: int | None
) -> list[str]:
    """The ``k`` rows of ``unit_out`` (L2-normalised, one per known item) most cosine-similar to ``query``.

    Ties are broken by item id; ``exclude`` (the query item's own row, if known) is left out.
    """
    if k <= 0:
        return []
    norm = float(np.linalg.norm(query))
    cos = np.einsum("nd,d->n", unit_out, query / norm if norm > 0 else query).astype(np.float64)
    if exclude is not None:
        cos[exclude] = -np.inf
    k = min(k, len(cos) - (exclude is not None))
    if k <= 0:
        return []
    # Everything at least as close as the k-th best, then sorted by (-cos, id): ties broken by id.
    kth = np.partition(cos, len(cos) - k)[len(cos) - k]
    pool = np.flatnonzero(cos >= kth)
    order = np.lexsort((ids[pool], -cos[pool]))[:k]
    return [str(ids[i]) for i in pool[order]]


# How far below the k-th best a cosine from the matrix product may be and still be checked exactly (in
# nearest_known_many): the product and nearest_known's own sums of unit vectors differ by ~1e-14 at most.
_NEAR_MARGIN = 1e-9
# Floats of the matrix product of one chunk of queries (about 32 MiB).
_PRODUCT_FLOATS = 1 << 22
# Below this many rows one pass per query is faster than the product and its second look.
_PRODUCT_MIN_ROWS = 2048


def nearest_known_many(
    unit_out: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    k: int,
    excludes: Sequence[int | None] | None = None,
) -> list[list[str]]:
    """:func:`nearest_known` for each row of ``queries`` (``excludes``: each row's own, or None): the
    same lists, from one matrix product for many queries instead of one pass over ``unit_out`` each.

    The product (BLAS: rounded otherwise than :func:`nearest_known`'s sums) only narrows each query
    down to the rows within a tiny margin of its k-th best; :func:`nearest_known` then picks among those
    with its own arithmetic, each row's cosine computed as it computes it over all rows (``einsum``
    works row by row), so the result is the one it gives, ties by id included.
    """
    m = len(queries)
    excludes = [None] * m if excludes is None else list(excludes)
    n = len(unit_out)
    if k <= 0 or n == 0:
        return [[] for _ in range(m)]
    if n < _PRODUCT_MIN_ROWS:
        return [nearest_known(unit_out, ids, q, k, e) for q, e in zip(queries, excludes, strict=True)]
    out: list[list[str]] = []
    chunk = max(1, _PRODUCT_FLOATS // n)
    for start in range(0, m, chunk):
        block = np.asarray(queries[start : start + chunk], dtype=np.float64)
        norms = np.linalg.norm(block, axis=1)
        approx = (block / np.where(norms > 0, norms, 1.0)[:, None]) @ unit_out.T
        for row, query in enumerate(block):
            exclude = excludes[start + row]
            kk = min(k, n - (exclude is not None))
            if kk <= 0:
                out.append([])
                continue
            cos = approx[row]
            if exclude is not None:
                cos[exclude] = -np.inf
            kth = np.partition(cos, n - kk)[n - kk]
            near = np.flatnonzero(cos >= kth - _NEAR_MARGIN)
            if exclude is not None:
                near = near[near != exclude]
            out.append(nearest_known(unit_out[near], ids[near], query, kk, None))
    return out


class ItemNeighboursMixin:
    """Scorer mixin: the artifact items nearest to an item in the model's output space."""

    # What it uses of the scorer (model.scorer.IncrementalScorer).
    n_artifact_items: int
    _lookup: dict[str, int]
    _out: torch.Tensor
    _id_array: np.ndarray
    _unit_out: np.ndarray | None

    item_indices: Callable[[Sequence[str]], np.ndarray]

    def similar_items(self, item_id: str, k: int, among: Sequence[str] | None = None) -> list[str]:
        """The ``k`` artifact items whose output embeddings are closest (cosine) to ``item_id``'s.

        Works for artifact and added items; the item itself is left out; ties are broken by item id.
        ``among``: only these items are considered (those the model does not know, and those added from
        content, are skipped).
        Raises KeyError for an id the model does not know.
        """
        index = self._lookup.get(item_id)
        if index is None:
            raise KeyError(f"unknown item {item_id!r}")
        unit_out = self._unit_rows()
        query = self._out[index].numpy().astype(np.float64)
        if among is not None:
            rows = np.unique(self.item_indices(among))
            rows = rows[(rows >= 0) & (rows < self.n_artifact_items) & (rows != index)]
            return nearest_known(unit_out[rows], self._id_array[rows], query, k, None)
        exclude = index if index < self.n_artifact_items else None
        return nearest_known(unit_out, self._id_array, query, k, exclude)

    def similar_items_many(
        self, item_ids: Sequence[str], k: int, among: Sequence[str] | None = None
    ) -> list[list[str]]:
        """:meth:`similar_items` of each of ``item_ids``: the same lists, from one matrix product for all
        of them (:func:`nearest_known_many`): what a burst of new items costs. Raises
        KeyError for an id the model does not know."""
        indices = []
        for item_id in item_ids:
            index = self._lookup.get(item_id)
            if index is None:
                raise KeyError(f"unknown item {item_id!r}")
            indices.append(index)
        if not indices:
            return []
        unit_out = self._unit_rows()
        queries = self._out[torch.tensor(indices, dtype=torch.int64)].numpy().astype(np.float64)
        n = self.n_artifact_items
        if among is not None:
            rows = np.unique(self.item_indices(among))
            rows = rows[(rows >= 0) & (rows < n)]
            position = {int(row): i for i, row in enumerate(rows)}
            excludes = [position.get(index) for index in indices]  # an item is not its own neighbour
            return nearest_known_many(unit_out[rows], self._id_array[rows], queries, k, excludes)
        excludes = [index if index < n else None for index in indices]
        return nearest_known_many(unit_out, self._id_array, queries, k, excludes)

    def _unit_rows(self) -> np.ndarray:
        """The artifact items' output embeddings, L2-normalised (float64; built once)."""
        if self._unit_out is None:
            known = self._out[: self.n_artifact_items].numpy().astype(np.float64)
            norms = np.linalg.norm(known, axis=1, keepdims=True)
            self._unit_out = known / np.where(norms > 0, norms, 1.0)
        return self._unit_out
