"""The push-outcomes benchmark's report: the figures block of ``push_outcomes.md`` (between its
markers: the setup, the figures table per arm, the per-world table and the PNG links).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.json_out import nan_if_null
from benchmarks.outcomes.arms import ARMS
from benchmarks.outcomes.config import REPORT, BenchConfig

KEYS = [
    "pushes_per_user_per_day",
    "open_rate",
    "conversion_rate",
    "lift_vs_holdout",
    "incremental_purchases",
    "incremental_purchases_vs_no_push",
    "incremental_revenue_vs_no_push",
    "vs_first_purchases",
    "vs_first_revenue",
    "opt_out_rate",
    "expected_opt_out_rate",
    "quiet_hours_share",
    "expired_share",
]


def _figure(row: dict[str, Any], key: str) -> Any:
    """One arm's figure; ``null`` in a saved run (an undefined figure) as the NaN the run held. A figure
    the run did not record (one added since) stays ``None``, shown as the report always showed it."""
    return nan_if_null(row[key]) if key in row else None


def _fmt(value: Any, key: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"  # undefined: no holdout users, nothing bought to compare with, one user
    if isinstance(value, float):
        if key.endswith(("rate", "share")) or key.startswith("lift"):
            return f"{100 * value:.2f} %"
        return f"{value:.2f}"
    return str(value)


def _arms(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every arm's figures by name, in the usual order."""
    rows = {result.get("arm", "kairos"): result, **result.get("baselines", {})}
    return {n: rows[n] for n in ARMS if n in rows}


def write_report(
    cfg: BenchConfig,
    result: dict[str, Any],
    command: str,
    report: Path = REPORT,
    figures: list[tuple[str, Path]] | None = None,
) -> None:
    """Write the figures block of the report (default ``benchmarks/reports/push_outcomes.md``)."""
    from benchmarks.plots import markdown_images

    rows = _arms(result)
    names = list(rows)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    extra = [
        "click_rate",
        "incremental_purchases_ci95",
        "incremental_purchases_vs_no_push_ci95",
        "incremental_revenue_vs_no_push_ci95",
        "vs_first_purchases_ci95",
        "vs_first_revenue_ci95",
        "lift_vs_no_push",
        "pushes",
        "holdout_pushes",
        "pushes_after_opt_out",
        "late_deliveries",
        "wall_seconds",
    ]
    for key in KEYS + extra:
        lines.append(f"| `{key}` | " + " | ".join(_fmt(_figure(rows[n], key), key) for n in names) + " |")
    lines.append(
        "| `pushes_by_trigger` | "
        + " | ".join(
            ", ".join(f"{t} {c}" for t, c in rows[n]["pushes_by_trigger"].items()) or "-" for n in names
        )
        + " |"
    )
    per_seed = result.get("per_seed")
    if per_seed:
        # Each world alone: the effect vs no push (its 95 % interval) and the paired difference to the
        # first arm, so "better on every seed" can be read off, not only the pooled figure.
        lines += [
            "",
            "Per world (incremental purchases vs no push ± 95 %; paired difference to the first arm):",
            "",
        ]
        lines += ["| seed | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for seed, world in per_seed.items():
            cells = []
            for n in names:
                f = world[n]
                # A saved run's null (an undefined interval: one treatment user) is the run's NaN.
                effect = nan_if_null(f["incremental_purchases_vs_no_push"])
                ci = nan_if_null(f["incremental_purchases_vs_no_push_ci95"])
                cell = f"{effect:+.0f} ± {ci:.0f}"
                if n != names[0]:
                    versus = nan_if_null(f["vs_first_purchases"])
                    cell += f" ({versus:+.0f} ± {nan_if_null(f['vs_first_purchases_ci95']):.0f})"
                cells.append(cell)
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if figures:
        lines += ["", *markdown_images(figures, report)]
    table = "\n".join(lines).rstrip()
    seeds = result.get("seeds", [cfg.seed])
    pooled = "pooled: every arm runs every world, users counted together; " if len(seeds) > 1 else ""
    setup = (
        f"`{command}`\n\n"
        f"World: seed {', '.join(str(x) for x in seeds)} ({pooled}{cfg.users} users each), "
        f"{cfg.items} items, {cfg.warmup_days:g} warm-up days "
        f"(model training), {cfg.days:g} evaluated days in {cfg.step_minutes:g}-minute lock steps; holdout "
        f"share {cfg.holdout_share:g} (salt `{cfg.holdout_salt}`): {result['treatment_users']} treatment, "
        f"{result['holdout_users']} holdout users. Kairos env overrides: "
        f"`{json.dumps(result.get('kairos_env', {}), sort_keys=True)}`. "
        "Counterfactual (no pushes at all) purchases of the treatment users: "
        f"{result['no_push_purchases']:.0f}. "
        f"Total wall time {result['total_wall_seconds']:.0f} s."
    )
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    block = f"{begin}\n{setup}\n\n{table}\n{end}"
    text = report.read_text() if report.exists() else f"# Push outcomes\n\n{begin}\n{end}\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
