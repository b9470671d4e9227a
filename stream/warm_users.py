"""Warm users: the decoded records of a partition's recently written users, kept between batches.

A batch decodes each user it touches from the store and encodes them back at its end
(``stream.engine.users``). A shopper's events come seconds to minutes apart, so in a live stream nearly
every event starts a new batch for its user: each paid a store read and a full decode
(``UserState.from_bytes``, ``Engagement.from_record``) for a record the worker itself wrote moments
before. This keeps the objects that were just encoded, so the next batch takes them instead.

Why it is exact:

* An entry is put only right after its record was staged (``UserRecords.save``), as the objects that
  were encoded: what the store will hold once the batch commits, decoded (less the encoding's copies
  of the engagement and the timers, which no batch reads). The encoding keeps every value to the bit
  (``tests/stream/test_real_model_replay.py`` compares each entry with a fresh decode of the store,
  value and type, after every batch of a replay).
* Taking an entry removes it: a batch that changes the user puts it back when it stages the record;
  one that does not (a timer that decided nothing) leaves the next batch to decode the store.
* The cache lives on the :class:`~stream.partition_state.PartitionState`, so whatever replaces a
  partition's state (a re-read after a failed batch, a rebalance, a restart) starts it empty; an
  erasure and the expiry sweep drop their users.

A batch that fails after staging some users is never committed, and the worker then re-reads the
partitions it touched (``stream.worker_input``), which drops their cache with their state.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from stream.engagement import Engagement
from stream.record_rows import EngagementRecord
from stream.state import UserState


class WarmUsers:
    """A bounded map user id -> (decoded record, engagement), least recently put evicted first."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[UserState, Engagement]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._entries

    def take(self, user_id: str) -> tuple[UserState, Engagement] | None:
        """The user's decoded record, removed from the cache; None when it is not warm."""
        return self._entries.pop(user_id, None)

    def put(self, user_id: str, state: UserState, engagement: Engagement, capacity: int) -> None:
        """Keep a record just staged (``state`` as encoded, ``engagement`` as its ``state.engagement``),
        evicting the least recently put beyond ``capacity`` (0 keeps nothing)."""
        entries = self._entries
        if capacity <= 0:
            return
        hidden = state.hidden
        if hidden is not None and isinstance(hidden.base, np.ndarray):
            # A row of the round's output array: keeping the view would keep the whole array. (A
            # decoded state views its record's bytes, not much larger than itself.)
            state.hidden = hidden.copy()
        # The encoding's copies of the live engagement and of the partition's timers: rebuilt by every
        # save, never read from a loaded record, and garbage the collector would otherwise keep scanning.
        state.engagement = EngagementRecord()
        state.timers = []
        entries[user_id] = (state, engagement)
        entries.move_to_end(user_id)
        while len(entries) > capacity:
            entries.popitem(last=False)

    def drop(self, user_id: str) -> None:
        """Forget a user (an erasure, an expired record swept)."""
        self._entries.pop(user_id, None)

    def items(self) -> list[tuple[str, UserState, Engagement]]:
        """Every entry (user id, record, engagement), least recently put first: for checks and tests."""
        return [(user_id, state, engagement) for user_id, (state, engagement) in self._entries.items()]
