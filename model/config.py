"""Typed training configuration, loadable from a JSON or TOML file or a named preset in ``model/configs``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class TrainConfig(BaseModel):
    """Every training knob, with its default. Unknown keys are refused so typos surface."""

    model_config = ConfigDict(extra="forbid")

    # Architecture
    embedding_size: int = Field(default=100, ge=1, description="Item embedding width D.")
    hidden_size: int = Field(default=100, ge=1, description="GRU state width H.")
    tied: bool = Field(
        default=True, description="Score with the input item embeddings (output = proj(h) . E)."
    )
    last_item_skip: bool = Field(
        default=False,
        description="Keep the last item's embedding in the state and add it (linearly) to the output.",
    )
    item_bias: bool = Field(default=True, description="Learn a per-item output bias.")
    # Session memory (model/session_memory.py): fixed terms added to the GRU's scores
    session_window: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Recent items kept in the state for the repeat and neighbour terms (0: GRU only).",
    )
    window_decay: float = Field(
        default=0.9, gt=0.0, le=1.0, description="Weight of the j-th most recent window item: decay**j."
    )
    repeat_bonus: float = Field(
        default=0.0, ge=0.0, description="Score added to an item already in the window (times its decay)."
    )
    repeat_mode: Literal["sum", "max"] = Field(
        default="sum", description="Repeat term over the window's occurrences: decayed sum, or most recent."
    )
    neighbour_weight: float = Field(
        default=0.0, ge=0.0, description="Weight of log(floor + neighbour mass of the window) in the score."
    )
    neighbour_floor: float = Field(
        default=0.01, gt=0.0, description="Floor inside the neighbour log (items without any association)."
    )
    neighbour_k: int = Field(
        default=100, ge=1, description="Successors kept per item in the neighbour table."
    )
    neighbour_backward: float = Field(
        default=0.0, ge=0.0, description="Weight of predecessors in the neighbour table (successors: 1)."
    )
    neighbour_distance: int = Field(
        default=3, ge=1, description="Steps within a session that count as 'followed by' (weight 1/steps)."
    )
    # Session-kNN votes (model/session_votes.py): similar training sessions vote for their items
    knn_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="Weight of log(floor + session-kNN vote share) in the score (0: off).",
    )
    knn_floor: float = Field(
        default=0.01, gt=0.0, description="Floor inside the session-kNN log (items no neighbour contains)."
    )
    knn_k: int = Field(default=100, ge=1, description="Most similar training sessions that vote.")
    knn_sample: int = Field(
        default=500, ge=1, description="Most recent training sessions sharing an item that are compared."
    )
    use_event_types: bool = Field(default=True, description="Add an event-type embedding to the GRU input.")
    dropout_embedding: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout on the input embedding."
    )
    dropout_hidden: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the output vector.")
    # Loss and sampling
    loss: Literal["ce", "bpr-max"] = Field(
        default="ce", description="Sampled softmax cross-entropy or BPR-max."
    )
    n_negatives: int = Field(
        default=2048, ge=0, description="Extra popularity-sampled negatives per mini-batch."
    )
    sample_alpha: float = Field(default=0.75, ge=0.0, le=1.0, description="Negatives drawn ~ count**alpha.")
    logq: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Weight of the log-sampling-probability correction."
    )
    bpreg: float = Field(default=1.0, ge=0.0, description="BPR-max score regularisation.")
    # Optimisation
    batch_size: int = Field(default=128, ge=1, description="Session-parallel lanes.")
    shuffle: bool = Field(
        default=False, description="Shuffle sessions each epoch (False: time order, recent last)."
    )
    bptt: int = Field(default=1, ge=1, description="Steps back-propagated through (truncated BPTT window).")
    learning_rate: float = Field(default=0.005, gt=0.0, description="Adam learning rate.")
    epochs: int = Field(default=10, ge=1, description="Most epochs.")
    patience: int = Field(
        default=2, ge=0, description="Stop after this many epochs without a better valid MRR@20."
    )
    select_best: bool = Field(
        default=True,
        description="Keep the epoch with the best valid MRR@20 (False: the last epoch, no early stop).",
    )
    seed: int = Field(default=42, description="Seed for torch and numpy.")
    threads: int = Field(default=2, ge=1, description="Torch threads while training.")
    # Data
    gap_seconds: float = Field(
        default=1800.0, gt=0.0, description="Inactivity gap that cuts sessions (events format)."
    )
    split_gap: bool = Field(default=False, description="Also cut TSV sessions at the inactivity gap.")
    drop_repeats: bool = Field(default=False, description="Collapse consecutive repeated items.")
    min_item_support: int = Field(default=1, ge=1, description="Drop items seen fewer times in training.")
    min_session_length: int = Field(default=2, ge=1, description="Drop shorter sessions.")
    valid_fraction: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="Held-out tail when no --valid is given."
    )
    stream_warmup: bool = Field(
        default=True,
        description="With --items: choose the stream warm-up weights of content-placed items on a "
        "validation split of the training data (model.warmup_fit; one more training on 75 % of it).",
    )
    train_on_all: bool = Field(
        default=False,
        description="Without --valid: train on the whole file too (the tail is then in-sample validation, "
        "used only for reporting and calibration; set select_best false).",
    )
    max_valid_cases: int = Field(
        default=20_000, ge=1, description="Validation cases used per epoch (the latest)."
    )
    # Calibration
    calibration_horizon: int = Field(
        default=5, ge=1, description="Interest = P(candidate within the next N events)."
    )


def load_config(spec: str | None) -> TrainConfig:
    """Config from a named preset (``quick``), a ``.json``/``.toml`` path, or defaults when None."""
    if spec is None:
        return TrainConfig()
    path = Path(spec)
    if not path.exists():
        named = CONFIG_DIR / f"{spec}.json"
        if not named.exists():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise ValueError(f"config {spec!r} is neither a file nor a preset ({', '.join(known)})")
        path = named
    if path.suffix == ".toml":
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
    return TrainConfig.model_validate(data)
