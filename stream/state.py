"""Per-user state kept in the RocksDB store: the GRU session embedding and what the rules need.

A :class:`UserState` is encoded as a small binary record: a two-byte version tag, the length of a
header holding the bounded lists, the header, then the hidden state as raw float32. It changes only
through the functions here (advance, remember, record), so its transitions are unit-testable
without a broker.

Versions: ``K2`` (written) has a MessagePack header (msgspec); ``K1`` (still read, so a store or
changelog written before keeps working) had the same header as compact JSON. MessagePack carries the
same values (str keys, ints, floats bit for bit, lists) in fewer bytes (a float is 9 bytes, not up to
24 characters) and encodes and decodes several times faster; a record is written once per user per
batch and read once per batch.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from stream.policy import UserPolicyState

_MAGIC = b"K2"  # the version written
_MAGIC_JSON = b"K1"  # the earlier version, read only
_HEADER = struct.Struct(">2sI")


def _plain(value: object) -> object:
    """A float subclass (numpy's float64 from a score) as the plain float JSON wrote it as."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a user record")


_PACK = msgspec.msgpack.Encoder(enc_hook=_plain)
_UNPACK = msgspec.msgpack.Decoder()


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


@dataclass(slots=True)
class RecentItem:
    """An item the user touched: its id, the event type, when, in which session."""

    item_id: str
    type: str
    ts: float
    session_id: str | None


@dataclass(slots=True)
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
    engagement: dict[str, Any] = field(default_factory=dict)  # stream.engagement.Engagement.to_dict()
    timers: list[list[Any]] = field(default_factory=list)  # stream.timers.Timer.to_list() rows
    policy: UserPolicyState = field(default_factory=UserPolicyState)

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

    def to_bytes(self) -> bytes:
        """Compact binary encoding for RocksDB and the changelog."""
        header: dict[str, Any] = {
            "mv": self.model_version,
            "ts": self.last_event_ts,
            "dt": self.last_decision_ts,
            "sid": self.session_id,
            "n": self.n_events,
            "r": [[r.item_id, r.type, r.ts, r.session_id] for r in self.recent],
            "e": list(self.event_ids),
            "g": self.engagement,
            "t": self.timers,
            "p": self.policy.to_dict(),
        }
        head = _PACK.encode(header)
        body = b"" if self.hidden is None else np.ascontiguousarray(self.hidden, dtype=np.float32).tobytes()
        return _HEADER.pack(_MAGIC, len(head)) + head + body

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Decode :meth:`to_bytes` output; raise ``ValueError`` on anything else."""
        if len(data) < _HEADER.size:
            raise ValueError("user state record too short")
        magic, n = _HEADER.unpack_from(data)
        if magic != _MAGIC and magic != _MAGIC_JSON:
            raise ValueError(f"unknown user state encoding {magic!r}")
        start = _HEADER.size
        body = start + n
        try:
            raw = data[start:body]
            header = _UNPACK.decode(raw) if magic == _MAGIC else json.loads(raw)
            return cls(
                # Read-only, over the record's bytes (no copy): a hidden state is replaced, never changed.
                hidden=np.frombuffer(data, dtype=np.float32, offset=body) if len(data) > body else None,
                model_version=header["mv"],
                last_event_ts=header["ts"],
                last_decision_ts=header["dt"],
                session_id=header["sid"],
                n_events=header["n"],
                recent=[RecentItem(i, t, ts, sid) for i, t, ts, sid in header["r"]],
                event_ids=deque(header["e"]),
                engagement=header["g"],
                timers=header["t"],
                policy=UserPolicyState.from_dict(header["p"]),
            )
        except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:  # JSONDecodeError: a ValueError
            raise ValueError(f"malformed user state record: {type(exc).__name__}: {exc}") from exc
