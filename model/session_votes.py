"""Session votes: the training sessions most like the user's recent items vote for their items.

This is session-kNN (:class:`model.baselines.SessionKNN`) turned into a memory term of the model, so
that a shop where plain session-kNN is strong gets its strength inside the GRU's ranking instead of
losing to it. For the unique items ``P`` of the user's session window:

* the **candidate neighbours** are the ``sample`` most recent training sessions that share an item with
  ``P`` (session ids grow with time);
* a neighbour ``s`` has similarity ``|P ∩ s| / sqrt(|s| * |P|)`` (cosine of item sets), and the ``k``
  most similar are kept (ties: the more recent session);
* item ``i`` gets the **share** ``sum_s sim(s) [i in s] / sum_s sim(s)`` (in [0, 1]), and the term is
  ``weight * log(floor + share)``: like the neighbour term of :mod:`model.session_memory`, a log-linear
  blend that multiplies the GRU's probability by how strongly similar sessions contain the item, and
  shifts items no neighbour contains by the same constant (which changes no ranking).

The index keeps, for every item, only its ``sample`` most recent sessions: the ``sample`` most recent
sessions sharing any item with ``P`` are always among them, so the vote is exactly the one over the
whole training data, and the index stays bounded by ``sample`` times the catalog. It travels in the
model's state_dict as four int tensors (see :class:`SessionIndex`).

Serving cost is per scored user, not per event: a few vectorised numpy operations over at most
``sample`` sessions, then a binary search per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # building the index is training work; the scorer imports this module
    from model.data import EncodedSessions

INDEX_BUFFERS = ("votes_item_ptr", "votes_item_sessions", "votes_session_ptr", "votes_session_items")


@dataclass(frozen=True)
class SessionIndex:
    """Item -> its most recent sessions, and session -> its items (CSR arrays, int64 pointers).

    ``item_sessions[item_ptr[i]:item_ptr[i+1]]`` are the (compacted, time-ordered) ids of the sessions
    that contain item ``i``, at most ``sample`` of them; ``session_items[session_ptr[s]:session_ptr[s+1]]``
    are the unique items of session ``s``, sorted.
    """

    item_ptr: torch.Tensor
    item_sessions: torch.Tensor
    session_ptr: torch.Tensor
    session_items: torch.Tensor

    @classmethod
    def empty(cls, n_items: int) -> SessionIndex:
        """An index with no sessions: every share is 0."""
        return cls(
            torch.zeros(n_items + 1, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int32),
            torch.zeros(1, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int32),
        )

    @classmethod
    def absent(cls) -> SessionIndex:
        """Zero-length arrays: what a model without the vote term carries."""
        none = torch.zeros(0, dtype=torch.int64)
        return cls(none, none.to(torch.int32), none.clone(), none.to(torch.int32))

    def validate(self) -> None:
        """Raise ValueError unless the arrays form a consistent index (an artifact could be hand-edited)."""
        n_sessions = len(self.session_ptr) - 1
        for name, ptr, data, bound in (
            ("item", self.item_ptr, self.item_sessions, n_sessions),
            ("session", self.session_ptr, self.session_items, self.n_items),
        ):
            monotone = not bool((ptr[1:] < ptr[:-1]).any())
            if len(ptr) < 1 or int(ptr[0]) != 0 or int(ptr[-1]) != len(data) or not monotone:
                raise ValueError(f"session index: {name} pointers are not a CSR over {len(data)} entries")
            if len(data) and (int(data.min()) < 0 or int(data.max()) >= bound):
                raise ValueError(f"session index: {name} entries outside [0, {bound})")

    def tensors(self) -> dict[str, torch.Tensor]:
        """The four arrays under their buffer names (:data:`INDEX_BUFFERS`)."""
        arrays = (self.item_ptr, self.item_sessions, self.session_ptr, self.session_items)
        return dict(zip(INDEX_BUFFERS, arrays, strict=True))

    @property
    def n_items(self) -> int:
        """Catalog size the index was built for."""
        return len(self.item_ptr) - 1

    @property
    def n_sessions(self) -> int:
        """Sessions kept (those among some item's most recent ``sample``)."""
        return len(self.session_ptr) - 1


def build_session_index(sessions: EncodedSessions, n_items: int, sample: int) -> SessionIndex:
    """The index of ``sessions`` (training order = time order) keeping ``sample`` sessions per item."""
    if sample < 1:
        raise ValueError("the session sample must be >= 1")
    of = np.repeat(np.arange(len(sessions), dtype=np.int64), np.diff(sessions.offsets))
    items = np.asarray(sessions.items, dtype=np.int64)
    ok = items >= 0
    pairs = np.unique(of[ok] * n_items + items[ok])  # unique (session, item), by session then item
    s, i = pairs // n_items, pairs % n_items
    by_item = np.lexsort((s, i))
    i_sorted, s_sorted = i[by_item], s[by_item]
    ends = np.cumsum(np.bincount(i_sorted, minlength=n_items))
    keep = ends[i_sorted] - 1 - np.arange(len(i_sorted)) < sample  # the item's last `sample` sessions
    i_kept, s_kept = i_sorted[keep], s_sorted[keep]
    used = np.unique(s_kept)
    remap = np.full(len(sessions), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    item_ptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(i_kept, minlength=n_items), out=item_ptr[1:])
    member = remap[s] >= 0
    session_ptr = np.zeros(len(used) + 1, dtype=np.int64)
    np.cumsum(np.bincount(remap[s[member]], minlength=len(used)), out=session_ptr[1:])
    return SessionIndex(
        torch.from_numpy(item_ptr),
        torch.from_numpy(remap[s_kept].astype(np.int32)),
        torch.from_numpy(session_ptr),
        torch.from_numpy(i[member].astype(np.int32)),
    )


def _gather(ptr: np.ndarray, data: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concatenated CSR rows ``rows`` of (ptr, data), and each row's length."""
    starts, lengths = ptr[rows], ptr[rows + 1] - ptr[rows]
    total = int(lengths.sum())
    if not total:
        return data[:0], lengths
    begin = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return data[begin + np.arange(total)], lengths


def vote_term(shares: torch.Tensor, weight: float, floor: float) -> torch.Tensor:
    """The score term of vote shares: ``weight * log(floor + shares)``."""
    return weight * torch.log(floor + shares)


class SessionVotes:
    """Shares of items among the sessions most like a window; pure functions of the window and index."""

    def __init__(self, index: SessionIndex, k: int, sample: int, weight: float, floor: float) -> None:
        self.n_items = index.n_items
        self.k, self.sample, self.weight, self.floor = k, sample, weight, floor
        self.item_ptr = index.item_ptr.numpy()
        self.item_sessions = index.item_sessions.numpy()
        self.session_ptr = index.session_ptr.numpy()
        self.session_items = index.session_items.numpy()
        self.session_len = np.diff(self.session_ptr).astype(np.float64)

    def batch_shares(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, items, shares) voted for by the sessions most like each row of ``windows`` (B, W).

        ``windows`` holds item indices (any order; repeats, and -1 or indices outside the index for
        empty slots and added items, allowed). The result is sorted by row, then item. The whole batch
        goes through the same dozen numpy calls (no Python loop per row): a row's (row, key) pairs are
        encoded as one integer so that sorting and counting across rows stay separate.
        """
        b = len(windows)
        none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        w = np.asarray(windows, dtype=np.int64).reshape(b, -1)
        ok = (w >= 0) & (w < self.n_items)
        row_of = np.broadcast_to(np.arange(b, dtype=np.int64)[:, None], w.shape)
        pairs = np.unique(row_of[ok] * self.n_items + w[ok])  # unique (row, item)
        if not len(pairs):
            return none
        p_row, p_item = pairs // self.n_items, pairs % self.n_items
        n_window = np.bincount(p_row, minlength=b).astype(np.float64)
        sessions, lengths = _gather(self.item_ptr, self.item_sessions, p_item)
        if not len(sessions):
            return none
        n_sessions = max(len(self.session_len), 1)
        keys, overlap = np.unique(np.repeat(p_row, lengths) * n_sessions + sessions, return_counts=True)
        row, neigh = keys // n_sessions, keys % n_sessions  # by row, then oldest session first
        from_end = np.cumsum(np.bincount(row, minlength=b))[row] - 1 - np.arange(len(row))
        recent = from_end < self.sample  # each row's `sample` most recent candidate sessions
        row, neigh, overlap = row[recent], neigh[recent], overlap[recent]
        sim = overlap / np.sqrt(self.session_len[neigh] * n_window[row])
        order = np.lexsort((-neigh, -sim, row))  # per row: most similar, then most recent
        row, neigh, sim = row[order], neigh[order], sim[order]
        rank = np.arange(len(row)) - np.searchsorted(row, row)
        top = rank < self.k
        row, neigh, sim = row[top], neigh[top], sim[top]
        total = np.bincount(row, weights=sim, minlength=b)
        members, sizes = _gather(self.session_ptr, self.session_items, neigh)
        member_row = np.repeat(row, sizes)
        keys, inverse = np.unique(member_row * self.n_items + members, return_inverse=True)
        votes = np.bincount(inverse, weights=np.repeat(sim, sizes), minlength=len(keys))
        out_row = keys // self.n_items
        return out_row, keys % self.n_items, votes / total[out_row]

    def shares(self, window_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items sorted, share of each) voted for by the sessions most like ``window_items`` (one row)."""
        _, items, share = self.batch_shares(np.asarray(window_items, dtype=np.int64)[None, :])
        return items, share

    def dense_shares(self, items: np.ndarray) -> torch.Tensor:
        """Shares of every item for each row of window item indices ``items`` (B, W), as (B, n_items)."""
        out = np.zeros((len(items), self.n_items), dtype=np.float32)
        rows, voted, share = self.batch_shares(items)
        out[rows, voted] = share
        return torch.from_numpy(out)

    def term(self, shares: torch.Tensor) -> torch.Tensor:
        """:func:`vote_term` of shares from :meth:`dense_shares` with this term's weight and floor."""
        return vote_term(shares, self.weight, self.floor)

    def dense(self, items: np.ndarray) -> torch.Tensor:
        """The term for every item (B, n_items), for window item indices ``items`` (B, W)."""
        return self.term(self.dense_shares(items))

    def candidates(self, items: np.ndarray, cands: torch.Tensor) -> torch.Tensor:
        """The term of candidate items (B, C) for window item indices ``items`` (B, W); candidates
        outside the index (added items) share 0."""
        c = cands.numpy().astype(np.int64)
        rows, voted, share = self.batch_shares(items)
        out = np.zeros(c.shape, dtype=np.float64)
        if len(rows):
            keys = rows * self.n_items + voted  # sorted, as batch_shares returns them
            query = np.arange(len(c), dtype=np.int64)[:, None] * self.n_items + c
            pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
            valid = (c >= 0) & (c < self.n_items)
            out = np.where(valid & (keys[pos] == query), share[pos], 0.0)
        return self.term(torch.from_numpy(out.astype(np.float32)))
