"""The push-outcomes benchmark's model: trained on the warm-up days of the run's world (so it knows
the world but never the evaluated days) and cached under ``.kairos/bench/`` (:func:`ensure_model`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from benchmarks.outcomes.config import BENCH_DIR, TRAINING, BenchConfig, _say
from stream.contract import Event, to_json_bytes
from stream.simulator import WORLD_VERSION, World


class TrainingFailed(RuntimeError):
    """The warm-up days could not train a model (too few events, usually): the Kairos arm cannot run."""


def ensure_model(cfg: BenchConfig) -> Path:
    """A model trained on the warm-up days of this world, cached under ``.kairos/bench/``."""
    from model.artifact import ArtifactError
    from model.cli import train_main
    from model.scorer import IncrementalScorer

    # The training config is part of the key: a changed DEMO_TRAINING must not reuse a stale model.
    key = hashlib.sha256(json.dumps([TRAINING, WORLD_VERSION], sort_keys=True).encode()).hexdigest()[:8]
    work = BENCH_DIR / f"model-s{cfg.seed}-u{cfg.users}-i{cfg.items}-w{cfg.warmup_days:g}-{key}"
    artifact = work / "artifact"
    try:
        IncrementalScorer.load(artifact)
        return artifact
    except (ArtifactError, FileNotFoundError, OSError):
        pass
    work.mkdir(parents=True, exist_ok=True)
    world = World(cfg.sim_config())
    events = work / "warmup-events.jsonl"
    n = 0
    with open(events, "wb") as f:
        for msg in world.advance(cfg.start()):
            if isinstance(msg, Event):
                f.write(to_json_bytes(msg) + b"\n")
                n += 1
    (work / "train.json").write_text(json.dumps(TRAINING))
    if artifact.exists():
        shutil.rmtree(artifact)
    started = time.monotonic()
    _say(f"[bench] training a model on {n} warm-up events ...")
    code = train_main(
        [
            "--train",
            str(events),
            "--train-format",
            "events",
            "--out",
            str(artifact),
            "--config",
            str(work / "train.json"),
            "--quiet",
        ]
    )
    if code != 0:
        raise TrainingFailed(
            f"the Kairos arm's model could not be trained on the {n} warm-up events of seed {cfg.seed} "
            f"(the trainer's message is above): give the world more users or warm-up days"
        )
    _say(f"[bench] model trained in {time.monotonic() - started:.0f}s -> {artifact}")
    return artifact
