"""One partition's shared state: its event-time clock, candidate indexes, timers and user activity.

Everything a decision reads besides the user's own record and the catalog lives here, *per
partition*, never per worker. That makes every decision a function of the partition's own input:
it does not depend on which worker owns which partition, on how many partitions a worker owns, or
on restarts, because the state is persisted with the partition and restored with it.

- ``watermark``: the highest accepted event time on the partition (the event-time clock; one event
  can move it at most ``worker.max_future_skew_seconds`` past the wall clock, since admission refuses
  events further ahead);
- ``covisitation``, ``trending``, ``interest``: the candidate indexes, fed by the partition's events;
- ``arrivals_asked``: how many new items each user was asked about in the clock's hour (the bound
  ``new_arrival_asks_per_user_hour``, ``stream.engine.catalog_asks``);
- ``timers``: the pending timers of the partition's users (stored in each user's record, rebuilt here
  when the partition is loaded);
- ``last_seen``: when each user's expiry counts from (``stream.state.expiry_clock``);
- ``offsets``: per input topic, the highest offset of the partition applied (valid or dead-lettered).
  Persisted with the batch's states, it lets the worker skip records redelivered after a rebalance
  or a crash (faust drops offsets acked since its last commit at every revocation), so a malformed
  record is dead-lettered once, not once per redelivery.

Persistence: the indexes track the rows they changed; :meth:`PartitionState.drain` turns them into
key/value writes that the engine stages in the batch's transaction, so they reach the changelog and
RocksDB atomically with the user records of the same batch. The rows' keys and codecs, and the older
layouts still read, are in :mod:`stream.partition_rows`: co-visitation and trending share one row per
item, so a batch writes one row per item it touched in either.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stream.covisitation import CoVisitationIndex
from stream.encoding import compact_json
from stream.interest_index import InterestIndex
from stream.learning import EpochLearner
from stream.partition_rows import (
    ARRIVALS_PREFIX,
    COVISIT_PREFIX,
    INTEREST_PREFIX,
    ITEM_PREFIX,
    LEGACY_COVISIT_PREFIX,
    META_ROW,
    OLDER_LAYOUTS,
    TRENDING_PREFIX,
    CovisitRow,
    decode_covisit_row,
    decode_item_row,
    decode_legacy_value,
    encode_item_row,
    from_legacy,
    item_key,
    merge_layouts,
    pair_key,
    split_pair,
)
from stream.policy_config import PolicyConfig
from stream.response_estimates import RESPONSE_PREFIX
from stream.state_load import UnreadablePartitionRow, load_facts
from stream.throttle import THROTTLE_ROW, PushThrottle
from stream.timers import Timer, TimerQueue
from stream.trending import TrendingItems
from stream.warm_users import WarmUsers

log = logging.getLogger(__name__)

# What a damaged row or user record raises when decoded (JSON, MessagePack and UTF-8 errors are
# ValueErrors).
UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def is_partition_row(key: bytes) -> bool:
    """Whether a store key belongs to :class:`PartitionState` (not a user record, not store bookkeeping)."""
    return key in (META_ROW, THROTTLE_ROW) or key[:2] in (
        ITEM_PREFIX,
        COVISIT_PREFIX,
        LEGACY_COVISIT_PREFIX,
        TRENDING_PREFIX,
        INTEREST_PREFIX,
        ARRIVALS_PREFIX,
        RESPONSE_PREFIX,
    )


@dataclass
class PartitionState:
    """The shared, persisted state of one partition (see the module docstring)."""

    partition: int
    covisitation: CoVisitationIndex
    trending: TrendingItems
    interest: InterestIndex
    timers: TimerQueue
    learning: EpochLearner
    throttle: PushThrottle
    watermark: float = 0.0
    last_seen: dict[str, float] = field(default_factory=dict)
    # At or below every value of last_seen (math.inf: none): the expiry sweep scans last_seen only
    # once the oldest could have expired, not at every tick (a scan of 250,000 users costs ~20 ms).
    oldest_seen: float = math.inf
    offsets: dict[str, int] = field(default_factory=dict)
    users_loaded: int = 0  # user records found when the partition was loaded (for the logs)
    unreadable_rows: int = 0  # stored rows that did not decode when it was loaded (skipped)
    # Catalog changes up to this time were announced to the partition's users; set by the engine when
    # it creates or adopts the partition (its clock then, when none was stored). Stored with the
    # partition row at the commit of any announcement (``catalog_announced``) and whenever that row is
    # written anyway: a restart, a rebalance or a re-read announces exactly the changes after it that
    # the store's commits did not.
    catalog_until: float | None = None
    catalog_announced: bool = False
    _catalog_until_stored: float | None = None
    # New items each user was asked about in the clock's hour ``arrival_hour`` (the bound
    # ``new_arrival_asks_per_user_hour``, stream.engine.catalog_asks); stored, one row per user, so a
    # partition re-read from its store (moved, restarted, reloaded after a failure) counts on.
    arrival_hour: int = -1
    arrivals_asked: dict[str, int] = field(default_factory=dict)
    _arrivals_changed: set[str] = field(default_factory=set)
    _arrivals_gone: set[str] = field(default_factory=set)  # an earlier hour's rows: deleted at the next drain
    _watermark_stored: float = 0.0
    _offsets_stored: dict[str, int] = field(default_factory=dict)
    _legacy_rows: list[bytes] = field(default_factory=list)  # deleted at the next drain
    # Decoded records of users written lately, taken by the next batch instead of a store read and a
    # decode (stream.warm_users); in memory only, so a re-read or a restart starts it empty.
    warm_users: WarmUsers = field(default_factory=WarmUsers)

    @classmethod
    def empty(cls, partition: int, config: PolicyConfig, partitions: int = 1) -> PartitionState:
        """A partition with no history (``partitions``: how many share the push throttle's budget)."""
        return cls(
            partition,
            CoVisitationIndex.from_config(config),
            TrendingItems.from_config(config),
            InterestIndex.from_config(config),
            TimerQueue.from_config(config),
            EpochLearner.empty(config),
            PushThrottle(config.max_pushes_per_minute / max(partitions, 1), config.throttle_max_queued),
        )

    def see(self, user_id: str, clock: float) -> None:
        """Set when ``user_id``'s expiry counts from (``stream.state.expiry_clock``)."""
        self.last_seen[user_id] = clock
        if clock < self.oldest_seen:
            self.oldest_seen = clock

    def advance(self, ts: float) -> bool:
        """Move the event-time clock forward to ``ts``; True when it moved."""
        if ts > self.watermark:
            self.watermark = ts
            return True
        return False

    def observe_offset(self, topic: str, offset: int) -> None:
        """Note that the record at ``offset`` of ``topic`` (this partition) is being applied."""
        if offset > self.offsets.get(topic, -1):
            self.offsets[topic] = offset

    def applied(self, topic: str, offset: int) -> bool:
        """Whether the record at ``offset`` of ``topic`` was already applied (a redelivery)."""
        return offset <= self.offsets.get(topic, -1)

    def arrivals_in(self, hour: int) -> dict[str, int]:
        """User -> new items asked about in ``hour`` (of the clock, which only moves forward: an earlier
        hour reads the current one). Read only: :meth:`ask_arrival` counts."""
        if hour > self.arrival_hour:
            self._arrivals_gone.update(self.arrivals_asked)
            self.arrival_hour = hour
            self.arrivals_asked = {}
        return self.arrivals_asked

    def ask_arrival(self, user_id: str) -> None:
        """Count a new item ``user_id`` is asked about in the current hour (:meth:`arrivals_in`)."""
        self.arrivals_asked[user_id] = self.arrivals_asked.get(user_id, 0) + 1
        self._arrivals_changed.add(user_id)

    def forget_arrivals(self, user_id: str) -> None:
        """Drop ``user_id``'s count (an erasure): its row is deleted at the next drain."""
        if self.arrivals_asked.pop(user_id, None) is not None:
            self._arrivals_changed.add(user_id)

    # -- persistence ----------------------------------------------------------------------------

    def drain(self) -> dict[bytes, bytes | None]:
        """The rows changed since the last drain, as store writes (None deletes); forgets them."""
        writes: dict[bytes, bytes | None] = {}
        changed = False
        for key in self._legacy_rows:
            writes[key] = None
        self._legacy_rows.clear()
        # One row per item for both indexes (stream.partition_rows): an item changed in one is written
        # with its current values in the other.
        covisit, trending = self.covisitation.drain_changes(), self.trending.drain_changes()
        for item, row in covisit.items():
            count = trending.pop(item) if item in trending else self.trending.count(item)
            writes[item_key(item)] = encode_item_row(row, count)
            changed = True
        for item, count in trending.items():
            writes[item_key(item)] = encode_item_row(self.covisitation.row(item), count)
            changed = True
        for (item, user), value in self.interest.drain_changes().items():
            writes[pair_key(INTEREST_PREFIX, item, user)] = None if value is None else compact_json(value)
            changed = True
        for user in self._arrivals_gone | self._arrivals_changed:  # complete without the meta row
            n = self.arrivals_asked.get(user)
            writes[ARRIVALS_PREFIX + user.encode("utf-8")] = (
                None if n is None else compact_json([self.arrival_hour, n])
            )
        self._arrivals_gone.clear()
        self._arrivals_changed.clear()
        writes.update(self.learning.drain())  # its own rows, complete without the meta row
        writes.update(self.throttle.drain())
        # With the wall clock the announced-until moves at every tick: an idle partition stores it only
        # when a change was announced (what a restart must not announce again), not every second.
        announced = self.catalog_announced and self.catalog_until != self._catalog_until_stored
        self.catalog_announced = False
        if (
            changed
            or announced
            or self.watermark != self._watermark_stored
            or self.offsets != self._offsets_stored
        ):
            meta: dict[str, Any] = {
                "w": self.watermark,
                "c": self.covisitation.meta(),
                "t": self.trending.meta(),
                "n": self.interest.meta(),
                "o": self.offsets,
            }
            if self.catalog_until is not None:
                meta["a"] = self.catalog_until
            writes[META_ROW] = compact_json(meta)
            self._watermark_stored = self.watermark
            self._offsets_stored = dict(self.offsets)
            self._catalog_until_stored = self.catalog_until
        return writes

    @classmethod
    def load(
        cls,
        partition: int,
        config: PolicyConfig,
        rows: Iterable[tuple[bytes, bytes]],
        users: Iterable[tuple[bytes, bytes]],
        partitions: int = 1,
    ) -> tuple[PartitionState, int]:
        """Rebuild from the partition's stored rows and user records; returns (state, user count).

        Reads everything it needs from its arguments and touches nothing shared, so it can run in a
        worker thread while the event loop serves other partitions. A row that does not decode (a
        damaged changelog or disk) is logged, counted in ``unreadable_rows`` and skipped: failing
        here would leave the partition unserved, its recovery retried forever. A user record that
        does not decode gets no timers and no expiry clock here; reading it later gives a record
        that pushes nothing (:func:`stream.engine.users.readable_record`). Except the partition's own
        row (clock and input offsets, :class:`UnreadablePartitionRow`): without its offsets every input
        would be applied again from the start of the topics, so its recovery stops there instead.
        """
        state = cls.empty(partition, config, partitions)
        meta: dict[str, Any] = {}
        covisit: list[CovisitRow] = []
        covisit_older: list[CovisitRow] = []  # the per-index layout's rows
        legacy: list[tuple[bytes, str, str, float | int]] = []
        trending: dict[str, float] = {}
        trending_older: dict[str, float] = {}
        interest: list[tuple[str, str, Any]] = []
        responses: list[tuple[bytes, bytes]] = []
        arrivals: list[tuple[str, int, int]] = []
        older: list[bytes] = []  # rows of older layouts: rewritten in the current one, then deleted
        for key, raw in rows:
            if key == META_ROW:
                meta = _meta(partition, raw)  # the one row a partition cannot do without: raises
                continue
            try:
                if key == THROTTLE_ROW:
                    state.throttle.load([(key, raw)])
                elif key.startswith(ITEM_PREFIX):
                    item, covisit_row, count = decode_item_row(key, raw)
                    if covisit_row is not None:
                        covisit.append(covisit_row)
                    if count is not None:
                        trending[item] = count
                elif key[:2] in OLDER_LAYOUTS:
                    older.append(key)  # deleted at the next drain, even when it does not decode
                    if key.startswith(COVISIT_PREFIX):
                        covisit_older.append(decode_covisit_row(key, raw))
                    elif key.startswith(LEGACY_COVISIT_PREFIX):
                        item, other = split_pair(key, LEGACY_COVISIT_PREFIX)
                        legacy.append((key, item, other, decode_legacy_value(raw, pair=bool(other))))
                    else:
                        trending_older[key[len(TRENDING_PREFIX) :].decode("utf-8")] = float(json.loads(raw))
                elif key.startswith(INTEREST_PREFIX):
                    item, holder = split_pair(key, INTEREST_PREFIX)
                    interest.append((item, holder, _interest_value(holder, raw)))
                elif key.startswith(RESPONSE_PREFIX):
                    responses.append((key, raw))
                elif key.startswith(ARRIVALS_PREFIX):
                    hour, n = json.loads(raw)
                    arrivals.append((key[len(ARRIVALS_PREFIX) :].decode("utf-8"), int(hour), int(n)))
            except UNREADABLE as exc:
                state.unreadable_rows += 1
                _skipped(partition, key, exc)
        try:
            state.learning.load(responses)
        except UNREADABLE as exc:  # the outcome estimates start over rather than the partition stall
            state.unreadable_rows += 1
            _skipped(partition, RESPONSE_PREFIX, exc)
            state.learning.load([])
        if legacy:
            covisit_older = merge_layouts(covisit_older, from_legacy(legacy))
        if covisit_older:
            covisit = merge_layouts(covisit, covisit_older)
        trending.update(trending_older)  # only an older worker after a newer one writes both
        state._legacy_rows = older
        state.covisitation.restore(meta.get("c", {}), covisit, rewrite=bool(older))
        state.trending.restore(meta.get("t", {}), trending.items(), rewrite=bool(older))
        if arrivals:
            state.arrival_hour = max(hour for _, hour, _ in arrivals)
            for user, hour, n in arrivals:
                if hour == state.arrival_hour:
                    state.arrivals_asked[user] = n
                else:  # an earlier hour's row (not deleted yet): deleted at the next drain
                    state._arrivals_gone.add(user)
        state.interest.restore(meta.get("n", {}), interest)
        state.watermark = state._watermark_stored = float(meta.get("w", 0.0))
        state.offsets = {str(topic): int(offset) for topic, offset in meta.get("o", {}).items()}
        if "a" in meta:  # a row written before it was stored has none: the clock at adoption
            state.catalog_until = state._catalog_until_stored = float(meta["a"])
        state._offsets_stored = dict(state.offsets)
        n = 0
        for key, value in users:
            try:
                facts = load_facts(value)  # timers and expiry clock only: a load reads every user
                timers = [Timer.from_list(row) for row in facts.timers]
                user_id = key.decode("utf-8")
            except UNREADABLE as exc:
                # No timers and no expiry clock: the record starts over opted out when it is next read
                # (stream.engine.users.readable_record).
                state.unreadable_rows += 1
                _skipped(partition, key, exc)
                continue
            state.timers.extend(timers)
            clock = facts.expiry_clock  # None: an opt-out without events, kept for good
            if clock is not None:
                state.see(user_id, clock)
            n += 1
        if "w" not in meta and state.last_seen:
            # No stored clock (a store written before partition rows existed): the partition's users
            # show how far it had come. After their records, which set last_seen.
            state.watermark = max(state.last_seen.values())
        return state, n


def _skipped(partition: int, key: bytes, exc: Exception) -> None:
    log.warning("partition %d: stored row %r does not decode, skipped: %s", partition, key[:80], exc)


def _meta(partition: int, raw: bytes) -> dict[str, Any]:
    """The partition row's values; :class:`UnreadablePartitionRow` when it does not decode.

    Skipping it would lose the input offsets, and the reader would apply every retained input again
    from the start of the topics (dead letters repeated, events older than the dedupe window counted
    twice, an erased user brought back by their old events): recovery stops and retries instead,
    logged and counted like any recovery error, until the store is repaired (delete the worker's
    local state to rebuild it from the changelog).
    """
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        message = f"partition {partition}: its stored row does not decode: {exc}"
        raise UnreadablePartitionRow(message) from None
    if not isinstance(meta, dict):
        raise UnreadablePartitionRow(
            f"partition {partition}: its stored row is a {type(meta).__name__}, not an object"
        )
    return meta


def _interest_value(user: str, raw: bytes) -> Any:
    """An interest row's value, checked for its shape: ``[value, interest, ts]`` for a user's row,
    the item's touch order for the item's own row (``InterestIndex.restore`` unpacks it later)."""
    value = json.loads(raw)
    if user:
        v, i, t = value
        return [float(v), float(i), float(t)]
    return int(value)
