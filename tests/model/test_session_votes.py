"""Session-kNN votes: the index, the vote against the session-kNN baseline, serving and the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import load_artifact
from model.baselines import SessionKNN
from model.data import Cases, EncodedSessions
from model.scorer import IncrementalScorer
from model.session_votes import SessionIndex, SessionVotes, build_session_index
from tests.model.conftest import MEMORY, _trained, markov_sessions


def _sessions(seqs: list[list[int]]) -> EncodedSessions:
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    return EncodedSessions(offsets=offsets, items=items, types=np.zeros_like(items))


def _window(items: list[int], width: int = 10) -> torch.Tensor:
    """A state window (index + 1, newest first, 0 = empty) holding ``items`` (oldest first)."""
    slots = [i + 1 for i in reversed(items)][:width]
    return torch.tensor([slots + [0] * (width - len(slots))], dtype=torch.float32)


def test_the_index_keeps_each_items_most_recent_sessions_and_whole_item_sets() -> None:
    # Item 0 is in sessions 0, 1, 3; with sample 2 it keeps 1 and 3. Session 2 (items 2, 3) is kept
    # through item 2 and 3; every kept session keeps all its (unique) items.
    index = build_session_index(_sessions([[0, 1], [1, 0, 0], [2, 3], [0, 4]]), 5, sample=2)
    index.validate()
    sessions_of = {
        i: index.item_sessions[index.item_ptr[i] : index.item_ptr[i + 1]].tolist() for i in range(5)
    }
    items_of = [
        index.session_items[index.session_ptr[s] : index.session_ptr[s + 1]].tolist()
        for s in range(index.n_sessions)
    ]
    assert [items_of[s] for s in sessions_of[0]] == [[0, 1], [0, 4]]  # the two latest, oldest first
    assert [items_of[s] for s in sessions_of[1]] == [[0, 1], [0, 1]]
    assert [items_of[s] for s in sessions_of[2]] == [[2, 3]]
    assert index.n_sessions == 4  # session 0 still holds item 1's older vote


def test_votes_equal_the_session_knn_baseline_on_the_whole_prefix() -> None:
    rng = np.random.default_rng(4)
    n = 25
    seqs = [list(rng.integers(0, n, size=int(rng.integers(2, 7)))) for _ in range(300)]
    sessions = _sessions(seqs)
    # k and the sample above the number of sessions: no cut, so no tie inside one decides anything.
    knn = SessionKNN(k=1000, sample_size=1000).fit(sessions, n)
    votes = SessionVotes(build_session_index(sessions, n, 1000), k=1000, sample=1000, weight=1.0, floor=0.01)
    for prefix in ([3], [3, 7, 3], [1, 2, 4, 8, 16], [24, 0]):
        cases = Cases(
            offsets=np.array([0, len(prefix)]),
            items=np.array(prefix),
            types=np.zeros(len(prefix), dtype=np.int64),
            targets=np.array([0]),
            n_dropped=0,
        )
        expected = knn.scores(cases, 0, 1)[0] - knn.prior * 1e-6
        items, share = votes.shares(np.array(prefix))
        got = np.zeros(n)
        got[items] = share
        # The baseline's raw vote sums divided by the neighbours' total similarity are the shares.
        assert got.max() <= 1.0 + 1e-9
        np.testing.assert_allclose(got / got.max(), expected / expected.max(), rtol=1e-5, atol=1e-6)


def test_a_per_item_sample_gives_the_same_votes_as_the_whole_history() -> None:
    rng = np.random.default_rng(5)
    n = 15
    sessions = _sessions([list(rng.integers(0, n, size=int(rng.integers(2, 6)))) for _ in range(400)])
    bounded = SessionVotes(build_session_index(sessions, n, 30), k=10, sample=30, weight=1.0, floor=0.01)
    whole = SessionVotes(build_session_index(sessions, n, 10_000), k=10, sample=30, weight=1.0, floor=0.01)
    assert bounded.session_len.size < whole.session_len.size
    for prefix in ([0], [1, 2], [3, 4, 5, 6], [14, 13, 14]):
        a, b = bounded.shares(np.array(prefix)), whole.shares(np.array(prefix))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])


def test_the_top_k_keeps_the_most_similar_then_the_most_recent() -> None:
    # Sessions 0 and 1 are equally similar to [0]; with k = 1 the later one (session 1) votes alone.
    votes = SessionVotes(build_session_index(_sessions([[0, 1], [0, 2]]), 3, 10), 1, 10, 1.0, 0.01)
    items, share = votes.shares(np.array([0]))
    assert items.tolist() == [0, 2] and share.tolist() == [1.0, 1.0]
    assert votes.shares(np.array([-1, 7]))[0].size == 0  # empty slots and unknown indices: no vote


def test_dense_and_candidate_terms_agree_and_added_items_get_the_floor() -> None:
    n = 40
    sessions = _sessions([list(s) for s in markov_sessions(200, n_items=n, seed=2)])
    votes = SessionVotes(build_session_index(sessions, n, 50), k=20, sample=50, weight=0.7, floor=0.05)
    windows = torch.cat([_window([3, 5, 3]), _window([]), _window([39, 1, 2])])
    window = windows.round().to(torch.int64).numpy() - 1  # the item indices SessionMemory passes
    dense = votes.dense(window)
    cands = torch.arange(n + 2).repeat(3, 1)  # n and n + 1: items added after training
    by_candidate = votes.candidates(window, cands).numpy()
    np.testing.assert_allclose(by_candidate[:, :n], dense.numpy(), rtol=1e-6)
    assert by_candidate[:, n:] == pytest.approx(0.7 * np.log(0.05))
    assert (dense[1] == dense[1, 0]).all()  # an empty window: the same constant for every item


@pytest.mark.parametrize(
    "broken",
    [
        lambda ix: SessionIndex(ix.item_ptr, ix.item_sessions + 100, ix.session_ptr, ix.session_items),
        lambda ix: SessionIndex(ix.item_ptr.flip(0), ix.item_sessions, ix.session_ptr, ix.session_items),
        lambda ix: SessionIndex(ix.item_ptr, ix.item_sessions, ix.session_ptr, ix.session_items[:-1]),
    ],
)
def test_an_inconsistent_index_is_refused(broken: object) -> None:
    index = build_session_index(_sessions([[0, 1], [1, 2]]), 3, 10)
    with pytest.raises(ValueError, match="session index"):
        broken(index).validate()  # type: ignore[operator]


KNN = MEMORY.model_copy(update={"knn_weight": 0.5, "knn_floor": 0.01, "knn_k": 20, "knn_sample": 30})


@pytest.fixture(scope="module")
def knn_artifact(tiny_data: dict[str, Path]) -> Path:
    """A tiny artifact whose memory includes the session-kNN votes (trained by ``kairos train``'s path)."""
    return _trained(tiny_data, "knn-artifact", KNN)


def test_the_index_travels_in_the_artifact_and_serving_scores_like_the_model(knn_artifact: Path) -> None:
    art = load_artifact(knn_artifact)
    assert art.model.uses_votes and art.model.session_index().n_sessions > 0
    scorer = IncrementalScorer(knn_artifact)
    n = scorer.n_items
    states = np.zeros((2, scorer.hidden_size), dtype=np.float32)
    for item in (3, 4, 3, 9):
        states[:1] = scorer.step(states[:1], np.array([item]), np.array([0]))
    states[1:] = scorer.step(states[1:], np.array([17]), np.array([0]))
    cands = np.tile(np.arange(n), (2, 1))
    with torch.no_grad():
        full = art.model.full_scores(torch.from_numpy(states)).numpy()
    np.testing.assert_allclose(scorer.score(states, cands), full, rtol=1e-4, atol=1e-4)
    # The vote term is really there: switching it off changes the scores.
    art.model.memory_cfg = art.model.memory_cfg.model_copy(update={"knn_weight": 0.0})
    with torch.no_grad():
        without = art.model.full_scores(torch.from_numpy(states)).numpy()
    assert not np.allclose(without, full, atol=1e-3)


def test_a_session_index_for_another_catalog_is_refused(knn_artifact: Path) -> None:
    model = load_artifact(knn_artifact).model
    with pytest.raises(ValueError, match="items"):
        model.set_session_index(build_session_index(_sessions([[0, 1]]), model.n_items + 1, 10))


def test_case_shares_past_their_memory_cap_are_voted_again_alike() -> None:
    from model.evaluate import CaseShares

    n = 40
    sessions = _sessions([list(s) for s in markov_sessions(200, n_items=n, seed=6)])
    votes = SessionVotes(build_session_index(sessions, n, 50), k=20, sample=50, weight=1.0, floor=0.01)
    prefixes = [list(s)[:4] for s in markov_sessions(30, n_items=n, seed=7)]
    offsets = np.zeros(len(prefixes) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in prefixes], out=offsets[1:])
    items = np.concatenate([np.asarray(p, dtype=np.int64) for p in prefixes])
    cases = Cases(offsets, items, np.zeros_like(items), np.zeros(len(prefixes), np.int64), 0)
    rows = np.arange(len(prefixes))
    kept = CaseShares(votes, cases, width=10)
    capped = CaseShares(votes, cases, width=10, max_entries=50)
    assert len(capped.parts) < len(kept.parts) == len(prefixes)
    np.testing.assert_allclose(capped.dense(rows).numpy(), kept.dense(rows).numpy(), rtol=1e-6)


