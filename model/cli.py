"""Command lines: ``kairos train`` (:func:`train_main`) and ``kairos evaluate`` (:func:`evaluate_main`)."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.artifact import load_artifact, save_artifact
from model.baselines import all_baselines
from model.calibration import fit_calibration
from model.config import TrainConfig, load_config
from model.data import (
    DataError,
    ItemIndex,
    PreprocessOptions,
    SessionLog,
    cases_from_sessions,
    encode,
    mask_unseen,
    preprocess,
    split_train_valid,
)
from model.data_files import file_fingerprint, load_log, load_test_cases
from model.evaluate import evaluate_baseline, evaluate_model
from model.tuning import DEFAULT_BUDGET_SECONDS, TuningResult, tune


def _options(cfg: TrainConfig, fmt: str) -> PreprocessOptions:
    gap = cfg.gap_seconds if (cfg.split_gap and fmt == "sessions") else None
    return PreprocessOptions(
        gap_seconds=gap,
        drop_repeats=cfg.drop_repeats,
        min_item_support=cfg.min_item_support,
        min_session_length=cfg.min_session_length,
    )


def plot_curve(history: list[dict[str, float]], path: Path) -> None:
    """Training loss and validation Recall@20 / MRR@20 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, left = plt.subplots(figsize=(6, 3.5))
    left.plot(epochs, [r["loss"] for r in history], "o-", color="tab:blue", label="train loss")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss")
    if history and "valid_mrr@20" in history[0]:
        right = left.twinx()
        right.plot(
            epochs, [r["valid_recall@20"] for r in history], "s-", color="tab:green", label="valid R@20"
        )
        right.plot(epochs, [r["valid_mrr@20"] for r in history], "^-", color="tab:red", label="valid MRR@20")
        right.set_ylabel("validation")
        right.legend(loc="center right")
    left.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started (its program, not its parent's).

    ``getrusage``'s ``ru_maxrss`` survives ``execve`` on Linux: a ``kairos train`` started by a large
    process (a benchmark that had loaded another dataset) reported the parent's size. ``VmHWM`` belongs
    to the process's own address space, which ``execve`` replaces; ``ru_maxrss`` is the fallback
    where ``/proc`` is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class TrainingData:
    """The training file as used: sessions after preprocessing, the item index, the ``--valid`` file."""

    log: SessionLog
    index: ItemIndex
    valid_log: SessionLog | None

    def split(self, cfg: TrainConfig) -> tuple[SessionLog, SessionLog]:
        """(sessions to train on, validation sessions): the ``--valid`` file, or the time-ordered tail."""
        if self.valid_log is not None:
            return self.log, self.valid_log
        train_log, valid_log = split_train_valid(self.log, cfg.valid_fraction)
        return (self.log if cfg.train_on_all else train_log), valid_log


def load_training_data(train_path: str, fmt: str, valid_path: str | None, cfg: TrainConfig) -> TrainingData:
    """Load and preprocess the training file (and the ``--valid`` file when given).

    The item index covers every item of the training file as loaded (``min_item_support`` applies),
    also those that preprocessing or the validation hold-out leave without a training event: they can
    still be recommended and ranked, and a test case with such a target is not dropped.
    """
    raw = load_log(train_path, fmt, cfg.gap_seconds)
    log = preprocess(raw, _options(cfg, fmt))
    if len(log) == 0:
        raise DataError(train_path, None, "no training sessions left after preprocessing")
    valid_log = load_log(valid_path, fmt, cfg.gap_seconds) if valid_path else None
    return TrainingData(log=log, index=ItemIndex.build(raw, cfg.min_item_support), valid_log=valid_log)


def run_tuning(data: TrainingData, base: TrainConfig, budget_seconds: float) -> TuningResult:
    """Choose the configuration on the validation split (never a test file) within the budget."""
    train_log, valid_log = data.split(base.model_copy(update={"train_on_all": False}))
    if len(train_log) == 0:
        raise DataError("--train", None, "no training sessions left for tuning after the validation split")
    sessions = encode(train_log, data.index)
    valid_cases = cases_from_sessions(mask_unseen(encode(valid_log, data.index), sessions))
    return tune(sessions, data.index, valid_cases, base, budget_seconds)


def run_training(
    train_path: str,
    fmt: str,
    valid_path: str | None,
    out: str,
    cfg: TrainConfig,
    progress: bool = True,
    items_path: str | None = None,
    data: TrainingData | None = None,
    tuning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load (unless ``data`` is given), train, calibrate and write the artifact; return the metrics.

    ``items_path``: an item catalog (model.content_fit) to fit the content mapping for new items from.
    ``tuning``: the tuner's record, saved as ``tuning.json`` in the artifact and under ``tuning`` in
    the metrics.
    """
    from model.train import train

    started = time.perf_counter()
    if data is None:
        data = load_training_data(train_path, fmt, valid_path, cfg)
    train_log, valid_log = data.split(cfg)
    if len(train_log) == 0:
        # The hold-out takes at least one session; a one-session file ended here blamed on preprocessing.
        raise DataError(
            train_path,
            None,
            f"no training sessions left after the validation hold-out ({len(data.log)} session(s) after "
            "preprocessing; give --valid or more sessions)",
        )
    index = data.index
    sessions = encode(train_log, index)
    valid_sessions = encode(valid_log, index)
    valid_cases = cases_from_sessions(valid_sessions)
    out_dir = Path(out)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kairos-train-", dir=out_dir.parent) as scratch:
        result = train(sessions, index, cfg, valid_cases, Path(scratch) / "checkpoints", progress)
        calibration = fit_calibration(
            result.model, valid_sessions, cfg.calibration_horizon, index.counts, cfg.seed
        )
        fingerprint = file_fingerprint(
            [train_path] + [p for p in (valid_path, items_path) if p], cfg.model_dump_json()
        )
        best = result.history[result.best_epoch - 1] if result.history else {}
        metrics: dict[str, Any] = {
            "train_path": str(train_path),
            "train_format": fmt,
            "n_train_sessions": len(train_log),
            "n_train_events": int(len(sessions.items)),
            "n_items": len(index),
            "n_valid_cases": len(valid_cases),
            "best_epoch": result.best_epoch,
            "valid": {k[len("valid_") :]: v for k, v in best.items() if k.startswith("valid_")},
            "history": result.history,
            "train_seconds": result.train_seconds,
            "events_per_second": result.events_per_second,
            "neighbour_seconds": result.neighbour_seconds,
            "total_seconds": time.perf_counter() - started,
            "peak_rss_bytes": peak_rss_bytes(),
            "calibration": calibration,
        }
        curve = Path(scratch) / "training_curve.png"
        plot_curve(result.history, curve)
        extra = {"training_curve.png": curve}
        if tuning is not None:
            metrics["tuning_seconds"] = tuning["seconds"]
            metrics["tuning"] = tuning
            record = Path(scratch) / "tuning.json"
            record.write_text(json.dumps(tuning, indent=2, default=float), encoding="utf-8")
            extra["tuning.json"] = record
        ckpt_dir = Path(scratch) / "checkpoints"
        for ckpt in sorted(ckpt_dir.glob("epoch-*.pt")):
            extra[f"checkpoint-{ckpt.name}"] = ckpt
        content = None
        if items_path:
            from model.content_fit import fit_for_model

            content = fit_for_model(result.model, index.ids, index.counts, items_path, cfg.seed)
            metrics["content"] = content.report
            if cfg.stream_warmup:
                from model.warmup_fit import choose_warmup

                metrics["warmup"] = choose_warmup(data.log, items_path, cfg, train_path)
        version = save_artifact(
            out_dir, result.model, index.ids, cfg, metrics, fingerprint, calibration, extra, content
        )
    metrics["version"] = version
    return metrics


def train_main(argv: list[str]) -> int:
    """``kairos train``: train a model and write the artifact directory. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="kairos train", description="Train the GRU session model.")
    parser.add_argument("--train", required=True, help="training data file")
    parser.add_argument("--train-format", choices=["sessions", "sequences", "events"], default="sessions")
    parser.add_argument(
        "--valid", help="validation file (same format); default: time-ordered tail of --train"
    )
    parser.add_argument("--out", required=True, help="artifact directory to write")
    parser.add_argument(
        "--config", help="preset name (e.g. quick) or a .json/.toml file; trained as is (no tuning)"
    )
    parser.add_argument(
        "--tune-budget",
        type=float,
        metavar="SECONDS",
        help="without --config: seconds to choose the GRU settings, epochs and session-memory weights on "
        f"the validation split (default {DEFAULT_BUDGET_SECONDS:.0f}); the final training on all the data "
        "comes on top. 0: no tuning, train the defaults",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--items",
        help="item catalog (JSONL or TSV: item_id, title, category, optional image) to fit the content "
        "mapping that places new items (model/content_fit.py)",
    )
    args = parser.parse_args(argv)
    if args.config is not None and args.tune_budget is not None:
        parser.error("--tune-budget applies only without --config (a preset is trained as is)")
    budget = DEFAULT_BUDGET_SECONDS if args.tune_budget is None else args.tune_budget
    if budget < 0:
        parser.error("--tune-budget must be >= 0")
    try:
        cfg = load_config(args.config)
        data = load_training_data(args.train, args.train_format, args.valid, cfg)
        tuning = None
        if args.config is None and budget > 0:
            chosen = run_tuning(data, cfg, budget)
            cfg, tuning = chosen.config, chosen.record
        metrics = run_training(
            args.train, args.train_format, args.valid, args.out, cfg, not args.quiet, args.items, data, tuning
        )
    except (DataError, ValueError, OSError) as exc:
        print(f"kairos train: error: {exc}", file=sys.stderr)
        return 2
    valid = metrics["valid"]
    print(
        f"model {metrics['version']} -> {args.out}: {metrics['n_items']} items, "
        f"best epoch {metrics['best_epoch']}, "
        f"valid recall@20 {valid.get('recall@20', float('nan')):.4f} "
        f"mrr@20 {valid.get('mrr@20', float('nan')):.4f}, "
        f"{metrics['train_seconds']:.1f} s, {metrics['events_per_second']:,.0f} events/s"
        + (f" (after {metrics['tuning_seconds']:.0f} s of tuning)" if "tuning_seconds" in metrics else "")
    )
    return 0


def _fmt(metrics: dict[str, float]) -> str:
    keys = [k for k in metrics if "@" in k]
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def evaluate_main(argv: list[str]) -> int:
    """``kairos evaluate``: full-catalog next-item metrics of a model (and baselines) on a test file."""
    parser = argparse.ArgumentParser(prog="kairos evaluate", description="Evaluate a model artifact.")
    parser.add_argument("--model", required=True, help="artifact directory")
    parser.add_argument("--test", required=True, help="test file")
    parser.add_argument(
        "--test-format", choices=["sessions", "prefixes", "sequences", "events"], default="sessions"
    )
    parser.add_argument("--baselines", action="store_true", help="also fit and score the baselines")
    parser.add_argument(
        "--train", help="training file for the baselines (default: the one recorded in the model)"
    )
    parser.add_argument("--train-format", choices=["sessions", "sequences", "events"])
    parser.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = parser.parse_args(argv)
    try:
        art = load_artifact(args.model)
        from model.data import ItemIndex as _Index

        index = _Index(ids=art.item_ids, counts=np.zeros(len(art.item_ids), dtype=np.int64))
        cases = load_test_cases(args.test, args.test_format, index, art.config.gap_seconds)
        started = time.perf_counter()
        result: dict[str, Any] = dict(evaluate_model(art.model, cases))
        result["seconds"] = time.perf_counter() - started
        result["version"] = art.version
        if args.baselines:
            train_path = args.train or art.metrics.get("train_path")
            train_fmt = args.train_format or art.metrics.get("train_format", "sessions")
            if not train_path:
                raise ValueError("--baselines needs --train (the model does not record its training file)")
            log = preprocess(
                load_log(train_path, train_fmt, art.config.gap_seconds), _options(art.config, train_fmt)
            )
            sessions = encode(log, index, drop_unknown=True)
            result["baselines"] = {}
            for baseline in all_baselines():
                baseline.fit(sessions, len(index))
                result["baselines"][baseline.name] = evaluate_baseline(baseline, cases)
    except (DataError, ValueError, OSError, RuntimeError) as exc:
        print(f"kairos evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"model {art.version}: {result['n_cases']} cases, {result['n_dropped']} of them with a target "
        "the model cannot rank (counted as misses)"
    )
    print(f"  gru          {_fmt(result)}")
    for name, metrics in result.get("baselines", {}).items():
        print(f"  {name:<12} {_fmt(metrics)}")
    if args.json:
        print(json.dumps(result, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model.cli train|evaluate ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("train", "evaluate"):
        print("usage: python -m model.cli train|evaluate [options]", file=sys.stderr)
        return 2
    return (train_main if args[0] == "train" else evaluate_main)(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
