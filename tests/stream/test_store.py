"""The RocksDB state store (real rocksdict on a temporary directory): transactions, meta, reopen."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from stream.store import META_KEY, PartitionMeta, PartitionStore, StateStore, Transaction


def test_partition_meta_encoding() -> None:
    meta = PartitionMeta(changelog_offset=12, pushes_offset=7)
    assert PartitionMeta.from_bytes(meta.to_bytes()) == meta
    assert PartitionMeta.from_bytes(None) == PartitionMeta(-1, -1)
    assert PartitionMeta.from_bytes(b"") == PartitionMeta(-1, -1)


def test_transaction_reads_through_pending_writes(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    pstore = store.open(0)
    pstore.write({b"alice": b"v1", b"bob": b"b1"}, PartitionMeta(0, -1))
    txn = Transaction(store)
    assert txn.get(0, b"alice") == b"v1"
    txn.put(0, b"alice", b"v2")
    txn.put(0, b"carol", b"c1")
    txn.put(0, b"bob", None)
    assert txn.get(0, b"alice") == b"v2"
    assert txn.get(0, b"carol") == b"c1"
    assert txn.get(0, b"bob") is None  # a staged delete hides the stored value
    # Nothing reaches RocksDB before the commit.
    assert pstore.get(b"alice") == b"v1"
    assert pstore.get(b"carol") is None
    assert pstore.get(b"bob") == b"b1"
    store.close_all()


def test_commit_writes_values_and_meta(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    p0, p1 = store.open(0), store.open(1)
    p0.write({b"bob": b"b1"}, PartitionMeta(3, 10))
    txn = Transaction(store)
    txn.put(0, b"alice", b"a1")
    txn.put(0, b"bob", None)
    txn.put(1, b"dave", b"d1")
    txn.commit(changelog_offsets={0: 5, 1: 0}, pushes_offsets={0: 4})
    assert txn.writes == {}
    assert p0.get(b"alice") == b"a1" and p0.get(b"bob") is None
    assert p1.get(b"dave") == b"d1"
    # The changelog offset moves to what was acknowledged; the pushes offset never goes back.
    assert p0.meta == PartitionMeta(5, 10)
    assert p1.meta == PartitionMeta(0, -1)
    assert PartitionMeta.from_bytes(p0.get(META_KEY)) == PartitionMeta(5, 10)


def test_commit_of_pushes_only_updates_meta(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    p2 = store.open(2)
    txn = Transaction(store)
    txn.commit(changelog_offsets={}, pushes_offsets={2: 9})
    assert p2.meta == PartitionMeta(-1, 9)
    assert list(p2.items()) == []


def test_meta_and_values_survive_reopen(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(3)
    txn = Transaction(store)
    txn.put(3, b"alice", b"\x00\x01binary")
    txn.commit({3: 17}, {3: 2})
    store.close_all()
    assert store.partitions == {}

    again = StateStore(tmp_path)
    p3 = again.open(3)
    assert p3.meta == PartitionMeta(17, 2)
    assert p3.get(b"alice") == b"\x00\x01binary"
    assert p3.ready is False  # recovery must still run after a restart
    assert again.open(3) is p3  # opened once
    again.close_all()


def test_items_exclude_bookkeeping_keys(tmp_path: Path) -> None:
    pstore = PartitionStore(tmp_path / "p0", 0)
    pstore.write({b"u2": b"2", b"u1": b"1", b"\x00other": b"x"}, PartitionMeta(1, 1))
    assert sorted(pstore.items()) == [(b"u1", b"1"), (b"u2", b"2")]
    assert pstore.get(META_KEY) is not None
    assert pstore.estimated_keys() >= 0 and pstore.estimated_bytes() >= 0
    pstore.close()


def test_close_keeps_files_and_wipe_deletes_everything(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = StateStore(root)
    for p in (0, 1):
        store.open(p).write({b"u": b"v"}, PartitionMeta(0, -1))
    store.close(1)
    assert set(store.partitions) == {0}
    assert (root / "p1").exists()  # files stay for a later assignment
    store.close(1)  # closing twice is harmless
    store.wipe()
    assert store.partitions == {}
    assert not root.exists()
    fresh = StateStore(root).open(0)
    assert fresh.get(b"u") is None and fresh.meta == PartitionMeta()
    fresh.close()


def test_all_ready(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.all_ready()  # nothing to recover
    a, b = store.open(0), store.open(1)
    a.ready = True
    assert not store.all_ready()
    b.ready = True
    assert store.all_ready()
    store.close_all()


def test_a_damaged_local_meta_record_reads_as_no_meta(tmp_path: Path) -> None:
    """The local store's meta record is read when it opens: a damaged one raised there, and the
    partition's recovery was retried forever. No meta means the changelog is replayed from its start,
    which rebuilds the same state (its meta records carry the pushes offset). A damaged meta record
    *in the changelog* still stops the recovery (``decode`` raises): read as none it would leave the
    pushes offset behind, and old pushes would be read back as just emitted."""
    for damaged in (b"\x00garbage", b"{", b"[1, 2]", b'{"c": 3}', b'{"c": "x", "p": 1}', b"\xff"):
        assert PartitionMeta.from_bytes(damaged) == PartitionMeta(-1, -1)
        with pytest.raises(ValueError, match="does not decode"):
            PartitionMeta.decode(damaged)
    assert PartitionMeta.decode(PartitionMeta(7, 3).to_bytes()) == PartitionMeta(7, 3)
    pstore = PartitionStore(tmp_path / "p0", 0)
    pstore.write({b"u1": b"1"}, PartitionMeta(5, 5))
    pstore._db[META_KEY] = b"\x00garbage"  # as a damaged disk leaves it
    pstore.close()
    again = PartitionStore(tmp_path / "p0", 0)
    assert again.meta == PartitionMeta(-1, -1) and again.get(b"u1") == b"1"
    again.close()


def _written(root: Path, partition: int = 0, users: int = 500) -> Path:
    """A partition database with ``users`` records flushed to a table file, closed; returns its path."""
    store = StateStore(root)
    pstore = store.open(partition)
    for i in range(users):
        pstore.write({f"u{i}".encode(): b"x" * 300}, PartitionMeta(i, -1))
    pstore._db.flush()
    store.close_all()
    return root / f"p{partition}"


def _garbage_current(path: Path) -> None:
    (path / "CURRENT").write_text("garbage\n")


def _truncated_tables(path: Path) -> None:
    for table in path.glob("*.sst"):
        with table.open("r+b") as f:
            f.truncate(100)


def _truncated_manifest(path: Path) -> None:
    for manifest in path.glob("MANIFEST-*"):
        with manifest.open("r+b") as f:
            f.truncate(10)


def _a_file_instead(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a database")


@pytest.mark.parametrize(
    "damage", [_garbage_current, _truncated_tables, _truncated_manifest, _a_file_instead]
)
def test_a_damaged_local_database_is_set_aside_and_opened_empty(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """Recovery then replays the changelog from its start (empty meta) instead of failing forever."""
    path = _written(tmp_path)
    damage(path)
    before = REGISTRY.get_sample_value("kairos_state_store_rebuilds_total") or 0.0
    store = StateStore(tmp_path)
    pstore = store.open(0)
    assert pstore.meta == PartitionMeta(-1, -1) and list(pstore.items()) == []
    assert (tmp_path / "p0.damaged").exists()
    assert REGISTRY.get_sample_value("kairos_state_store_rebuilds_total") == before + 1
    pstore.write({b"u": b"v"}, PartitionMeta(0, -1))  # a working database
    store.close_all()
    # Damaged again: the one copy set aside is replaced, not added to.
    _garbage_current(path)
    StateStore(tmp_path).open(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0", "p0.damaged"]


def test_a_database_locked_by_another_handle_is_not_touched(tmp_path: Path) -> None:
    """Two workers sharing a state directory: a deployment error, raised, and nothing moved or lost."""
    path = _written(tmp_path)
    holder = StateStore(tmp_path)
    holder.open(0)
    with pytest.raises(Exception, match="lock"):
        StateStore(tmp_path).open(0)
    assert not (tmp_path / "p0.damaged").exists()
    holder.close_all()
    assert len(list(StateStore(tmp_path).open(0).items())) == 500
    assert path.is_dir()
