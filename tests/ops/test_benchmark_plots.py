"""The benchmarks' figures: each drawing function writes real PNGs from a small results dict, and
``--from-json`` redraws a report and its figures from saved results without running anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import plots

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    # The signature, then the IHDR chunk with a non-empty image.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and width > 100 and height > 100


def stream_result() -> dict[str, Any]:
    """A stream_throughput result with the figures of the 2026-11-22 report."""
    lat = {
        "sent": 32000,
        "achieved_rate": 2000.0,
        "pushes": 9633,
        "n": 9114,
        "outcomes": {"processed": 31996},
        "p50_ms": 65.6,
        "p90_ms": 120.6,
        "p99_ms": 179.2,
        "max_ms": 231.0,
    }
    floor = {
        "sent": 30000,
        "achieved_rate": 2000.0,
        "n": 28002,
        "p50_ms": 8.3,
        "p90_ms": 16.6,
        "p99_ms": 33.5,
        "max_ms": 76.0,
    }
    thr = {
        "events": 20000,
        "window_s": 4.63,
        "excluded_startup_s": 9.6,
        "excluded_events": 407,
        "outcomes": {"processed": 19997},
        "pushes": 182,
        "mean_batch": 67,
        "engine_and_commit_us_per_event": 153.0,
        "produce_events_per_s": 673321.0,
    }
    return {
        "events_per_s": 4234.0,
        "replay_events_per_s": 2667.0,
        "ceiling_events_per_s": 164802.0,
        "ratio": 4234.0 / 164802.0,
        "rate": 2000.0,
        "p50_ms": 65.6,
        "p99_ms": 179.2,
        "floor_p50_ms": 8.3,
        "floor_p99_ms": 33.5,
        "latency_samples": 9114,
        "n_dataset": 15000,
        "n_simulated": 5000,
        "n_catalog": 15468,
        "pace": 50000.0,
        "throughput": thr,
        "throughput_replay": {
            **thr,
            "window_s": 7.43,
            "pushes": 632,
            "engine_and_commit_us_per_event": 285.0,
        },
        "ceiling": {
            "ceiling_events_per_s": 164802.0,
            "consume_only_events_per_s": 1227299.0,
            "ceiling_passes": [160004.0, 164802.0, 171230.0],
            "consume_only_passes": [1227299.0, 998310.0, 1300000.0],
        },
        "latency": lat,
        "floor": floor,
        "machine": {"cpu": "test", "cores": 2, "load_avg_at_start": [0.5], "python": "3.11"},
        "started_at": 1_795_000_000.0,
        "wall_seconds": 98.0,
    }


def model_results() -> dict[str, Any]:
    """A model_quality result for one dataset, with a three-epoch history."""
    metrics = {
        "recall@10": 0.6367,
        "mrr@10": 0.3753,
        "recall@20": 0.7106,
        "mrr@20": 0.3805,
        "n_cases": 10152,
        "n_dropped": 0,
        "eval_seconds": 0.5,
    }
    base = {"recall@10": 0.5479, "mrr@10": 0.34, "recall@20": 0.5907, "mrr@20": 0.343}
    history = [
        {
            "epoch": e,
            "loss": 1.0 / e,
            "seconds": 3.0,
            "events_per_second": 2e4,
            "valid_recall@20": 0.6 + e / 100,
            "valid_mrr@20": 0.3 + e / 100,
        }
        for e in (1, 2, 3)
    ]
    return {
        "yoochoose-100k": {
            "gru": metrics,
            "gru_alone": {**metrics, "recall@20": 0.6945, "mrr@20": 0.3742},
            "train": {
                "train_seconds": 21.0,
                "events_per_second": 20050.0,
                "peak_rss_bytes": 470 * 2**20,
                "best_epoch": 3,
                "n_train_events": 70278,
                "n_items": 3000,
                "neighbour_seconds": 0.1,
                "history": history,
            },
            "config": {"loss": "bpr-max", "select_best": False},
            "calibration": {},
            "baselines": {"transitions": base, "popularity": {k: v / 7 for k, v in base.items()}},
        }
    }


def push_result() -> dict[str, Any]:
    """A push_outcomes result: Kairos and one baseline, pushes by trigger per local hour."""

    def arm(pushes: int, opens: float, extra: float, hours: dict[str, list[int]]) -> dict[str, Any]:
        return {
            "pushes": pushes,
            "pushes_per_user_per_day": 0.3,
            "open_rate": opens,
            "click_rate": opens / 2,
            "conversion_rate": opens / 10,
            "lift_vs_holdout": 0.04,
            "incremental_purchases": extra,
            "incremental_purchases_ci95": 129.0,
            "incremental_purchases_vs_no_push": 2 * extra,
            "incremental_purchases_vs_no_push_ci95": 80.0,
            "lift_vs_no_push": 0.1,
            "opt_out_rate": 0.0,
            "quiet_hours_share": 0.0,
            "expired_share": 0.0,
            "holdout_pushes": 0,
            "pushes_after_opt_out": 0,
            "late_deliveries": 0,
            "wall_seconds": 10.0,
            "pushes_by_trigger": {t: sum(c) for t, c in hours.items()},
            "pushes_by_trigger_local_hour": hours,
        }

    day = [0] * 8 + [5] * 14 + [0] * 2
    kairos = arm(1329, 0.1595, 30.6, {"in_session": day, "cart_abandonment": [1] * 24})
    return {
        "arm": "kairos",
        **kairos,
        "baselines": {"cart_abandonment_1h": arm(780, 0.1654, 29.6, {"cart_abandonment": [2] * 24})},
        "days": 3.0,
        "users": 3000,
        "items": 1000,
        "seed": 11,
        "holdout_share": 0.5,
        "treatment_users": 1439,
        "holdout_users": 1561,
        "no_push_purchases": 683.0,
        "kairos_env": {},
        "total_wall_seconds": 251.0,
    }


def test_stream_throughput_figures(tmp_path: Path) -> None:
    from benchmarks.throughput.charts import draw_figures

    drawn = draw_figures(stream_result(), tmp_path)
    assert [p.name for _, p in drawn] == [
        "stream_throughput-stages.png",
        "stream_throughput-budget.png",
        "stream_throughput-latency.png",
    ]
    assert all(_is_png(p) for _, p in drawn)
    # A run that recorded its latency per window of time also draws how latency moved during it.
    windowed = stream_result()
    for run, base in ((windowed["latency"], 20.0), (windowed["floor"], 6.0)):
        run["windows"] = [
            {"from_s": 2.0 * i, "n": 900, "p50_ms": base * (1 + i), "p99_ms": 2 * base * (1 + i)}
            for i in range(5)
        ]
    drawn = draw_figures(windowed, tmp_path / "windowed")
    assert drawn[-1][1].name == "stream_throughput-latency-time.png" and _is_png(drawn[-1][1])


def test_stream_throughput_latency_windows_split_the_run() -> None:
    from benchmarks.throughput.latency_phase import _latency_windows

    # (stamp, latency seconds): three samples in the first 2 s after t=100, one in the third window.
    samples = [(99.0, 9.0), (100.0, 0.010), (100.5, 0.020), (101.9, 0.030), (104.2, 0.500)]
    windows = _latency_windows(samples, after=100.0, width=2.0)
    assert [(w["from_s"], w["n"]) for w in windows] == [(0.0, 3), (4.0, 1)]
    assert windows[0]["p50_ms"] == pytest.approx(20.0) and windows[1]["p99_ms"] == pytest.approx(500.0)


def test_model_quality_figures(tmp_path: Path) -> None:
    from benchmarks.quality.charts import draw_figures

    drawn = draw_figures(model_results(), tmp_path)["yoochoose-100k"]
    assert [p.name for _, p in drawn] == [
        "model_quality-yoochoose-100k-training.png",
        "model_quality-yoochoose-100k-ranking.png",
    ]
    assert all(_is_png(p) for _, p in drawn)
    # Without a recorded history (older results) only the ranking is drawn.
    old = model_results()
    del old["yoochoose-100k"]["train"]["history"]
    assert [p.name for _, p in draw_figures(old, tmp_path / "old")["yoochoose-100k"]] == [
        "model_quality-yoochoose-100k-ranking.png"
    ]


def test_push_outcomes_figures(tmp_path: Path) -> None:
    from benchmarks.outcomes.charts import draw_figures

    drawn = draw_figures(push_result(), tmp_path)
    assert [p.name for _, p in drawn] == ["push_outcomes-arms.png", "push_outcomes-by-hour.png"]
    assert all(_is_png(p) for _, p in drawn)
    # One arm alone (--arms marketer_rules): a single panel of pushes by hour crashed the drawing.
    alone = {k: v for k, v in push_result().items() if k != "baselines"}
    drawn = draw_figures(alone, tmp_path / "alone")
    assert [p.name for _, p in drawn] == ["push_outcomes-arms.png", "push_outcomes-by-hour.png"]
    assert all(_is_png(p) for _, p in drawn)


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = plots.wilson_interval(0.16, 1329)
    assert lo < 0.16 < hi and hi - lo == pytest.approx(0.039, abs=0.002)
    assert plots.wilson_interval(0.0, 0) == (0.0, 0.0)


def _from_json(script: str, saved: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--from-json", str(saved), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_from_json_redraws_each_report_and_links_its_figures(tmp_path: Path) -> None:
    saved = tmp_path / "stream_throughput.json"
    saved.write_text(
        json.dumps({"command": "python benchmarks/stream_throughput.py", "result": stream_result()})
    )
    _from_json("stream_throughput.py", saved, "--out", str(tmp_path / "s"))
    report = (tmp_path / "s" / "stream_throughput.md").read_text()
    assert "| 4,234 |" in report and "![Latency percentiles](stream_throughput-latency.png)" in report
    assert "with parsing 160,004 / 164,802 / 171,230" in report  # the ceiling's reads, their median kept
    assert _is_png(tmp_path / "s" / "stream_throughput-latency.png")

    saved = tmp_path / "model_quality.json"
    saved.write_text(json.dumps(model_results()))
    _from_json("model_quality.py", saved, "--report", str(tmp_path / "m" / "model_quality.md"))
    report = (tmp_path / "m" / "model_quality.md").read_text()
    assert "**71.06 %**" in report and "(model_quality-yoochoose-100k-training.png)" in report
    assert _is_png(tmp_path / "m" / "model_quality-yoochoose-100k-ranking.png")

    from dataclasses import asdict

    from benchmarks.outcomes.config import BenchConfig

    saved = tmp_path / "push_outcomes.json"
    saved.write_text(
        json.dumps({"command": "push_outcomes.py", "config": asdict(BenchConfig()), "result": push_result()})
    )
    _from_json("push_outcomes.py", saved, "--out", str(tmp_path / "p"))
    report = (tmp_path / "p" / "push_outcomes.md").read_text()
    assert "| `open_rate` | 15.95 % | 16.54 % |" in report
    assert "![Pushes by trigger over the day](push_outcomes-by-hour.png)" in report
    assert _is_png(tmp_path / "p" / "push_outcomes-arms.png")


def test_recovery_report_links_its_figure(tmp_path: Path) -> None:
    from benchmarks.recovery import write_report

    def rec(seconds: float, load: float, adopt: float) -> dict[str, float]:
        return {
            "seconds": seconds,
            "users": 50000,
            "load_seconds": load,
            "adopt_seconds": adopt,
            "adopt_max_seconds": adopt / 3,
            "worst_loop_lag_seconds": adopt / 3,
        }

    figures = {
        "users": 50000,
        "partitions": 4,
        "hidden": 64,
        "run_at": "2026-12-01 15:22 UTC",
        "write": {"bytes_per_user": 1380.0, "write_seconds": 20.0},
        "local": rec(6.39, 0.67, 5.06),
        "changelog": rec(13.01, 0.22, 5.37),
    }
    write_report(tmp_path / "recovery.md", figures)
    report = (tmp_path / "recovery.md").read_text()
    assert "2026-12-01 15:22 UTC" in report and "![Recovery time and its parts](recovery.png)" in report
    assert _is_png(tmp_path / "recovery.png")


def test_the_latency_verdict_needs_a_floor_that_kept_the_offered_rate() -> None:
    from benchmarks.throughput.report import _high_rate_rows, _latency_met

    result = stream_result()
    result["floor"] = {"achieved_rate": 2000.0, "p99_ms": 33.5}
    result.update(rate=2000.0, p99_ms=40.0, floor_p99_ms=33.5)
    assert _latency_met(result) == "yes"
    result["p99_ms"] = 60.0
    assert _latency_met(result) == "no"
    # A floor whose own producer fell behind measured the machine: no verdict, whatever the numbers.
    result["floor"] = {"achieved_rate": 1737.0, "p99_ms": 2325.7}
    result.update(p99_ms=1086.2, floor_p99_ms=2325.7)
    assert _latency_met(result).startswith("no verdict")

    assert _high_rate_rows(None) == []
    high = {
        "rate": 10_000.0,
        "seconds": 5.0,
        "floor": {"p50_ms": 14.1, "p99_ms": 84.5},
        "latency": {"n": 100, "p50_ms": 10624.3, "p99_ms": 14099.1, "processed": 60_000, "sent": 60_000,
                    "drained_after_s": 14.1},
    }  # fmt: skip
    rows = _high_rate_rows(high)
    assert "10624.3 / 14099.1" in rows[0] and "processed 60,000 of 60,000" in rows[0]
    assert "14.1 / 84.5" in rows[1]


def test_stream_throughput_splits_a_push_latency_at_its_create_time() -> None:
    from benchmarks.throughput.latency_phase import _hop_split
    from benchmarks.throughput.report import _hop_line, _window_rows

    # (stamp, event -> produced seconds, produced -> read seconds); the first is before the warm-up.
    hops = [(99.0, 5.0, 5.0), (100.0, 0.020, 0.005), (100.5, 0.030, 0.006), (104.2, 1.500, 0.010)]
    split = _hop_split(hops, after=100.0)
    assert split["event_to_produce"]["n"] == 3 and split["event_to_produce"]["max_ms"] == pytest.approx(
        1500.0
    )
    assert split["produce_to_read"]["max_ms"] == pytest.approx(10.0)
    assert [w["from_s"] for w in split["windows"]] == [0.0, 4.0]
    assert split["windows"][1]["event_to_produce_p99_ms"] == pytest.approx(1500.0)
    assert _hop_split([], after=100.0) == {} and _hop_line({}) == []
    assert "produced → read" in _hop_line(split)[0]
    # The report's window table gains the split's columns when the run has it.
    window = {"from_s": 0.0, "n": 2, "p50_ms": 30.0, "p99_ms": 40.0}
    run: dict[str, Any] = {
        "rate": 2000.0,
        "floor": {"windows": [window]},
        "latency": {"windows": [window], "hops": split},
    }
    header, first = _window_rows(run)[3], _window_rows(run)[5]
    assert header.endswith("event → produced p99 / produced → read p99, ms |")
    assert first.endswith(
        f"{split['windows'][0]['event_to_produce_p99_ms']:.1f} / "
        f"{split['windows'][0]['produce_to_read_p99_ms']:.1f} |"
    )
    del run["latency"]["hops"]
    assert _window_rows(run)[3].endswith("worker p99 − floor p99, ms |")


def _refuse(constant: str) -> float:
    raise ValueError(f"not strict JSON: {constant}")


def _saved(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` written as the benchmarks write it and read back: strict JSON, undefined figures null."""
    from benchmarks import json_out

    return json.loads(json_out.dumps(result, default=str), parse_constant=_refuse)


