"""UserState: transitions (dedupe window, recent items) and the binary encoding."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from stream.contract import Push
from stream.encoding import compact_json
from stream.engagement import Engagement
from stream.policy import HeldPush, PushRecord, UserPolicyState
from stream.record_rows import EngagedItem, EngagementRecord
from stream.state import RecentItem, UserState
from stream.state_load import load_facts
from stream.timers import Timer

T0 = 1_717_236_000.0


def full_state(hidden: np.ndarray | None) -> UserState:
    """A state with every field set to something other than its default."""
    state = UserState(
        hidden=hidden,
        model_version="m7",
        last_decision_ts=T0 + 5,
        session_id="s1",
    )
    for i in range(3):
        state.remember_event(f"e{i}", T0 + i, keep=64)
        state.remember_item(f"i{i}", "view", T0 + i, "s1", keep=20)
    state.engagement = EngagementRecord(
        T0 + 2, {"i0": EngagedItem(1, 0, False, False, T0), "i1": EngagedItem(0, 1, True, False, T0 + 1)}
    )
    state.timers = [Timer(T0 + 1800, "u1", "cart_abandonment", "i1", "e1", T0 + 1).to_list()]
    held = Push(
        push_id="p2",
        user_id="u1",
        item_id="i2",
        trigger="in_session",
        reason="You viewed this",
        score=0.7,
        threshold=0.5,
        model_version="m7",
        event_ts=T0,
        created_at=T0,
        expires_at=T0 + 3600,
    )
    state.policy = UserPolicyState(
        opted_in=True,
        consent_ts=T0 - 10,
        time_zone="Europe/Berlin",
        pushes=[PushRecord("p1", "i0", "shoes", "in_session", T0 - 100, T0 + 3500, opened_at=T0 - 50)],
        held=[HeldPush(held, T0 + 600)],
        responsiveness=-0.02,
        responsiveness_ts=T0 - 50,
    )
    return state


def assert_same(a: UserState, b: UserState) -> None:
    if a.hidden is None:
        assert b.hidden is None
    else:
        assert b.hidden is not None and b.hidden.dtype == np.float32
        np.testing.assert_array_equal(a.hidden, b.hidden)
    for name in ("model_version", "last_event_ts", "last_decision_ts", "session_id", "n_events"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.recent == b.recent
    assert list(a.event_ids) == list(b.event_ids)
    assert a.engagement == b.engagement
    assert a.timers == b.timers
    assert a.policy == b.policy


def test_round_trip_with_hidden_state_policy_timers_engagement() -> None:
    hidden = np.linspace(-1.0, 1.0, 16, dtype=np.float32)
    state = full_state(hidden)
    back = UserState.from_bytes(state.to_bytes())
    assert_same(state, back)
    assert back.policy.held[0].push.push_id == "p2"
    assert Timer.from_list(back.timers[0]).due_at == T0 + 1800
    # Encoding is stable: the decoded state encodes to the same bytes.
    assert back.to_bytes() == state.to_bytes()


def test_round_trip_without_hidden_state() -> None:
    state = full_state(None)
    back = UserState.from_bytes(state.to_bytes())
    assert back.hidden is None
    assert_same(state, back)
    empty = UserState()
    assert_same(empty, UserState.from_bytes(empty.to_bytes()))


def test_hidden_state_is_stored_as_float32_and_decoded_read_only() -> None:
    """The decoded hidden state views the record's bytes (no copy): a step replaces it, nothing may
    change it in place (a record kept warm between batches shares it; stream.warm_users)."""
    state = UserState(hidden=np.array([0.1, 0.2], dtype=np.float64))
    back = UserState.from_bytes(state.to_bytes())
    assert back.hidden is not None and back.hidden.dtype == np.float32
    np.testing.assert_allclose(back.hidden, [0.1, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        back.hidden[0] = 5.0


def test_dedupe_window_is_bounded() -> None:
    state = UserState()
    for i in range(5):
        assert not state.seen(f"e{i}")
        state.remember_event(f"e{i}", T0 + i, keep=3)
    assert list(state.event_ids) == ["e2", "e3", "e4"]
    assert state.seen("e4") and state.seen("e2")
    assert not state.seen("e1")  # fell out of the window
    assert state.n_events == 5
    assert state.last_event_ts == T0 + 4
    state.remember_event("late", T0 - 100, keep=3)  # out of order: the last event time does not go back
    assert state.last_event_ts == T0 + 4


def test_recent_items_are_bounded() -> None:
    state = UserState()
    for i in range(7):
        state.remember_item(f"i{i}", "view", T0 + i, "s1", keep=4)
    assert [r.item_id for r in state.recent] == ["i3", "i4", "i5", "i6"]
    assert state.recent[-1] == RecentItem("i6", "view", T0 + 6, "s1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"K1",
        b"XX\x00\x00\x00\x02{}",  # unknown magic
        b'K1\x00\x00\x00\x05{"mv"',  # truncated JSON header
        b"K1\x00\x00\x00\x02\xff}",  # header not UTF-8
    ],
)
def test_corrupt_record_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        UserState.from_bytes(data)


@pytest.mark.parametrize("header", [b"{}", b"[]"])
def test_well_formed_json_header_of_the_wrong_shape_raises_value_error(header: bytes) -> None:
    data = b"K1" + len(header).to_bytes(4, "big") + header
    with pytest.raises(ValueError):
        UserState.from_bytes(data)


def test_corrupt_hidden_body_raises_value_error() -> None:
    good = UserState(hidden=np.ones(4, dtype=np.float32)).to_bytes()
    with pytest.raises(ValueError):
        UserState.from_bytes(good[:-1])  # 15 bytes of float32 data


def _legacy_header(state: UserState) -> dict[str, object]:
    """The header of the record as the versions before ``K3`` wrote it (plain maps and lists)."""
    engagement = Engagement.from_record(
        msgspec.structs.replace(state.engagement, items=dict(state.engagement.items))
    )
    return {
        "mv": state.model_version,
        "ts": state.last_event_ts,
        "dt": state.last_decision_ts,
        "sid": state.session_id,
        "n": state.n_events,
        "r": [[r.item_id, r.type, r.ts, r.session_id] for r in state.recent],
        "e": list(state.event_ids),
        "g": engagement.to_dict(),
        "t": state.timers,
        "p": state.policy.to_dict(),
    }


def _k1(state: UserState) -> bytes:
    """The record as the first version (``K1``, a compact JSON header) wrote it."""
    head = compact_json(_legacy_header(state))
    body = b"" if state.hidden is None else state.hidden.astype(np.float32).tobytes()
    return b"K1" + len(head).to_bytes(4, "big") + head + body


def _k2(state: UserState) -> bytes:
    """The record as the second version (``K2``, a MessagePack header of maps and lists) wrote it."""
    head = msgspec.msgpack.encode(_legacy_header(state))
    body = b"" if state.hidden is None else state.hidden.astype(np.float32).tobytes()
    return b"K2" + len(head).to_bytes(4, "big") + head + body


@pytest.mark.parametrize("hidden", [None, np.linspace(-1.0, 1.0, 16, dtype=np.float32)])
@pytest.mark.parametrize("encode", [_k1, _k2])
def test_records_of_earlier_versions_still_decode_to_the_same_state(
    hidden: np.ndarray | None, encode: object
) -> None:
    state = full_state(hidden)
    old = encode(state)  # type: ignore[operator]
    assert old[:2] in (b"K1", b"K2")
    assert_same(UserState.from_bytes(old), UserState.from_bytes(state.to_bytes()))
    assert_same(UserState.from_bytes(old), state)
    # Re-written in the current version, with the same bytes as the state written directly.
    new = UserState.from_bytes(old).to_bytes()
    assert new[:2] == b"K3" and new == state.to_bytes()


@pytest.mark.parametrize("state", [full_state(None), full_state(np.ones(4, dtype=np.float32)), UserState()])
def test_records_for_older_workers_are_what_they_wrote(state: UserState) -> None:
    """``to_bytes(2)`` (``worker.user_record_version``, a fleet in a rolling deploy) writes the ``K2`` bytes
    an older worker wrote, which decode to the same state."""
    old = state.to_bytes(2)
    assert old == _k2(state)
    assert_same(UserState.from_bytes(old), state)


def test_the_current_version_is_smaller_than_the_json_one() -> None:
    """Timestamps are 9 bytes, not 18 characters."""
    state = full_state(None)
    assert len(state.to_bytes()) < len(_k1(state))


def test_a_numpy_float_in_a_record_is_stored_as_a_plain_float() -> None:
    state = full_state(None)
    state.policy.responsiveness = np.float64(0.25)  # type: ignore[assignment]
    back = UserState.from_bytes(state.to_bytes())
    assert back.policy.responsiveness == 0.25 and type(back.policy.responsiveness) is float


@pytest.mark.parametrize(
    "header",
    [
        b"\x80",  # an empty map
        b"\x90",  # an empty array
        b"\x8a\xa2mv",  # a map of 10 cut after its first key
        b"\xc1",  # a byte MessagePack never uses
    ],
)
@pytest.mark.parametrize("magic", [b"K2", b"K3"])
def test_corrupt_messagepack_header_raises_value_error(header: bytes, magic: bytes) -> None:
    with pytest.raises(ValueError):
        UserState.from_bytes(magic + len(header).to_bytes(4, "big") + header)


def _variants() -> list[UserState]:
    """Records whose expiry clocks differ: events, consent only (in and out), none, timers or not."""
    with_events = full_state(np.ones(8, dtype=np.float32))
    opted_in = UserState(policy=UserPolicyState(opted_in=True, consent_ts=T0 - 5))
    opted_out = UserState(policy=UserPolicyState(opted_in=False, consent_ts=T0 - 5))
    undated = UserState(policy=UserPolicyState(opted_in=True))
    timers_only = UserState(timers=[Timer(T0 + 60, "u2", "session_end", "i1", "e9", T0).to_list()])
    return [with_events, full_state(None), opted_in, opted_out, undated, timers_only, UserState()]


@pytest.mark.parametrize("state", _variants())
@pytest.mark.parametrize("encode", [UserState.to_bytes, _k2, _k1])
def test_load_facts_read_what_the_full_decode_gives(state: UserState, encode: object) -> None:
    """A partition load reads only timers and the expiry clock (stream.partition_state): the same values."""
    data = encode(state)  # type: ignore[operator]
    full = UserState.from_bytes(data)
    facts = load_facts(data)
    assert facts.timers == full.timers
    assert facts.expiry_clock == full.expiry_clock()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"K2",
        b"XX\x00\x00\x00\x02{}",
        b"K2\x00\x00\x00\x01\x80",  # an empty map: every field missing
        b"K2\x00\x00\x00\x01\xc1",  # a byte MessagePack never uses
        b"K3",
        b"K3\x00\x00\x00\x01\x90",  # an empty array: every field missing
        b"K3\x00\x00\x00\x01\x80",  # a map where the header is an array
        b"K3\x00\x00\x00\x01\xc1",
        b"K1\x00\x00\x00\x02{}",
    ],
)
def test_load_facts_of_a_damaged_record_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        load_facts(data)


def test_load_facts_refuse_what_the_full_decode_refuses_in_the_fields_they_read() -> None:
    good = full_state(np.ones(4, dtype=np.float32)).to_bytes()
    with pytest.raises(ValueError):
        load_facts(good[:-1])  # 15 bytes of float32 data
    state = full_state(None)
    state.n_events = "many"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        load_facts(state.to_bytes())
    header = msgspec.msgpack.encode({"n": 1, "ts": T0, "t": [], "p": {}})  # mv, dt, sid, r, e, g missing
    with pytest.raises(ValueError):
        load_facts(b"K2" + len(header).to_bytes(4, "big") + header)
    with pytest.raises(ValueError):
        UserState.from_bytes(b"K2" + len(header).to_bytes(4, "big") + header)
    state = full_state(None)
    state.policy.opted_in = "yes"  # type: ignore[assignment]
    for read in (load_facts, UserState.from_bytes):
        with pytest.raises(ValueError):
            read(state.to_bytes())
    short = msgspec.msgpack.encode(["m", T0, T0, None, 1, [], [], {}, []])  # K3 without its policy
    for read in (load_facts, UserState.from_bytes):
        with pytest.raises(ValueError):
            read(b"K3" + len(short).to_bytes(4, "big") + short)
