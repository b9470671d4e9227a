"""Model quality benchmark: baselines and the GRU on yoochoose-100k and Diginetica, next to the references.

    .venv/bin/python benchmarks/model_quality.py [--quick] [--json] [--report PATH]
    .venv/bin/python benchmarks/model_quality.py --tuned [--tune-budget SECONDS] [--quick] [--json]
    .venv/bin/python benchmarks/model_quality.py --from-json benchmarks/reports/model_quality.json
    .venv/bin/python benchmarks/model_quality.py --scorer-timing   # interest() cost, no data needed

Trains each model in a child process (``python -m model.cli train``, so its peak RSS is its own),
evaluates it and the baselines on the same full-catalog path, and writes
``benchmarks/reports/model_quality.md``, its figures (``model_quality-<dataset>-*.png``: training curves,
Recall/MRR against the references) and the raw results ``model_quality.json`` beside it; ``--from-json``
writes the report and figures again from such a file without training. ``--quick`` runs yoochoose
only. Hyper-parameters come from ``model/configs/<dataset>.json``; they were chosen on validation
splits (``train_tr``/``train_valid`` for yoochoose, the time-ordered tail of the training sessions for
Diginetica), never on test.

``--tuned`` trains with ``kairos train`` and no preset instead (the tuner chooses everything on the
time-ordered tail of the training file, ``model/tuning.py``) and writes
``benchmarks/reports/model_quality_tuned.md`` (+ ``.json``), with the tuning and training times and the
preset run's figures beside (from ``model_quality.json``). A tuned run also trains on
``retailrocket-sample`` (sessions starting in its last day are the test, :func:`split_retailrocket`): a
dataset with no preset and no published figure, the check that the self-tuning generalises; its anchor
is our strongest baseline (session-kNN there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.artifact import load_artifact  # noqa: E402
from model.baselines import all_baselines  # noqa: E402
from model.config import CONFIG_DIR  # noqa: E402
from model.data import ItemIndex, encode, load_log, load_test_cases  # noqa: E402
from model.evaluate import evaluate_baseline, evaluate_model  # noqa: E402
from stream.settings import get_settings  # noqa: E402

# (name, how obtained, R@10, MRR@10, R@20, MRR@20, training rows/s) from shared/data/REFERENCES.md
REFERENCES: dict[str, list[tuple[str, float | None, float | None, float, float, float | None]]] = {
    "yoochoose-100k": [
        ("popularity (measured)", 0.0739, 0.0254, 0.0894, 0.0264, None),
        ("transitions (measured)", 0.5479, 0.3400, 0.5907, 0.3430, None),
        ("official GRU4Rec 480 units, 10 ep (measured)", 0.5393, 0.2922, 0.6249, 0.2983, 2873.0),
        (
            "official GRU4Rec 100 units, 5 ep (measured, picked on test)",
            0.6230,
            0.3712,
            0.6993,
            0.3765,
            6960.0,
        ),
    ],
    "diginetica": [
        ("SR-GNN (published)", None, None, 0.5073, 0.1759, None),
        ("GCE-GNN (published)", None, None, 0.5422, 0.1904, None),
        ("NARM (published)", None, None, 0.4970, 0.1617, None),
        ("transitions (measured)", None, None, 0.3472, 0.1292, None),
        ("official GRU4Rec BPR-max 512 units (measured)", 0.4060, 0.1739, 0.5422, 0.1833, 4491.0),
    ],
}

DATASETS = {
    "yoochoose-100k": ("yoochoose-100k/train_full.tsv", "sessions", "yoochoose-100k/test.tsv", "sessions"),
    "diginetica": ("diginetica/train_sessions.txt", "sequences", "diginetica/test_prefixes.tsv", "prefixes"),
}
# A dataset split at run time from a raw event file, with no preset and no published reference: the
# stand-in for "a shop's own data that the presets and the tuner's candidates were never shaped on"
# (they came from yoochoose and Diginetica). ``--tuned`` runs only; its anchor is our strongest baseline.
UNSEEN = "retailrocket-sample"
TEST_HOURS = 24.0  # the sessions that start in the last day of the file are the test


def split_retailrocket(data_dir: Path, work: Path) -> tuple[Path, Path]:
    """The RetailRocket sample as (train, test) session files: test = sessions starting in the last day.

    Rows are copied whole (``Time``, ``UserId``, ``Type``, ``ItemId``, ``SessionId``, ``CatId``: the
    ``sessions`` format reads the three it needs and the event type), so views, carts and purchases are
    all steps, as in the worker. Items first seen in the test day stay there: a case whose target the
    model cannot rank counts as a miss.
    """
    source = data_dir / UNSEEN / "events.tsv"
    lines = source.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:] if line]
    columns = header.split("\t")
    i_time, i_session = columns.index("Time"), columns.index("SessionId")
    start: dict[str, float] = {}
    for row in rows:
        ts = float(row[i_time])
        start[row[i_session]] = min(ts, start.get(row[i_session], ts))
    cut = max(start.values()) - TEST_HOURS * 3600.0
    out = work / f"{UNSEEN}-split"
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.tsv", out / "test.tsv"
    with train.open("w", encoding="utf-8") as tr, test.open("w", encoding="utf-8") as te:
        tr.write(header + "\n")
        te.write(header + "\n")
        for row in rows:
            (te if start[row[i_session]] >= cut else tr).write("\t".join(row) + "\n")
    return train, test


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


def _best_us(fn: Any, args: tuple[Any, ...], repeats: int) -> float:
    """Fastest of ``repeats`` calls, in µs (after one warm-up call)."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best


