"""User records through the batch's state transaction: load, save, re-derive after a model swap,
expire after inactivity and erase.

A record is decoded once per batch (the batch's user cache) and written back once, with the
partitions' changed shared rows (indexes, clock, input offsets) in the same transaction, so the
store and the changelog never hold a user without the offsets that produced it. A record written is
kept decoded for the next batch that touches the user (``stream.warm_users``), which then reads
neither the store nor the bytes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from stream.asks import BatchUser
from stream.contract import EVENT_TYPES
from stream.engagement import Engagement
from stream.engine.ports import Scorer, StateAccess
from stream.partition_state import UNREADABLE, PartitionState
from stream.policy_state import unmet
from stream.settings import Settings
from stream.state import UserState

log = logging.getLogger(__name__)

# An expired user's record is reclaimed up to this long after its expiry: expiry itself is decided when
# the record is read (``UserRecords.expired``), so this changes nothing a user sees, and each scan
# of a partition's users (~20 ms per 250,000) runs at most once a minute instead of at every tick.
SWEEP_SLACK_SECONDS = 60.0

TYPE_INDEX = {t: i for i, t in enumerate(EVENT_TYPES)}

# One GRU step for a batch of states (``stream.scoring.AskScorer.step``: fixed-size chunks).
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def readable_record(raw: bytes, partition: int, user_id: str) -> tuple[UserState, bool]:
    """(the user's stored record, True) or, when it does not decode (a damaged disk or changelog), (a
    record that pushes nothing until the shopper consents again, False).

    Starting over keeps the partition served: a record that raised on every read failed every batch,
    timer and catalog change that touched the user, and with them the partition's other events.
    Starting over *opted out* keeps consent safe: the damaged record may have held an opt-out, which
    must never be forgotten, so only a new opt-in makes this shopper reachable again.
    """
    try:
        return UserState.from_bytes(raw), True
    except UNREADABLE as exc:
        log.warning(
            "partition %d: the record of user %r does not decode (%s): started over, opted out",
            partition,
            user_id[:80],
            exc,
        )
        state = UserState()
        state.policy.opted_in = False
        return state, False


def forgotten(state: UserState, now: float) -> UserState:
    """What is kept of an expired user at ``now``: an opt-out, never forgotten (an opt-in may be:
    forgetting it can only mean fewer pushes, and keeping every consent would make the state grow
    forever); and what :func:`unmet_only` keeps."""
    kept = unmet_only(state, now)
    if state.policy.opted_in is False:
        kept.policy.opted_in = False
        kept.policy.consent_ts = state.policy.consent_ts
    return kept


def unmet_only(state: UserState, now: float) -> UserState:
    """A record with only the user's pushes read back at recovery and not yet met again by their
    decisions at ``now`` (``stream.policy_state.unmet``): expired or erased, the user keeps them, as
    the redelivered input that expires or erases them comes before those decisions, which then find
    them (forgotten, such a push went out twice: crash fuzz, seeds 29 and 805)."""
    kept = UserState()
    kept.policy.pushes = [r for r in state.policy.pushes if unmet(r, now)]
    return kept


class UserRecords:
    """Reads and writes the users of a batch; expiry and erasure.

    ``part`` gives a partition's shared state, ``parts`` every partition the engine holds, ``scorer``
    the model served now and ``step`` its chunked GRU step: the engine owns all four.
    """

    def __init__(
        self,
        settings: Settings,
        part: Callable[[int], PartitionState],
        parts: Callable[[], Mapping[int, PartitionState]],
        scorer: Callable[[], Scorer],
        step: StepFn,
    ) -> None:
        self.settings = settings
        self.cfg = settings.policy
        self._part = part
        self._parts = parts
        self._scorer = scorer
        self._step = step
        # Records loaded since drain_loads: kept warm, and read from the store (for the metrics).
        self.loaded_warm = 0
        self.loaded_read = 0

    def load(self, txn: StateAccess, partition: int, user_id: str, cache: dict[str, BatchUser]) -> BatchUser:
        """The user's record, decoded once per batch (``cache``), in step with the served model."""
        user = cache.get(user_id)
        if user is None:
            warm = self._part(partition).warm_users.take(user_id)
            if warm is not None:  # written by an earlier batch of this worker (stream.warm_users)
                user = BatchUser(user_id, partition, warm[0], warm[1])
                self.loaded_warm += 1
            else:
                user = self._read(txn, partition, user_id)
                self.loaded_read += 1
            self.sync_model(user)
            cache[user_id] = user
        return user

    def _read(self, txn: StateAccess, partition: int, user_id: str) -> BatchUser:
        """The user's record read from the store and decoded (a new record when there is none)."""
        raw = txn.get(partition, user_id.encode("utf-8"))
        state, readable = (UserState(), True) if raw is None else readable_record(raw, partition, user_id)
        engagement = Engagement.from_record(
            state.engagement, self.cfg.engagement_max_items, self.cfg.engagement_max_purchases
        )
        user = BatchUser(user_id, partition, state, engagement)
        user.dirty = not readable  # the damaged bytes are replaced at the batch's end
        return user

    def drain_loads(self) -> tuple[int, int]:
        """(records loaded warm, records read from the store) since the last call."""
        loads = (self.loaded_warm, self.loaded_read)
        self.loaded_warm = self.loaded_read = 0
        return loads

    def save(self, txn: StateAccess, users: Iterable[BatchUser]) -> None:
        """Stage the changed users and every partition's changed shared rows in ``txn``; keep the
        records staged warm for the next batch (``stream.warm_users``)."""
        warm = self.settings.worker.warm_users_per_partition
        version = self.settings.worker.user_record_version
        for user in users:
            if user.dirty:
                part = self._part(user.partition)
                user.state.engagement = user.engagement.to_record()
                user.state.timers = [t.to_list() for t in part.timers.timers_for(user.user_id)]
                txn.put(user.partition, user.user_id.encode("utf-8"), user.state.to_bytes(version))
                part.warm_users.put(user.user_id, user.state, user.engagement, warm)
                clock = user.state.expiry_clock()
                if clock is not None:
                    part.see(user.user_id, clock)
                else:  # kept for good now (an opt-out): as a restart, which rebuilds it from records
                    part.last_seen.pop(user.user_id, None)
                user.dirty = False
        for partition in sorted(self._parts()):
            self.stage_rows(txn, partition)

    def stage_rows(self, txn: StateAccess, partition: int) -> None:
        """Stage a partition's changed shared rows (indexes, clock, offsets) in the transaction."""
        for key, value in self._part(partition).drain().items():
            txn.put(partition, key, value)

    def sync_model(self, user: BatchUser) -> None:
        """Re-derive a state made by another model version from the session's recent items.

        Runs at most ``worker.recent_items`` steps once per user after a model swap; the normal
        path never re-runs history.
        """
        state = user.state
        scorer = self._scorer()
        if state.hidden is None or state.model_version == scorer.version:
            return
        hidden = scorer.initial_state(1)
        session = [r for r in state.recent if r.session_id == state.session_id]
        if session:
            items = scorer.item_indices([r.item_id for r in session])
            types = np.array([TYPE_INDEX[r.type] for r in session], dtype=np.int64)
            for i in range(len(session)):
                hidden = self._step(hidden, items[i : i + 1], types[i : i + 1])
        state.hidden = hidden[0]
        state.model_version = scorer.version

    # -- expiry and erasure -----------------------------------------------------------------------

    def expired(self, state: UserState, now: float) -> bool:
        """A user inactive for longer than ``worker.user_ttl_seconds`` is treated as gone: ``now`` (the
        partition's clock) is that far past the record's expiry clock (its last event, or a
        consent-only opt-in's time; an opt-out is kept: ``UserState.expiry_clock``).

        The sweep's rule, at the partition's clock, not at a late event's own time: else whether the
        sweep had run (tick timing) decided whether a late event found its user's record."""
        clock = state.expiry_clock()
        return clock is not None and now - clock > self.settings.worker.user_ttl_seconds

    def expire_if_inactive(self, user: BatchUser, now: float) -> None:
        """Start over a user who comes back after the TTL (the same as if the sweep had removed them)."""
        if self.expired(user.state, now):
            self._part(user.partition).timers.cancel_user(user.user_id)
            user.state = forgotten(user.state, now)
            user.engagement = Engagement(self.cfg.engagement_max_items, self.cfg.engagement_max_purchases)
            user.dirty = True

    def erase(
        self, txn: StateAccess, partition: int, user_id: str, user: BatchUser | None, now: float
    ) -> None:
        """Erase a user: state (RocksDB and a changelog tombstone), timers, index entries, the hour's count
        of new items asked about, held pushes (in the record) and pushes waiting for the throttle's budget.

        ``user``: the batch's copy of the record, if it has one (else the stored one is read). Pushes
        read back at recovery and not yet met again by their decisions at ``now`` are kept
        (:func:`unmet_only`), in a record of their own: the decisions come after the erasure.
        """
        part = self._part(partition)
        key = user_id.encode("utf-8")
        if user is not None:
            state: UserState | None = user.state
        else:
            raw = txn.get(partition, key)
            state = None if raw is None else readable_record(raw, partition, user_id)[0]
        kept = None if state is None else unmet_only(state, now)
        part.timers.cancel_user(user_id)
        part.throttle.drop_user(user_id)
        part.interest.purge_users({user_id})
        part.forget_arrivals(user_id)
        part.last_seen.pop(user_id, None)
        part.warm_users.drop(user_id)
        # The batch's closing save stages the rows.
        version = self.settings.worker.user_record_version
        txn.put(partition, key, kept.to_bytes(version) if kept is not None and kept.policy.pushes else None)

    def sweep(
        self, txn: StateAccess, partitions: Iterable[int], now: Callable[[int], float], limit: int
    ) -> int:
        """Remove users inactive for longer than the TTL and the slack from ``partitions``; returns how
        many.

        The slack applies to the users removed, not only to whether a partition is scanned: its bound
        (``oldest_seen``) is the lowest expiry clock the partition has set since its last scan, which
        depends on how the stream was cut into batches (a user saved twice sets two clocks), so a scan
        it starts must remove exactly the users a scan without it would (found by the hostile-stream
        fuzz, seed 12351: a user 25 s past the TTL was swept at batch size 1 and kept in one batch)."""
        removed = 0
        ttl = self.settings.worker.user_ttl_seconds
        version = self.settings.worker.user_record_version
        for partition in sorted(partitions):
            part = self._part(partition)
            at = now(partition)
            if at - part.oldest_seen <= ttl + SWEEP_SLACK_SECONDS:
                continue  # no one has been expired for long: not worth a scan yet
            expired: list[str] = []
            oldest_left = math.inf
            for user_id, seen in part.last_seen.items():
                if at - seen > ttl + SWEEP_SLACK_SECONDS:
                    expired.append(user_id)
                elif seen < oldest_left:
                    oldest_left = seen
            expired.sort()
            gone = expired[: limit - removed]
            part.oldest_seen = min([oldest_left, *(part.last_seen[u] for u in expired[len(gone) :])])
            if not gone:
                continue
            for user_id in gone:
                key = user_id.encode("utf-8")
                raw = txn.get(partition, key)
                part.timers.cancel_user(user_id)
                part.warm_users.drop(user_id)
                del part.last_seen[user_id]
                if raw is None:
                    continue
                kept = forgotten(readable_record(raw, partition, user_id)[0], at)
                keep = kept.policy.opted_in is False or kept.policy.pushes
                txn.put(partition, key, kept.to_bytes(version) if keep else None)
            part.interest.purge_users(set(gone))
            self.stage_rows(txn, partition)
            removed += len(gone)
            if removed >= limit:
                break
        return removed
