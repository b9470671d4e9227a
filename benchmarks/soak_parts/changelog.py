"""The soak benchmark's view of the worker's changelog: a thread that follows it from offset 0
(records, bytes, live keys, opt-out-only users; :class:`ChangelogTail`), the head probe and the full
scan that look for compaction (:func:`probe_head`, :func:`full_scan`), and the topic's configuration.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from benchmarks.soak_parts.config import HEAD_PROBE_RECORDS
from stream.partition_rows import INTEREST_PREFIX, ITEM_PREFIX
from stream.state import UserState


def _consumer(bootstrap: str, name: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"soak-{name}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            **extra,
        }
    )


def _where(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message (-1 where librdkafka has none)."""
    partition, offset = msg.partition(), msg.offset()
    return (-1 if partition is None else partition), (-1 if offset is None else offset)


@dataclass(eq=False)  # a Thread must stay hashable
class ChangelogTail(threading.Thread):
    """Follows the changelog from offset 0: records, bytes, live keys, tombstones, watermarks."""

    bootstrap: str
    topic: str
    partitions: int
    records: int = 0
    bytes_read: int = 0
    tombstones: int = 0
    samples: int = 0  # samples taken (the head probe runs on every tenth)
    gaps: int = 0  # offsets skipped between consecutive records (removed before this reader got there)
    live: dict[tuple[int, bytes], int] = field(default_factory=dict)  # key -> size of its latest value
    # User records that hold nothing but an opt-out (kept for good: an opt-out is never forgotten).
    optouts: set[tuple[int, bytes]] = field(default_factory=set)
    last_offset: dict[int, int] = field(default_factory=dict)
    high: dict[int, int] = field(default_factory=dict)
    low: dict[int, int] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None

    def __post_init__(self) -> None:
        super().__init__(name="soak-changelog-tail", daemon=True)

    def run(self) -> None:
        """Consume until stopped (explicit offset 0: no ListOffsets)."""
        # A long fetch wait: the embedded broker's fetch cost grows with what a partition holds, and a
        # tail polling ten times a second pegged it at 100 % CPU and stalled the worker it measures.
        consumer = _consumer(self.bootstrap, "tail", **{"fetch.wait.max.ms": 1000})
        tps = [TopicPartition(self.topic, p, 0) for p in range(self.partitions)]
        try:
            consumer.assign(tps)
            while not self.stop_event.is_set():
                batch = consumer.consume(5000, timeout=0.5)
                with self.lock:
                    for msg in batch:
                        if msg.error() is not None:
                            continue
                        self._count(*_where(msg), msg.key() or b"", msg.value())
                    for tp in tps:
                        low, high = consumer.get_watermark_offsets(tp, cached=True)
                        if high >= 0:
                            self.high[tp.partition] = high
                        if low >= 0:
                            self.low[tp.partition] = low
        except Exception as exc:  # noqa: BLE001 - surfaced in the report
            self.error = repr(exc)
        finally:
            consumer.close()

    def _count(self, partition: int, offset: int, key: bytes, value: bytes | None) -> None:
        previous = self.last_offset.get(partition, -1)
        if offset > previous + 1:
            self.gaps += offset - previous - 1
        self.last_offset[partition] = offset
        self.records += 1
        self.bytes_read += len(key) + len(value or b"")
        if value is None:
            self.tombstones += 1
            self.live.pop((partition, key), None)
            self.optouts.discard((partition, key))
        else:
            self.live[(partition, key)] = len(key) + len(value)
            if _is_optout_only(key, value):
                self.optouts.add((partition, key))
            else:
                self.optouts.discard((partition, key))

    def snapshot(self) -> dict[str, int]:
        """The counts so far."""
        with self.lock:
            return {
                "changelog_records_read": self.records,
                "changelog_bytes_read": self.bytes_read,
                "changelog_offsets": sum(self.high.values()) - sum(self.low.values()),
                "changelog_high_watermark": sum(self.high.values()),
                "changelog_live_keys": len(self.live),
                # User records vs the partitions' shared rows (index entries, clock: keys from \x00).
                "changelog_live_users": sum(1 for _, key in self.live if not key.startswith(b"\x00")),
                "changelog_live_optouts": len(self.optouts),
                "changelog_live_active_users": sum(1 for _, key in self.live if not key.startswith(b"\x00"))
                - len(self.optouts),
                "changelog_live_partition_rows": sum(1 for _, key in self.live if key.startswith(b"\x00")),
                # The two indexes that hold the bulk of those rows, each with its own configured cap.
                "changelog_live_item_rows": sum(1 for _, k in self.live if k.startswith(ITEM_PREFIX)),
                "changelog_live_interest_rows": sum(1 for _, k in self.live if k.startswith(INTEREST_PREFIX)),
                "changelog_live_bytes": sum(self.live.values()),
                "changelog_tombstones": self.tombstones,
                "changelog_gaps_seen": self.gaps,
            }