def scorer_timing(
    n_items_list: tuple[int, ...] = (3_000, 43_097), batch: int = 512, n_cands: int = 50, repeats: int = 20
) -> list[dict[str, float]]:
    """µs per event of ``step``, ``score`` and ``interest`` (both calibration features), one thread.

    Untrained weights of the Diginetica preset's shape (with its session memory, and a random neighbour
    table of the same size; speed does not depend on the values). The same weights are saved twice, once
    per calibration feature, so only ``interest`` differs. ``*_no_memory`` keys: the same model without
    session memory (``session_window`` 0), for the cost of the memory terms.
    """
    import numpy as np
    import torch

    from model.artifact import save_artifact
    from model.calibration import normaliser_sample
    from model.config import load_config
    from model.net import SessionGRU
    from model.scorer import IncrementalScorer
    from stream.contract import EVENT_TYPES

    torch.set_num_threads(1)
    cfg = load_config(str(CONFIG_DIR / "diginetica.json"))
    plain_cfg = cfg.model_copy(update={"session_window": 0})
    rows = []
    with tempfile.TemporaryDirectory(prefix="kairos-scorer-") as work:
        for n_items in n_items_list:
            torch.manual_seed(0)
            model = SessionGRU(n_items, len(EVENT_TYPES), cfg).eval()
            if model.neighbour_idx.shape[1]:
                k = model.neighbour_idx.shape[1]
                table = torch.sort(torch.randint(0, n_items, (n_items, k), dtype=torch.int32), dim=1).values
                model.set_neighbours(table, torch.full((n_items, k), 1.0 / k))
            plain = SessionGRU(n_items, len(EVENT_TYPES), plain_cfg).eval()
            counts = np.random.default_rng(0).zipf(1.3, size=n_items).astype(np.float64)
            norm_items, norm_logw = normaliser_sample(counts)
            cals = {
                "log_softmax": {"feature": "log_softmax", "a": 1.0, "b": 0.0, "horizon": 5},
                "sampled_log_softmax": {
                    "feature": "sampled_log_softmax",
                    "a": 1.0,
                    "b": 0.0,
                    "horizon": 5,
                    "norm_items": norm_items.tolist(),
                    "norm_logw": norm_logw.tolist(),
                },
            }
            ids = [str(i) for i in range(n_items)]
            rng = np.random.default_rng(1)
            items = rng.integers(0, n_items, size=batch)
            types = np.zeros(batch, dtype=np.int64)
            cands = rng.integers(0, n_items, size=(batch, n_cands))
            row: dict[str, float] = {"n_items": n_items, "batch": batch, "candidates": n_cands}
            variants = [("", model, cfg, feature, cal) for feature, cal in cals.items()]
            variants.append(
                ("_no_memory", plain, plain_cfg, "sampled_log_softmax", cals["sampled_log_softmax"])
            )
            for suffix, net, net_cfg, feature, cal in variants:
                path = Path(work) / f"{n_items}-{feature}{suffix}"
                save_artifact(path, net, ids, net_cfg, {}, "0" * 64, cal)
                scorer = IncrementalScorer.load(path)
                states = scorer.initial_state(batch)
                for _ in range(net_cfg.session_window or 1):  # fill the window
                    states = scorer.step(states, rng.integers(0, n_items, size=batch), types)
                calls: list[tuple[str, Any, tuple[Any, ...]]] = [
                    (f"step{suffix}", scorer.step, (states, items, types)),
                    (f"score{suffix}", scorer.score, (states, cands)),
                    (f"interest_{feature}{suffix}", scorer.interest, (states, cands)),
                ]
                for name, fn, args in calls:
                    row[f"{name}_us_per_event"] = _best_us(fn, args, repeats) / batch
            rows.append(row)
    return rows


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def draw_figures(
    results: dict[str, dict[str, Any]], out: Path, stem: str = "model_quality"
) -> dict[str, list[tuple[str, Path]]]:
    """Per dataset: training curves (when the run recorded them), Recall/MRR@20 beside the references."""
    from benchmarks import plots

    drawn: dict[str, list[tuple[str, Path]]] = {}
    for name, res in results.items():
        figs: list[tuple[str, Path]] = []
        history = res["train"].get("history") or []
        if history:
            epochs = [int(h["epoch"]) for h in history]
            fig, ax = plots.figure(7.5, 3.6)
            ax.plot(epochs, [h["loss"] for h in history], "o-", color=plots.OURS, label="training loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"training loss ({res['config'].get('loss', 'loss')}, per event)")
            ax.set_xticks(epochs)
            ax.grid(alpha=0.3)
            handles = ax.get_legend_handles_labels()
            if any("valid_recall@20" in h for h in history):
                right = ax.twinx()
                for key, label, style, colour in (
                    ("valid_recall@20", "validation Recall@20", "s--", "tab:green"),
                    ("valid_mrr@20", "validation MRR@20", "^--", "tab:red"),
                ):
                    values = [100 * h.get(key, float("nan")) for h in history]
                    right.plot(epochs, values, style, color=colour, label=label)
                # With train_on_all the validation tail is also trained on: an optimistic curve.
                seen = " (tail also trained on)" if res["config"].get("train_on_all") else ""
                right.set_ylabel(f"validation metric, %{seen}")
                more = right.get_legend_handles_labels()
                handles = (handles[0] + more[0], handles[1] + more[1])
            ax.legend(*handles, fontsize=8, loc="center right")
            ax.set_title(f"{name}: training curve ({len(history)} epochs)")
            figs.append(("Training curve", plots.save(fig, out / f"{stem}-{name}-training.png")))

        gru = res["gru"]
        rows: list[tuple[str, float, float, str]] = [
            (
                "Kairos GRU + session memory" if res.get("gru_alone") else "Kairos GRU",
                gru["recall@20"],
                gru["mrr@20"],
                plots.OURS,
            ),
        ]
        if res.get("gru_alone"):
            rows.append(
                ("Kairos GRU alone", res["gru_alone"]["recall@20"], res["gru_alone"]["mrr@20"], "tab:cyan")
            )
        rows += [
            (f"{b} (ours)", m["recall@20"], m["mrr@20"], "tab:olive") for b, m in res["baselines"].items()
        ]
        rows += [(ref[0], ref[3], ref[4], plots.OTHER) for ref in REFERENCES.get(name, [])]
        fig, axes = plots.figure(11.0, 0.9 + 0.32 * len(rows), ncols=2)
        refs = REFERENCES.get(name, [])
        for k, metric in enumerate(("Recall@20", "MRR@20")):
            ax = axes[0][k]
            plots.hbars(
                ax,
                [r[0] if k == 0 else "" for r in rows],
                [100 * float(r[1 + k]) for r in rows],
                [r[3] for r in rows],
                fmt="{:.2f}",
            )
            if refs:
                best_ref = max(100 * (ref[3] if k == 0 else ref[4]) for ref in refs)
                ax.axvline(best_ref, color="tab:red", linestyle="--", linewidth=1)
            ax.set_xlabel(f"{metric}, % (dashed: best reference)")
            ax.set_title(metric)
        fig.suptitle(f"{name}: next-item ranking on the test split, full catalog")
        figs.append(
            (
                "Recall@20 and MRR@20 against the references",
                plots.save(fig, out / f"{stem}-{name}-ranking.png"),
            )
        )
        drawn[name] = figs
    return drawn


def render(
    results: dict[str, dict[str, Any]],
    command: str,
    figures: dict[str, list[tuple[str, Path]]] | None = None,
    report: Path | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The markdown report (figures' links when given; ``presets``: the preset run, beside a tuned one)."""
    from benchmarks.plots import markdown_images

    tuned = any("tuning" in res for res in results.values())
    lines = [
        "# Model quality" + (" without a preset (`kairos train` tunes itself)" if tuned else ""),
        "",
        "Full-catalog next-item ranking, pessimistic ties (protocol of `shared/data/README.md`; a test case",
        "whose target the model cannot rank counts as a miss).",
        f"Produced by `{command}` on this 2-core machine, CPU only, shared with other work (timings are",
        "therefore conservative; the quality figures are seeded and repeat exactly, the timings do not).",
    ]
    if tuned:
        lines += [
            "Hyper-parameters: chosen by `kairos train` itself (`model/tuning.py`) on the time-ordered last",
            "10 % of the training file, within its time budget; the test file is never read before the",
            "final model is written.",
            "",
        ]
    else:
        lines += [
            "Hyper-parameters: `model/configs/<dataset>.json`, chosen on validation splits, never on test.",
            "",
        ]
    for name, res in results.items():
        gru, train = res["gru"], res["train"]
        lines += [
            f"## {name} ({gru['n_cases']} test cases; {gru['n_dropped']} with a target not in the "
            "catalog, counted as misses)",
            "",
            "| system | Recall@10 | MRR@10 | Recall@20 | MRR@20 | training rows/s |",
            "|---|---|---|---|---|---|",
        ]
        alone = res.get("gru_alone")
        label = "Kairos GRU + session memory (ours)" if alone else "Kairos GRU (ours)"
        lines.append(
            f"| **{label}** | {_pct(gru['recall@10'])} | {_pct(gru['mrr@10'])} | "
            f"**{_pct(gru['recall@20'])}** | **{_pct(gru['mrr@20'])}** | {train['events_per_second']:,.0f} |"
        )
        if alone:
            lines.append(
                f"| Kairos GRU alone (same weights, memory terms off) | {_pct(alone['recall@10'])} | "
                f"{_pct(alone['mrr@10'])} | {_pct(alone['recall@20'])} | {_pct(alone['mrr@20'])} | — |"
            )
        for bname, m in res["baselines"].items():
            lines.append(
                f"| {bname} (ours, same eval path) | {_pct(m['recall@10'])} | {_pct(m['mrr@10'])} | "
                f"{_pct(m['recall@20'])} | {_pct(m['mrr@20'])} | — |"
            )
        refs = REFERENCES.get(name, [])
        for ref in refs:
            rate = "—" if ref[5] is None else f"{ref[5]:,.0f}"
            lines.append(
                f"| {ref[0]} | {_pct(ref[1])} | {_pct(ref[2])} | {_pct(ref[3])} | {_pct(ref[4])} | {rate} |"
            )
        if refs:
            anchor = "every reference"
            best_r, best_m = max(r[3] for r in refs), max(r[4] for r in refs)
        else:  # no published figure: our own baselines are the references
            anchor = "every baseline (no published reference)"
            best_r = max(m["recall@20"] for m in res["baselines"].values())
            best_m = max(m["mrr@20"] for m in res["baselines"].values())
        met = gru["recall@20"] > best_r and gru["mrr@20"] > best_m
        fixed = not res["config"].get("select_best", True)
        epochs_note = (
            f"{train['best_epoch']} epochs, last kept" if fixed else f"best epoch {train['best_epoch']}"
        )
        fastest = [r[5] for r in refs if r[5]]
        lines += [
            "",
            f"- **Goal (beat {anchor} in Recall@20 and MRR@20): {'met' if met else 'NOT met'}.**",
            f"- Best Recall@20 of those {_pct(best_r)}: ours {_pct(gru['recall@20'])} "
            f"({100 * (gru['recall@20'] - best_r):+.2f} points).",
            f"- Best MRR@20 of those {_pct(best_m)}: ours {_pct(gru['mrr@20'])} "
            f"({100 * (gru['mrr@20'] - best_m):+.2f} points).",
            f"- Training: {train['train_seconds']:.1f} s for {train['n_train_events']:,} events x epochs run "
            f"({epochs_note}), {train['events_per_second']:,.0f} events/s"
            + (
                f" = {train['events_per_second'] / max(fastest):.1f}x the official GRU4Rec's "
                f"{max(fastest):,.0f} rows/s"
                if fastest
                else ""
            )
            + (
                f"; building the session-memory neighbour table: {train['neighbour_seconds']:.1f} s more"
                if train.get("neighbour_seconds")
                else ""
            )
            + f"; peak RSS {train['peak_rss_bytes'] / 2**20:,.0f} MiB"
            + f"; evaluation {gru['eval_seconds']:.1f} s.",
            f"- Config: `{json.dumps(res['config'])}`",
        ]
        if res.get("tuning"):
            lines += _tuning_lines(name, res, (presets or {}).get(name))
        cal = res.get("calibration") or {}
        if cal.get("ece_by_feature"):
            by = ", ".join(f"{k} {v:.4f}" for k, v in cal["ece_by_feature"].items())
            lines.append(
                f"- Interest calibration (Platt, horizon {cal['horizon']}, held-out validation positions): "
                f"feature `{cal['feature']}`, ECE {cal['ece']:.4f} (uncalibrated next-item softmax "
                f"{cal['ece_raw']:.4f}; ECE per feature: {by})."
            )
        lines.append("")
        if figures and figures.get(name) and report is not None:
            lines += markdown_images(figures[name], report)
    return "\n".join(lines)


def _tuning_lines(name: str, res: dict[str, Any], preset: dict[str, Any] | None) -> list[str]:
    """The tuned run's extra lines: what was tried and chosen, the times, against the preset and kNN."""
    tun, gru, train = res["tuning"], res["gru"], res["train"]
    choice = tun["choice"]
    tried = ", ".join(
        f"{c['name']} ({c['epochs_trained']} ep, best MRR@20 "
        f"{100 * max(v['mrr@20'] for v in c['valid']):.2f} at {c['best_epoch']})"
        for c in tun["candidates"]
        if c["valid"]
    )
    lines = [
        f"- Tuning: {tun['seconds']:.0f} s (budget {tun['budget_seconds']:.0f} s; GRU candidates "
        f"{tun['stage1_seconds']:.0f} s, memory weights {tun['stage2_seconds']:.0f} s over "
        f"{tun['n_memory_settings']} settings), {tun['n_candidates_tried']} of {tun['n_candidates']} "
        f"candidates tried, {tun['n_valid_cases']:,} validation cases: {tried}.",
        f"- Chosen: {choice['candidate']}, {choice['epochs']} epochs, "
        f"memory `{json.dumps(choice['memory'])}`; "
        f"validation R@20 / MRR@20 {_pct(choice['valid']['recall@20'])} / {_pct(choice['valid']['mrr@20'])} "
        f"(GRU alone {_pct(choice['valid_gru_alone']['recall@20'])} / "
        f"{_pct(choice['valid_gru_alone']['mrr@20'])}"
        + (
            f"; session_knn on the same validation cases {_pct(tun['anchor']['recall@20'])} / "
            f"{_pct(tun['anchor']['mrr@20'])}"
            if tun.get("anchor")
            else ""
        )
        + ").",
        f"- Time in all: {train.get('wall_seconds', float('nan')):.0f} s for `kairos train` (tuning, then "
        f"the final training on all the data {train['train_seconds']:.0f} s), peak RSS "
        f"{train['peak_rss_bytes'] / 2**20:,.0f} MiB (the whole process).",
    ]
    knn = res["baselines"].get("session_knn")
    if knn:
        above = gru["recall@20"] > knn["recall@20"] and gru["mrr@20"] > knn["mrr@20"]
        lines.append(
            f"- Against session_knn ({_pct(knn['recall@20'])} / {_pct(knn['mrr@20'])}): "
            f"{100 * (gru['recall@20'] - knn['recall@20']):+.2f} / "
            f"{100 * (gru['mrr@20'] - knn['mrr@20']):+.2f} "
            f"points ({'above' if above else 'NOT above'})."
        )
    if preset:
        p = preset["gru"]
        dr, dm = 100 * (gru["recall@20"] - p["recall@20"]), 100 * (gru["mrr@20"] - p["mrr@20"])
        ok = dr >= -0.3 and dm >= -0.3
        lines.append(
            f"- **Against the preset run** (`model_quality.md`: {_pct(p['recall@20'])} / "
            f"{_pct(p['mrr@20'])}): {dr:+.2f} / {dm:+.2f} points (**goal, no worse than 0.3 points: "
            f"{'met' if ok else 'NOT met'}**)."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the markdown report; with --json print the results as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="yoochoose-100k only")
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted([*DATASETS, UNSEEN]), help=f"these only ({UNSEEN}: --tuned)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument(
        "--from-json", nargs="+", help="re-render the report from previous --json output files (merged)"
    )
    parser.add_argument("--report", help="default: reports/model_quality.md (_tuned.md with --tuned)")
    parser.add_argument("--tuned", action="store_true", help="no preset: kairos train tunes itself")
    parser.add_argument("--tune-budget", type=float, help="with --tuned: kairos train's --tune-budget")
    parser.add_argument(
        "--scorer-timing", action="store_true", help="only time the scorer's hot path (µs/event)"
    )
    args = parser.parse_args(argv)
    if args.scorer_timing:
        for row in scorer_timing():
            print(json.dumps(row))
        return 0
    data_dir = get_settings().data_dir
    if not args.from_json and not (data_dir / "yoochoose-100k").is_dir():
        print(f"datasets not found under {data_dir}", file=sys.stderr)
        return 2
    every = [*DATASETS, UNSEEN] if args.tuned else list(DATASETS)
    names = ["yoochoose-100k"] if args.quick else (args.datasets or every)
    results: dict[str, dict[str, Any]] = {}
    reports = ROOT / "benchmarks" / "reports"
    report = Path(args.report or reports / ("model_quality_tuned.md" if args.tuned else "model_quality.md"))
    report.parent.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        # Re-render a previous run's results (model_quality.json, or a --json run's last stdout line).
        # Several files (runs of single datasets) are merged, later files winning.
        for path in args.from_json:
            lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
            results.update(json.loads(lines[-1]))
    else:
        with tempfile.TemporaryDirectory(prefix="kairos-bench-") as work:
            for name in names:
                results[name] = run_dataset(name, data_dir, Path(work), args.tuned, args.tune_budget)
        # The raw results, one line: the report and figures can be redrawn from them (--from-json).
        report.with_suffix(".json").write_text(json.dumps(results, default=float) + "\n", encoding="utf-8")
    tuned = any("tuning" in res for res in results.values())
    command = (
        "benchmarks/model_quality.py"
        + (" --tuned" if tuned else "")
        + (f" --tune-budget {args.tune_budget:g}" if args.tune_budget is not None else "")
        + (" --quick" if "diginetica" not in results else "")
    )
    presets = None
    if tuned and (reports / "model_quality.json").exists():
        presets = json.loads((reports / "model_quality.json").read_text(encoding="utf-8").splitlines()[-1])
    figures = draw_figures(results, report.parent, "model_quality_tuned" if tuned else "model_quality")
    report.write_text(render(results, command, figures, report, presets), encoding="utf-8")
    print(f"wrote {report}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
