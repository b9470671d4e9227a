"""The wire contract: strict validation, bounded refusal reasons, dead letters and push ids."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.contract import (
    DEAD_LETTER_REASONS,
    EVENT_TYPES,
    CatalogUpdate,
    ConsentUpdate,
    ContractError,
    Event,
    Promotion,
    Push,
    parse_catalog,
    parse_consent,
    parse_event,
    push_id,
    to_json_bytes,
)
from stream.dead_letters import (
    DEAD_LETTER_KEY_BYTES,
    DEFAULT_DEAD_LETTER_ORIGINAL_BYTES,
    MAX_DEAD_LETTER_ORIGINAL_BYTES,
    DeadLetter,
    dead_letter,
    dead_letter_size_bound,
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
        "no_key",
        "wrong_partition",
        "future_timestamp",
        "processing_error",
        "catalog_full",
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


# -- poison input: every decoding failure is a ContractError ------------------------------------

PARSERS = [parse_event, parse_consent, parse_catalog]
PRODUCER_LIMIT = 1_000_000  # librdkafka's default message.max.bytes (key and value together)


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "data",
    [
        b"[" * 10_000,  # RecursionError inside the decoder
        b"{" * 5_000,
        b'{"a": ' * 2_000,
        b'{"v": ' + b"1" * 5_000 + b"}",  # an integer past Python's 4,300-digit limit: ValueError
        b"1" * 4_301,
        b'{"stock": -' + b"9" * 4_400 + b"}",
    ],
    ids=["brackets", "braces", "objects", "big-version", "big-int", "big-negative"],
)
def test_undecodable_json_is_bad_json(parse: Any, data: bytes) -> None:
    with pytest.raises(ContractError) as info:
        parse(data)
    assert info.value.reason == "bad_json"


@pytest.mark.parametrize("parse", PARSERS)
def test_a_big_but_legal_integer_is_an_invalid_field(parse: Any) -> None:
    with pytest.raises(ContractError) as info:
        parse(b'{"ts": ' + b"9" * 4_000 + b"}")
    assert info.value.reason == "invalid_field"


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "\\udbff x", "\\ude00\\ud83d"])
def test_lone_surrogates_are_refused(escape: str) -> None:
    # The JSON decoder turns these escapes into lone surrogates, which cannot be encoded as UTF-8 later
    # (state keys, changelog, pushes): refuse them at the door, wherever they are.
    for field in ("user_id", "query"):
        data = json.dumps(event(type="search", item_id=None, query="q")).replace(
            '"q"' if field == "query" else '"u1"', f'"{escape}"'
        )
        err = refused(data.encode())
        assert err.reason == "bad_json" and "surrogate" in err.detail
    err = refused(b'{"\\ud800": 1}')  # in a key too
    assert err.reason == "bad_json"


def test_paired_surrogates_are_a_character() -> None:
    parsed = parse_event(
        json.dumps(event(type="search", item_id=None, query="\U0001f600 socks")).encode()  # \\ud83d\\ude00
    )
    assert parsed.query == "\U0001f600 socks"
    # A literal backslash followed by "ud800" is not an escape.
    assert parse_event(raw(event(type="search", item_id=None, query="\\ud800"))).query == "\\ud800"


@pytest.mark.parametrize("user_id", ["\u0000meta", "\x00", "u\n1", "u\x7f", "u\x9f", "\tu"])
def test_ids_refuse_control_characters(user_id: str) -> None:
    # "\u0000meta" would be the state store's bookkeeping key: it broke the next changelog replay.
    err = refused(raw(event(user_id=user_id)))
    assert err.reason == "invalid_field" and "control characters" in err.detail
    for field in ("event_id", "item_id", "session_id", "push_id"):
        assert refused(raw(event(**{field: user_id}))).reason == "invalid_field"
    with pytest.raises(ContractError):
        parse_consent(raw({"user_id": user_id, "opted_in": True, "ts": T0}))
    with pytest.raises(ContractError):
        parse_catalog(
            raw(
                {
                    "item_id": user_id,
                    "title": "t",
                    "category": "c",
                    "price": 1.0,
                    "stock": 1,
                    "updated_at": T0,
                }
            )
        )


def test_ids_keep_other_characters() -> None:
    for user_id in ("u 1", "ü-ß", "\U0001f600", "meta\x00"[:-1], "a/b:c"):
        assert parse_event(raw(event(user_id=user_id))).user_id == user_id


@pytest.mark.parametrize("zone", ["Europe", "America", "right", "zone.tab", "Europe/", "a\x00b"])
def test_time_zones_that_are_folders_or_files_are_invalid_fields(zone: str) -> None:
    # ZoneInfo("Europe") raises IsADirectoryError, which pydantic does not turn into a ValidationError.
    assert refused(raw(event(context={"time_zone": zone}))).reason == "invalid_field"


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "right/UTC", "posix/Europe/Berlin"])
def test_host_dependent_time_zones_are_invalid_fields(zone: str) -> None:
    # The host's own zone, a leap-second clock, copies of the zones: their meaning depends on the host
    # (and "localtime" on its configuration), so two workers could place one event at different local
    # hours. Zones come from the pinned tzdata package only (stream/__init__.py).
    assert refused(raw(event(context={"time_zone": zone}))).reason == "invalid_field"


def test_zones_come_from_the_pinned_tzdata_package() -> None:
    import zoneinfo

    import tzdata

    assert zoneinfo.TZPATH == ()
    assert tzdata.IANA_VERSION and "Europe/Berlin" in zoneinfo.available_timezones()


def test_unsupported_version_detail_is_short() -> None:
    for version in ["x" * 10_000, [[[[1]]]], {"a": 1}, 10**300, 2.5, True, 1.0]:
        err = refused(raw(event(v=version)))
        assert err.reason == "unsupported_version" and len(err.detail) < 120, version


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _encodable(message: Any) -> None:
    """Whatever is accepted can be written as UTF-8 again (keys, state, pushes need that)."""
    json.dumps(message.model_dump(), ensure_ascii=False).encode("utf-8")
    to_json_bytes(message)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_parse_or_raise_a_contract_error(data: bytes) -> None:
    for parse in PARSERS:
        try:
            message = parse(data)
        except ContractError as exc:
            assert exc.reason in DEAD_LETTER_REASONS
        else:
            _encodable(message)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    fields=st.dictionaries(
        st.sampled_from(["event_id", "user_id", "type", "item_id", "ts", "session_id", "query", "v", "x"]),
        json_values,
        max_size=6,
    ),
    surrogate=st.sampled_from(["", "\\ud800", "\\udc00", "\\ud83d\\ude00"]),
)
def test_near_valid_events_parse_or_raise_a_contract_error(fields: dict[str, Any], surrogate: str) -> None:
    text = json.dumps({**event(type="search", item_id=None, query="@"), **fields}).replace("@", surrogate)
    try:
        message = parse_event(text.encode())
    except ContractError as exc:
        assert exc.reason in DEAD_LETTER_REASONS
    else:
        _encodable(message)


# -- dead letters always fit the broker -----------------------------------------------------------


def _wire_size(letter: DeadLetter) -> int:
    """Value plus Kafka key, as the worker produces a dead letter (key: the kept original key)."""
    key = letter.original_key.encode("utf-8") if letter.original_key else b""
    return len(to_json_bytes(letter)) + len(key)


def test_a_170kb_binary_event_gives_a_dead_letter_the_producer_accepts() -> None:
    # Observed: 170 KB of control bytes (valid UTF-8) was kept as JSON-escaped text, ~1 MB, and the
    # producer refused it (MSG_SIZE_TOO_LARGE): the worker exited and crash-looped on redelivery.
    original = bytes(b % 32 for b in random.Random(3).randbytes(170_000))
    err = refused(original)
    letter = dead_letter(original, b"u1", err, "events", 2, 9, received_at=T0)
    assert _wire_size(letter) <= dead_letter_size_bound() < 150_000
    assert letter.original_truncated and not letter.is_complete()
    assert letter.original_size == 170_000
    assert letter.original_sha256 == hashlib.sha256(original).hexdigest()
    kept = letter.original_bytes()
    assert len(kept) == DEFAULT_DEAD_LETTER_ORIGINAL_BYTES and original.startswith(kept)
    assert letter.original_encoding == "base64"  # control characters would escape six-fold
    assert DeadLetter.model_validate_json(to_json_bytes(letter)) == letter


def test_small_control_character_values_are_kept_exactly_as_base64() -> None:
    original = b'{"event_id": "\x00\x01\x02\x03\x04"}'
    letter = dead_letter(original, None, refused(original), "events", 0, 1)
    assert letter.original_encoding == "base64" and letter.is_complete()
    assert letter.original_bytes() == original and letter.original_size == len(original)


def test_truncation_keeps_whole_characters() -> None:
    original = ("é" * 100).encode()  # two bytes a character
    letter = dead_letter(
        original, None, ContractError("oversized", "x"), "events", 0, 1, max_original_bytes=51
    )
    assert letter.original_encoding == "utf-8" and letter.original == "é" * 25
    assert letter.original_truncated and letter.original_size == 200
    assert original.startswith(letter.original_bytes())


def test_original_up_to_the_limit_is_kept_whole() -> None:
    original = b'{"a": "' + b"x" * 93 + b'"}'
    assert len(original) == 102
    whole = dead_letter(
        original, b"k", ContractError("bad_json", "x"), "events", 0, 1, max_original_bytes=102
    )
    assert whole.is_complete() and whole.original_bytes() == original
    cut = dead_letter(original, b"k", ContractError("bad_json", "x"), "events", 0, 1, max_original_bytes=101)
    assert not cut.is_complete() and cut.original_bytes() == original[:101]
    empty = dead_letter(original, b"k", ContractError("bad_json", "x"), "events", 0, 1, max_original_bytes=0)
    assert empty.original == "" and empty.original_size == 102 and empty.original_truncated


def test_long_keys_keep_a_prefix_their_size_and_hash() -> None:
    key = b"user-" + b"x" * 1_000_000
    letter = dead_letter(b"{}", key, ContractError("key_mismatch", "x"), "events", 0, 1)
    assert letter.original_key == key[:DEAD_LETTER_KEY_BYTES].decode()
    assert letter.original_key_size == len(key)
    assert letter.original_key_sha256 == hashlib.sha256(key).hexdigest()
    short = dead_letter(b"{}", b"u1", ContractError("key_mismatch", "x"), "events", 0, 1)
    assert short.original_key == "u1" and short.original_key_size == 2 and short.original_key_sha256 is None


def test_error_text_is_bounded_and_encodable() -> None:
    letter = dead_letter(
        b"{}", None, ContractError("invalid_field", "\ud800" + "e" * 100_000), "events", 0, 1
    )
    assert len(letter.error) <= 1_024 and letter.error.startswith("\\ud800")
    to_json_bytes(letter)


def test_worst_cases_stay_far_below_the_producer_limit() -> None:
    bound = dead_letter_size_bound(MAX_DEAD_LETTER_ORIGINAL_BYTES)
    assert bound < PRODUCER_LIMIT // 1.5
    mb = 1_000_000
    worst_values = [
        b"\x00" * mb,
        b'"' * mb,
        b"\\" * mb,
        b"\xff" * mb,
        ("\U0001f600" * mb).encode()[:mb],
        b"e" * mb,
    ]
    worst_keys = [None, b"\x00" * mb, b"\xff" * mb, b"\x01\xff" * mb, b'"' * mb, ("é" * mb).encode()]
    worst_errors = ["\x00" * mb, "\U0001f600" * mb, "\ud800" * mb, '"' * mb]
    for limit in (DEFAULT_DEAD_LETTER_ORIGINAL_BYTES, MAX_DEAD_LETTER_ORIGINAL_BYTES):
        for value in worst_values:
            for key in worst_keys:
                for error in worst_errors:
                    letter = dead_letter(
                        value,
                        key,
                        ContractError("oversized", error),
                        "t" * 249,
                        2**31 - 1,
                        2**63 - 1,
                        received_at=1e300,
                        max_original_bytes=limit,
                    )
                    assert _wire_size(letter) <= dead_letter_size_bound(limit)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.none()
    | st.binary(max_size=3_000)
    | st.text(max_size=1_500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    key=st.none()
    | st.binary(max_size=600)
    | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    error=st.text(max_size=2_000),
    limit=st.integers(0, 2_000)
    | st.sampled_from([DEFAULT_DEAD_LETTER_ORIGINAL_BYTES, MAX_DEAD_LETTER_ORIGINAL_BYTES]),
    reason=st.sampled_from(DEAD_LETTER_REASONS),
)
def test_any_dead_letter_fits_its_bound_and_round_trips(
    value: bytes | None, key: bytes | None, error: str, limit: int, reason: Any
) -> None:
    letter = dead_letter(value, key, ContractError(reason, error), "events", 3, 7, max_original_bytes=limit)
    assert _wire_size(letter) <= dead_letter_size_bound(limit)
    back = DeadLetter.model_validate_json(to_json_bytes(letter))
    assert back == letter
    data = value or b""
    assert letter.original_size == len(data) and letter.original_sha256 == hashlib.sha256(data).hexdigest()
    kept = back.original_bytes()
    if letter.is_complete():
        assert kept == data
    else:
        assert data.startswith(kept) and len(data) > limit >= len(kept) >= limit - 3
    if key is not None:
        assert letter.original_key_size == len(key)
        assert (letter.original_key_sha256 is not None) == (len(key) > DEAD_LETTER_KEY_BYTES)
