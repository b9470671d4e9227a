"""push_outcomes --seeds: each world's own figures beside the pooled ones (pure, no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.outcomes.config import COUNTERS, BenchConfig
from benchmarks.outcomes.outcome_figures import per_seed_figures
from benchmarks.outcomes.report import write_report
from benchmarks.outcomes.runner import ArmRun


def _run(name: str, purchases: list[float]) -> ArmRun:
    deltas = {k: np.zeros(len(purchases)) for k in COUNTERS}
    deltas["purchases"] = np.array(purchases)
    deltas["revenue"] = 10.0 * np.array(purchases)
    deltas["pushes"] = np.ones(len(purchases))
    return ArmRun(name, deltas, np.zeros(len(purchases), dtype=bool), 0, {"cart_abandonment": 1}, 1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # lifts over a zero no-push baseline are nan here
def test_each_world_gets_its_own_effect_and_paired_difference(tmp_path: Path) -> None:
    cfg = BenchConfig(users=4, days=1.0)
    masks = [np.array([False, False, False, True])] * 2
    no_push = [{"purchases": np.zeros(4), "revenue": np.zeros(4)}] * 2
    runs = {
        "kairos": [_run("kairos", [1, 1, 0, 0]), _run("kairos", [1, 1, 1, 0])],
        "marketer_rules": [_run("marketer_rules", [1, 0, 0, 0]), _run("marketer_rules", [0, 0, 0, 0])],
    }
    per_seed = per_seed_figures(cfg, [11, 12], runs, masks, no_push, ["kairos", "marketer_rules"])
    assert per_seed["11"]["kairos"]["incremental_purchases_vs_no_push"] == 2.0
    assert per_seed["12"]["kairos"]["incremental_purchases_vs_no_push"] == 3.0
    assert per_seed["11"]["marketer_rules"]["vs_first_purchases"] == -1.0
    assert per_seed["12"]["marketer_rules"]["vs_first_purchases"] == -3.0

    # The report shows one row per world.
    from benchmarks.outcomes.outcome_figures import compare_with, figures
    from benchmarks.outcomes.runner import merge_runs

    merged = {n: merge_runs(r) for n, r in runs.items()}
    mask = np.concatenate(masks)
    pooled = {k: np.concatenate([n[k] for n in no_push]) for k in ("purchases", "revenue")}
    rows = {
        n: figures(cfg, merged[n], mask, pooled) | compare_with(merged["kairos"], merged[n], ~mask)
        for n in runs
    }
    result = {"arm": "kairos", **rows["kairos"], "baselines": {"marketer_rules": rows["marketer_rules"]}}
    result |= {"seeds": [11, 12], "per_seed": per_seed, "treatment_users": 6, "holdout_users": 2}
    result |= {"no_push_purchases": 0.0, "total_wall_seconds": 1.0}
    report = tmp_path / "push_outcomes.md"
    write_report(cfg, result, "cmd", report, [])
    text = report.read_text()
    assert "| 11 | +2 ± " in text and "| 12 | +3 ± " in text and "(-3 ± " in text
