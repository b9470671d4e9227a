"""What hostile input does to what Kairos writes out: pushes, their text, dead letters, the demo's
lines, the CLI's messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from stream import cli, text
from stream.contract import CatalogUpdate, ContractError, Id, to_json_bytes
from stream.dead_letters import DEAD_LETTER_ERROR_CHARS, dead_letter, dead_letter_size_bound
from stream.demo import _TopicTail
from stream.policy import Verdict, build_push
from stream.text import escaped, plain_text
from tests.policy.conftest import candidate, config
from tests.stream.fakes import T0, catalog_record, ev, make_settings, record
from tests.stream.test_new_arrival import NEW, ContentFakeScorer, same_partition_as, shop

# Categories and titles the contract accepts (any character, within the length limits).
HOSTILE = {
    "markup": "<script>alert(1)</script>{0} %s {user_id}",
    "line breaks": "Jackets\nPUSH 10:00:00Z u9 <- forged\r\nand\u2028more\u2029",
    "nul and escapes": "Jack\x00ets \x1b[2J\x1b]0;title\x07 \x85\x9b31m",
    "bidi": "Jackets \u202eexe.gpj\u202c \u2066x\u2069 \u200f",
    "zero width and emoji": "Ja\u200bck\u200dets \U0001f468\u200d\U0001f469\u200d\U0001f467",
}


def test_plain_text_makes_each_run_of_unsafe_characters_one_space() -> None:
    assert plain_text("a\r\n\x00b\x1b[31mc\u202ed\u2028e") == "a b [31mc d e"
    kept = "<b>{0}</b> %s J\u00e4cke \u200b\u200d\U0001f468\u200d\U0001f469 \u0627\u0644"
    assert plain_text(kept) == kept  # markup, accents, zero-width, emoji, right-to-left letters


def test_escaped_text_is_one_line_that_utf8_can_write_even_with_a_lone_surrogate() -> None:
    text = escaped("id\n\x1b[2J\u202e\ud800x")
    assert text == "id\\x0a\\x1b[2J\\u202e\\ud800x"
    text.encode("utf-8")  # a log handler drops a line it cannot encode
    assert plain_text("a\udfffb") == "a b"


def test_every_character_set_is_defined_once_in_stream_text_and_the_id_rule_is_as_strict_as_before() -> None:
    assert set(text.UNSAFE) == {
        *text.CONTROLS, *text.LINE_SEPARATORS, *text.BIDI_CONTROLS, *text.LONE_SURROGATES
    }  # fmt: skip
    # The contract's rule, as it was written before it moved here: C0, DEL and C1, not a character less.
    before = re.compile(r"[\x00-\x1f\x7f-\x9f]")
    id_rule = TypeAdapter(Id)
    for c in (*range(0x00, 0x3000), 0xFEFF, 0x1F600):
        refused = before.search(chr(c)) is not None
        assert (c in text.ID_FORBIDDEN) == refused
        assert (text.ID_FORBIDDEN_CHARACTER.search(f"a{chr(c)}b") is not None) == refused
        if refused:
            with pytest.raises(ValidationError):
                id_rule.validate_python(f"u{chr(c)}")
        # The event decoder's raw-bytes form: the same characters, but C0 (escaped in any JSON).
        found = text.ID_FORBIDDEN_RAW_UTF8.search(f"a{chr(c)}b".encode()) is not None
        assert found == (refused and c >= 0x20)
        if found:  # its fast path looks for these two bytes before running the pattern
            assert chr(c).encode()[0] in (0x7F, 0xC2)
    # Kept valid on purpose (stream.text.ID_FORBIDDEN says why): bidi marks and line separators.
    for c in (*text.BIDI_CONTROLS, *text.LINE_SEPARATORS):
        assert id_rule.validate_python(f"u{chr(c)}") == f"u{chr(c)}"
    # A collapse key goes out as is only when it is visible ASCII (stream.text.VISIBLE_ASCII).
    assert "".join(map(chr, text.VISIBLE_ASCII)) == "".join(chr(c) for c in range(0x21, 0x7F))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_push_reason_is_one_line_of_plain_text_whatever_the_catalog_holds(name: str) -> None:
    text = HOSTILE[name]
    engine, store = shop(ContentFakeScorer({NEW: ["i1", "i2"]}))
    fan, other = "u1", same_partition_as("u1", 1)[0]
    engine.process([ev("e1", fan, "view", "i1", T0), ev("e2", other, "view", "i3", T0 + 1)], store)
    item = CatalogUpdate(item_id=NEW, title=text, category=text, price=120.0, stock=5, updated_at=T0 + 300)
    engine.apply_catalog([catalog_record(item)], store)
    out = engine.process([ev("e3", other, "view", "i3", T0 + 400)], store)
    [push] = [p for _, p in out.pushes if p.trigger == "new_arrival"]
    assert push.reason == f"New in: like the {plain_text(text.lower())} you looked at"
    assert plain_text(push.reason) == push.reason  # nothing left that breaks a line or reorders it
    # The catalog's facts stay verbatim (documented: escape them for your medium); the JSON holds.
    assert (push.title, push.category) == (text, text)
    assert json.loads(to_json_bytes(push))["reason"] == push.reason


def test_a_push_stays_under_16_kib_with_every_string_at_its_contract_limit() -> None:
    # Each string as long as the contract allows and as costly as JSON can make it.
    hostile = candidate(
        "\\" * 128,  # two bytes each in JSON
        trigger="new_arrival",
        category="\x01" * 128,  # six bytes each (\u0001)
        title="\x01" * 512,
        promotion_id="\U0001f600" * 128,  # four bytes each in UTF-8
        cause="e" * 128,
    )
    worst = config(collapse_key_template="{category}{category}{item_id}{user_id}")
    push = build_push('"' * 128, hostile, Verdict("emit", "ok"), T0, worst, "gru-20260101-abcdef")
    raw = to_json_bytes(push)
    assert len(raw) < 16_384
    assert json.loads(raw)["title"] == "\x01" * 512


def test_a_dead_letter_error_quoting_a_hostile_field_name_is_one_line_of_plain_text() -> None:
    engine, store = shop(ContentFakeScorer({}))
    name = "ev\nil\x1b[31m\u202e\x00" + "x" * 5000
    raw = json.dumps(
        {"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": T0, name: 1},
        ensure_ascii=False,
    ).encode()
    out = engine.process([record(raw, "u1")], store)
    [letter] = out.dead_letters
    assert letter.reason == "invalid_field" and letter.error.startswith("ev il [31m x")
    assert plain_text(letter.error) == letter.error and len(letter.error) <= DEAD_LETTER_ERROR_CHARS
    wire = to_json_bytes(letter)
    assert len(wire) + len(b"u1") <= dead_letter_size_bound()
    assert letter.original_bytes() == raw and json.loads(wire)["error"] == letter.error


def test_the_demo_prints_each_push_and_dead_letter_as_one_line_without_terminal_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tail = _TopicTail(make_settings(), quiet=False)
    title = "Jacket\x1b[2J\x1b]0;owned\x07\nPUSH 10:00:00Z u9 <- forged\r\u202e"
    push = build_push("u1", candidate("i1", title=title), Verdict("emit", "ok"), T0, config(), "m1")
    tail._on_push(to_json_bytes(push))
    error = ContractError("invalid_field", "ev\nil\x1b[31m: Extra inputs are not permitted")
    letter = dead_letter(b"{}", b"u1", error, "events", 0, 7)
    tail._on_dead_letter(to_json_bytes(letter.model_copy(update={"error": error.detail})))  # an older letter
    printed = capsys.readouterr().out
    assert printed.count("\n") == 2 and "\x1b" not in printed and "\r" not in printed
    assert "Jacket [2J ]0;owned PUSH 10:00:00Z u9 <- forged " in printed
    assert "DEAD-LETTER invalid_field: ev il [31m: Extra" in printed


def test_kairos_erase_refuses_an_ids_file_that_is_not_utf8_with_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"u1\nu\xff2\n")
    assert cli.main(["erase", "--file", str(ids)]) == 2
    assert cli.main(["erase", "--file", str(tmp_path / "missing.txt")]) == 2
    ids.write_bytes(b"u1\n\x1b[2Ju2\n")  # UTF-8, but not an id: refused, quoted with its escapes
    assert cli.main(["erase", "--file", str(ids)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kairos erase: cannot read the ids from") and "utf-8" in err[0]
    assert err[1].startswith("kairos erase: cannot read the ids from") and "No such file" in err[1]
    assert err[2] == "kairos erase: invalid_field: not a valid id: '\\x1b[2Ju2'"
