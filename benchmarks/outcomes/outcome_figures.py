"""The push-outcomes benchmark's figures from the simulator's ground truth: one arm's rates, lift
and incremental purchases against the holdout and against no pushes (:func:`figures`), the paired
difference to the first arm (:func:`compare_with`), and each world's own figures (:func:`per_seed_figures`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.outcomes.config import BenchConfig
from benchmarks.outcomes.runner import ArmRun


def _paired(diff: np.ndarray) -> tuple[float, float]:
    """Sum of per-user differences and its 95 % interval half-width (users independent)."""
    if diff.size < 2:
        return float(diff.sum()), float("nan")
    return float(diff.sum()), 1.96 * float(diff.std(ddof=1)) * math.sqrt(diff.size)


def compare_with(first: ArmRun, other: ArmRun, treat: np.ndarray) -> dict[str, float]:
    """``other`` minus ``first`` on the same world, user by user (treatment users): purchases, revenue."""
    out: dict[str, float] = {}
    for key in ("purchases", "revenue"):
        total, ci = _paired(other.deltas[key][treat] - first.deltas[key][treat])
        out[f"vs_first_{key}"] = total
        out[f"vs_first_{key}_ci95"] = ci
    return out


def figures(
    cfg: BenchConfig, run: ArmRun, holdout_mask: np.ndarray, no_push: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The outcome figures of one arm (treatment group unless said otherwise)."""
    baseline = no_push["purchases"]
    d = run.deltas
    treat = ~holdout_mask
    n_t, n_h = int(treat.sum()), int(holdout_mask.sum())

    def total(name: str, mask: np.ndarray = treat) -> float:
        return float(d[name][mask].sum())

    pushes = total("pushes")
    ppu_t = total("purchases") / n_t
    # No holdout users (--holdout-share 0, or a world too small to draw one): the figures against
    # the holdout are undefined (nan); those against no pushes stand alone.
    ppu_h = total("purchases", holdout_mask) / n_h if n_h else float("nan")
    rpu_h = total("revenue", holdout_mask) / n_h if n_h else float("nan")
    diff_se = (
        math.sqrt(d["purchases"][treat].var(ddof=1) / n_t + d["purchases"][holdout_mask].var(ddof=1) / n_h)
        if n_h
        else float("nan")
    )
    baseline_total = float(baseline[treat].sum())
    paired = d["purchases"][treat] - baseline[treat]
    revenue, revenue_ci = _paired(d["revenue"][treat] - no_push["revenue"][treat])

    def rate(name: str) -> float:
        return total(name) / pushes if pushes else 0.0

    return {
        "pushes": int(pushes),
        "pushes_per_user_per_day": pushes / n_t / cfg.days,
        "open_rate": rate("opens"),
        "click_rate": rate("clicks"),
        "conversion_rate": rate("push_purchases"),
        "push_revenue": total("push_revenue"),
        "lift_vs_holdout": ppu_t / ppu_h - 1.0 if ppu_h else float("nan"),
        "purchases_per_user_treatment": ppu_t,
        "purchases_per_user_holdout": ppu_h,
        "incremental_purchases": (ppu_t - ppu_h) * n_t,
        "incremental_purchases_ci95": 1.96 * diff_se * n_t,
        "incremental_revenue": (total("revenue") / n_t - rpu_h) * n_t,
        "incremental_purchases_vs_no_push": float(paired.sum()),
        "incremental_purchases_vs_no_push_ci95": 1.96 * float(paired.std(ddof=1)) * math.sqrt(n_t),
        "lift_vs_no_push": total("purchases") / baseline_total - 1.0 if baseline_total else float("nan"),
        "incremental_revenue_vs_no_push": revenue,
        "incremental_revenue_vs_no_push_ci95": revenue_ci,
        "opt_out_rate": float(run.opted_out_during[treat].sum()) / n_t,
        "expected_opt_out_rate": total("opt_out_risk") / n_t,
        "quiet_hours_share": rate("quiet_pushes"),
        "expired_share": rate("expired_pushes"),
        "pushes_after_opt_out": int(total("pushes_after_opt_out")),
        "holdout_pushes": int(total("pushes", holdout_mask)),
        "late_deliveries": run.late_deliveries,
        "pushes_by_trigger": dict(sorted(run.pushes_by_trigger.items())),
        "pushes_by_trigger_local_hour": dict(sorted(run.pushes_by_trigger_hour.items())),
        "expired_pushes_detail": run.expired,
        "suppressions": run.diagnostics,
        "wall_seconds": round(run.wall_seconds, 1),
    }


PER_SEED_KEYS = (
    "incremental_purchases_vs_no_push",
    "incremental_purchases_vs_no_push_ci95",
    "incremental_revenue_vs_no_push",
    "pushes_per_user_per_day",
)


def per_seed_figures(
    cfg: BenchConfig,
    seeds: list[int],
    runs: dict[str, list[ArmRun]],
    masks: list[np.ndarray],
    no_pushes: list[dict[str, np.ndarray]],
    arms: list[str],
) -> dict[str, dict[str, dict[str, float]]]:
    """Each world's own figures per arm (effect vs no push, and paired against the first arm)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for i, seed in enumerate(seeds):
        first = runs[arms[0]][i]
        world: dict[str, dict[str, float]] = {}
        for name in arms:
            run = runs[name][i]
            fig = figures(cfg, run, masks[i], no_pushes[i])
            world[name] = {k: fig[k] for k in PER_SEED_KEYS if k in fig} | compare_with(first, run, ~masks[i])
        out[str(seed)] = world
    return out
