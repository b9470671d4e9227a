"""The cold-items benchmark's data: RetailRocket's events from its TSV, the simulated shop's events and
catalog, the seeded hold-out of cold items and the dropping of their events before the cut, and the
``kairos train --items`` catalog file written from the items' contents.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.cold_start.config import Event
from model.content import ItemContent
from model.data import TYPE_ALIASES, TYPE_INDEX
from stream.simulator import SimConfig, World, generate_events


def load_events(path: Path) -> list[Event]:
    """(time, session, event type index, item, category) sorted by time (file order within a second)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            kind = TYPE_INDEX[TYPE_ALIASES[row["Type"].strip().lower()]]
            rows.append((float(row["Time"]), row["SessionId"], kind, row["ItemId"], row["CatId"]))
    rows.sort(key=lambda r: r[0])
    return rows


def sim_shop(config: SimConfig, n_events: int) -> tuple[list[Event], dict[str, ItemContent]]:
    """The simulated shop's first ``n_events`` behaviour events with an item, and its whole catalog.

    Item ids become their catalog position and session ids the order of their first event (the
    ``sessions`` training format wants non-negative integers).
    """
    updates = World(config).initial_catalog()
    code = {u.item_id: str(k) for k, u in enumerate(updates)}
    catalog = {code[u.item_id]: ItemContent(u.title, u.category) for u in updates}
    sessions: dict[str, str] = {}
    events = []
    for e in generate_events(config, n_events):
        if e.item_id is not None and e.session_id is not None:
            item, session = code[e.item_id], sessions.setdefault(e.session_id, str(len(sessions)))
            events.append((e.ts, session, TYPE_INDEX[e.type], item, catalog[item].category))
    events.sort(key=lambda r: r[0])
    return events, catalog


def hold_out_items(items: Iterable[str], share: float, seed: int) -> set[str]:
    """A seeded random ``share`` of the distinct ``items`` (the same set whatever their order)."""
    pool = sorted(set(items))
    order = np.random.default_rng(seed).permutation(len(pool))
    return {pool[i] for i in order[: round(share * len(pool))]}


def drop_before(events: Sequence[Event], items: set[str], cut: float) -> list[Event]:
    """``events`` without those on ``items`` before ``cut``: to the system those items start at the cut."""
    return [e for e in events if e[0] >= cut or e[3] not in items]


def write_catalog(path: Path, contents: Mapping[str, ItemContent], titles: bool = True) -> None:
    """The ``kairos train --items`` JSONL catalog; ``titles`` False blanks every title."""
    with path.open("w", encoding="utf-8") as handle:
        for item in sorted(contents):
            c = contents[item]
            row = {"item_id": item, "title": c.title if titles else "", "category": c.category}
            handle.write(json.dumps(row) + "\n")