def test_a_report_redrawn_from_its_run_names_the_latency_workers_reader(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"command": "x", "result": {**stream_result(), "input_reader": "bulk"}}))
    _from_json("stream_throughput.py", saved, "--out", str(tmp_path / "out"))
    report = (tmp_path / "out" / "stream_throughput.md").read_text()
    assert "KAIROS_LOG__LEVEL=WARNING\nKAIROS_WORKER__INPUT_READER=bulk\n```" in report


def test_the_latency_reading_says_whether_the_worker_kept_up() -> None:
    """The worker's own stages at the offered rate tell a worker that fell behind, one near saturation
    (whose p99 is mostly its queue), and one with room to spare."""
    from benchmarks.throughput.report import _latency_reading

    result = stream_result()  # 2,000 events/s offered, 9,633 pushes of 32,000 events
    for us, expected in [
        (600.0, "below the 2,000/s offered: it fell behind"),
        (446.0, "busy 89% of the time (a capacity of about 2,242 events/s): near saturation"),
        (100.0, "ran below its throughput"),
    ]:
        stages = {"decide": us * 0.4, "produce": us * 0.35, "parse": us * 0.25}
        result["latency"]["stage_us_per_event"] = stages
        text = _latency_reading(result)
        assert expected in text, (us, text)
        assert "30% of the events" in text
    result["latency"]["stage_us_per_event"] = {}  # a run saved before the stages were reported
    assert "ran below its throughput" in _latency_reading(result | {"events_per_s": 4234.0})
    assert "is more than this worker's throughput" in _latency_reading(result | {"events_per_s": 1500.0})


