"""The state store: RocksDB (rocksdict) per partition, backed by a compacted changelog topic.

Layering (after Quix Streams' store → partition → transaction):

- :class:`StateStore` owns one RocksDB database per assigned partition under ``state_dir``;
- :class:`PartitionStore` is one partition's database plus its bookkeeping (the changelog offset
  it has applied, the pushes-topic offset its state accounts for);
- :class:`Transaction` collects one batch's writes across partitions; :meth:`Transaction.commit`
  first makes the changelog durable (the caller flushes the producer), then writes RocksDB
  atomically per partition. A crash at any point leaves RocksDB at or behind the changelog, and the
  changelog is the truth recovery replays.

Keys are user ids (UTF-8). Bookkeeping lives under keys starting with ``\\x00``, which no user id has.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from stream import metrics

log = logging.getLogger(__name__)

META_KEY = b"\x00meta"


@dataclass
class PartitionMeta:
    """Bookkeeping of one partition's state (stored in RocksDB and in the changelog)."""

    changelog_offset: int = -1  # last changelog offset applied to RocksDB
    pushes_offset: int = -1  # last offset on the pushes partition that the state accounts for

    def to_bytes(self) -> bytes:
        """JSON encoding."""
        return json.dumps({"c": self.changelog_offset, "p": self.pushes_offset}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> PartitionMeta:
        """Inverse of :meth:`to_bytes` (empty meta for None); ValueError when ``data`` does not decode.

        The changelog's meta records are read with this: a damaged one stops the partition's recovery
        (logged, counted, retried) rather than leave the pushes offset behind, which would read old
        pushes back as if just emitted and give records to users who have none (erased, expired).
        """
        if not data:
            return cls()
        try:
            raw = json.loads(data)
            return cls(changelog_offset=int(raw["c"]), pushes_offset=int(raw["p"]))
        except (ValueError, TypeError, KeyError) as exc:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"partition meta record {bytes(data[:80])!r} does not decode: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes | None) -> PartitionMeta:
        """:meth:`decode` for the local store's own record: empty meta when it does not decode.

        It is read when a store opens: raising on a damaged one would retry the partition's recovery
        forever. Empty meta replays the changelog from its start instead, which rebuilds the same state
        (the changelog's meta records carry the pushes offset).
        """
        try:
            return cls.decode(data)
        except ValueError as exc:
            log.warning("%s: read as none, the changelog is replayed from its start", exc)
            return cls()


# What RocksDB (through rocksdict, which raises plain Exceptions) says when a database's files are
# damaged, and what the OS says when something other than a database directory stands at its path.
_DAMAGE_MESSAGES = ("Corruption", "File exists", "Not a directory")


def damaged(exc: BaseException) -> bool:
    """Whether opening a local database failed because its files are damaged (not a lock or a permission)."""
    return str(exc).startswith(_DAMAGE_MESSAGES)


def set_aside(path: Path) -> Path:
    """Move a damaged database (or whatever stands at ``path``) to ``<path>.damaged``; returns that path."""
    aside = path.with_name(path.name + ".damaged")
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    elif aside.exists() or aside.is_symlink():
        aside.unlink()
    path.rename(aside)
    return aside


class PartitionStore:
    """One partition's RocksDB database."""

    def __init__(self, path: Path, partition: int) -> None:
        self.partition = partition
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        self.meta = PartitionMeta.from_bytes(self._db.get(META_KEY))
        self.ready = False  # True once recovery from the changelog has caught up

    def get(self, key: bytes) -> bytes | None:
        """The stored value of ``key`` or None."""
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def write(self, values: dict[bytes, bytes | None], meta: PartitionMeta) -> None:
        """Write ``values`` (None deletes) and the new bookkeeping atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in values.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(META_KEY, meta.to_bytes())
        self._db.write(batch)
        self.meta = meta

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every user record (bookkeeping excluded)."""
        for key, value in self._db.items():  # raw mode: keys and values are bytes
            if isinstance(key, bytes) and isinstance(value, bytes) and not key.startswith(b"\x00"):
                yield key, value

    def partition_rows(self) -> Iterator[tuple[bytes, bytes]]:
        """The partition's shared rows (``stream.partition_state``), without the store's own meta.

        They sort before every user record (their keys start with ``\\x00``), so the scan stops at the
        first user.
        """
        for key, value in self._db.items():
            if not (isinstance(key, bytes) and isinstance(value, bytes)):
                continue
            if not key.startswith(b"\x00"):
                return
            if key != META_KEY:
                yield key, value

    def estimated_keys(self) -> int:
        """RocksDB's estimate of the number of keys."""
        value = self._db.property_int_value("rocksdb.estimate-num-keys")
        return int(value or 0)

    def estimated_bytes(self) -> int:
        """Live data size estimate (SST files plus memtables)."""
        sst = self._db.property_int_value("rocksdb.estimate-live-data-size") or 0
        mem = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return int(sst) + int(mem)

    def close(self) -> None:
        """Flush and close the database."""
        self._db.close()


class StateStore:
    """All partitions' databases of one worker."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.partitions: dict[int, PartitionStore] = {}

    def open(self, partition: int) -> PartitionStore:
        """Open (or return) the store of ``partition``.

        A local database that RocksDB finds damaged (a corrupted or truncated file after a crash or a
        disk fault, something else at its path) is moved aside to ``p<N>.damaged`` (replacing an
        earlier one: one copy to look at, not one per restart) and opened empty: its meta then
        replays the changelog, the state's truth, from the start. Without this the partition's
        recovery would fail and retry forever. Any other error (a lock held by another process
        sharing the state directory, no permission) is raised as before.
        """
        store = self.partitions.get(partition)
        if store is None:
            path = self.root / f"p{partition}"
            try:
                store = PartitionStore(path, partition)
            except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exceptions
                if not damaged(exc):
                    raise
                aside = set_aside(path)
                metrics.STATE_STORE_REBUILDS.inc()
                log.error(
                    "partition %d: local state at %s does not open (%s); moved to %s and rebuilt from the "
                    "changelog",
                    partition,
                    path,
                    str(exc)[:300],
                    aside,
                )
                store = PartitionStore(path, partition)
            self.partitions[partition] = store
        return store

    def close(self, partition: int) -> None:
        """Close the store of a partition this worker no longer owns (its files stay for later)."""
        store = self.partitions.pop(partition, None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        """Close every open partition store."""
        for partition in list(self.partitions):
            self.close(partition)

    def wipe(self) -> None:
        """Delete all local state (it is rebuilt from the changelog)."""
        self.close_all()
        shutil.rmtree(self.root, ignore_errors=True)

    def all_ready(self) -> bool:
        """Whether every open partition has finished recovery."""
        return all(p.ready for p in self.partitions.values())


@dataclass
class Transaction:
    """One batch's writes: new values per partition, cached for reads within the batch.

    ``below`` is the previous batch's transaction while its commit is still in flight
    (``stream.commit_pipeline``; it may have a ``below`` of its own): their writes are the state this
    batch builds on, and reads go through them, newest first, before the store.
    """

    store: StateStore
    writes: dict[int, dict[bytes, bytes | None]] = field(default_factory=dict)
    below: Transaction | None = None

    def get(self, partition: int, key: bytes) -> bytes | None:
        """Read through the pending writes (this batch's, then those in flight) to the store."""
        pending = self.writes.get(partition)
        if pending is not None and key in pending:
            return pending[key]
        below = self.below
        while below is not None:
            staged = below.writes.get(partition)
            if staged is not None and key in staged:
                return staged[key]
            below = below.below
        return self.store.partitions[partition].get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Stage a write (None deletes)."""
        self.writes.setdefault(partition, {})[key] = value

    def commit(self, changelog_offsets: dict[int, int], pushes_offsets: dict[int, int]) -> None:
        """Apply the staged writes to RocksDB after the changelog holds them.

        ``changelog_offsets`` are the last offsets the changelog acknowledged per partition;
        ``pushes_offsets`` the last pushes-topic offsets this batch produced per partition.
        """
        for partition in set(self.writes) | set(pushes_offsets):
            pstore = self.store.partitions[partition]
            meta = PartitionMeta(
                changelog_offset=changelog_offsets.get(partition, pstore.meta.changelog_offset),
                pushes_offset=max(pushes_offsets.get(partition, -1), pstore.meta.pushes_offset),
            )
            pstore.write(self.writes.get(partition, {}), meta)
        self.writes.clear()
