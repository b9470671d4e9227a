"""Test doubles for the engine: a dict-backed state store, a deterministic scorer and builders.

The fake scorer is enough here because the engine tests check bookkeeping (one step per event,
dedupe, sessions, triggers, policy wiring); the real model is covered by ``tests/model`` and the
integration tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.contract import CatalogUpdate, to_json_bytes
from stream.engine import Engine, Inbound, Scorer, StateAccess
from stream.partitioning import partition_for
from stream.policy_config import PolicyConfig
from stream.settings import Settings, TopicsConfig, WorkerConfig
from stream.state import UserState

T0 = 1_717_236_000.0  # 2024-06-01 10:00:00 UTC
PARTITIONS = 4
ITEMS = ("i1", "i2", "i3", "i4", "i5")


class DictState(StateAccess):
    """The engine's ``StateAccess`` over a plain dict, counting the writes.

    It subclasses the engine's interface classes only so that type checkers see the match.
    """

    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes] = {}
        self.puts = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored record or None."""
        return self.data.get((partition, key))

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Store a record (None deletes)."""
        self.puts += 1
        if value is None:
            self.data.pop((partition, key), None)
        else:
            self.data[(partition, key)] = value

    def user(self, user_id: str) -> UserState:
        """The decoded state of a user (it must exist)."""
        raw = self.get(partition_for(user_id, PARTITIONS), user_id.encode())
        assert raw is not None, f"no state for {user_id}"
        return UserState.from_bytes(raw)


def fake_step(hidden: np.ndarray, item: int, event_type: int, gain: float, decay: float) -> np.ndarray:
    """One step of the fake model on one state (H,): what :class:`FakeScorer` does per row.

    Every known item's coordinate decays, the stepped item's grows by ``gain * (1 + type)`` and the
    last coordinate counts steps; an unknown item (-1) leaves the state unchanged.
    """
    out = hidden.astype(np.float32).copy()
    if item < 0:
        return out
    out[:-1] *= np.float32(decay)
    out[item] += np.float32(gain * (1 + event_type))
    out[-1] += np.float32(1.0)
    return out


class FakeScorer(Scorer):
    """A deterministic numpy scorer implementing the engine's ``Scorer`` protocol.

    Interest in an item is ``h / (1 + h)`` of its coordinate ``h``: one view gives 0.5, a second view
    right after 0.6, an add_to_cart 2/3. ``prior`` adds a fixed amount to an item's coordinate when
    scoring (a popular item every user has some interest in). ``calls``/``rows`` count what ``step``
    was asked to do (rows of known items: the engine pads every call to a fixed size).
    """

    def __init__(
        self,
        items: Sequence[str] = ITEMS,
        version: str = "fake-1",
        gain: float = 1.0,
        decay: float = 0.5,
        prior: dict[str, float] | None = None,
    ) -> None:
        self.items = list(items)
        self.index = {item: i for i, item in enumerate(self.items)}
        self.version = version
        self.hidden_size = len(self.items) + 1
        self.gain = gain
        self.decay = decay
        self.prior = np.zeros(len(self.items), dtype=np.float32)
        for item, value in (prior or {}).items():
            self.prior[self.index[item]] = value
        self.calls = 0
        self.rows = 0

    def initial_state(self, n: int) -> np.ndarray:
        """Zero states (n, H)."""
        return np.zeros((n, self.hidden_size), dtype=np.float32)

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Indices of the items, -1 for unknown ones."""
        return np.array([self.index.get(i, -1) for i in item_ids], dtype=np.int64)

    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray:
        """One step per row."""
        assert states.shape == (len(items), self.hidden_size)
        self.calls += 1
        self.rows += int((items >= 0).sum())  # the engine pads each call with unknown items (-1)
        return np.stack(
            [
                fake_step(states[r], int(items[r]), int(event_types[r]), self.gain, self.decay)
                for r in range(len(items))
            ]
        )

    def _coordinates(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        safe = np.clip(candidates, 0, None)
        return np.take_along_axis(states[:, :-1], safe, axis=1) + self.prior[safe]

    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Raw scores: the candidate's coordinate (plus its prior); -inf for -1."""
        h = self._coordinates(states, candidates)
        return np.where(candidates >= 0, h, -np.inf).astype(np.float32)

    def interest(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``h / (1 + h)`` of the candidate's coordinate (plus its prior); 0 for -1."""
        h = np.maximum(self._coordinates(states, candidates), 0.0)
        return np.where(candidates >= 0, h / (1.0 + h), 0.0).astype(np.float32)

    def fold(self, steps: Sequence[tuple[str, int]]) -> np.ndarray:
        """The state after stepping (item, type index) pairs one by one from the initial state."""
        hidden = self.initial_state(1)[0]
        for item, event_type in steps:
            hidden = fake_step(hidden, self.index.get(item, -1), event_type, self.gain, self.decay)
        return hidden


def make_settings(worker: dict[str, Any] | None = None, **policy: Any) -> Settings:
    """Settings for engine tests: holdout off, quiet hours off, active rule, session end and reminders
    off, event-time clock, threshold 0.55.

    ``policy`` overrides policy fields, ``worker`` worker fields; the environment is not read.
    """
    values: dict[str, Any] = {
        "holdout_share": 0.0,
        "quiet_hours_start": "00:00",
        "quiet_hours_end": "00:00",  # equal: no quiet hours
        "threshold": 0.55,
        "trigger_thresholds": {},
        # The in-session mechanics these tests exercise: the production defaults (no push to an
        # active shopper; session-end decisions) are switched on by the tests about them.
        "active_window_seconds": 0.0,
        "session_end_seconds": 0.0,
        "reminder_seconds": 0.0,
    }
    values.update(policy)
    worker_values: dict[str, Any] = {"clock": "event"}
    worker_values.update(worker or {})
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        topics=TopicsConfig.model_validate({"partitions": PARTITIONS}),
        worker=WorkerConfig.model_validate(worker_values),
        policy=PolicyConfig.model_validate(values),
    )


def catalog_entry(
    item_id: str, price: float = 100.0, stock: int = 10, updated_at: float = T0 - 3600
) -> CatalogUpdate:
    """A catalog entry; each item has its own category (so the per-category cap stays out of the way)."""
    return CatalogUpdate(
        item_id=item_id,
        title=f"Item {item_id}",
        category=f"cat-{item_id}",
        price=price,
        stock=stock,
        updated_at=updated_at,
    )


def make_engine(
    settings: Settings | None = None, scorer: FakeScorer | None = None, items: Sequence[str] = ITEMS
) -> Engine:
    """An engine owning every partition, with a catalog entry for each item (read as the worker's
    start-up bootstrap: a view, no changes to announce)."""
    engine = Engine(settings or make_settings(), scorer or FakeScorer(), clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    records = [catalog_record(catalog_entry(i)) for i in items]
    out = engine.apply_catalog(records, DictState(), announce=False)
    assert out.catalog_updates == len(items) and not out.pushes
    return engine


def event_bytes(
    event_id: str,
    user_id: str,
    event_type: str,
    item_id: str | None,
    ts: float,
    session_id: str | None = "s1",
    **extra: Any,
) -> bytes:
    """An ``events`` message as it arrives on the wire."""
    data: dict[str, Any] = {"event_id": event_id, "user_id": user_id, "type": event_type, "ts": ts}
    if item_id is not None:
        data["item_id"] = item_id
    if session_id is not None:
        data["session_id"] = session_id
    data.update(extra)
    return json.dumps(data).encode()


_offsets: dict[str, int] = {}


def record(value: bytes | None, user_id: str, topic: str = "events", key: bytes | None = None) -> Inbound:
    """An inbound record on the user's partition, keyed by the user (or ``key``)."""
    offset = _offsets.get(topic, 0)
    _offsets[topic] = offset + 1
    return Inbound(
        topic, partition_for(user_id, PARTITIONS), offset, user_id.encode() if key is None else key, value
    )


def consent(user: str, opted_in: bool, ts: float) -> Inbound:
    """A consent record of ``user`` on their partition."""
    value = b'{"user_id": "%s", "opted_in": %s, "ts": %f}' % (
        user.encode(),
        b"true" if opted_in else b"false",
        ts,
    )
    return record(value, user, "consent")


def ev(
    event_id: str,
    user_id: str,
    event_type: str,
    item_id: str | None,
    ts: float,
    session_id: str | None = "s1",
    **extra: Any,
) -> Inbound:
    """An inbound event record."""
    return record(event_bytes(event_id, user_id, event_type, item_id, ts, session_id, **extra), user_id)


def catalog_record(entry: CatalogUpdate) -> Inbound:
    """An inbound catalog record keyed by item."""
    return Inbound("catalog", 0, 0, entry.item_id.encode(), to_json_bytes(entry))


class PartitionView:
    """One partition of a :class:`DictState`, read like ``stream.store.PartitionStore`` (sorted keys)."""

    def __init__(self, store: DictState, partition: int) -> None:
        self._rows = sorted((k, v) for (p, k), v in store.data.items() if p == partition)

    def items(self) -> list[tuple[bytes, bytes]]:
        """User records."""
        return [(k, v) for k, v in self._rows if not k.startswith(b"\x00")]

    def partition_rows(self) -> list[tuple[bytes, bytes]]:
        """The partition's shared rows."""
        return [(k, v) for k, v in self._rows if k.startswith(b"\x00")]