def test_a_saved_run_with_undefined_figures_redraws_as_the_run_itself(tmp_path: Path) -> None:
    # The figures a run leaves undefined (NaN) are null in its JSON; each report and chart reads a null
    # as the run's NaN: the same text, the same pictures, no crash.
    from benchmarks.quality.charts import draw_figures as quality_figures
    from benchmarks.quality.report import render
    from benchmarks.throughput.charts import draw_figures as stream_figures
    from benchmarks.throughput.report import write_report

    run = stream_result()  # a latency run and a floor that saw no sample at all
    for key in ("latency", "floor"):
        run[key] = {k: v for k, v in run[key].items() if not k.endswith("_ms")} | {"n": 0}
    run |= dict.fromkeys(("p50_ms", "p99_ms", "floor_p50_ms", "floor_p99_ms"), float("nan"))
    saved = _saved(run)
    assert saved["p99_ms"] is None and saved["floor_p99_ms"] is None
    for name, result in (("run", run), ("saved", saved)):
        figures = stream_figures(result, tmp_path / name)
        write_report(result, "cmd", tmp_path / name / "stream_throughput.md", figures)
    assert "| nan / nan |" in (tmp_path / "run" / "stream_throughput.md").read_text()

    results = model_results()  # a diverged epoch, and no held-out positions for the calibration's ECE
    res = results["yoochoose-100k"]
    res["train"]["history"][1]["loss"] = float("nan")
    res["calibration"] = {"horizon": 5, "feature": "logit", "ece": float("nan"), "ece_raw": float("nan")}
    res["calibration"]["ece_by_feature"] = {"logit": float("nan")}
    saved = _saved(results)
    assert saved["yoochoose-100k"]["calibration"]["ece"] is None
    for name, result in (("run", results), ("saved", saved)):
        charts = quality_figures(result, tmp_path / name)
        text = render(result, "cmd", charts, tmp_path / name / "model_quality.md")
        (tmp_path / name / "model_quality.md").write_text(text)
    assert "ECE nan (uncalibrated" in (tmp_path / "run" / "model_quality.md").read_text()

    for path in sorted((tmp_path / "run").iterdir()):
        assert (tmp_path / "saved" / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_report_gives_the_engines_steady_state_when_the_run_measured_it(tmp_path: Path) -> None:
    def alone(us: float) -> dict[str, object]:
        return {
            "engine_us_per_event": us,
            "engine_events_per_s": 1e6 / us,
            "user_loads_per_event": {"warm": 0.03, "store": 0.25},
            "stage_us_per_event": {"bookkeeping": us / 2, "state_write": us / 4, "parse": 4.0, "step": 3.0},
        }

    engine_alone: dict[str, object] = {"live_paced": alone(35.0), "spread": alone(68.0)}
    for name, steady in [("older", None), ("steady", {"events": 150_000, **alone(42.0)})]:
        if steady is not None:
            engine_alone["steady"] = steady
        saved = tmp_path / f"{name}.json"
        saved.write_text(
            json.dumps({"command": "x", "result": {**stream_result(), "engine_alone": engine_alone}})
        )
        _from_json("stream_throughput.py", saved, "--out", str(tmp_path / name))
        report = (tmp_path / name / "stream_throughput.md").read_text()
        assert "live-paced 35 µs/event (28,571 events/s; 0.28 user records loaded per event" in report
        assert "KAIROS_WORKER__INPUT_READER" not in report  # the saved run names no reader
        if steady is None:  # a run saved before the steady state was measured redraws as it was
            assert "At steady state" not in report
        else:
            assert "At steady state (150,000 live-paced events" in report and "42 µs/event (23,810" in report
