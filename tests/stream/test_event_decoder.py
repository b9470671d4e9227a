"""The events topic's fast decoder (msgspec) agrees with the contract's reference parser."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from stream.contract import ContractError, parse_event
from stream.event_decoder import ValidEvent, decode_event, plain_event

_PLAIN = {
    "v": 1,
    "event_id": "e1",
    "user_id": "u1",
    "type": "view",
    "item_id": "i1",
    "ts": 1_780_000_000.5,
    "session_id": "s1",
    "price": 22.5,
    "quantity": 2,
    "context": {"device": "ios", "locale": "de", "time_zone": "Europe/Berlin"},
}
_ODD_VALUES: list[Any] = [
    True, False, None, 0, 1, -1, 1.0, 0.5, 1e300, 10**30, "", "x", "1", [], {}, [1], {"a": 1}, "é", "日本",
    "\x01", "\u2028", 1_780_000_000, 946_684_800.0, 4_102_444_800.0, 1e9, 1e9 + 1, 10_000, 10_001, "search",
    "add_to_cart", "push_open", "Not/AZone", "a" * 129, "a" * 128,
]  # fmt: skip
_SPLICES = ["\x00", "\x1f", "\\", '"', "\ud800", "NaN", "Infinity", "-0", " ", "}", "{}"]


def _odd_event(rng: random.Random) -> bytes:
    """A plain event with fields dropped, swapped for odd values, duplicated, cut or spliced."""
    d: dict[str, Any] = {k: v for k, v in _PLAIN.items() if rng.random() >= 0.3}
    for _ in range(rng.randint(0, 3)):
        d[rng.choice([*_PLAIN, "query", "push_id", "extra", "V"])] = rng.choice(_ODD_VALUES)
    if rng.random() < 0.3:
        d["context"] = {rng.choice(["device", "locale", "time_zone", "v", "x"]): rng.choice(_ODD_VALUES)}
    text = json.dumps(d, ensure_ascii=rng.random() < 0.5, separators=rng.choice([(",", ":"), (", ", ": ")]))
    r = rng.random()
    if r < 0.1:
        text = rng.choice(['{"v":1.0,', '{"v":true,', '{"v":1,"v":1.0,', '{"v":1.0,"v":1,']) + text[1:]
    elif r < 0.15:
        text = text[: rng.randint(0, len(text))]
    elif r < 0.3:
        i = rng.randint(0, len(text))
        text = text[:i] + rng.choice(_SPLICES) + text[i:]
    elif r < 0.4 and text.endswith("}") and len(text) > 2:
        # A key sent twice: both parsers must read the same one (JSON leaves it to the reader).
        key = rng.choice([*_PLAIN, "query", "push_id"])
        again = json.dumps({key: rng.choice([*_ODD_VALUES, _PLAIN.get(key)])})[1:-1]
        text = text[:-1] + "," + again + "}"
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        data = b"\xef\xbb\xbf" + data
    return data


def _outcome(raw: bytes) -> dict[str, Any] | str:
    """The reference parser's event as plain fields, or its refusal's reason."""
    try:
        return parse_event(raw, 16_384).model_dump()
    except ContractError as exc:
        return exc.reason


def _fields(event: ValidEvent) -> dict[str, Any]:
    fields = msgspec.structs.asdict(event)
    if event.context is not None:
        fields["context"] = msgspec.structs.asdict(event.context)
    return fields


def _types(fields: dict[str, Any]) -> list[type]:
    return [type(v) for v in fields.values()]


def test_the_struct_agrees_with_the_reference_parser_on_odd_messages() -> None:
    """Whatever the struct accepts, the reference parser accepts with the same fields and types;
    the worker's decoder gives the same event or the same reason as the reference parser."""
    rng = random.Random(11)
    messages = [_odd_event(rng) for _ in range(20_000)]
    taken = accepted = 0
    for raw in messages:
        fast = plain_event(raw, 16_384)
        slow = _outcome(raw)
        if fast is not None:
            taken += 1
            assert isinstance(slow, dict) and _fields(fast) == slow, raw
            assert _types(_fields(fast)) == _types(slow), raw
        try:
            worker: dict[str, Any] | str = _fields(decode_event(raw))
        except ContractError as exc:
            worker = exc.reason
        assert worker == slow, raw
        accepted += isinstance(slow, dict)
    assert taken > 0.3 * accepted > 100  # the path is taken, and often


