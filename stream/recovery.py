"""Recovery reads: what a worker reads back from the broker before it serves a partition it was assigned.

Two blocking readers, run in threads by the worker's recovery loop (``stream/worker_recovery.py``):

* :func:`replay_changelog` catches a partition's local RocksDB up with the user-state changelog
  from the offset the store already accounts for, so a store lost with its machine, or behind
  after a crash, ends up with exactly what the last committed batches wrote;
* :func:`read_pushes` reads the pushes a partition emitted after the pushes offset its states
  account for: pushes produced before a crash but after the last changelog write, which the engine
  reconciles (``Engine.apply_recovered_pushes``) so none is emitted twice.

Both read from the given offsets up to the topic's current end (``stream.kafka_io.replay_partitions``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stream.contract import Push
from stream.kafka_io import replay_partitions
from stream.settings import Settings
from stream.store import META_KEY, PartitionMeta, PartitionStore

log = logging.getLogger(__name__)


def replay_changelog(
    settings: Settings,
    changelog: str,
    stores: dict[int, PartitionStore],
    wanted: Callable[[int], bool] = lambda p: True,
) -> dict[int, int]:
    """Apply ``changelog`` past each store's changelog offset; returns the records applied per partition.

    A partition for which ``wanted`` turns false meanwhile (revoked) is skipped: its new owner replays
    it. The pushes offset in the stores' meta only moves forward (the changelog's meta records carry it).
    """
    starts = {p: s.meta.changelog_offset + 1 for p, s in stores.items()}
    applied: dict[int, int] = {}
    for p, batch in replay_partitions(settings, changelog, starts):
        if not wanted(p):
            continue
        pstore = stores[p]
        writes: dict[bytes, bytes | None] = {}
        meta = PartitionMeta(pstore.meta.changelog_offset, pstore.meta.pushes_offset)
        for msg in batch:
            key = msg.key()
            if key == META_KEY:
                recorded = PartitionMeta.decode(msg.value()).pushes_offset  # damaged: raises
                meta.pushes_offset = max(meta.pushes_offset, recorded)
            elif key is not None:
                writes[key] = msg.value()
            meta.changelog_offset = max(meta.changelog_offset, msg.offset() or 0)
        pstore.write(writes, meta)
        applied[p] = applied.get(p, 0) + len(batch)
    return applied


def read_pushes(settings: Settings, topic: str, starts: dict[int, int]) -> dict[int, list[Push]]:
    """The pushes on ``topic`` from each partition's start offset to its end, per partition.

    A record that is not a push (no value, not the contract) is logged and skipped: recovery must not
    stop on it.
    """
    found: dict[int, list[Push]] = {}
    for p, batch in replay_partitions(settings, topic, starts):
        for msg in batch:
            value = msg.value()
            try:
                if value is None:
                    raise ValueError("no value")
                found.setdefault(p, []).append(Push.model_validate_json(value, strict=False))
            except ValueError:
                log.warning("unreadable record on %s[%d]@%d", topic, p, msg.offset())
    return found
