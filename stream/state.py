"""Per-user state kept in the RocksDB store: the GRU session embedding and what the rules need.

A :class:`UserState` is encoded as a small binary record: a two-byte version tag, the length of a
header holding the bounded lists, the header, then the hidden state as raw float32. It changes only
through the functions here (advance, remember, record), so its transitions are unit-testable
without a broker.

Versions: ``K3`` (written) has a MessagePack header laid out by typed msgspec Structs
(``stream.record_rows.UserRecordHeader``): the record decodes straight into the objects a batch
works with (recent items, engagement rows, push records) and encodes from them, in C. ``K2`` (still
read) had a MessagePack header of plain maps and lists, ``K1`` (still read) the same header as compact
JSON: both are decoded into dicts and converted, so a store or changelog written before keeps working.
A record is written once per user per batch and read once per batch (``docs/architecture.md``).
"""

from __future__ import annotations

import json
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from stream.engagement import legacy_dict, legacy_record
from stream.policy import UserPolicyState
from stream.record_rows import EngagementRecord, RecentItem, UserRecordHeader

__all__ = ["RecentItem", "UserState", "expiry_clock"]

_MAGIC = b"K3"  # the version written
_MAGIC_MAPS = b"K2"  # earlier, read only: the same header as plain MessagePack maps and lists
_MAGIC_JSON = b"K1"  # earlier, read only: that header as JSON
_HEADER = struct.Struct(">2sI")
_FLOAT32 = np.dtype(np.float32)


