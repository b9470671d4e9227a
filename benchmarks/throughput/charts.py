"""The stream worker benchmark's PNGs, drawn from one run's results with ``benchmarks/plots.py``:
throughput per stage, the per-event time budget, latency percentiles beside the floor, and latency
during the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.json_out import nan_if_null
from benchmarks.throughput.config import LATENCY_WINDOW_SECONDS
from benchmarks.throughput.report import as_run


def draw_figures(result: dict[str, Any], out: Path) -> list[tuple[str, Path]]:
    """PNGs of one run's results: throughput per stage, the per-event budget, latency percentiles."""
    from benchmarks import plots

    r = as_run(result)

    t, c = r["throughput"], r["ceiling"]
    drawn: list[tuple[str, Path]] = []

    fig, ax = plots.figure(8.0, 3.6)
    stages = [
        ("pre-produce (tests' producer)", t.get("produce_events_per_s"), plots.OTHER),
        ("bare consume", c.get("consume_only_events_per_s"), plots.OTHER),
        ("bare consume + decode_event (ceiling)", r["ceiling_events_per_s"], plots.OTHER),
        ("worker, live-paced event times", r["events_per_s"], plots.OURS),
        ("worker, dataset's own event times", r.get("replay_events_per_s"), plots.OURS),
    ]
    compared = r.get("compared")
    if compared:
        stages.append(
            (f"worker, {compared['input_reader']} input (same run)", compared["events_per_s"], plots.OTHER)
        )
    shown = [(label, float(v), col) for label, v, col in stages if v is not None]
    plots.hbars(ax, [s[0] for s in shown], [s[1] for s in shown], [s[2] for s in shown])
    ax.set_xscale("log")
    ax.axvline(50_000, color="tab:red", linestyle="--", linewidth=1, label="goal: 50,000 events/s")
    ax.set_xlabel("events per second (log scale)")
    ax.set_title("Throughput per stage (one worker process, embedded broker)")
    ax.legend(fontsize=8, loc="lower right")
    drawn.append(("Throughput per stage", plots.save(fig, out / "stream_throughput-stages.png")))

    per_event = 1e6 / r["events_per_s"]
    per_stage = {k: float(v) for k, v in (t.get("stage_us_per_event") or {}).items()}
    budget = [("all (1 / events_per_s)", per_event, plots.OURS)]
    budget += [(f"stage: {k}", v, plots.OTHER) for k, v in per_stage.items()]
    if per_stage:
        budget.append(("in no stage (loop, lag, metrics)", per_event - sum(per_stage.values()), plots.OTHER))
    else:  # a run from before the worker timed its stages
        in_batch = float(t["engine_and_commit_us_per_event"])
        budget += [("in the batch", in_batch, plots.OTHER), ("outside it", per_event - in_batch, plots.OTHER)]
    fig, ax = plots.figure(8.0, 0.9 + 0.32 * len(budget))
    plots.hbars(ax, [b[0] for b in budget], [b[1] for b in budget], [b[2] for b in budget])
    ax.set_xlabel("µs per event")
    ax.set_title("Time per live-paced event in the worker, by stage")
    drawn.append(("Per-event time budget", plots.save(fig, out / "stream_throughput-budget.png")))

    lat, flo = r["latency"], r["floor"]
    names = ["p50", "p90", "p99", "max"]
    series = {
        "worker event→push": [float(nan_if_null(lat.get(f"{n}_ms"))) for n in names],
        "broker floor produce→consume": [float(nan_if_null(flo.get(f"{n}_ms"))) for n in names],
    }
    fig, ax = plots.figure(7.5, 3.8)
    plots.grouped_bars(ax, names, series)
    goal = r["floor_p99_ms"] + 10.0
    ax.axhline(
        goal, color="tab:red", linestyle="--", linewidth=1, label=f"p99 goal: floor p99 + 10 ms = {goal:.1f}"
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency, ms")
    ax.set_title(f"Latency at {r['rate']:,.0f} events/s offered ({lat.get('n', 0):,} worker samples)")
    drawn.append(("Latency percentiles", plots.save(fig, out / "stream_throughput-latency.png")))

    if lat.get("windows") and flo.get("windows"):  # runs from before 2026-12-04 have none
        fig, ax = plots.figure(7.5, 3.8)
        for label, run, color in (("worker event→push", lat, plots.OURS), ("broker floor", flo, plots.OTHER)):
            xs = [w["from_s"] + LATENCY_WINDOW_SECONDS / 2 for w in run["windows"]]
            ax.plot(xs, [w["p99_ms"] for w in run["windows"]], color=color, marker="o", label=f"{label}, p99")
            ax.plot(
                xs, [w["p50_ms"] for w in run["windows"]], color=color, linestyle=":", label=f"{label}, p50"
            )
        ax.set_yscale("log")
        ax.set_xlabel(f"seconds after the warm-up ({LATENCY_WINDOW_SECONDS:.0f} s windows)")
        ax.set_ylabel("latency, ms (log scale)")
        ax.set_title(f"Latency during the run at {r['rate']:,.0f} events/s (the broker's topics grow)")
        ax.legend(fontsize=8, loc="upper left")
        drawn.append(("Latency during the run", plots.save(fig, out / "stream_throughput-latency-time.png")))
    return drawn
