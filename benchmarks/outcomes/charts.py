"""The push-outcomes benchmark's PNGs, drawn with ``benchmarks/plots.py``: outcomes per arm with
their 95 % intervals, and pushes by trigger over the users' local day.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.json_out import nan_if_null
from benchmarks.outcomes.report import _arms


def draw_figures(result: dict[str, Any], out: Path) -> list[tuple[str, Path]]:
    """PNGs: outcomes per arm with their 95 % intervals; pushes by trigger over the users' local day."""
    from benchmarks import plots

    rows = _arms(result)
    names = list(rows)
    drawn: list[tuple[str, Path]] = []
    fig, axes = plots.figure(12.0, 4.2, ncols=2)
    left, right = axes[0]
    rates = {"open": "open_rate", "click": "click_rate", "conversion": "conversion_rate"}
    series = {label: [100 * rows[n][key] for n in names] for label, key in rates.items()}
    errors: dict[str, Any] = {}
    for label, key in rates.items():
        lows, highs = [], []
        for n in names:
            lo, hi = plots.wilson_interval(rows[n][key], int(rows[n]["pushes"]))
            lows.append(100 * (rows[n][key] - lo))
            highs.append(100 * (hi - rows[n][key]))
        errors[label] = [lows, highs]
    plots.grouped_bars(left, names, series, errors)
    left.set_ylabel("share of pushes, % (95 % Wilson interval)")
    left.set_xlabel("pusher")
    left.set_title("Responses per push")

    def column(key: str, arms: list[str]) -> list[float]:
        # An undefined figure (null in a saved run: no holdout users, one user) as the run's NaN.
        return [nan_if_null(rows[n][key]) for n in arms]

    incr = {
        "vs holdout": column("incremental_purchases", names),
        "vs no pushes (paired)": column("incremental_purchases_vs_no_push", names),
    }
    incr_err = {
        "vs holdout": column("incremental_purchases_ci95", names),
        "vs no pushes (paired)": column("incremental_purchases_vs_no_push_ci95", names),
    }
    if all("vs_first_purchases" in rows[n] for n in names[1:]) and len(names) > 1:
        # The first arm against itself is 0 by construction; its bar is left at 0 with no interval.
        label = f"vs {names[0]} (paired)"
        incr[label] = [0.0] + column("vs_first_purchases", names[1:])
        incr_err[label] = [0.0] + column("vs_first_purchases_ci95", names[1:])
    plots.grouped_bars(right, names, incr, incr_err, fmt="{:+.0f}")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylabel("incremental purchases, treatment users (± 95 %)")
    right.set_xlabel("pusher")
    right.set_title("Purchases the pushes added")
    fig.suptitle(
        f"Push outcomes per arm ({result.get('treatment_users', '?')} treatment users, "
        f"{result.get('days', '?')} simulated days)"
    )
    drawn.append(("Outcomes per arm with 95 % intervals", plots.save(fig, out / "push_outcomes-arms.png")))

    hourly = {n: rows[n].get("pushes_by_trigger_local_hour") for n in names}
    if any(hourly.values()):
        fig, axes = plots.figure(4.2 * len(names), 3.8, ncols=len(names))
        triggers = sorted({t for h in hourly.values() if h for t in h})
        colours = {t: plots.PALETTE[i % len(plots.PALETTE)] for i, t in enumerate(triggers)}
        panels = axes[0] if len(names) > 1 else [axes]  # one arm: a single Axes, not a row of them
        for ax, n in zip(panels, names, strict=True):
            bottom = [0] * 24
            for trig, counts in sorted((hourly[n] or {}).items()):
                ax.bar(range(24), counts, bottom=bottom, color=colours[trig], label=trig, width=0.9)
                bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
            # The quiet hours the simulator counts (22:00-08:00 local).
            ax.axvspan(-0.5, 7.5, color="0.9", zorder=0)
            ax.axvspan(21.5, 23.5, color="0.9", zorder=0)
            ax.set_xlim(-0.5, 23.5)
            ax.set_xticks(range(0, 24, 3))
            ax.set_xlabel("hour of the user's local day (shaded: quiet hours)")
            ax.set_ylabel("pushes delivered")
            ax.set_title(n)
            ax.grid(axis="y", alpha=0.3)
            if hourly[n]:
                ax.legend(fontsize=7, loc="upper left")
        fig.suptitle("Pushes by trigger over the day")
        drawn.append(("Pushes by trigger over the day", plots.save(fig, out / "push_outcomes-by-hour.png")))
    return drawn
