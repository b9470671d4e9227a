"""Session data: loaders for the supported file formats, preprocessing, the item index and test cases.

Formats (see ``docs/model.md``):

* ``sessions``: TSV with a header naming ``SessionId``, ``ItemId``, ``Time`` and optionally ``Type``
  (other columns, e.g. RetailRocket's ``UserId``/``CatId``, are ignored). Rows of a session must be in
  time order.
* ``sequences``: one session a line, integer item ids separated by spaces, in order (no times).
* ``prefixes``: test cases, TSV with header ``prefix<TAB>target``.
* ``events``: JSON lines in the stream's own contract (:class:`stream.contract.Event`), user-keyed;
  a user's events are cut into sessions by an inactivity gap; the event type becomes a feature.

Every loader raises :class:`DataError` naming the file and line when the input is malformed.
Item ids are strings everywhere; the index maps them to dense integers (``-1`` = unknown).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.contract import EVENT_TYPES, ContractError, parse_event

TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES)}
VIEW = TYPE_INDEX["view"]

# Names seen in public datasets, mapped onto the stream's event types.
TYPE_ALIASES: dict[str, str] = {
    **{name: name for name in EVENT_TYPES},
    "click": "view",
    "addtocart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "cart": "add_to_cart",
    "transaction": "purchase",
    "buy": "purchase",
}


class DataError(ValueError):
    """A data file that cannot be used; the message names the file and (when known) the line."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


@dataclass
class SessionLog:
    """Sessions of raw item ids, each in event order; ``types``/``times`` are per event when known."""

    items: list[list[str]]
    types: list[list[int]] | None = None
    times: list[list[float]] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def n_events(self) -> int:
        """Number of item events over all sessions."""
        return sum(len(s) for s in self.items)

    def subset(self, keep: list[int]) -> SessionLog:
        """The sessions at positions ``keep``, in that order."""
        return SessionLog(
            items=[self.items[i] for i in keep],
            types=None if self.types is None else [self.types[i] for i in keep],
            times=None if self.times is None else [self.times[i] for i in keep],
            source=self.source,
        )


@dataclass
class PreprocessOptions:
    """Cleaning applied to a training log, in this order.

    * ``gap_seconds``: split a session where two events are more than this apart (needs times; None: keep).
    * ``drop_repeats``: collapse consecutive clicks on the same item into one event.
    * ``min_item_support``: drop events on items seen fewer times than this (in the log itself).
    * ``min_session_length``: drop sessions shorter than this afterwards (2 = at least one transition).
    """

    gap_seconds: float | None = None
    drop_repeats: bool = False
    min_item_support: int = 1
    min_session_length: int = 2


# ---------------------------------------------------------------------------------------------- loaders


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


def split_by_gap(log: SessionLog, gap_seconds: float | None) -> SessionLog:
    """Cut sessions where consecutive events are more than ``gap_seconds`` apart (no-op without times)."""
    if gap_seconds is None or log.times is None:
        return log
    out = SessionLog(items=[], types=None if log.types is None else [], times=[], source=log.source)
    assert out.times is not None
    for s, (items, times) in enumerate(zip(log.items, log.times, strict=True)):
        start = 0
        for i in range(1, len(items) + 1):
            if i == len(items) or times[i] - times[i - 1] > gap_seconds:
                out.items.append(items[start:i])
                out.times.append(times[start:i])
                if out.types is not None and log.types is not None:
                    out.types.append(log.types[s][start:i])
                start = i
    return out


