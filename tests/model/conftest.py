"""Shared fixtures: tiny synthetic session data and a tiny trained artifact (built once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import TrainConfig

torch.set_num_threads(1)


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt a file in place: invert the bits of one byte."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def markov_sessions(n_sessions: int, n_items: int = 40, seed: int = 0) -> list[list[int]]:
    """Sessions following a sparse Markov chain (each item has 2 likely successors)."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, n_items, size=(n_items, 2))
    out = []
    for _ in range(n_sessions):
        item = int(rng.integers(0, n_items))
        seq = [item]
        for _ in range(int(rng.integers(2, 8))):
            item = (
                int(succ[item, int(rng.random() < 0.3)])
                if rng.random() < 0.9
                else int(rng.integers(0, n_items))
            )
            seq.append(item)
        out.append(seq)
    return out


def write_session_tsv(path: Path, sessions: list[list[int]], start: float = 1_700_000_000.0) -> Path:
    """Write sessions as a SessionId/ItemId/Time TSV, one minute between sessions."""
    lines = ["SessionId\tItemId\tTime"]
    for s, seq in enumerate(sessions):
        for i, item in enumerate(seq):
            lines.append(f"{s + 1}\t{1000 + item}\t{start + 60.0 * s + i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY = TrainConfig(
    embedding_size=16,
    hidden_size=16,
    n_negatives=32,
    batch_size=16,
    epochs=4,
    patience=4,
    learning_rate=0.01,
    threads=1,
    calibration_horizon=3,
    last_item_skip=True,
)
# The other architecture: untied output embeddings, no skip, state = GRU units only.
PLAIN = TINY.model_copy(update={"last_item_skip": False, "tied": False, "hidden_size": 12, "epochs": 2})
# With session memory: a window of recent items scored as repeats and neighbours.
MEMORY = TINY.model_copy(
    update={
        "session_window": 4,
        "window_decay": 0.8,
        "repeat_bonus": 1.5,
        "neighbour_weight": 0.3,
        "neighbour_k": 5,
        "epochs": 2,
    }
)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train/valid/test TSVs drawn from one Markov chain."""
    root = tmp_path_factory.mktemp("tinydata")
    sessions = markov_sessions(900)
    return {
        "train": write_session_tsv(root / "train.tsv", sessions[:700]),
        "valid": write_session_tsv(root / "valid.tsv", sessions[700:800], start=1_700_100_000.0),
        "test": write_session_tsv(root / "test.tsv", sessions[800:], start=1_700_200_000.0),
        "root": root,
    }


def _trained(tiny_data: dict[str, Path], name: str, cfg: TrainConfig) -> Path:
    """Train ``cfg`` on the tiny train/valid files into ``root/name`` (a few seconds on one thread)."""
    from model.cli import run_training

    out = tiny_data["root"] / name
    run_training(str(tiny_data["train"]), "sessions", str(tiny_data["valid"]), str(out), cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_data: dict[str, Path]) -> Path:
    """A small trained artifact (tied embeddings, last-item skip)."""
    return _trained(tiny_data, "artifact", TINY)


@pytest.fixture(scope="session")
def plain_artifact(tiny_data: dict[str, Path]) -> Path:
    """A small artifact of the untied, skip-less architecture."""
    return _trained(tiny_data, "plain", PLAIN)


@pytest.fixture(scope="session")
def memory_artifact(tiny_data: dict[str, Path]) -> Path:
    """A small artifact with session memory (repeat and neighbour terms)."""
    return _trained(tiny_data, "memory", MEMORY)


@pytest.fixture(scope="session")
def content_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data for a tiny content-mapped model (``tests.model.content_support``)."""
    from tests.model.content_support import build_content_data

    return build_content_data(tmp_path_factory.mktemp("content"))


@pytest.fixture(scope="session")
def content_artifact(content_data: dict[str, Path]) -> Path:
    """A tiny model trained with a content mapping (tied, last-item skip and session memory)."""
    from tests.model.content_support import CONTENT_CFG, _train

    return _train(content_data, "with-content", CONTENT_CFG)
