"""What a partition load reads of a stored user record (its timers and expiry clock, nothing else),
and the error a partition's own row that does not decode raises.

Its own module because the decoder is a msgspec Struct and the error a subclass of a built-in
exception, which the native build cannot compile (``stream.native``), while :mod:`stream.state` and
:mod:`stream.partition_state` are compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from stream.state import _HEADER, _MAGIC, _MAGIC_MAPS, UserState, expiry_clock


class UnreadablePartitionRow(RuntimeError):
    """The partition's own row (clock, indexes' values, input offsets) does not decode."""


class _PolicyFacts(msgspec.Struct):
    """The consent fields of a record's policy map (``stream.record_rows.PolicyRecord``, the same keys as
    ``UserPolicyState.to_dict``); the rest is skipped."""

    c: Any = None
    ct: Any = None


class _ConsentFacts(msgspec.Struct):
    """The consent fields of a ``K3`` policy section, typed as :meth:`UserState.from_bytes` reads them."""

    c: bool | None = None
    ct: float | None = None


class _LoadHeader(msgspec.Struct, array_like=True):
    """A ``K3`` header (``stream.record_rows.UserRecordHeader``) as a partition load reads it: the fields
    it needs decoded, the others only required to be there (``msgspec.Raw`` is not decoded)."""

    model_version: msgspec.Raw
    last_event_ts: float
    last_decision_ts: msgspec.Raw
    session_id: msgspec.Raw
    n_events: int
    recent: msgspec.Raw
    event_ids: msgspec.Raw
    engagement: msgspec.Raw
    timers: list[list[Any]]
    policy: _ConsentFacts


class _LoadHeaderMaps(msgspec.Struct):
    """A ``K2`` header as a partition load reads it, like :class:`_LoadHeader`."""

    n: Any
    ts: Any
    t: Any
    p: _PolicyFacts
    mv: msgspec.Raw
    dt: msgspec.Raw
    sid: msgspec.Raw
    r: msgspec.Raw
    e: msgspec.Raw
    g: msgspec.Raw


_UNPACK_LOAD = msgspec.msgpack.Decoder(_LoadHeader)
_UNPACK_LOAD_MAPS = msgspec.msgpack.Decoder(_LoadHeaderMaps)


@dataclass(frozen=True, slots=True)
class LoadFacts:
    """What a partition load needs of a user record: its timers and its expiry clock."""

    timers: list[list[Any]]  # stream.timers.Timer.to_list() rows
    expiry_clock: float | None  # None: a record kept for good (an opt-out without events)


def load_facts(data: bytes) -> LoadFacts:
    """The timers and expiry clock of an encoded :class:`UserState`, without decoding the rest.

    A partition load reads every stored user (``stream.partition_state``); decoding only these
    fields is about ten times faster than :meth:`UserState.from_bytes`, which matters for a large
    partition's recovery and for its re-read after a failure. Raises ``ValueError`` where
    ``from_bytes`` would for the header's shape and the hidden state's length; damage inside the
    fields not decoded here (recent items, pushes) is found when the user is next read in full
    (``stream.engine.users.readable_record``). ``K1`` (JSON) records are decoded in full.
    """
    if len(data) < _HEADER.size:
        raise ValueError("user state record too short")
    magic, n = _HEADER.unpack_from(data)
    if magic != _MAGIC and magic != _MAGIC_MAPS:
        state = UserState.from_bytes(data)
        return LoadFacts(state.timers, state.expiry_clock())
    start = _HEADER.size
    if (len(data) - start - n) % 4:
        raise ValueError("malformed user state record: the hidden state is not float32")
    try:
        raw = memoryview(data)[start : start + n]
        if magic == _MAGIC:
            head = _UNPACK_LOAD.decode(raw)
            clock = expiry_clock(head.n_events, head.last_event_ts, head.policy.c, head.policy.ct)
            return LoadFacts(head.timers, clock)
        maps = _UNPACK_LOAD_MAPS.decode(raw)
        return LoadFacts(maps.t, expiry_clock(maps.n, maps.ts, maps.p.c, maps.p.ct))
    except (TypeError, ValueError, msgspec.DecodeError) as exc:  # ValidationError: a DecodeError
        raise ValueError(f"malformed user state record: {type(exc).__name__}: {exc}") from exc
