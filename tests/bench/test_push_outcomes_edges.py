"""push_outcomes at settings the defaults never reach: no holdout users, nothing bought (pure)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.outcomes.config import COUNTERS, BenchConfig
from benchmarks.outcomes.outcome_figures import compare_with, figures
from benchmarks.outcomes.report import write_report
from benchmarks.outcomes.runner import ArmRun


def _run(purchases: list[float]) -> ArmRun:
    deltas = {k: np.zeros(len(purchases)) for k in COUNTERS}
    deltas["purchases"] = np.array(purchases)
    deltas["revenue"] = 10.0 * np.array(purchases)
    deltas["pushes"] = np.ones(len(purchases))
    return ArmRun("kairos", deltas, np.zeros(len(purchases), dtype=bool), 0, {"cart_abandonment": 4}, 1.0)


def test_no_holdout_users_leaves_the_holdout_figures_undefined(tmp_path: Path) -> None:
    # --holdout-share 0 (or a world too small to draw one): the figures against the holdout crashed
    # with a division by zero after every arm had run; the paired figures vs no push stand alone.
    cfg = BenchConfig(users=4, days=1.0, holdout_share=0.0)
    run = _run([1, 2, 0, 1])
    no_holdout = np.zeros(4, dtype=bool)
    no_push = {"purchases": np.array([1.0, 1.0, 0.0, 0.0]), "revenue": np.array([10.0, 10.0, 0.0, 0.0])}
    fig = figures(cfg, run, no_holdout, no_push) | compare_with(run, run, ~no_holdout)
    assert fig["incremental_purchases_vs_no_push"] == 2.0
    assert fig["incremental_revenue_vs_no_push"] == 20.0
    assert fig["lift_vs_no_push"] == 1.0
    for key in (
        "incremental_purchases",
        "incremental_purchases_ci95",
        "incremental_revenue",
        "lift_vs_holdout",
    ):
        assert math.isnan(fig[key]), key

    # Nothing bought without pushes: the lift over it is undefined (nan, like the holdout's), not inf.
    nothing = {"purchases": np.zeros(4), "revenue": np.zeros(4)}
    assert math.isnan(figures(cfg, run, no_holdout, nothing)["lift_vs_no_push"])

    # The report says so in words, never "nan %".
    result = {"arm": "kairos", **fig, "seeds": [11], "treatment_users": 4, "holdout_users": 0}
    result |= {"no_push_purchases": 2.0, "total_wall_seconds": 1.0}
    report = tmp_path / "push_outcomes.md"
    write_report(cfg, result, "cmd", report, [])
    text = report.read_text()
    assert "nan" not in text.lower() and "| `lift_vs_holdout` | n/a |" in text


def test_settings_that_cannot_give_figures_are_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Each of these used to run every world first and then crash (or report days it never ran).
    from benchmarks.push_outcomes import main

    small = ["--users", "5", "--items", "30", "--no-report", "--arms", "marketer_rules"]
    cases = {
        "--days": ["--days", "0"],  # no lock step: an IndexError after the runs
        "steps": ["--days", "0.3"],  # 28.8 steps: 29 run, per-day rates divided by 0.3 days
        "--warmup-days": ["--warmup-days", "-0.5"],  # the evaluated days fell before the world began
        "quarter hour": ["--warmup-days", "0.013"],  # steps off the quarter hours (quiet hours)
        "--holdout-share": ["--holdout-share", "1.0"],  # nobody treated: a division by zero
        "treatment": ["--holdout-share", "0.999"],  # the same, drawn
        "repeated": ["--seeds", "11", "11"],  # one world counted twice, intervals too narrow
        "seed": ["--seed", "-1"],  # numpy refused it deep in the world
        "kairos": ["--warmup-days", "0", "--arms", "kairos"],  # nothing to train the model on
    }
    for needle, extra in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main([*small, *extra])
        assert exit_info.value.code == 2, extra
        assert needle in capsys.readouterr().err, extra


def test_a_warm_up_too_small_to_train_on_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One shopper for six hours leaves a couple of events: the trainer says why it cannot train, and
    # the benchmark ended in a traceback after it; it now names the cause (main turns it into exit 2).
    from benchmarks.outcomes import training

    monkeypatch.setattr(training, "BENCH_DIR", tmp_path)
    with pytest.raises(training.TrainingFailed, match="more users or warm-up days"):
        training.ensure_model(BenchConfig(users=1, items=5, warmup_days=0.25))


def _refuse(constant: str) -> float:
    raise ValueError(f"not strict JSON: {constant}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # one treatment user: no spread, its interval nan
def test_undefined_figures_are_written_as_strict_json_null_and_the_report_says_n_a(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --holdout-share 0 leaves every figure against the holdout undefined, and one user per world every
    # 95 % interval: json.dumps wrote them NaN, which jq and JSON.parse refuse. The worlds are faked
    # (no broker): the figures, the JSON, the report and the redraw from the JSON are the real ones.
    import benchmarks.push_outcomes as bench
    from benchmarks.outcomes.runner import NO_PUSH

    def fake_jobs(cfg: BenchConfig, jobs: list[tuple[int, str]], workers: int) -> dict[Any, Any]:
        done: dict[Any, Any] = {}
        for seed, name in jobs:
            bought = [float(seed % 2)]  # one shopper per world
            if name == NO_PUSH:
                done[seed, name] = {"purchases": np.zeros(1), "revenue": np.zeros(1)}
            else:
                done[seed, name] = replace(_run(bought), name=name, pushes_by_trigger_hour={"cart": [1] * 24})
        return done

    monkeypatch.setattr(bench, "run_jobs", fake_jobs)
    out = tmp_path / "run"
    args = ["--holdout-share", "0", "--users", "1", "--items", "30", "--seeds", "11", "12"]
    assert bench.main([*args, "--arms", "marketer_rules", "--json", "--out", str(out)]) == 0

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=_refuse)
    saved = json.loads((out / "push_outcomes.json").read_text(), parse_constant=_refuse)
    for result in (printed, saved["result"]):
        assert result["holdout_users"] == 0 and result["incremental_purchases_vs_no_push"] == 1.0
        for key in ("lift_vs_holdout", "incremental_purchases", "incremental_purchases_ci95"):
            assert result[key] is None, key
        assert result["per_seed"]["11"]["marketer_rules"]["incremental_purchases_vs_no_push_ci95"] is None

    # The report says n/a where the figure is undefined, and the redraw from the JSON's nulls writes the
    # same report and figures as the run did from its NaNs.
    report = (out / "push_outcomes.md").read_text()
    assert "| `lift_vs_holdout` | n/a |" in report and "| `incremental_purchases` | n/a |" in report
    again = tmp_path / "again"
    again.mkdir()
    (again / "push_outcomes.md").write_text(report)
    assert bench.main(["--from-json", str(out / "push_outcomes.json"), "--out", str(again)]) == 0
    assert (again / "push_outcomes.md").read_text() == report
    for png in ("push_outcomes-arms.png", "push_outcomes-by-hour.png"):
        assert (again / png).read_bytes() == (out / png).read_bytes(), png
