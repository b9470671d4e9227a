"""Baselines scored on the same evaluation path as the GRU: popularity, transitions, item-kNN, session-kNN.

Each baseline is fitted on encoded training sessions and returns (B, n_items) scores for a batch of
test prefixes, so :func:`model.evaluate.evaluate_scores` ranks them exactly like the model.
"""

from __future__ import annotations

import numpy as np

from model.data import Cases, EncodedSessions


def _csr_pairs(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count (row, col) pairs into a CSR structure: indptr, indices, counts."""
    key = rows * n_cols + cols
    uniq, counts = np.unique(key, return_counts=True)
    r, c = uniq // n_cols, uniq % n_cols
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    np.cumsum(indptr, out=indptr)
    return indptr, c.astype(np.int64), counts.astype(np.float64)


def _session_of_events(sessions: EncodedSessions) -> np.ndarray:
    return np.repeat(np.arange(len(sessions)), sessions.lengths())


def _popularity_prior(sessions: EncodedSessions, n_items: int) -> np.ndarray:
    counts = np.bincount(sessions.items, minlength=n_items).astype(np.float64)
    return counts / (counts.max() + 1.0)  # < 1: only breaks ties between equal main scores


class Baseline:
    """Interface: ``fit`` on training sessions, ``scores`` for cases ``[start, stop)``."""

    name = "baseline"

    def fit(self, sessions: EncodedSessions, n_items: int) -> Baseline:  # pragma: no cover - interface
        raise NotImplementedError

    def scores(self, cases: Cases, start: int, stop: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class Popularity(Baseline):
    """Rank items by how often they were clicked in training."""

    name = "popularity"

    def fit(self, sessions: EncodedSessions, n_items: int) -> Popularity:
        """Count clicks per item."""
        self.pop = np.bincount(sessions.items, minlength=n_items).astype(np.float32)
        return self

    def scores(self, cases: Cases, start: int, stop: int) -> np.ndarray:
        """The same popularity row for every case."""
        return np.broadcast_to(self.pop, (stop - start, len(self.pop))).copy()


class Transitions(Baseline):
    """Next-item counts from the last item of the prefix, popularity as the tie-break / back-off."""

    name = "transitions"

    def fit(self, sessions: EncodedSessions, n_items: int) -> Transitions:
        """Count item -> next item transitions within sessions."""
        self.n_items = n_items
        sess = _session_of_events(sessions)
        same = sess[:-1] == sess[1:]
        src, dst = sessions.items[:-1][same], sessions.items[1:][same]
        self.indptr, self.indices, self.counts = _csr_pairs(src, dst, n_items, n_items)
        self.prior = _popularity_prior(sessions, n_items)
        return self

    def scores(self, cases: Cases, start: int, stop: int) -> np.ndarray:
        """Transition counts plus a popularity prior below 1."""
        last = cases.last_items()[start:stop]
        out = np.tile(self.prior.astype(np.float32), (stop - start, 1))
        for row, item in enumerate(last.tolist()):
            if item >= 0:
                a, b = self.indptr[item], self.indptr[item + 1]
                out[row, self.indices[a:b]] += self.counts[a:b]
        return out


class ItemKNN(Baseline):
    """Item-based CF: cosine similarity of session co-occurrence between the last item and each item."""

    name = "item_knn"

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha  # asymmetric cosine exponent; 0.5 = plain cosine

    def fit(self, sessions: EncodedSessions, n_items: int) -> ItemKNN:
        """Build the session x item incidence lists."""
        self.n_items = n_items
        sess = _session_of_events(sessions)
        self.s_ptr, self.s_items, _ = _csr_pairs(sess, sessions.items, len(sessions), n_items)
        self.i_ptr, self.i_sess, _ = _csr_pairs(sessions.items, sess, n_items, len(sessions))
        self.support = np.diff(self.i_ptr).astype(np.float64)
        self.prior = _popularity_prior(sessions, n_items)
        self._cache: dict[int, np.ndarray] = {}
        return self

    def _row(self, item: int) -> np.ndarray:
        cached = self._cache.get(item)
        if cached is not None:
            return cached
        sess = self.i_sess[self.i_ptr[item] : self.i_ptr[item + 1]]
        co = np.zeros(self.n_items, dtype=np.float64)
        if len(sess):
            members = np.concatenate([self.s_items[self.s_ptr[s] : self.s_ptr[s + 1]] for s in sess])
            np.add.at(co, members, 1.0)
        co[item] = 0.0
        denom = (self.support[item] ** self.alpha) * np.power(np.maximum(self.support, 1.0), 1.0 - self.alpha)
        row = (co / np.maximum(denom, 1e-12)).astype(np.float32)
        if len(self._cache) < 50_000:
            self._cache[item] = row
        return row

    def scores(self, cases: Cases, start: int, stop: int) -> np.ndarray:
        """Similarity to the last item, popularity prior (scaled tiny) to break ties."""
        last = cases.last_items()[start:stop]
        out = np.tile((self.prior * 1e-6).astype(np.float32), (stop - start, 1))
        for row, item in enumerate(last.tolist()):
            if item >= 0:
                out[row] += self._row(item)
        return out


class SessionKNN(Baseline):
    """Session-based CF: the k most similar recent training sessions vote for their items.

    Candidate neighbours are the ``sample_size`` most recent training sessions sharing an item with the
    prefix; similarity is cosine between item sets; an item scores the sum of its neighbours' similarity.
    """

    name = "session_knn"

    def __init__(self, k: int = 100, sample_size: int = 500) -> None:
        self.k = k
        self.sample_size = sample_size

    def fit(self, sessions: EncodedSessions, n_items: int) -> SessionKNN:
        """Build incidence lists; later sessions (higher ids) count as more recent."""
        self.n_items = n_items
        sess = _session_of_events(sessions)
        self.s_ptr, self.s_items, _ = _csr_pairs(sess, sessions.items, len(sessions), n_items)
        self.i_ptr, self.i_sess, _ = _csr_pairs(sessions.items, sess, n_items, len(sessions))
        self.s_len = np.diff(self.s_ptr).astype(np.float64)
        self.prior = _popularity_prior(sessions, n_items)
        return self

    def scores(self, cases: Cases, start: int, stop: int) -> np.ndarray:
        """Neighbour votes plus a tiny popularity prior."""
        out = np.tile((self.prior * 1e-6).astype(np.float32), (stop - start, 1))
        for row, c in enumerate(range(start, stop)):
            prefix = cases.items[cases.offsets[c] : cases.offsets[c + 1]]
            prefix = np.unique(prefix[prefix >= 0])
            if not len(prefix):
                continue
            cand = np.concatenate([self.i_sess[self.i_ptr[i] : self.i_ptr[i + 1]] for i in prefix])
            neigh, overlap = np.unique(cand, return_counts=True)
            if not len(neigh):  # the prefix's items are indexed but occur in no training session
                continue
            if len(neigh) > self.sample_size:
                recent = np.argsort(neigh)[-self.sample_size :]  # ids grow with time
                neigh, overlap = neigh[recent], overlap[recent]
            sim = overlap / np.sqrt(self.s_len[neigh] * len(prefix))
            if len(neigh) > self.k:
                top = np.argpartition(-sim, self.k)[: self.k]
                neigh, sim = neigh[top], sim[top]
            members = np.concatenate([self.s_items[self.s_ptr[s] : self.s_ptr[s + 1]] for s in neigh])
            weights = np.repeat(sim, self.s_len[neigh].astype(np.int64))
            np.add.at(out[row], members, weights.astype(np.float32))
        return out


def all_baselines() -> list[Baseline]:
    """Fresh instances of every baseline, in report order."""
    return [Popularity(), Transitions(), ItemKNN(), SessionKNN()]