def preprocess(log: SessionLog, options: PreprocessOptions) -> SessionLog:
    """Apply :class:`PreprocessOptions` to a log (see there for the order)."""
    log = split_by_gap(log, options.gap_seconds)
    items = [list(s) for s in log.items]
    types = None if log.types is None else [list(s) for s in log.types]
    times = None if log.times is None else [list(s) for s in log.times]
    if options.drop_repeats:
        for s in range(len(items)):
            keep = [i for i in range(len(items[s])) if i == 0 or items[s][i] != items[s][i - 1]]
            items[s] = [items[s][i] for i in keep]
            if types is not None:
                types[s] = [types[s][i] for i in keep]
            if times is not None:
                times[s] = [times[s][i] for i in keep]
    if options.min_item_support > 1:
        support = Counter(item for s in items for item in s)
        for s in range(len(items)):
            keep = [i for i, item in enumerate(items[s]) if support[item] >= options.min_item_support]
            items[s] = [items[s][i] for i in keep]
            if types is not None:
                types[s] = [types[s][i] for i in keep]
            if times is not None:
                times[s] = [times[s][i] for i in keep]
    kept = [s for s in range(len(items)) if len(items[s]) >= options.min_session_length]
    cleaned = SessionLog(items=items, types=types, times=times, source=log.source)
    return cleaned.subset(kept)


