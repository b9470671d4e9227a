"""Loaders, preprocessing, and every bad-file case raising a DataError that names file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from model.data import (
    MAX_PREFIX,
    TYPE_INDEX,
    DataError,
    ItemIndex,
    PreprocessOptions,
    SessionLog,
    cases_from_sessions,
    encode,
    preprocess,
    split_train_valid,
)
from model.data_files import (
    load_events_jsonl,
    load_prefix_cases,
    load_sequences,
    load_session_tsv,
    load_test_cases,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_session_tsv_groups_and_orders(tmp_path: Path) -> None:
    f = write(tmp_path / "s.tsv", "SessionId\tItemId\tTime\n2\t7\t200\n2\t8\t201\n1\t5\t100\n1\t6\t101\n")
    log = load_session_tsv(f)
    assert log.items == [["5", "6"], ["7", "8"]]  # ordered by start time
    assert log.types is None and log.times == [[100.0, 101.0], [200.0, 201.0]]


def test_retailrocket_types_are_mapped(tmp_path: Path) -> None:
    f = write(
        tmp_path / "rr.tsv",
        "Time\tUserId\tType\tItemId\tSessionId\tCatId\n1\t0\tview\t10\t1\t3\n2\t0\taddtocart\t10\t1\t3\n"
        "3\t0\ttransaction\t10\t1\t3\n",
    )
    log = load_session_tsv(f)
    assert log.types == [[TYPE_INDEX["view"], TYPE_INDEX["add_to_cart"], TYPE_INDEX["purchase"]]]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("", 1, "empty file"),
        ("SessionId\tItemId\n1\t2\n", 1, "missing column"),
        ("SessionId\tItemId\tTime\n", 1, "no data rows"),
        ("SessionId\tItemId\tTime\n1\tabc\t5\n", 2, "not a non-negative integer"),
        ("SessionId\tItemId\tTime\n1\t2\tsoon\n", 2, "not a number"),
        ("SessionId\tItemId\tTime\n1\t2\t5\n1\t3\t4\n", 3, "unsorted times"),
        ("SessionId\tItemId\tTime\n1\t2\n", 2, "expected 3"),
        ("SessionId\tItemId\tTime\tType\n1\t2\t5\tlike\n", 2, "unknown event Type"),
    ],
)
def test_bad_session_files(tmp_path: Path, text: str, line: int, needle: str) -> None:
    f = write(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError) as err:
        load_session_tsv(f)
    assert err.value.line == line and needle in str(err.value) and str(f) in str(err.value)


def test_sequences_and_bad_sequences(tmp_path: Path) -> None:
    assert load_sequences(write(tmp_path / "ok.txt", "1 2\n\n3 4 5\n")).items == [["1", "2"], ["3", "4", "5"]]
    with pytest.raises(DataError, match=r"bad.txt:2: item id 'x1'"):
        load_sequences(write(tmp_path / "bad.txt", "1 2\n3 x1\n"))
    with pytest.raises(DataError, match="empty file"):
        load_sequences(write(tmp_path / "empty.txt", ""))


def test_prefix_cases(tmp_path: Path) -> None:
    index = ItemIndex(ids=["1", "2", "3"], counts=[3, 2, 1])  # type: ignore[arg-type]
    f = write(tmp_path / "p.tsv", "prefix\ttarget\n1 2\t3\n1 9\t2\n1\t9\n")
    cases = load_prefix_cases(f, index)
    assert len(cases) == 2 and cases.n_dropped == 1
    assert cases.items.tolist() == [0, 1, 0, -1]
    with pytest.raises(DataError, match="missing columns"):
        load_prefix_cases(write(tmp_path / "h.tsv", "a\tb\n1\t2\n"), index)
    with pytest.raises(DataError, match=r"n.tsv:2: target 'x'"):
        load_prefix_cases(write(tmp_path / "n.tsv", "prefix\ttarget\n1\tx\n"), index)
    with pytest.raises(DataError, match="empty file"):
        load_prefix_cases(write(tmp_path / "e.tsv", ""), index)


def _event(user: str, item: str | None, ts: float, kind: str = "view") -> str:
    body = {"event_id": f"{user}-{ts}", "user_id": user, "type": kind, "ts": ts}
    if item is not None:
        body["item_id"] = item
    return json.dumps(body)


def test_events_cut_by_gap_with_types(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    lines = [
        _event("u1", "a", t0),
        _event("u2", "c", t0 + 1),
        _event("u1", None, t0 + 2, "search"),
        _event("u1", "b", t0 + 3, "add_to_cart"),
        _event("u1", "a", t0 + 5000),
    ]
    log = load_events_jsonl(write(tmp_path / "e.jsonl", "\n".join(lines) + "\n"), gap_seconds=1800)
    assert log.items == [["a", "b"], ["c"], ["a"]]
    assert log.types is not None and log.types[0] == [TYPE_INDEX["view"], TYPE_INDEX["add_to_cart"]]


def test_millisecond_times_are_refused_where_a_gap_cuts_sessions(tmp_path: Path) -> None:
    """A gap of 1,800 s on millisecond times is 1.8 s: nearly every session would be cut, silently.
    Without a gap the times only order sessions, so the same file loads as before."""
    t0 = 1_400_000_000_000.0  # 2014 in milliseconds
    rows = "".join(f"{s}\t{i}\t{t0 + 5_000 * k:.0f}\n" for s in (1, 2) for k, i in enumerate((10, 11, 12)))
    path = write(tmp_path / "ms.tsv", "SessionId\tItemId\tTime\n" + rows)
    log = load_session_tsv(path)
    assert preprocess(log, PreprocessOptions()).items == [["10", "11", "12"], ["10", "11", "12"]]
    with pytest.raises(DataError, match=r"ms.tsv: times look like milliseconds"):
        preprocess(log, PreprocessOptions(gap_seconds=1800.0))
    seconds = load_session_tsv(
        write(tmp_path / "s.tsv", "SessionId\tItemId\tTime\n" + rows.replace("000\n", "\n"))
    )
    assert preprocess(seconds, PreprocessOptions(gap_seconds=1800.0)).items == log.items


def test_events_file_with_a_byte_order_mark_or_gzip(tmp_path: Path) -> None:
    line = _event("u1", "a", 1_700_000_000.0) + "\n" + _event("u1", "b", 1_700_000_010.0) + "\n"
    marked = tmp_path / "bom.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + line.encode())
    assert load_events_jsonl(marked).items == [["a", "b"]]
    packed = tmp_path / "e.jsonl.gz"
    packed.write_bytes(gzip.compress(line.encode()))
    with pytest.raises(DataError, match=r"e.jsonl.gz: gzip-compressed"):
        load_events_jsonl(packed)


def test_bad_events(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    with pytest.raises(DataError, match=r"e.jsonl:2: not a valid event"):
        load_events_jsonl(write(tmp_path / "e.jsonl", _event("u", "a", t0) + '\n{"nope": 1}\n'))
    with pytest.raises(DataError, match=r"o.jsonl:2: unsorted times"):
        load_events_jsonl(
            write(tmp_path / "o.jsonl", _event("u", "a", t0) + "\n" + _event("u", "b", t0 - 9) + "\n")
        )
    with pytest.raises(DataError, match="empty file"):
        load_events_jsonl(write(tmp_path / "z.jsonl", "\n"))


def test_preprocess_options(tmp_path: Path) -> None:
    f = write(
        tmp_path / "s.tsv",
        "SessionId\tItemId\tTime\n1\t1\t0\n1\t1\t1\n1\t2\t2\n1\t3\t9000\n1\t2\t9001\n2\t1\t5\n2\t9\t6\n",
    )
    log = load_session_tsv(f)
    assert preprocess(log, PreprocessOptions(drop_repeats=True)).items == [["1", "2", "3", "2"], ["1", "9"]]
    assert preprocess(log, PreprocessOptions(gap_seconds=1800)).items == [
        ["1", "1", "2"],
        ["3", "2"],
        ["1", "9"],
    ]
    supported = preprocess(log, PreprocessOptions(min_item_support=2))
    assert supported.items == [["1", "1", "2", "2"]]  # "3" and "9" dropped, then session 2 is too short
    assert preprocess(log, PreprocessOptions(min_session_length=6)).items == []


def test_time_split_puts_latest_sessions_in_validation(tmp_path: Path) -> None:
    f = write(
        tmp_path / "s.tsv",
        "SessionId\tItemId\tTime\n1\t1\t10\n1\t2\t50\n2\t1\t20\n2\t3\t30\n3\t4\t40\n3\t5\t41\n",
    )
    train, valid = split_train_valid(load_session_tsv(f), 0.34)
    assert valid.items == [["1", "2"]]  # session 1 ends last
    assert len(train) == 2


def test_gzip_and_non_utf8_files_name_the_file(tmp_path: Path) -> None:
    text = "SessionId\tItemId\tTime\n1\t5\t1\n1\t6\t2\n"
    gz = tmp_path / "s.tsv.gz"
    gz.write_bytes(gzip.compress(text.encode("utf-8")))
    for loader in (load_session_tsv, load_sequences):
        with pytest.raises(DataError, match=r"s.tsv.gz: gzip-compressed"):
            loader(gz)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("1 2\n3 4\ncaf\u00e9 5\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt:3: not UTF-8 text"):
        load_sequences(latin)
    index = ItemIndex(ids=["1"], counts=[1])  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"p.tsv.gz: gzip-compressed"):
        load_prefix_cases(write_bytes(tmp_path / "p.tsv.gz", gzip.compress(b"prefix\ttarget\n1\t1\n")), index)


def test_byte_order_mark_and_line_endings(tmp_path: Path) -> None:
    # Spreadsheet exports start with a UTF-8 BOM; CR-only and CRLF endings read as text mode reads them.
    bom = write_bytes(tmp_path / "bom.tsv", b"\xef\xbb\xbfSessionId\tItemId\tTime\r\n1\t5\t1\r\n1\t6\t2\r\n")
    assert load_session_tsv(bom).items == [["5", "6"]]
    cr = write_bytes(tmp_path / "cr.tsv", b"SessionId\tItemId\tTime\r1\t5\t1\r1\t6\t2\r")
    assert load_session_tsv(cr).items == [["5", "6"]]


def test_session_test_file_without_cases(tmp_path: Path) -> None:
    index = ItemIndex(ids=["5", "6"], counts=[1, 1])  # type: ignore[arg-type]
    f = write(tmp_path / "ones.tsv", "SessionId\tItemId\tTime\n1\t5\t1\n2\t6\t2\n")
    with pytest.raises(DataError, match=r"ones.tsv: no test cases"):
        load_test_cases(f, "sessions", index)


def test_long_session_prefixes_are_capped(tmp_path: Path) -> None:
    n = MAX_PREFIX * 3
    ids = [str(i) for i in range(n)]
    index = ItemIndex(ids=ids, counts=[1] * n)  # type: ignore[arg-type]
    log = SessionLog(items=[ids])
    cases = cases_from_sessions(encode(log, index))
    assert len(cases) == n - 1
    lengths = cases.offsets[1:] - cases.offsets[:-1]
    assert lengths.max() == MAX_PREFIX and lengths[0] == 1
    last = cases.items[cases.offsets[-2] : cases.offsets[-1]]
    assert last.tolist() == list(range(n - 1 - MAX_PREFIX, n - 1))  # the latest events are kept