def test_a_plain_message_is_read_whole_and_an_odd_one_by_the_reference_parser() -> None:
    raw = (
        b'{"v":1,"event_id":"e1","user_id":"u1","type":"view","item_id":"i1","ts":1780000000,'
        b'"context":{"time_zone":"Europe/Berlin"}}'
    )
    event = plain_event(raw, 16_384)
    assert event is not None and event == ValidEvent.of(parse_event(raw))
    assert event.ts == 1_780_000_000.0 and type(event.ts) is float
    assert event.context is not None and event.context.time_zone == "Europe/Berlin"
    with pytest.raises(AttributeError):  # frozen
        event.user_id = "u2"  # type: ignore[misc]
    assert plain_event(raw.replace(b"Europe/Berlin", b"Not/AZone"), 16_384) is None
    c1_control = '"u1\u0085"'.encode()  # a raw C1 character: valid JSON, not a valid id
    assert plain_event(raw.replace(b'"u1"', c1_control), 16_384) is None
    escaped = raw.replace(b'"e1"', b'"e\\u0031"')  # an escape: the reference parser reads it
    assert plain_event(escaped, 16_384) is None and decode_event(escaped) == event


def test_control_characters_are_checked_on_the_raw_message() -> None:
    """DEL and C1 characters send a message to the reference parser: refused in an id, kept elsewhere."""
    raw = b'{"event_id":"e1","user_id":"u1","type":"search","ts":1780000000,"query":"q"}'
    assert plain_event(raw, 16_384) is not None
    for control in ("\x7f", "\x80", "\x9f"):
        in_id = raw.replace(b'"e1"', f'"e1{control}"'.encode())
        assert plain_event(in_id, 16_384) is None
        with pytest.raises(ContractError) as err:
            decode_event(in_id)
        assert err.value.reason == "invalid_field"
        in_query = raw.replace(b'"q"', f'"q{control}"'.encode())
        assert plain_event(in_query, 16_384) is None
        assert decode_event(in_query).query == f"q{control}"
    # Other characters whose UTF-8 holds the same bytes are plain: 0xC2 0xA0 (no-break space), 0xC3 0x80.
    for letter in ("\u00a0", "\u00c0", "\u0100"):
        assert plain_event(raw.replace(b'"q"', f'"q{letter}"'.encode()), 16_384) is not None


def test_a_version_the_fast_parser_would_read_as_1_is_refused_as_before() -> None:
    plain = b'"event_id":"e","user_id":"u","type":"view","item_id":"i","ts":1780000000}'
    for version in (b"1.0", b"true"):
        with pytest.raises(ContractError) as err:
            decode_event(b'{"v":' + version + b"," + plain)
        assert err.value.reason == "unsupported_version"
    with pytest.raises(ContractError) as err:
        decode_event(b'{"v":1,"v":1.0,' + plain)  # the last of duplicate keys counts, as in json.loads
    assert err.value.reason == "unsupported_version"
    assert decode_event(b'{"v":1,' + plain).user_id == "u"


def test_a_version_with_whitespace_around_it_is_read_by_the_fast_parser() -> None:
    """Most serializers write ``"v": 1, `` (Python's json.dumps by default): still the fast path."""
    plain = '"event_id":"e","user_id":"u","type":"view","item_id":"i","ts":1780000000'
    for version in ('"v": 1, ', '"v" :1 ,', '"v":\n\t1\r\n,'):
        raw = ("{" + version + plain + "}").encode()
        event = plain_event(raw, 16_384)
        assert event is not None and event == ValidEvent.of(parse_event(raw)), raw
    for other in ('"v": 1.0, ', '"v": 10, ', '"v": 1e0, ', '"v": "1", '):
        assert plain_event(("{" + other + plain + "}").encode(), 16_384) is None, other
    spaced = json.dumps({"v": 1, **json.loads("{" + plain + "}")}).encode()
    assert plain_event(spaced, 16_384) is not None
