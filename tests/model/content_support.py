"""A tiny content-mapped model for the tests of items without history: its data, training and items.

The fixtures built from these (``content_data``, ``content_artifact``) are in ``tests/model/conftest.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.content import ItemContent
from model.scorer import IncrementalScorer
from stream.engine import Engine
from tests.model.conftest import TINY, write_session_tsv
from tests.stream.fakes import PARTITIONS, DictState, catalog_entry, catalog_record, make_settings

CATEGORIES = ["hiking boots", "coffee beans", "phone case", "garden hose", "yoga mat", "desk lamp"]
PER_CATEGORY = 10
IMAGE_WIDTH = 3
# Tied, last-item skip and session memory: every path an added item takes through the scorer.
CONTENT_CFG = TINY.model_copy(
    update={"session_window": 4, "repeat_bonus": 1.0, "neighbour_weight": 0.3, "neighbour_k": 5, "epochs": 3}
)
UNTIED_CFG = TINY.model_copy(update={"tied": False, "last_item_skip": False, "hidden_size": 12, "epochs": 1})


def _item(cat: int, j: int) -> int:
    return cat * PER_CATEGORY + j  # write_session_tsv adds 1000


def _image(cat: int, j: int) -> list[float]:
    return [float(cat), float(j % 3), 0.5]


def category_sessions(n: int, seed: int = 0) -> list[list[int]]:
    """Sessions that stay within one category (a little noise), so category predicts the next item."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cat = int(rng.integers(len(CATEGORIES)))
        seq = []
        for _ in range(int(rng.integers(3, 8))):
            c = cat if rng.random() < 0.95 else int(rng.integers(len(CATEGORIES)))
            seq.append(_item(c, int(rng.integers(PER_CATEGORY))))
        out.append(seq)
    return out


def build_content_data(root: Path) -> dict[str, Path]:
    """Sessions within categories, split in train and valid, and the items' catalog, under ``root``."""
    sessions = category_sessions(800)
    rows = [
        {
            "item_id": str(1000 + _item(c, j)),
            "title": f"{name} model {j}",
            "category": name,
            "image": _image(c, j),
        }
        for c, name in enumerate(CATEGORIES)
        for j in range(PER_CATEGORY)
    ]
    catalog = root / "items.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {
        "train": write_session_tsv(root / "train.tsv", sessions[:650]),
        "valid": write_session_tsv(root / "valid.tsv", sessions[650:], start=1_700_100_000.0),
        "items": catalog,
        "root": root,
    }


def _train(data: dict[str, Path], name: str, cfg: object, items: bool = True) -> Path:
    from model.cli import run_training

    out = data["root"] / name
    run_training(
        str(data["train"]),
        "sessions",
        str(data["valid"]),
        str(out),
        cfg,  # type: ignore[arg-type]
        progress=False,
        items_path=str(data["items"]) if items else None,
    )
    return out


def cold(name: str, j: int = 99, image: list[float] | None = None) -> ItemContent:
    cat = CATEGORIES.index(name)
    vec = np.array(image if image is not None else _image(cat, j), dtype=np.float32)
    return ItemContent(f"{name} model {j}", name, vec)


def content_shop(artifact: Path) -> tuple[Engine, IncrementalScorer, DictState]:
    """An engine serving the content model at ``artifact``, its trained items catalogued (bootstrap)."""
    scorer = IncrementalScorer.load(artifact)
    engine = Engine(make_settings(), scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    known = [str(1000 + _item(c, j)) for c in range(len(CATEGORIES)) for j in range(PER_CATEGORY)]
    store = DictState()
    engine.apply_catalog([catalog_record(catalog_entry(i)) for i in known], store, announce=False)
    return engine, scorer, store
