"""The warm-user cache on its own (``stream.warm_users``); against the store, in a replay:
``tests/stream/test_real_model_replay.py``."""

from __future__ import annotations

import numpy as np

from stream.engagement import Engagement
from stream.record_rows import EngagedItem, EngagementRecord
from stream.state import UserState
from stream.warm_users import WarmUsers


def record(n: int) -> tuple[UserState, Engagement]:
    state = UserState(n_events=n)
    return state, Engagement()


def test_take_removes_the_entry() -> None:
    warm = WarmUsers()
    state, engagement = record(1)
    warm.put("u1", state, engagement, capacity=4)
    assert "u1" in warm
    assert warm.take("u1") == (state, engagement)
    assert warm.take("u1") is None
    assert len(warm) == 0


def test_the_least_recently_put_goes_first() -> None:
    warm = WarmUsers()
    for n in range(3):
        warm.put(f"u{n}", *record(n), capacity=3)
    warm.put("u0", *record(10), capacity=3)  # put again: the most recent now
    warm.put("u3", *record(3), capacity=3)
    assert [user for user, _, _ in warm.items()] == ["u2", "u0", "u3"]
    assert warm.take("u0") is not None and warm.take("u1") is None


def test_capacity_zero_keeps_nothing_and_drop_forgets() -> None:
    warm = WarmUsers()
    warm.put("u1", *record(1), capacity=0)
    assert len(warm) == 0
    warm.put("u1", *record(1), capacity=2)
    warm.drop("u1")
    warm.drop("u2")  # not there: nothing happens
    assert len(warm) == 0


def test_the_encodings_copies_are_not_kept() -> None:
    """``engagement`` and ``timers`` of a record are what the save encoded from the live engagement and
    the partition's timer queue: the warm entry drops them (the next save writes them again)."""
    state, engagement = record(1)
    state.engagement = EngagementRecord(1.0, {"i1": EngagedItem(1, 0, False, False, 1.0)})
    state.timers = [[2.0, "u1", "session_end", "", "e1", 1.0]]
    warm = WarmUsers()
    warm.put("u1", state, engagement, capacity=2)
    kept = warm.take("u1")
    assert kept is not None and kept[0].engagement == EngagementRecord() and kept[0].timers == []
    assert kept[1] is engagement


def test_a_hidden_state_viewing_a_larger_array_is_copied() -> None:
    rounds = np.arange(12, dtype=np.float32).reshape(3, 4)  # a round's output: one row per user
    state, engagement = record(1)
    state.hidden = rounds[1]
    warm = WarmUsers()
    warm.put("u1", state, engagement, capacity=2)
    kept = warm.take("u1")
    assert kept is not None
    hidden = kept[0].hidden
    assert hidden is not None and hidden.base is None
    assert hidden.dtype == np.float32 and hidden.tobytes() == rounds[1].tobytes()
    own = np.zeros(4, dtype=np.float32)
    state.hidden = own
    warm.put("u1", state, engagement, capacity=2)
    assert state.hidden is own  # an array of its own is kept as it is
