"""The watcher with the real loader (model.scorer.IncrementalScorer) on tiny untrained artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from stream.contract import EVENT_TYPES
from stream.model_reload import ModelWatcher, install_model

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def build_artifact(out: Path, seed: int) -> str:
    """A tiny untrained artifact written by the model package's own exporter; returns its version."""
    from model.artifact import save_artifact
    from model.config import TrainConfig
    from model.net import SessionGRU

    torch.manual_seed(seed)
    cfg = TrainConfig.model_validate({"embedding_size": 8, "hidden_size": 8, "threads": 1})
    net = SessionGRU(20, len(EVENT_TYPES), cfg)
    return save_artifact(
        out, net, [str(1000 + i) for i in range(20)], cfg, {}, fingerprint=f"ops-{seed}", calibration={}
    )


def test_real_loader_refuses_corrupt_artifact_and_switches(tmp_path: Path) -> None:
    from model.scorer import IncrementalScorer

    current = tmp_path / "models" / "current"
    v1 = build_artifact(tmp_path / "a", 1)
    install_model(tmp_path / "a", current)
    watcher: ModelWatcher[IncrementalScorer] = ModelWatcher(current, interval_seconds=0, settle_seconds=0)
    first = watcher.poll()
    assert first is not None and first.version == v1
    assert first.item_indices(["1003", "nope"]).tolist() == [3, -1]

    build_artifact(tmp_path / "b", 2)
    weights = tmp_path / "b" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = REGISTRY.get_sample_value("kairos_model_load_failures_total", {"reason": "checksum"}) or 0.0
    install_model(tmp_path / "b", current)
    assert watcher.poll() is None
    assert watcher.version == v1
    after = REGISTRY.get_sample_value("kairos_model_load_failures_total", {"reason": "checksum"}) or 0.0
    assert after - before == 1

    v3 = build_artifact(tmp_path / "c", 3)
    install_model(tmp_path / "c", current)
    second = watcher.poll()
    assert second is not None and second.version == v3 != v1
    assert REGISTRY.get_sample_value("kairos_model_info", {"version": v3}) == 1
