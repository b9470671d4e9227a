"""The wire contract: strict validation, bounded refusal reasons, dead letters and push ids."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest

from stream.contract import (
    DEAD_LETTER_REASONS,
    EVENT_TYPES,
    CatalogUpdate,
    ConsentUpdate,
    ContractError,
    Event,
    Promotion,
    Push,
    dead_letter,
    parse_catalog,
    parse_consent,
    parse_event,
    push_id,
    to_json_bytes,
)

T0 = 1_717_236_000.0  # 2024-06-01 10:00:00 UTC


def event(**fields: Any) -> dict[str, Any]:
    """A valid view event as a JSON-able dict, with ``fields`` replaced (None removes a field)."""
    base: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": T0}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def raw(data: Any) -> bytes:
    return json.dumps(data).encode("utf-8")


def refused(raw_bytes: bytes | None, **kwargs: Any) -> ContractError:
    with pytest.raises(ContractError) as info:
        parse_event(raw_bytes, **kwargs)
    assert info.value.reason in DEAD_LETTER_REASONS
    return info.value


# -- event types and item rules -----------------------------------------------------------------


@pytest.mark.parametrize("kind", [t for t in EVENT_TYPES if t != "search"])
def test_item_events_need_an_item_id(kind: str) -> None:
    parsed = parse_event(raw(event(type=kind)))
    assert parsed.type == kind and parsed.item_id == "i1"
    err = refused(raw(event(type=kind, item_id=None)))
    assert err.reason == "invalid_field"
    assert f"a {kind} event needs an item_id" in err.detail


def test_search_carries_no_item_id() -> None:
    parsed = parse_event(raw(event(type="search", item_id=None, query="red shoes")))
    assert parsed.item_id is None and parsed.query == "red shoes"
    err = refused(raw(event(type="search", query="red shoes")))
    assert err.reason == "invalid_field" and "carries no item_id" in err.detail


def test_unknown_event_type_is_refused() -> None:
    assert refused(raw(event(type="wishlist"))).reason == "invalid_field"


def test_version_defaults_to_1_and_others_are_unsupported() -> None:
    assert parse_event(raw(event())).v == 1
    assert parse_event(raw(event(v=1))).v == 1
    for version in (2, 0, "1"):
        err = refused(raw(event(v=version)))
        assert err.reason == "unsupported_version"


# -- strictness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"ts": str(T0)},  # no "12" for 12
        {"price": "12.5"},
        {"quantity": "2"},
        {"quantity": 2.0},  # strict int
        {"quantity": True},
        {"event_id": 17},  # ids are strings
        {"user_id": ""},  # ids are never empty
        {"item_id": "x" * 129},  # ids are bounded
        {"price": -1.0},
        {"quantity": 0},
        {"colour": "red"},  # unknown fields are refused
        {"context": {"device": "ios", "mood": "happy"}},
    ],
)
def test_strict_fields(fields: dict[str, Any]) -> None:
    assert refused(raw(event(**fields))).reason == "invalid_field"


def test_numbers_parse_when_typed_right() -> None:
    parsed = parse_event(raw(event(type="purchase", price=12.5, quantity=2, session_id="s1")))
    assert parsed.price == 12.5 and parsed.quantity == 2 and parsed.session_id == "s1"
    # JSON integers are fine for float fields (no information is lost).
    assert parse_event(raw(event(ts=int(T0)))).ts == T0


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["ts", "price"])
def test_non_finite_numbers_are_refused(token: str, field: str) -> None:
    # Python's json module accepts these tokens, so the contract must refuse them itself.
    text = json.dumps(event(**{field: "__number__"})).replace('"__number__"', token)
    assert not math.isfinite(json.loads(text)[field])
    err = refused(text.encode())
    assert err.reason == "invalid_field" and field in err.detail


def test_ts_bounds() -> None:
    assert parse_event(raw(event(ts=946_684_800.0))).ts == 946_684_800.0  # 2000-01-01, inclusive
    assert refused(raw(event(ts=946_684_799.9))).reason == "invalid_field"
    assert parse_event(raw(event(ts=4_102_444_799.0))).ts == 4_102_444_799.0
    assert refused(raw(event(ts=4_102_444_800.0))).reason == "invalid_field"  # 2100-01-01, exclusive
    # Milliseconds by mistake are far beyond 2100.
    assert refused(raw(event(ts=T0 * 1000))).reason == "invalid_field"


def test_time_zone_validation() -> None:
    ok = parse_event(raw(event(context={"time_zone": "Europe/Paris", "device": "ios", "locale": "fr-FR"})))
    assert ok.context is not None and ok.context.time_zone == "Europe/Paris"
    for zone in ("Mars/Olympus", "../../etc/passwd", ""):
        err = refused(raw(event(context={"time_zone": zone})))
        assert err.reason == "invalid_field", zone


# -- refusal reasons before validation ----------------------------------------------------------


def test_size_limit() -> None:
    data = raw(event(query=None))
    assert parse_event(data, max_bytes=len(data)).event_id == "e1"
    err = refused(data, max_bytes=len(data) - 1)
    assert err.reason == "oversized" and str(len(data)) in err.detail


def test_not_utf8() -> None:
    err = refused(b'{"event_id": "\xff\xfe"}')
    assert err.reason == "not_utf8" and "byte 14" in err.detail


@pytest.mark.parametrize("data", [b"", b"{", b"{'a': 1}", b"not json", None])
def test_bad_json(data: bytes | None) -> None:
    assert refused(data).reason == "bad_json"


@pytest.mark.parametrize("data", [b"[]", b"42", b'"text"', b"null", b"true"])
def test_not_an_object(data: bytes) -> None:
    assert refused(data).reason == "not_an_object"


def test_reasons_are_the_bounded_set() -> None:
    assert set(DEAD_LETTER_REASONS) == {
        "oversized",
        "not_utf8",
        "bad_json",
        "not_an_object",
        "invalid_field",
        "unsupported_version",
        "key_mismatch",
        "processing_error",
    }
    err = ContractError("bad_json", "x")
    assert isinstance(err, ValueError) and str(err) == "bad_json: x"


def test_detail_is_summarised() -> None:
    # Many errors: the detail names the first five fields and counts the rest.
    bad = {f"extra_{i}": i for i in range(8)}
    err = refused(raw(event(**bad)))
    assert err.detail.count("Extra inputs are not permitted") == 5
    assert err.detail.endswith("and 3 more")


# -- other messages -----------------------------------------------------------------------------


def test_catalog_and_consent_parse_strictly() -> None:
    promo = {"promotion_id": "p1", "discount": 0.2, "starts_at": T0, "ends_at": T0 + 3600}
    entry = {
        "item_id": "i1",
        "title": "Shoe",
        "category": "shoes",
        "price": 100.0,
        "stock": 3,
        "promotion": promo,
        "updated_at": T0,
    }
    parsed = parse_catalog(raw(entry))
    assert parsed.effective_price(T0 + 1) == pytest.approx(80.0)
    assert parsed.effective_price(T0 + 3600) == 100.0  # ends_at is exclusive
    with pytest.raises(ContractError) as info:
        parse_catalog(raw({**entry, "stock": -1}))
    assert info.value.reason == "invalid_field"
    with pytest.raises(ContractError):
        parse_catalog(raw({**entry, "promotion": {**promo, "ends_at": T0}}))  # ends before it starts
    with pytest.raises(ContractError):
        parse_catalog(raw({**entry, "promotion": {**promo, "discount": 1.0}}))

    consent = parse_consent(raw({"user_id": "u1", "opted_in": False, "ts": T0}))
    assert consent.opted_in is False
    with pytest.raises(ContractError) as info:
        parse_consent(raw({"user_id": "u1", "opted_in": "false", "ts": T0}))
    assert info.value.reason == "invalid_field"


# -- dead letters -------------------------------------------------------------------------------


def test_dead_letter_keeps_utf8_bytes_exactly() -> None:
    original = '{"event_id": "é", "ts": "soon"}  \n'.encode()
    err = refused(original)
    letter = dead_letter(original, b"u1", err, "events", 3, 42, received_at=T0)
    assert letter.original_encoding == "utf-8"
    assert letter.original_bytes() == original
    assert letter.original_key == "u1"
    assert (letter.source_topic, letter.partition, letter.offset) == ("events", 3, 42)
    assert letter.reason == "invalid_field" and letter.error == err.detail
    assert letter.received_at == T0
    # The dead letter itself goes on the wire and comes back identical.
    back = type(letter).model_validate_json(to_json_bytes(letter))
    assert back == letter and back.original_bytes() == original


def test_dead_letter_keeps_binary_bytes_as_base64() -> None:
    original = bytes(range(256))
    err = refused(original)
    assert err.reason == "not_utf8"
    letter = dead_letter(original, b"\xffkey", err, "events", 0, 7)
    assert letter.original_encoding == "base64"
    assert base64.b64decode(letter.original) == original
    assert letter.original_bytes() == original
    assert letter.original_key == "\\xffkey"  # a binary key stays readable
    assert letter.received_at > T0  # wall time when not given


def test_dead_letter_of_a_missing_value_and_key() -> None:
    err = refused(None)
    letter = dead_letter(None, None, err, "consent", 1, 0, received_at=T0)
    assert letter.original == "" and letter.original_bytes() == b""
    assert letter.original_key is None and letter.reason == "bad_json"


# -- push ids and serialisation ------------------------------------------------------------------


def test_push_id_is_deterministic_and_sensitive_to_each_argument() -> None:
    args = ("u1", "i1", "in_session", "e1")
    first = push_id(*args)
    assert first == push_id(*args)
    assert len(first) == 24 and int(first, 16) >= 0
    for i in range(4):
        changed = list(args)
        changed[i] += "x"
        assert push_id(*changed) != first, i
    # The separator keeps field boundaries: moving a character across fields changes the id.
    assert push_id("u1", "i1", "in_session", "e1") != push_id("u1i", "1", "in_session", "e1")


def test_push_round_trip() -> None:
    push = Push(
        push_id=push_id("u1", "i1", "price_drop", "i1@1.000"),
        user_id="u1",
        item_id="i1",
        trigger="price_drop",
        reason="The price dropped",
        features={"interest": 0.4, "previous_price": 100.0},
        score=0.4,
        threshold=0.3,
        model_version="m1",
        event_ts=T0,
        created_at=T0,
        expires_at=T0 + 3600,
        promotion_id=None,
        title="Shoe",
        category="shoes",
        price=80.0,
    )
    wire = to_json_bytes(push)
    assert b"promotion_id" not in wire  # None fields are left out
    assert Push.model_validate_json(wire) == push


def test_catalog_and_consent_round_trip() -> None:
    entry = CatalogUpdate(
        item_id="i1",
        title="Shoe",
        category="shoes",
        price=99.5,
        stock=0,
        promotion=Promotion(promotion_id="p1", discount=0.25, starts_at=T0, ends_at=T0 + 60),
        updated_at=T0,
    )
    assert parse_catalog(to_json_bytes(entry)) == entry
    consent = ConsentUpdate(user_id="u1", opted_in=True, ts=T0)
    assert parse_consent(to_json_bytes(consent)) == consent
    ev = Event(event_id="e1", user_id="u1", type="search", ts=T0, query="socks", push_id=None)
    assert parse_event(to_json_bytes(ev)) == ev


def test_models_are_frozen() -> None:
    ev = parse_event(raw(event()))
    with pytest.raises(ValueError):
        ev.ts = math.pi  # type: ignore[misc]
