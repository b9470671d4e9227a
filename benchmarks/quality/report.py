"""The model-quality markdown report: per dataset, the table of ours, the baselines and the references,
whether the goal is met, the training figures and config, the interest calibration and, for a tuned
run, what the tuner tried and chose against session-kNN and the preset run; the figures linked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.json_out import nan_if_null
from benchmarks.quality.config import REFERENCES


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


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
            # An ECE without held-out positions is NaN in the run, null in its saved JSON: NaN again.
            by = ", ".join(f"{k} {nan_if_null(v):.4f}" for k, v in cal["ece_by_feature"].items())
            lines.append(
                f"- Interest calibration (Platt, horizon {cal['horizon']}, held-out validation positions): "
                f"feature `{cal['feature']}`, ECE {nan_if_null(cal['ece']):.4f} (uncalibrated next-item "
                f"softmax {nan_if_null(cal['ece_raw']):.4f}; ECE per feature: {by})."
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
        f"- Time in all: {nan_if_null(train.get('wall_seconds')):.0f} s for `kairos train` (tuning, then "
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