def split_train_valid(log: SessionLog, valid_fraction: float) -> tuple[SessionLog, SessionLog]:
    """Time-based split: the sessions that end last (or the file's tail, without times) are validation."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError("valid_fraction must be in (0, 1)")
    n = len(log)
    if log.times is not None:
        times = log.times
        order = sorted(range(n), key=lambda i: times[i][-1])
    else:
        order = list(range(n))
    n_valid = max(1, int(round(n * valid_fraction)))
    return log.subset(order[: n - n_valid]), log.subset(order[n - n_valid :])


# -------------------------------------------------------------------------------------- index, encoding


@dataclass
class ItemIndex:
    """Dense integer indices for item ids; index order is by decreasing training frequency."""

    ids: list[str]
    counts: np.ndarray
    _lookup: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._lookup:
            self._lookup = {item: i for i, item in enumerate(self.ids)}

    @classmethod
    def build(cls, log: SessionLog, min_support: int = 1) -> ItemIndex:
        """Index every item of ``log`` seen at least ``min_support`` times; ties in frequency keep first
        appearance order.

        Build it from the whole training file as loaded (before sessions are dropped or a validation
        tail is held out): an item seen only in a length-1 session or only in the tail is still an item
        a user can be recommended, and a test case with it as the target must be rankable.
        """
        counter = Counter(item for s in log.items for item in s)
        ordered = sorted(((k, c) for k, c in counter.items() if c >= min_support), key=lambda kv: -kv[1])
        ids = [item for item, _ in ordered]
        return cls(ids=ids, counts=np.array([c for _, c in ordered], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, item_id: str) -> int:
        """The index of ``item_id``, -1 when unknown."""
        return self._lookup.get(item_id, -1)

    def indices(self, item_ids: list[str]) -> np.ndarray:
        """Indices of many ids (int64, -1 for unknown ones)."""
        get = self._lookup.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))


@dataclass
class EncodedSessions:
    """Sessions as flat int64 arrays: session ``s`` spans ``items[offsets[s]:offsets[s+1]]``."""

    offsets: np.ndarray
    items: np.ndarray
    types: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """Events per session."""
        return np.diff(self.offsets)


def encode(log: SessionLog, index: ItemIndex, drop_unknown: bool = False) -> EncodedSessions:
    """Map a log onto ``index`` (unknown items become -1, or are removed with ``drop_unknown``)."""
    flat_items: list[np.ndarray] = []
    flat_types: list[np.ndarray] = []
    lengths = []
    for s, items in enumerate(log.items):
        idx = index.indices(items)
        kinds = np.asarray(log.types[s], dtype=np.int64) if log.types is not None else np.full(len(idx), VIEW)
        if drop_unknown:
            keep = idx >= 0
            idx, kinds = idx[keep], kinds[keep]
        flat_items.append(idx)
        flat_types.append(kinds)
        lengths.append(len(idx))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return EncodedSessions(
        offsets=offsets,
        items=np.concatenate(flat_items) if flat_items else np.zeros(0, np.int64),
        types=np.concatenate(flat_types) if flat_types else np.zeros(0, np.int64),
    )


def mask_unseen(sessions: EncodedSessions, seen: EncodedSessions) -> EncodedSessions:
    """``sessions`` with every item that never occurs in ``seen`` made unknown (-1).

    The tuner's validation split, made to look like a test against the training part: there an item the
    training never saw is not in the catalog, so a case with such a target cannot be ranked (it is
    dropped) and such an item in a prefix is skipped. Without this, a validation-only item repeated in
    its session is an easy hit for the repeat term alone, and those cases swamp the comparison.
    """
    known = np.zeros(int(max(sessions.items.max(initial=-1), seen.items.max(initial=-1))) + 2, dtype=bool)
    known[seen.items[seen.items >= 0]] = True
    items = np.where((sessions.items >= 0) & known[sessions.items], sessions.items, -1)
    return EncodedSessions(offsets=sessions.offsets, items=items, types=sessions.types)


@dataclass
class Cases:
    """Next-item test cases: prefix ``c`` is ``items[offsets[c]:offsets[c+1]]``, its answer ``targets[c]``.

    Cases whose target is unknown to the training index are not kept; ``n_dropped`` counts them.
    Unknown items inside a prefix stay as -1 (a model skips them).
    """

    offsets: np.ndarray
    items: np.ndarray
    types: np.ndarray
    targets: np.ndarray
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.targets)

    def last_items(self) -> np.ndarray:
        """The last known item of each prefix (-1 when none is known)."""
        out = np.full(len(self), -1, dtype=np.int64)
        for c in range(len(self)):
            seg = self.items[self.offsets[c] : self.offsets[c + 1]]
            known = seg[seg >= 0]
            if len(known):
                out[c] = known[-1]
        return out


# Longest prefix a case from a session keeps (its latest events). Every prefix is read from its start,
# so a session of L events cost L**2 / 2 GRU steps and as many stored ids: one 10,000-click session
# (a bot, an uncut user log) took over 5 minutes and 800 MB to evaluate. The public datasets' sessions
# stay far below this (yoochoose-100k: 78 events at most), so their cases are unchanged.
MAX_PREFIX = 200


def cases_from_sessions(sessions: EncodedSessions, max_prefix: int = MAX_PREFIX) -> Cases:
    """Every event after the first of each session is a case: the session so far predicts it.

    A prefix keeps the latest ``max_prefix`` events of the session so far (see :data:`MAX_PREFIX`).
    """
    offs: list[int] = [0]
    items: list[np.ndarray] = []
    types: list[np.ndarray] = []
    targets: list[int] = []
    dropped = 0
    total = 0
    for s in range(len(sessions)):
        a, b = sessions.offsets[s], sessions.offsets[s + 1]
        seg_i, seg_t = sessions.items[a:b], sessions.types[a:b]
        for pos in range(1, b - a):
            if seg_i[pos] < 0:
                dropped += 1
                continue
            start = max(0, pos - max_prefix)
            items.append(seg_i[start:pos])
            types.append(seg_t[start:pos])
            targets.append(int(seg_i[pos]))
            total += pos - start
            offs.append(total)
    return Cases(
        offsets=np.asarray(offs, dtype=np.int64),
        items=np.concatenate(items) if items else np.zeros(0, np.int64),
        types=np.concatenate(types) if types else np.zeros(0, np.int64),
        targets=np.asarray(targets, dtype=np.int64),
        n_dropped=dropped,
    )


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


def assign_lanes(lengths: np.ndarray, n_lanes: int) -> list[list[int]]:
    """Session-parallel lanes: each session goes to the lane with the least work so far (greedy)."""
    heap = [(0, lane) for lane in range(n_lanes)]
    lanes: list[list[int]] = [[] for _ in range(n_lanes)]
    for s, length in enumerate(lengths.tolist()):
        load, lane = heapq.heappop(heap)
        lanes[lane].append(s)
        heapq.heappush(heap, (load + length, lane))
    return lanes
