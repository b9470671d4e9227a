"""Session data files: the loaders of the supported formats, each giving a :class:`model.data.SessionLog`
(or test :class:`model.data.Cases`), and the files' fingerprint.

Formats (see ``docs/model.md``):

* ``sessions``: TSV with a header naming ``SessionId``, ``ItemId``, ``Time`` and optionally ``Type``
  (other columns, e.g. RetailRocket's ``UserId``/``CatId``, are ignored). Rows of a session must be in
  time order.
* ``sequences``: one session a line, integer item ids separated by spaces, in order (no times).
* ``prefixes``: test cases, TSV with header ``prefix<TAB>target``.
* ``events``: JSON lines in the stream's own contract (:class:`stream.contract.Event`), user-keyed;
  a user's events are cut into sessions by an inactivity gap; the event type becomes a feature.

Every loader raises :class:`model.data.DataError` naming the file and line when the input is malformed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from model.data import (
    TYPE_ALIASES,
    TYPE_INDEX,
    VIEW,
    Cases,
    DataError,
    ItemIndex,
    SessionLog,
    cases_from_sessions,
    encode,
    split_by_gap,
)
from stream.contract import ContractError, parse_event


def _parse_float(path: Path, line: int, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, line, f"{name} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise DataError(path, line, f"{name} {text!r} is not finite")
    return value


def _text_lines(path: Path) -> Generator[tuple[int, str], None, None]:
    """(line number, line without its line ending) of a UTF-8 text file; :class:`DataError` otherwise.

    Decoded line by line from bytes: a text-mode file decodes in blocks, and a gzip file or a Latin-1
    export then failed with a bare ``UnicodeDecodeError`` that named neither the file nor the line.
    Line endings are the text mode's (``\\n``, ``\\r\\n``, a lone ``\\r``). A UTF-8 byte-order mark
    (spreadsheet exports) is dropped; kept, it made the first column's name ``\\ufeffSessionId`` and the
    file was refused for a missing ``SessionId``.
    """
    line_no = 0
    with path.open("rb") as handle:
        for chunk in handle:
            if line_no == 0:
                if chunk.startswith(b"\x1f\x8b"):
                    raise DataError(path, None, "gzip-compressed: decompress it first (gunzip)")
                chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            for raw in chunk.splitlines():
                line_no += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        path, line_no, f"not UTF-8 text (bad byte at column {exc.start + 1})"
                    ) from None
                yield line_no, text


def _check_int_id(path: Path, line: int, name: str, text: str) -> str:
    if not text.isdigit():
        raise DataError(path, line, f"{name} {text!r} is not a non-negative integer id")
    return text


def load_session_tsv(path: str | Path, numeric_ids: bool = True) -> SessionLog:
    """Load a session TSV (``SessionId``, ``ItemId``, ``Time``, optional ``Type``; header required).

    With ``numeric_ids`` the session and item ids must be non-negative integers (the public datasets'
    convention); they are kept as strings. ``Type`` values are mapped through :data:`TYPE_ALIASES`
    (RetailRocket's ``addtocart``/``transaction`` included). Sessions come out ordered by start time.
    """
    p = Path(path)
    with closing(_text_lines(p)) as lines:
        _, header = next(lines, (1, ""))
        if not header:
            raise DataError(p, 1, "empty file (a header SessionId, ItemId, Time is required)")
        columns = header.split("\t")
        missing = [c for c in ("SessionId", "ItemId", "Time") if c not in columns]
        if missing:
            raise DataError(
                p,
                1,
                f"missing column(s) {', '.join(missing)} in header {columns} (tab-separated header required)",
            )
        i_sess, i_item, i_time = columns.index("SessionId"), columns.index("ItemId"), columns.index("Time")
        i_type = columns.index("Type") if "Type" in columns else None
        width = len(columns)
        by_session: dict[str, int] = {}
        items: list[list[str]] = []
        types: list[list[int]] = []
        times: list[list[float]] = []
        line_no = 1
        for line_no, row in lines:
            if not row:
                continue
            fields = row.split("\t")
            if len(fields) != width:
                raise DataError(p, line_no, f"expected {width} tab-separated fields, found {len(fields)}")
            sess, item = fields[i_sess], fields[i_item]
            if not sess or not item:
                raise DataError(p, line_no, "empty SessionId or ItemId")
            if numeric_ids:
                _check_int_id(p, line_no, "SessionId", sess)
                _check_int_id(p, line_no, "ItemId", item)
            t = _parse_float(p, line_no, "Time", fields[i_time])
            kind = VIEW
            if i_type is not None:
                alias = TYPE_ALIASES.get(fields[i_type].strip().lower())
                if alias is None:
                    raise DataError(p, line_no, f"unknown event Type {fields[i_type]!r}")
                kind = TYPE_INDEX[alias]
            idx = by_session.get(sess)
            if idx is None:
                idx = by_session[sess] = len(items)
                items.append([])
                types.append([])
                times.append([])
            elif t < times[idx][-1]:
                raise DataError(
                    p, line_no, f"unsorted times: session {sess} goes back in time ({t} < {times[idx][-1]})"
                )
            items[idx].append(item)
            types[idx].append(kind)
            times[idx].append(t)
    if not items:
        raise DataError(p, line_no, "no data rows")
    order = sorted(range(len(items)), key=lambda i: times[i][0])
    log = SessionLog(items=items, types=types if i_type is not None else None, times=times, source=str(p))
    return log.subset(order)


def load_sequences(path: str | Path) -> SessionLog:
    """Load the sequence form: one session a line, integer item ids separated by spaces, file order kept."""
    p = Path(path)
    items: list[list[str]] = []
    with closing(_text_lines(p)) as lines:
        for line_no, raw in lines:
            tokens = raw.split()
            if not tokens:
                continue
            for tok in tokens:
                _check_int_id(p, line_no, "item id", tok)
            items.append(tokens)
    if not items:
        raise DataError(p, None, "empty file: no sessions")
    return SessionLog(items=items, source=str(p))


def load_events_jsonl(path: str | Path, gap_seconds: float = 1800.0) -> SessionLog:
    """Load JSON-lines events in the stream contract and cut each user's events into sessions.

    A new session starts when a user is idle longer than ``gap_seconds``. Events without an item
    (``search``) are skipped. A user's events must be in time order in the file.
    """
    p = Path(path)
    per_user: dict[str, tuple[list[str], list[int], list[float]]] = {}
    with p.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1:  # as _text_lines does for the other formats
                if raw.startswith(b"\x1f\x8b"):
                    raise DataError(p, None, "gzip-compressed: decompress it first (gunzip)")
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                event = parse_event(raw.strip())
            except ContractError as exc:
                raise DataError(p, line_no, f"not a valid event ({exc})") from None
            user = per_user.setdefault(event.user_id, ([], [], []))
            if user[2] and event.ts < user[2][-1]:
                raise DataError(p, line_no, f"unsorted times: user {event.user_id} goes back in time")
            if event.item_id is None:
                continue
            user[0].append(event.item_id)
            user[1].append(TYPE_INDEX[event.type])
            user[2].append(event.ts)
    if not per_user:
        raise DataError(p, None, "empty file: no events")
    log = SessionLog(items=[], types=[], times=[], source=str(p))
    assert log.types is not None and log.times is not None
    for u_items, u_types, u_times in per_user.values():
        if u_items:
            log.items.append(u_items)
            log.types.append(u_types)
            log.times.append(u_times)
    log = split_by_gap(log, gap_seconds)
    assert log.times is not None
    times = log.times
    return log.subset(sorted(range(len(log)), key=lambda i: times[i][0]))


def load_log(path: str | Path, fmt: str, gap_seconds: float = 1800.0) -> SessionLog:
    """Load sessions in format ``sessions``, ``sequences`` or ``events``."""
    if fmt == "sessions":
        return load_session_tsv(path)
    if fmt == "sequences":
        return load_sequences(path)
    if fmt == "events":
        return load_events_jsonl(path, gap_seconds)
    raise ValueError(f"unknown format {fmt!r} (sessions, sequences or events)")


# -------------------------------------------------------------------------------------- preprocessing


def load_prefix_cases(path: str | Path, index: ItemIndex) -> Cases:
    """Load ``prefix<TAB>target`` test cases (header required; integer ids; events are views)."""
    p = Path(path)
    offs: list[int] = [0]
    flat: list[np.ndarray] = []
    targets: list[int] = []
    dropped = 0
    total = 0
    with closing(_text_lines(p)) as lines:
        header = next(lines, (1, ""))[1].strip()
        if not header:
            raise DataError(p, 1, "empty file (header prefix<TAB>target required)")
        if header.split("\t") != ["prefix", "target"]:
            raise DataError(p, 1, f"missing columns: header must be 'prefix<TAB>target', found {header!r}")
        for line_no, row in lines:
            if not row:
                continue
            fields = row.split("\t")
            if len(fields) != 2:
                raise DataError(p, line_no, f"expected 2 tab-separated fields, found {len(fields)}")
            prefix = fields[0].split()
            if not prefix:
                raise DataError(p, line_no, "empty prefix")
            for tok in prefix:
                _check_int_id(p, line_no, "item id", tok)
            target = _check_int_id(p, line_no, "target", fields[1].strip())
            t_idx = index.index(target)
            if t_idx < 0:
                dropped += 1
                continue
            idx = index.indices(prefix)
            flat.append(idx)
            targets.append(t_idx)
            total += len(idx)
            offs.append(total)
    if not targets and not dropped:
        raise DataError(p, None, "no test cases")
    items = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    return Cases(
        offsets=np.asarray(offs, dtype=np.int64),
        items=items,
        types=np.full(len(items), VIEW, dtype=np.int64),
        targets=np.asarray(targets, dtype=np.int64),
        n_dropped=dropped,
    )


def load_test_cases(path: str | Path, fmt: str, index: ItemIndex, gap_seconds: float = 1800.0) -> Cases:
    """Test cases from a file in format ``prefixes`` or any session format (every next event a case).

    Raises :class:`DataError` when a session file yields no case at all (only one-event sessions).
    """
    if fmt == "prefixes":
        return load_prefix_cases(path, index)
    cases = cases_from_sessions(encode(load_log(path, fmt, gap_seconds), index))
    if not len(cases) and not cases.n_dropped:
        # Otherwise every figure came out 0.0 with exit code 0, as if the model had missed every case.
        raise DataError(path, None, "no test cases: no session has a second event to predict")
    return cases


def file_fingerprint(paths: Sequence[str | Path], extra: str = "") -> str:
    """SHA-256 over the bytes of ``paths`` (in order) and ``extra`` (e.g. the preprocessing options)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    digest.update(extra.encode("utf-8"))
    return digest.hexdigest()
