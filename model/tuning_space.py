"""What :mod:`model.tuning` searches, and how it ranks what it tried.

The GRU candidates (built from the presets in ``model/configs``, in the order the budget takes them),
the session-memory grid stage 2 walks, the presets whose memory settings stage 1 scores with, and the
objectives of both stages. Data and pure functions only: no training, no clock.
"""

from __future__ import annotations

import json
from typing import Any

from model.config import CONFIG_DIR, TrainConfig

# The settings that shape the GRU and its training (taken from a preset for a candidate).
GRU_FIELDS = (
    "embedding_size",
    "hidden_size",
    "last_item_skip",
    "loss",
    "n_negatives",
    "sample_alpha",
    "bpreg",
    "logq",
    "dropout_embedding",
    "dropout_hidden",
    "batch_size",
    "bptt",
    "learning_rate",
)
# Stage 2's coordinates, in the order they are visited, and the values tried for each.
MEMORY_GRID: dict[str, tuple[Any, ...]] = {
    "repeat_bonus": (0.0, 1.0, 1.5, 2.0, 3.0),
    "repeat_mode": ("sum", "max"),
    "window_decay": (0.6, 0.8, 0.9, 1.0),
    "neighbour_weight": (0.0, 0.1, 0.3, 0.5),
    "neighbour_floor": (0.003, 0.01, 0.1),
    "neighbour_backward": (0.0, 0.5),
    "neighbour_distance": (3, 10),
    "knn_weight": (0.0, 0.1, 0.3, 0.5, 1.0),
    "knn_floor": (0.003, 0.01, 0.1),
}
MEMORY_PRESETS = ("yoochoose-100k", "diginetica")  # stage 1 scores with the best of these settings


def preset_fields(name: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """The given fields of preset ``name`` (``model/configs/<name>.json``), defaults filled in."""
    data = json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))
    cfg = TrainConfig.model_validate(data)
    return {f: getattr(cfg, f) for f in fields}


def default_candidates() -> list[tuple[str, dict[str, Any]]]:
    """The ordered GRU candidates: the presets first (strong starting points), then variations.

    With a tight budget only the first few are tried, so the order is by expected value: the two
    benchmark presets (large and small data), the small CE preset, then learning-rate and width
    variations of the presets.
    """
    dig = preset_fields("diginetica", GRU_FIELDS)
    yoo = preset_fields("yoochoose-100k", GRU_FIELDS)
    quick = preset_fields("quick", GRU_FIELDS)
    return [
        ("diginetica preset", dig),
        ("yoochoose-100k preset", yoo),
        ("quick preset (cross-entropy + logQ)", quick),
        ("yoochoose-100k preset, lr 0.001", {**yoo, "learning_rate": 0.001}),
        ("diginetica preset, lr 0.002", {**dig, "learning_rate": 0.002}),
        ("diginetica preset, width 192", {**dig, "embedding_size": 192, "hidden_size": 192}),
    ]


def memory_fields(name: str) -> dict[str, Any]:
    """Preset ``name``'s session-memory weights."""
    return preset_fields(name, tuple(MEMORY_GRID))


def _key(setting: dict[str, Any]) -> tuple[Any, ...]:
    """A memory setting with its irrelevant fields made canonical (so it is scored once)."""
    s = dict(setting)
    if s["neighbour_weight"] == 0:
        s["neighbour_floor"], s["neighbour_backward"] = MEMORY_GRID["neighbour_floor"][0], 0.0
        s["neighbour_distance"] = MEMORY_GRID["neighbour_distance"][0]
    if s["knn_weight"] == 0:
        s["knn_floor"] = MEMORY_GRID["knn_floor"][0]
    if s["repeat_bonus"] == 0:
        s["repeat_mode"] = "sum"
    if s["repeat_bonus"] == 0 and s["neighbour_weight"] == 0:
        s["window_decay"] = MEMORY_GRID["window_decay"][0]
    return tuple(s[f] for f in MEMORY_GRID)


def _rank_key(m: dict[str, float]) -> tuple[float, float]:
    return (m["mrr@20"], m["recall@20"])


def _memory_key(m: dict[str, float]) -> tuple[float, float]:
    """Stage 2's objective: Recall@20 + MRR@20, the two headline figures weighed alike (then MRR@20).

    The memory terms trade one for the other (a heavier neighbour term finds more targets but ranks the
    GRU's own first choices lower), so ranking by MRR@20 alone gave recall away for hundredths of MRR.
    """
    return (m["recall@20"] + m["mrr@20"], m["mrr@20"])