def _plain(value: object) -> object:
    """A float subclass (numpy's float64 from a score) as the plain float JSON wrote it as."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a user record")


_PACK = msgspec.msgpack.Encoder(enc_hook=_plain)
_UNPACK_HEADER = msgspec.msgpack.Decoder(UserRecordHeader)
_UNPACK_MAPS = msgspec.msgpack.Decoder()


def expiry_clock(n_events: Any, last_event_ts: Any, opted_in: Any, consent_ts: Any) -> float | None:
    """When a user's inactive-record expiry counts from, or None for a record that must be kept.

    A user with events: their last event. A record with consent only (the user never acted): the
    consent's time when it is an opt-in, which may be forgotten like any inactive user (consent then
    falls back to ``policy.consent_default``, which never pushes more than the opt-in allowed); an
    opt-out is never forgotten.
    """
    if n_events > 0:
        return float(last_event_ts)
    if opted_in is True and consent_ts is not None:
        return float(consent_ts)
    return None


@dataclass(init=False, slots=True)
class UserState:
    """Everything Kairos remembers about one user (bounded)."""

    hidden: np.ndarray | None = None  # GRU hidden state (H,) float32; None before the first item event
    model_version: str = ""  # the model that produced ``hidden``
    last_event_ts: float = 0.0
    last_decision_ts: float = 0.0  # event time of the last in-session decision (they are rate-limited)
    session_id: str | None = None
    n_events: int = 0
    recent: list[RecentItem] = field(default_factory=list)  # the model's input history (bounded)
    event_ids: deque[str] = field(default_factory=deque)
    # The stored engagement (stream.engagement.Engagement.to_record()): filled by a save, read by a load.
    engagement: EngagementRecord = field(default_factory=EngagementRecord)
    timers: list[list[Any]] = field(default_factory=list)  # stream.timers.Timer.to_list() rows
    policy: UserPolicyState = field(default_factory=UserPolicyState)

    def __init__(
        self,
        hidden: np.ndarray | None = None,
        model_version: str = "",
        last_event_ts: float = 0.0,
        last_decision_ts: float = 0.0,
        session_id: str | None = None,
        n_events: int = 0,
        recent: list[RecentItem] | None = None,
        event_ids: deque[str] | None = None,
        engagement: EngagementRecord | None = None,
        timers: list[list[Any]] | None = None,
        policy: UserPolicyState | None = None,
    ) -> None:
        self.hidden = hidden
        self.model_version = model_version
        self.last_event_ts = last_event_ts
        self.last_decision_ts = last_decision_ts
        self.session_id = session_id
        self.n_events = n_events
        self.recent = [] if recent is None else recent
        self.event_ids = deque() if event_ids is None else event_ids
        self.engagement = EngagementRecord() if engagement is None else engagement
        self.timers = [] if timers is None else timers
        self.policy = UserPolicyState() if policy is None else policy

    def expiry_clock(self) -> float | None:
        """When the inactive-user expiry counts from, or None for a record that must be kept
        (:func:`expiry_clock`)."""
        return expiry_clock(self.n_events, self.last_event_ts, self.policy.opted_in, self.policy.consent_ts)

    # -- transitions --------------------------------------------------------------------------

    def seen(self, event_id: str) -> bool:
        """Whether this event id was already applied (a redelivery)."""
        return event_id in self.event_ids

    def remember_event(self, event_id: str, ts: float, keep: int) -> None:
        """Mark an event as applied; keeps only the last ``keep`` ids."""
        self.event_ids.append(event_id)
        while len(self.event_ids) > keep:
            self.event_ids.popleft()
        self.n_events += 1
        self.last_event_ts = max(self.last_event_ts, ts)

    def remember_item(
        self, item_id: str, event_type: str, ts: float, session_id: str | None, keep: int
    ) -> None:
        """Append to the recent items, keeping the last ``keep``."""
        self.recent.append(RecentItem(item_id, event_type, ts, session_id))
        if len(self.recent) > keep:
            del self.recent[: len(self.recent) - keep]

    # -- encoding -----------------------------------------------------------------------------

    def to_bytes(self, version: int = 3) -> bytes:
        """Compact binary encoding for RocksDB and the changelog: ``K3``, or ``K2`` (``version`` 2) for a
        fleet that may still hand a partition to a worker that reads only ``K2``
        (``worker.user_record_version``)."""
        if version == 2:
            magic, head = _MAGIC_MAPS, _PACK.encode(self._maps_header())
        else:
            header = UserRecordHeader(
                self.model_version,
                self.last_event_ts,
                self.last_decision_ts,
                self.session_id,
                self.n_events,
                self.recent,
                list(self.event_ids),
                self.engagement,
                self.timers,
                self.policy.to_record(),
            )
            magic, head = _MAGIC, _PACK.encode(header)
        body = b"" if self.hidden is None else np.ascontiguousarray(self.hidden, dtype=np.float32).tobytes()
        return _HEADER.pack(magic, len(head)) + head + body

    def _maps_header(self) -> dict[str, Any]:
        """The ``K2`` header: the same values as plain MessagePack maps and lists."""
        return {
            "mv": self.model_version,
            "ts": self.last_event_ts,
            "dt": self.last_decision_ts,
            "sid": self.session_id,
            "n": self.n_events,
            "r": [[r.item_id, r.type, r.ts, r.session_id] for r in self.recent],
            "e": list(self.event_ids),
            "g": legacy_dict(self.engagement),
            "t": self.timers,
            "p": self.policy.to_dict(),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Decode :meth:`to_bytes` output (or a ``K2``/``K1`` record); raise ``ValueError`` otherwise."""
        if len(data) < _HEADER.size:
            raise ValueError("user state record too short")
        magic, n = _HEADER.unpack_from(data)
        if magic != _MAGIC and magic != _MAGIC_MAPS and magic != _MAGIC_JSON:
            raise ValueError(f"unknown user state encoding {magic!r}")
        start = _HEADER.size
        body = start + n
        try:
            # Read-only, over the record's bytes (no copy): a hidden state is replaced, never changed.
            # (Positional arguments and a dtype object: numpy's keyword parsing cost twice the view itself.)
            hidden = np.frombuffer(data, _FLOAT32, -1, body) if len(data) > body else None
            raw = data[start:body]
            if magic != _MAGIC:
                return _legacy(_UNPACK_MAPS.decode(raw) if magic == _MAGIC_MAPS else json.loads(raw), hidden)
            header = _UNPACK_HEADER.decode(raw)
            return UserState(  # not cls(): a compiled call, where cls() goes through type()
                hidden,
                header.model_version,
                header.last_event_ts,
                header.last_decision_ts,
                header.session_id,
                header.n_events,
                header.recent,
                deque(header.event_ids),
                header.engagement,
                header.timers,
                UserPolicyState.from_record(header.policy),
            )
        except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:  # JSONDecodeError: a ValueError
            raise ValueError(f"malformed user state record: {type(exc).__name__}: {exc}") from exc


def _legacy(header: dict[str, Any], hidden: np.ndarray | None) -> UserState:
    """A ``K2``/``K1`` record's header (plain maps and lists) as a :class:`UserState`."""
    return UserState(
        hidden=hidden,
        model_version=header["mv"],
        last_event_ts=header["ts"],
        last_decision_ts=header["dt"],
        session_id=header["sid"],
        n_events=header["n"],
        recent=[RecentItem(i, t, ts, sid) for i, t, ts, sid in header["r"]],
        event_ids=deque(header["e"]),
        engagement=legacy_record(header["g"]),
        timers=header["t"],
        policy=UserPolicyState.from_dict(header["p"]),
    )
