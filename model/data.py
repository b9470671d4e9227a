"""Session data: the session log, preprocessing and splits, the item index, encoded sessions and test
cases. The files they come from are read by :mod:`model.data_files`.

Item ids are strings everywhere; the index maps them to dense integers (``-1`` = unknown).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.contract import EVENT_TYPES

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


# Unix seconds pass 1e11 in the year 5138; Unix milliseconds passed it in 1973.
MILLISECONDS_FROM = 1e11


def split_by_gap(log: SessionLog, gap_seconds: float | None) -> SessionLog:
    """Cut sessions where consecutive events are more than ``gap_seconds`` apart (no-op without times).

    Raises :class:`DataError` when the times look like milliseconds: the gap would then be a thousand
    times shorter than meant and cut nearly every session, silently. (Without a gap, times only order
    sessions, so milliseconds work there.)
    """
    if gap_seconds is None or log.times is None:
        return log
    latest = max((max(times) for times in log.times if times), default=0.0)
    if latest >= MILLISECONDS_FROM:
        raise DataError(
            log.source or "<log>",
            None,
            f"times look like milliseconds (latest {latest:.0f}): cutting sessions at a gap of "
            f"{gap_seconds:g} s needs Unix seconds (divide the times by 1000, or train without split_gap)",
        )
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


def assign_lanes(lengths: np.ndarray, n_lanes: int) -> list[list[int]]:
    """Session-parallel lanes: each session goes to the lane with the least work so far (greedy)."""
    heap = [(0, lane) for lane in range(n_lanes)]
    lanes: list[list[int]] = [[] for _ in range(n_lanes)]
    for s, length in enumerate(lengths.tolist()):
        load, lane = heapq.heappop(heap)
        lanes[lane].append(s)
        heapq.heappush(heap, (load + length, lane))
    return lanes
