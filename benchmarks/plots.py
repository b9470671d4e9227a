"""Shared plotting helpers for the benchmark reports (matplotlib, Agg backend: no display needed).

Each benchmark turns its saved results into a few PNGs beside its markdown report and links them
with :func:`markdown_images`. The helpers here only draw; what to draw stays in each benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the benchmarks run headless
import matplotlib.pyplot as plt  # noqa: E402

# Colours: ours stands out, references and baselines recede.
OURS = "tab:blue"
OTHER = "tab:gray"
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
DPI = 90


def figure(width: float = 7.5, height: float = 3.8, ncols: int = 1) -> tuple[Any, Any]:
    """A new figure and its axes (a list when ``ncols`` > 1)."""
    return plt.subplots(1, ncols, figsize=(width, height), squeeze=ncols == 1)


def save(fig: Any, path: Path) -> Path:
    """Lay out, write ``path`` as PNG and free the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def hbars(
    ax: Any,
    labels: Sequence[str],
    values: Sequence[float],
    colors: Sequence[str] | str = OURS,
    errors: Sequence[float] | None = None,
    fmt: str = "{:,.0f}",
) -> None:
    """Horizontal bars, first label on top, each bar annotated with its value."""
    y = list(range(len(labels)))
    ax.barh(y, values, color=colors, xerr=errors, capsize=3 if errors is not None else 0)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, v in zip(y, values, strict=True):
        if not math.isnan(v):
            ax.annotate(
                fmt.format(v), (v, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8
            )
    ax.grid(axis="x", alpha=0.3)


def grouped_bars(
    ax: Any,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    errors: Mapping[str, Any] | None = None,
    fmt: str = "{:.1f}",
) -> None:
    """Vertical bars: one group per x position, one bar per series inside it.

    ``errors``: per series, symmetric half-widths or a ``[lows, highs]`` pair, as matplotlib's ``yerr``.
    """
    n = max(len(series), 1)
    width = 0.8 / n
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(groups))]
        err = (errors or {}).get(name)
        bars = ax.bar(
            xs,
            values,
            width,
            label=name,
            color=PALETTE[k % len(PALETTE)],
            yerr=err,
            capsize=3 if err is not None else 0,
        )
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``rate`` observed over ``n`` trials."""
    if n <= 0:
        return (0.0, 0.0)
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def markdown_images(paths: Sequence[tuple[str, Path]], report: Path) -> list[str]:
    """Markdown image links (``![caption](file.png)``) relative to the report's folder."""
    lines = []
    for caption, path in paths:
        try:
            rel = path.resolve().relative_to(report.resolve().parent)
        except ValueError:
            rel = path
        lines += [f"![{caption}]({rel.as_posix()})", ""]
    return lines
