"""Admission: whether a record read from an input topic may be applied. Pure functions, no I/O.

Parsing (:mod:`stream.contract`) says whether a value is a well-formed message. Admission adds what
the record's place in Kafka and the wall clock say about it:

- ``no_key``: a record of a keyed topic without a key. On ``events`` / ``consent`` it landed on a
  random partition, so the user's state would be split; on ``catalog`` (compacted) it can never be
  replaced or removed.
- ``wrong_partition``: an ``events`` / ``consent`` record that is not on its key's murmur2 partition
  (a producer with another partitioner, e.g. kcat's default): the same user would have state, dedupe
  and push history on two partitions. ``catalog`` is read whole by every worker: no partition check.
- ``key_mismatch``: the key is not the message's ``user_id`` (``item_id`` on ``catalog``).
- ``future_timestamp``: the message's time (``ts``, or ``updated_at`` on ``catalog``) is more than
  ``worker.max_future_skew_seconds`` ahead of the wall clock. Such a record is refused, not clamped:
  clamping would invent a time the producer never sent (and change event ids' meaning for dedupe
  and push ids), while a refused record keeps its bytes for a replay once the producer's clock is
  fixed. See ``docs/contract.md``.

Tombstones (a record whose value is null) on ``catalog`` and ``consent`` are not refused: the
entry points return None and the engine gives them their meaning. They still need a key that is a
valid id (and, on ``consent``, on its partition). A null value on ``events`` is a dead letter.

Every refusal is a :class:`~stream.contract.ContractError` with a bounded reason, like a parse error.
The wall clock is an argument, so callers (and tests) choose it.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from stream.contract import (
    CatalogUpdate,
    ConsentUpdate,
    ContractError,
    Id,
    parse_catalog,
    parse_consent,
)
from stream.event_decoder import ValidEvent, decode_event
from stream.partitioning import partition_for
from stream.settings import Settings

# An id is at most 128 characters, so at most 512 bytes of UTF-8: a longer key matches nothing
# (and is not worth hashing for its partition).
MAX_KEY_BYTES = 4 * 128
_ID: TypeAdapter[str] = TypeAdapter(Id)


def _require_key(key: bytes | None) -> bytes:
    if key is None:
        raise ContractError("no_key", "the record has no key")
    if len(key) > MAX_KEY_BYTES:
        raise ContractError("key_mismatch", f"a {len(key)}-byte key is longer than any id")
    return key


def _check_partition(key: bytes, partition: int, settings: Settings) -> None:
    expected = partition_for(key, settings.topics.partitions)
    if partition != expected:
        raise ContractError(
            "wrong_partition",
            f"on partition {partition}, but its key's murmur2 partition is {expected} "
            f"of {settings.topics.partitions}",
        )


def _check_key(key: bytes, entity_id: str, field: str) -> None:
    if key != entity_id.encode("utf-8"):
        raise ContractError("key_mismatch", f"message key does not match {field}")


def _check_tombstone_key(key: bytes) -> str:
    """The id a tombstone's key names; refuse keys that no valid message could have had."""
    try:
        entity_id = _ID.validate_python(key.decode("utf-8"), strict=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ContractError("key_mismatch", "a tombstone's key is not a valid id") from exc
    return entity_id


def check_id(value: str) -> str:
    """Validate an id as the contract does (length, no control characters); raise ContractError."""
    try:
        return _ID.validate_python(value, strict=True)
    except ValueError as exc:
        raise ContractError("invalid_field", f"not a valid id: {value[:64]!r}") from exc


def _check_skew(ts: float, field: str, wall_now: float, settings: Settings) -> None:
    ahead = ts - wall_now
    if ahead > settings.worker.max_future_skew_seconds:
        raise ContractError(
            "future_timestamp",
            f"{field} is {ahead:.0f} s ahead of the wall clock "
            f"(at most {settings.worker.max_future_skew_seconds:.0f} s allowed)",
        )


def admit_event(
    key: bytes | None, partition: int, raw: bytes | None, settings: Settings, wall_now: float
) -> ValidEvent:
    """An ``events`` record that may be applied, or :class:`ContractError` saying why not.

    Checks, in order: a key, the value (a null value is ``bad_json``: events have no tombstones),
    the key against ``user_id``, the key's partition, then ``ts`` against ``wall_now``.
    """
    checked = _require_key(key)
    event = decode_event(raw, settings.worker.max_event_bytes)
    _check_key(checked, event.user_id, "user_id")
    _check_partition(checked, partition, settings)
    _check_skew(event.ts, "ts", wall_now, settings)
    return event


def admit_consent(
    key: bytes | None, partition: int, raw: bytes | None, settings: Settings, wall_now: float
) -> ConsentUpdate | None:
    """A ``consent`` record that may be applied; None for a tombstone (the user asks for erasure).

    Same checks as :func:`admit_event`; a tombstone needs a key that is a valid user id, on its
    partition.
    """
    checked = _require_key(key)
    if raw is None:
        _check_tombstone_key(checked)
        _check_partition(checked, partition, settings)
        return None
    update = parse_consent(raw, settings.worker.max_event_bytes)
    _check_key(checked, update.user_id, "user_id")
    _check_partition(checked, partition, settings)
    _check_skew(update.ts, "ts", wall_now, settings)
    return update


def admit_catalog(
    key: bytes | None, partition: int, raw: bytes | None, settings: Settings, wall_now: float
) -> CatalogUpdate | None:
    """A ``catalog`` record that may be applied; None for a tombstone (the item is gone).

    Checks a key (no partition check: every worker reads the whole catalog), the value, the key
    against ``item_id``, then ``updated_at`` against ``wall_now``. ``partition`` is unused and kept
    so that the three entry points take the same arguments.
    """
    del partition
    checked = _require_key(key)
    if raw is None:
        _check_tombstone_key(checked)
        return None
    update = parse_catalog(raw, settings.worker.max_event_bytes)
    _check_key(checked, update.item_id, "item_id")
    _check_skew(update.updated_at, "updated_at", wall_now, settings)
    return update