def test_a_batch_votes_each_row_as_it_would_alone() -> None:
    n = 40
    sessions = _sessions([list(s) for s in markov_sessions(300, n_items=n, seed=8)])
    votes = SessionVotes(build_session_index(sessions, n, 20), k=7, sample=20, weight=1.0, floor=0.01)
    windows = np.array([[3, 5, 3, -1], [-1, -1, -1, -1], [39, 1, 2, 0], [41, 7, -1, -1], [5, 3, 5, 3]])
    rows, items, share = votes.batch_shares(windows)
    assert (np.diff(rows * n + items) > 0).all()  # sorted by row, then item, no repeats
    for r, window in enumerate(windows):
        alone_items, alone_share = votes.shares(window)
        np.testing.assert_array_equal(items[rows == r], alone_items)
        np.testing.assert_allclose(share[rows == r], alone_share, rtol=1e-12)
    assert not (rows == 1).any()  # an empty window: no votes
    np.testing.assert_allclose(share[rows == 0], share[rows == 4], rtol=1e-12)  # same item set


def test_serving_scores_with_votes_do_not_depend_on_the_other_rows_of_the_call(knn_artifact: Path) -> None:
    """The engine scores a round's asks in one call of any size: the vote term, like the rest of the
    serving path, must give a row the same bits alone or in a block (``model.scorer``)."""
    scorer = IncrementalScorer(knn_artifact)
    rng = np.random.default_rng(8)
    n = 24
    states = scorer.initial_state(n)
    for _ in range(5):
        states = scorer.step(states, rng.integers(0, scorer.n_items, n), np.zeros(n, dtype=np.int64))
    cands = rng.integers(-1, scorer.n_items, (n, 7))
    raw, prob = scorer.score_and_interest(states, cands)
    for i in range(n):
        one_raw, one_prob = scorer.score_and_interest(states[i : i + 1], cands[i : i + 1])
        assert np.array_equal(one_raw[0], raw[i]) and np.array_equal(one_prob[0], prob[i]), i