OPTOUT_RECORD_MAX_BYTES = 512  # an opt-out-only record is small; larger ones are not decoded


def _is_optout_only(key: bytes, value: bytes) -> bool:
    """Whether a changelog value is a user record holding only an opt-out (no events)."""
    if key.startswith(b"\x00") or len(value) > OPTOUT_RECORD_MAX_BYTES:
        return False
    try:
        state = UserState.from_bytes(value)
    except ValueError:
        return False
    return state.n_events == 0 and state.policy.opted_in is False


def probe_head(bootstrap: str, topic: str, partitions: int, n: int = HEAD_PROBE_RECORDS) -> dict[str, int]:
    """Read the first ``n`` records of each partition again from offset 0: are offsets still contiguous?

    A compacted log loses superseded records from its old end first, so gaps (or a first offset above 0)
    there mean the broker compacted (or deleted) something.
    """
    consumer = _consumer(bootstrap, "probe", **{"enable.partition.eof": True})
    first: dict[int, int] = {}
    seen: dict[int, list[int]] = {p: [] for p in range(partitions)}
    done: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 15
        while len(done) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(2000, timeout=0.5):
                p, offset = _where(msg)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(p)
                    continue
                if p in done:
                    continue
                seen[p].append(offset)
                first.setdefault(p, offset)
                if len(seen[p]) >= n:
                    done.add(p)
    finally:
        consumer.close()
    missing = sum((max(offs) + 1 - len(offs)) for offs in seen.values() if offs)
    return {
        "head_records": sum(len(v) for v in seen.values()),
        "head_missing_offsets": missing,
        "head_first_offset_max": max(first.values(), default=0),
    }


def full_scan(bootstrap: str, topic: str, partitions: int, highs: dict[int, int]) -> dict[str, Any]:
    """Read the whole changelog again: records present vs offsets written, distinct and live keys.

    ``highs`` (the reader's high watermarks) says where each partition ends at least; the partition-EOF
    offsets of this scan replace them.
    """
    highs = dict(highs)
    consumer = _consumer(bootstrap, "scan", **{"enable.partition.eof": True})
    present = 0
    keys: dict[tuple[int, bytes], bool] = {}
    done: set[int] = set()
    started = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 600
        while len(done) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=0.5):
                err = msg.error()
                p, offset = _where(msg)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and offset >= highs.get(p, 0):
                        done.add(p)
                        highs[p] = offset  # the end of the partition as this fetch saw it
                    continue
                present += 1
                keys[(p, msg.key() or b"")] = msg.value() is not None
    finally:
        consumer.close()
    written = sum(highs.values())
    return {
        "offsets_written": written,
        "records_present": present,
        "records_removed": written - present,
        "distinct_keys": len(keys),
        "live_keys": sum(1 for alive in keys.values() if alive),
        "scan_seconds": round(time.monotonic() - started, 1),
        "complete": len(done) == partitions,
    }


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configuration as the broker describes it (empty when it does not answer)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        futures = admin.describe_configs([ConfigResource("topic", topic)])
        entries = next(iter(futures.values())).result(timeout=10)
        return {name: str(entry.value) for name, entry in entries.items() if entry.value is not None}
    except Exception as exc:  # noqa: BLE001 - informative only
        return {"error": repr(exc)[:200]}
