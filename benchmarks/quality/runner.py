"""The model-quality benchmark's measurement of one dataset: train the GRU in a child process (with the
dataset's preset, or with none so that ``kairos train`` tunes itself), evaluate it with and without its
session memory and fit and evaluate every baseline on the same full-catalog path, and keep the
training figures, the chosen config and, for a tuned run, a summary of the tuning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.quality.config import DATASETS, ROOT, UNSEEN
from benchmarks.quality.unseen_split import split_retailrocket
from model.artifact import load_artifact
from model.baselines import all_baselines
from model.config import CONFIG_DIR
from model.data import ItemIndex, encode
from model.data_files import load_log, load_test_cases
from model.evaluate import evaluate_baseline, evaluate_model


def run_dataset(
    name: str, data_dir: Path, work: Path, tuned: bool = False, budget: float | None = None
) -> dict[str, Any]:
    """Train (with the dataset's preset, or ``tuned``: no preset) and evaluate the GRU and the baselines."""
    if name == UNSEEN:
        if not tuned:
            raise SystemExit(f"{name} has no preset: run it with --tuned")
        train_path, test_path = split_retailrocket(data_dir, work)
        train_fmt = test_fmt = "sessions"
    else:
        train_rel, train_fmt, test_rel, test_fmt = DATASETS[name]
        train_path, test_path = data_dir / train_rel, data_dir / test_rel
    out = work / name
    config = CONFIG_DIR / f"{name}.json"
    how = ["--config", str(config)]
    if tuned:  # no preset: kairos train tunes itself
        how = ["--tune-budget", f"{budget:g}"] if budget is not None else []
    cmd = [
        sys.executable,
        "-m",
        "model.cli",
        "train",
        "--train",
        str(train_path),
        "--train-format",
        train_fmt,
        "--out",
        str(out),
        *how,
        "--quiet",
    ]
    print(f"[{name}] training: {' '.join(cmd)}", file=sys.stderr)
    wall = time.perf_counter()
    # Idle OpenMP threads sleep instead of spinning: on this shared 2-core machine a spinning torch
    # thread pool next to another busy process ran an epoch over 20 times slower (results are the same).
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - wall
    art = load_artifact(out)
    index = ItemIndex(ids=art.item_ids, counts=[0] * len(art.item_ids))  # type: ignore[arg-type]
    cases = load_test_cases(test_path, test_fmt, index)
    t0 = time.perf_counter()
    gru = evaluate_model(art.model, cases)
    gru["eval_seconds"] = time.perf_counter() - t0
    gru_alone = None
    if art.model.window:
        # The same weights with the session-memory terms switched off: what the memory adds.
        art.model.memory_cfg = art.model.memory_cfg.model_copy(
            update={"repeat_bonus": 0.0, "neighbour_weight": 0.0, "knn_weight": 0.0}
        )
        gru_alone = evaluate_model(art.model, cases)
    result: dict[str, Any] = {
        "gru": gru,
        "gru_alone": gru_alone,
        "train": {
            k: art.metrics[k]
            for k in (
                "train_seconds",
                "events_per_second",
                "peak_rss_bytes",
                "best_epoch",
                "n_train_events",
                "n_items",
            )
        },
    }
    result["train"]["neighbour_seconds"] = art.metrics.get("neighbour_seconds")
    result["train"]["wall_seconds"] = wall  # the whole child process: loading, tuning, training, writing
    # Per epoch: training loss, seconds, and the validation metrics when the run had a validation split.
    result["train"]["history"] = art.metrics.get("history", [])
    result["config"] = json.loads(config.read_text()) if not tuned else _chosen(art.config.model_dump())
    if tuned:
        result["tuning"] = _tuning_summary(art.metrics["tuning"])
    cal = art.metrics.get("calibration", {})
    result["calibration"] = {k: v for k, v in cal.items() if not k.startswith("norm_")}
    log = load_log(train_path, train_fmt)
    sessions = encode(log, index, drop_unknown=True)
    result["baselines"] = {}
    for baseline in all_baselines():
        t0 = time.perf_counter()
        baseline.fit(sessions, len(index))
        fit_s = time.perf_counter() - t0
        metrics = evaluate_baseline(baseline, cases)
        metrics["fit_seconds"] = fit_s
        metrics["eval_seconds"] = time.perf_counter() - t0 - fit_s
        result["baselines"][baseline.name] = metrics
        print(
            f"[{name}] {baseline.name}: R@20 {metrics['recall@20']:.4f} MRR@20 {metrics['mrr@20']:.4f}",
            file=sys.stderr,
        )
    print(f"[{name}] gru: R@20 {gru['recall@20']:.4f} MRR@20 {gru['mrr@20']:.4f}", file=sys.stderr)
    return result


def _chosen(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a tuned config that differ from the defaults (what the tuner chose)."""
    from model.config import TrainConfig

    defaults = TrainConfig().model_dump()
    return {k: v for k, v in config.items() if defaults.get(k) != v}


def _tuning_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The tuning record without the per-setting memory search (kept in the artifact's tuning.json)."""
    return {
        "budget_seconds": record["budget_seconds"],
        "seconds": record["seconds"],
        "stage1_seconds": record["stage1_seconds"],
        "stage2_seconds": record["stage2_seconds"],
        "n_valid_cases": record["n_valid_cases"],
        "n_candidates": record["n_candidates"],
        "n_candidates_tried": record["n_candidates_tried"],
        "n_memory_settings": len(record["memory_search"]),
        "candidates": [
            {
                "name": c["name"],
                "best_epoch": c["best_epoch"],
                "epochs_trained": len(c["epochs"]),
                "valid": [e["valid"] for e in c["epochs"]],
                "stopped": c["stopped"],
            }
            for c in record["candidates"]
        ],
        "choice": record["choice"],
        "anchor": record.get("anchor"),
    }
