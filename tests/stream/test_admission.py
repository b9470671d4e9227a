"""Admission: keys, partitions, clock skew and tombstones, alone and through the engine."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from stream.admission import admit_catalog, admit_consent, admit_event
from stream.contract import DEAD_LETTER_REASONS, ContractError, to_json_bytes
from stream.dead_letters import dead_letter_size_bound
from stream.engine import Inbound
from stream.partitioning import partition_for
from stream.settings import Settings
from tests.stream.fakes import (
    PARTITIONS,
    T0,
    DictState,
    catalog_entry,
    catalog_record,
    ev,
    event_bytes,
    make_engine,
    make_settings,
    record,
)

WALL = T0 + 3600.0  # the wall clock the pure checks are given


def settings(**worker: Any) -> Settings:
    return make_settings(worker=worker)


def other_partition(key: bytes) -> int:
    return (partition_for(key, PARTITIONS) + 1) % PARTITIONS


def event_raw(user: str = "u1", ts: float = T0, **extra: Any) -> bytes:
    return event_bytes("e1", user, "view", "i1", ts, **extra)


def consent_raw(user: str = "u1", ts: float = T0) -> bytes:
    return json.dumps({"user_id": user, "opted_in": False, "ts": ts}).encode()


def catalog_raw(item: str = "i1", updated_at: float = T0) -> bytes:
    return to_json_bytes(catalog_entry(item, updated_at=updated_at))


def reason_of(call: Any, *args: Any) -> str:
    with pytest.raises(ContractError) as info:
        call(*args)
    assert info.value.reason in DEAD_LETTER_REASONS
    return info.value.reason


def home(key: bytes) -> int:
    return partition_for(key, PARTITIONS)


# -- the pure checks ------------------------------------------------------------------------------


def test_valid_records_are_admitted() -> None:
    s = settings()
    assert admit_event(b"u1", home(b"u1"), event_raw(), s, WALL).user_id == "u1"
    update = admit_consent(b"u1", home(b"u1"), consent_raw(), s, WALL)
    assert update is not None and update.opted_in is False
    item = admit_catalog(b"i1", 0, catalog_raw(), s, WALL)
    assert item is not None and item.item_id == "i1"


def test_records_without_a_key_are_refused() -> None:
    # Observed: a keyless event was accepted on whatever partition it landed on (state split in two).
    s = settings()
    for p in range(PARTITIONS):
        assert reason_of(admit_event, None, p, event_raw(), s, WALL) == "no_key"
        assert reason_of(admit_consent, None, p, consent_raw(), s, WALL) == "no_key"
        assert reason_of(admit_consent, None, p, None, s, WALL) == "no_key"
    assert reason_of(admit_catalog, None, 0, catalog_raw(), s, WALL) == "no_key"
    assert reason_of(admit_catalog, None, 0, None, s, WALL) == "no_key"


def test_records_off_their_keys_partition_are_refused() -> None:
    # Observed: events produced with another partitioner (kcat's default) were accepted: one user's
    # state split over two partitions, two pushes 50 s apart, a re-sent event_id applied twice.
    s = settings()
    for user in ("u1", "u2", "alice", "\U0001f600"):
        key = user.encode()
        for p in range(PARTITIONS):
            if p == home(key):
                continue
            assert reason_of(admit_event, key, p, event_raw(user), s, WALL) == "wrong_partition"
            assert reason_of(admit_consent, key, p, consent_raw(user), s, WALL) == "wrong_partition"
            assert reason_of(admit_consent, key, p, None, s, WALL) == "wrong_partition"
    # The catalog is read whole by every worker: its partition does not matter.
    assert admit_catalog(b"i1", 5, catalog_raw(), s, WALL) is not None


def test_the_partition_count_comes_from_the_settings() -> None:
    s = make_settings()
    s.topics.partitions = 12
    key = b"u1"
    assert admit_event(key, partition_for(key, 12), event_raw(), s, WALL).user_id == "u1"
    if partition_for(key, 12) != partition_for(key, PARTITIONS):
        assert reason_of(admit_event, key, partition_for(key, PARTITIONS), event_raw(), s, WALL) == (
            "wrong_partition"
        )


def test_key_mismatch() -> None:
    s = settings()
    assert reason_of(admit_event, b"u2", home(b"u2"), event_raw("u1"), s, WALL) == "key_mismatch"
    assert reason_of(admit_consent, b"u2", home(b"u2"), consent_raw("u1"), s, WALL) == "key_mismatch"
    assert reason_of(admit_catalog, b"i2", 0, catalog_raw("i1"), s, WALL) == "key_mismatch"
    # A key is compared as bytes: the UTF-8 of the id.
    assert reason_of(admit_event, b"\xffu1", home(b"\xffu1"), event_raw("u1"), s, WALL) == "key_mismatch"


def test_huge_keys_are_refused_without_hashing_them() -> None:
    s = settings()
    key = b"u" * 1_000_000
    started = time.perf_counter()
    assert reason_of(admit_event, key, 0, event_raw(), s, WALL) == "key_mismatch"
    assert reason_of(admit_consent, key, 0, None, s, WALL) == "key_mismatch"
    assert reason_of(admit_catalog, key, 0, None, s, WALL) == "key_mismatch"
    assert time.perf_counter() - started < 0.05  # murmur2 of 1 MB in Python takes far longer


def test_checks_run_in_order_key_value_mismatch_partition() -> None:
    s = settings()
    wrong = other_partition(b"u1")
    assert reason_of(admit_event, None, wrong, b"\xff", s, WALL) == "no_key"
    assert reason_of(admit_event, b"u1", wrong, b"[" * 10_000, s, WALL) == "bad_json"
    # Keyed by another user and off the user's partition: the key is what is wrong.
    assert reason_of(admit_event, b"u2", wrong, event_raw("u1"), s, WALL) == "key_mismatch"


@pytest.mark.parametrize("skew", [300.0, 60.0])
def test_future_times_beyond_the_skew_are_refused(skew: float) -> None:
    # Observed: one event a day ahead (a phone with a wrong clock) moved the worker-wide clock.
    s = settings(max_future_skew_seconds=skew)
    key, p = b"u1", home(b"u1")
    assert admit_event(key, p, event_raw(ts=WALL + skew), s, WALL).ts == WALL + skew  # at the limit: fine
    assert reason_of(admit_event, key, p, event_raw(ts=WALL + skew + 1), s, WALL) == "future_timestamp"
    assert reason_of(admit_event, key, p, event_raw(ts=WALL + 86_400), s, WALL) == "future_timestamp"
    assert admit_consent(key, p, consent_raw(ts=WALL + skew), s, WALL) is not None
    assert reason_of(admit_consent, key, p, consent_raw(ts=WALL + skew + 1), s, WALL) == "future_timestamp"
    assert admit_catalog(b"i1", 0, catalog_raw(updated_at=WALL + skew), s, WALL) is not None
    assert reason_of(admit_catalog, b"i1", 0, catalog_raw(updated_at=WALL + skew + 1), s, WALL) == (
        "future_timestamp"
    )
    # The past is never refused for being old (replays).
    assert admit_event(key, p, event_raw(ts=946_684_800.0), s, WALL).ts == 946_684_800.0


def test_the_skew_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIROS_WORKER__MAX_FUTURE_SKEW_SECONDS", "5")
    monkeypatch.setenv("KAIROS_WORKER__DEAD_LETTER_MAX_ORIGINAL_BYTES", "100")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.worker.max_future_skew_seconds == 5.0 and s.worker.dead_letter_max_original_bytes == 100
    monkeypatch.setenv("KAIROS_WORKER__DEAD_LETTER_MAX_ORIGINAL_BYTES", "10000000")
    with pytest.raises(ValueError):
        Settings(_env_file=None)  # type: ignore[call-arg]  # beyond the limit that keeps letters small


def test_tombstones() -> None:
    s = settings()
    assert admit_consent(b"u1", home(b"u1"), None, s, WALL) is None
    assert admit_catalog(b"i1", 0, None, s, WALL) is None
    # A tombstone's key must be a valid id: the bookkeeping key of the state store is not one.
    for key in (b"\x00meta", b"\xff\xfe", b"", b"x" * 129):
        assert reason_of(admit_consent, key, home(key), None, s, WALL) == "key_mismatch"
        assert reason_of(admit_catalog, key, 0, None, s, WALL) == "key_mismatch"
    # Events have no tombstones.
    assert reason_of(admit_event, b"u1", home(b"u1"), None, s, WALL) == "bad_json"


# -- through the engine ---------------------------------------------------------------------------


def test_engine_dead_letters_wrong_partitions_and_missing_keys() -> None:
    engine, store = make_engine(), DictState()
    good = ev("e1", "u1", "view", "i1", T0)
    moved = Inbound("events", other_partition(b"u1"), 7, b"u1", event_bytes("e2", "u1", "view", "i2", T0 + 1))
    keyless = Inbound("events", home(b"u1"), 8, None, event_bytes("e3", "u1", "view", "i3", T0 + 2))
    out = engine.process([good, moved, keyless], store)
    assert [d.reason for d in out.dead_letters] == ["wrong_partition", "no_key"]
    assert [d.offset for d in out.dead_letters] == [7, 8]
    assert store.user("u1").n_events == 1  # only the event on the right partition counted
    assert out.events[("view", "processed")] == 1


def test_engine_future_events_do_not_move_the_clock() -> None:
    engine, store = make_engine(), DictState()
    engine.process([ev("e1", "u1", "view", "i1", T0)], store)
    ahead = time.time() + 86_400  # a phone a day ahead
    # On u1's own partition: the one clock such an event could have moved.
    p = home(b"u1")
    far = Inbound("events", p, 9, b"u1", event_bytes("e2", "u1", "view", "i1", ahead))
    out = engine.process([far], store)
    assert [d.reason for d in out.dead_letters] == ["future_timestamp"]
    assert engine.part(p).watermark == T0 and engine.now(p) == T0


def test_engine_gives_tombstones_their_meaning_without_dead_letters() -> None:
    engine, store = make_engine(), DictState()
    tomb = record(None, "u1", topic="consent")
    out = engine.process([tomb], store)
    assert not out.dead_letters and out.consent_updates == 0 and out.erasures == 1
    assert store.get(home(b"u1"), b"u1") is None
    cat = engine.apply_catalog([Inbound("catalog", 0, 3, b"i1", None)], store)
    assert not cat.dead_letters and cat.catalog_updates == 0 and cat.catalog_removals == 1
    assert "i1" not in engine.catalog
    keyless = engine.apply_catalog([Inbound("catalog", 0, 4, None, None)], store)
    assert [d.reason for d in keyless.dead_letters] == ["no_key"]


@pytest.mark.parametrize(
    "value",
    [b"[" * 10_000, b'{"price": ' + b"1" * 5_000 + b"}", b'{"item_id": "\\ud800"}'],
    ids=["deep", "big-int", "surrogate"],
)
def test_engine_catalog_poison_is_a_dead_letter(value: bytes) -> None:
    # Observed: these escaped the JSON error handling in the catalog timer and stopped the worker,
    # which crash-looped as the catalog is re-read from offset 0 at every start.
    engine, store = make_engine(), DictState()
    out = engine.apply_catalog(
        [Inbound("catalog", 0, 1, b"i1", value), catalog_record(catalog_entry("i9"))], store
    )
    assert [d.reason for d in out.dead_letters] == ["bad_json"]
    assert "i9" in engine.catalog


def test_engine_dead_letters_are_bounded_by_the_setting() -> None:
    engine, store = make_engine(settings(dead_letter_max_original_bytes=1_000)), DictState()
    value = b"\x01" * 170_000
    out = engine.process([Inbound("events", home(b"u1"), 1, b"u1", value)], store)
    (letter,) = out.dead_letters
    assert letter.reason == "oversized" and letter.original_size == 170_000
    assert len(letter.original_bytes()) == 1_000
    assert len(to_json_bytes(letter)) <= dead_letter_size_bound(1_000)
