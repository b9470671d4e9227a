"""Replay a real session dataset as contract messages, in time order, with compressed timing.

Two datasets from ``Settings().data_dir`` are supported:

* ``retailrocket``: ``retailrocket-sample/events.tsv`` (``Time, UserId, Type, ItemId, SessionId, CatId``);
  types ``view`` / ``addtocart`` / ``transaction`` become ``view`` / ``add_to_cart`` / ``purchase``.
* ``yoochoose``: ``yoochoose-100k/train_full.tsv`` and ``test.tsv`` (``SessionId, ItemId, Time``); every
  click is a ``view`` and the session stands in for the user.

Event times (``ts``) are the dataset's own; ``due`` says when to send each message, in seconds from the
start of the replay: ``(ts - first_ts) / compress``. Just before an item's first event a synthetic
:class:`CatalogUpdate` is yielded for it (category from ``CatId``, generated title, price and stock).
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stream.contract import CatalogUpdate, Event

Dataset = Literal["retailrocket", "yoochoose"]
DATASETS: tuple[str, ...] = ("retailrocket", "yoochoose")

_RR_TYPES = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}
_SYLLABLES = ("ka", "lo", "mi", "ra", "ve", "to", "sa", "ni", "po", "lu", "de", "fa", "go", "ri", "ba", "te")


class DatasetMissingError(FileNotFoundError):
    """The dataset files are not where the settings say."""


@dataclass(frozen=True)
class ReplayMessage:
    """One message to send ``due`` seconds after the replay started (compressed time)."""

    due: float
    message: Event | CatalogUpdate


@dataclass(frozen=True)
class _Row:
    ts: float
    user_id: str
    type: str
    item_id: str
    session_id: str
    category: str
    source: str  # "<file>:<line>", unique, for event ids


def dataset_files(dataset: str, data_dir: Path) -> list[Path]:
    """The files a dataset is read from; raises :class:`DatasetMissingError` naming what is absent."""
    if dataset == "retailrocket":
        files = [data_dir / "retailrocket-sample" / "events.tsv"]
    elif dataset == "yoochoose":
        files = [data_dir / "yoochoose-100k" / "train_full.tsv", data_dir / "yoochoose-100k" / "test.tsv"]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetMissingError(
            f"dataset {dataset!r} not found: missing {', '.join(missing)}. "
            "Point KAIROS_DATA_DIR at the folder holding the public datasets (see its README.md)."
        )
    return files


def _read_tsv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header = reader.fieldnames or []
        absent = [c for c in required if c not in header]
        if absent:
            raise ValueError(f"{path}: missing column(s) {', '.join(absent)} (header: {header})")
        yield from enumerate(reader, start=2)


def _load_rows(dataset: str, files: list[Path]) -> list[_Row]:
    rows: list[_Row] = []
    for path in files:
        tag = f"{dataset[:2]}-{path.stem}"
        if dataset == "retailrocket":
            for line, r in _read_tsv(path, ("Time", "UserId", "Type", "ItemId", "SessionId", "CatId")):
                etype = _RR_TYPES.get(r["Type"])
                if etype is None:
                    raise ValueError(f"{path}:{line}: unknown event type {r['Type']!r}")
                rows.append(
                    _Row(
                        _float(r["Time"], path, line),
                        r["UserId"],
                        etype,
                        r["ItemId"],
                        r["SessionId"],
                        r["CatId"],
                        f"{tag}-{line}",
                    )  # fmt: skip
                )
        else:
            for line, r in _read_tsv(path, ("SessionId", "ItemId", "Time")):
                rows.append(
                    _Row(
                        _float(r["Time"], path, line),
                        r["SessionId"],
                        "view",
                        r["ItemId"],
                        r["SessionId"],
                        "unknown",
                        f"{tag}-{line}",
                    )  # fmt: skip
                )
    # Stable sort: same-second events keep their file order (the order within a session).
    rows.sort(key=lambda row: row.ts)
    return rows


def _float(text: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{path}:{line}: time {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: time {text!r} is not finite")
    return value


def synthetic_item(item_id: str, category: str, ts: float) -> CatalogUpdate:
    """A plausible catalog entry for a dataset item: deterministic title, price and stock from its id."""
    h = hashlib.blake2b(item_id.encode(), digest_size=16).digest()
    word = "".join(_SYLLABLES[b % len(_SYLLABLES)] for b in h[:3])
    # Log-uniform price between 5 and 500, two decimals.
    price = round(5.0 * math.exp(math.log(100.0) * int.from_bytes(h[3:7]) / 2**32), 2)
    return CatalogUpdate(
        item_id=item_id,
        title=f"{word.capitalize()} item {item_id} ({category})",
        category=category,
        price=price,
        stock=10 + h[7] % 90,
        updated_at=ts,
    )


def replay(
    dataset: str, data_dir: Path, compress: float = 3600.0, with_catalog: bool = True
) -> Iterator[ReplayMessage]:
    """Yield the dataset's events (and a catalog entry before each item's first event) in time order.

    ``compress`` is the speed-up: 3600 replays one dataset hour per second. Raises
    :class:`DatasetMissingError` when the files are absent.
    """
    if compress <= 0:
        raise ValueError("compress must be positive")
    rows = _load_rows(dataset, dataset_files(dataset, data_dir))
    if not rows:
        return
    first = rows[0].ts
    seen: set[str] = set()
    prices: dict[str, float] = {}
    for row in rows:
        due = (row.ts - first) / compress
        if row.item_id not in seen:
            seen.add(row.item_id)
            entry = synthetic_item(row.item_id, row.category, row.ts)
            prices[row.item_id] = entry.price
            if with_catalog:
                yield ReplayMessage(due, entry)
        is_cart = row.type in ("add_to_cart", "purchase")
        yield ReplayMessage(
            due,
            Event(
                event_id=row.source,
                user_id=row.user_id,
                type=row.type,  # type: ignore[arg-type]
                item_id=row.item_id,
                ts=row.ts,
                session_id=row.session_id,
                price=prices[row.item_id],
                quantity=1 if is_cart else None,
                push_id=None,
            ),
        )
