"""One GRU step of a round's users: the native build's C step against its numpy twin, per call.

    .venv/bin/python benchmarks/gru_step.py [--rows 1 4 12 32 128] [--repeats 7] [--json] [--no-report]

The model of ``benchmarks/stream_throughput.py`` (trained on first use, cached), its weights as the
worker holds them (:class:`model.scorer.IncrementalScorer`), states from a few steps on random items.
Each way is timed ``--repeats`` times per number of rows, interleaved; the median µs per call and
per row are reported:

- ``c``: ``model._gru_step``, the native build's C step (skipped, with the reason, where there is no
  current build: ``make install`` makes one);
- ``numpy``: :func:`model.gru_kernel.step_numpy`, its twin (the same bits), what a process without the
  build runs;
- ``einsum_before``: the step as it was until 2026-12-06 (``einsum`` and numpy's ``tanh``), for
  comparison only: its results differ from the two above in the last bits.

Writes ``benchmarks/reports/gru_step.md``, ``gru_step.png`` and the raw figures ``gru_step.json``
unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import json_out, plots  # noqa: E402
from benchmarks.throughput.workload import ensure_model  # noqa: E402
from model.gru_kernel import step_numpy  # noqa: E402
from model.scorer import IncrementalScorer  # noqa: E402
from stream import native  # noqa: E402
from stream.contract import EVENT_TYPES  # noqa: E402
from stream.settings import get_settings  # noqa: E402

REPORTS = Path(__file__).resolve().parent / "reports"
CALLS = 400  # per timing


def einsum_before(sc: IncrementalScorer, h: np.ndarray, it: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """The step until 2026-12-06 (einsum, numpy's tanh), to compare costs only."""
    units = sc._units
    known = it >= 0
    safe = np.where(known, it, 0)
    gi = sc._np_gi_item[safe] + sc._np_gi_type[ty]
    g = h[:, :units]
    gh = np.einsum("bh,hk->bk", g, sc._np_w_hh_t) + sc._np_b_hh
    rz = 0.5 + 0.5 * np.tanh(0.5 * (gi[:, : 2 * units] + gh[:, : 2 * units]))
    r, z = rz[:, :units], rz[:, units:]
    n = np.tanh(gi[:, 2 * units :] + r * gh[:, 2 * units :])
    parts = [n + z * (g - n)]
    if sc._np_emb is not None:
        parts.append(sc._np_emb[safe])
    window = sc._window
    if window:
        last = h[:, sc.hidden_size - window :]
        pushed = np.concatenate([(safe + 1).astype(np.float32)[:, None], last[:, :-1]], axis=1)
        artifact = safe < sc.n_artifact_items
        parts.append(pushed if artifact.all() else np.where(artifact[:, None], pushed, last))
    new = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    return new if known.all() else np.where(known[:, None], new, h)


def _us_per_call(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        call()
    return (time.perf_counter() - started) / CALLS * 1e6


def measure(
    sc: IncrementalScorer, kernel: ModuleType | None, rows: list[int], repeats: int
) -> dict[str, Any]:
    """Median µs per call of each way for each number of rows (see the module docstring)."""
    rng = np.random.default_rng(7)
    tables = (sc._np_gi_item, sc._np_gi_type, sc._np_w_hh_t, sc._np_b_hh, sc._np_emb)
    out: dict[str, Any] = {}
    for b in rows:
        h = sc.initial_state(b)
        for _ in range(5):
            items, types = rng.integers(0, sc.n_items, b), rng.integers(0, 3, b)
            h = step_numpy(h, items, types, *tables, sc._window, sc.n_artifact_items)
        out[str(b)] = _one_size(sc, kernel, h, rng.integers(0, sc.n_items, b), rng.integers(0, 3, b), repeats)
    return out


def _one_size(
    sc: IncrementalScorer,
    kernel: ModuleType | None,
    h: np.ndarray,
    it: np.ndarray,
    ty: np.ndarray,
    repeats: int,
) -> dict[str, float]:
    """Median µs per call of each way on these states, items and types."""
    tables = (sc._np_gi_item, sc._np_gi_type, sc._np_w_hh_t, sc._np_b_hh, sc._np_emb)
    ways: dict[str, Callable[[], Any]] = {}
    if kernel is not None:
        dest = np.empty_like(h)
        args = (dest, h, it, ty, *tables, sc._units, sc._window, sc.n_artifact_items, len(EVENT_TYPES))
        ways["c"] = lambda: kernel.step(*args)
        kernel.step(*args)
        assert np.array_equal(dest, step_numpy(h, it, ty, *tables, sc._window, sc.n_artifact_items))
    ways["numpy"] = lambda: step_numpy(h, it, ty, *tables, sc._window, sc.n_artifact_items)
    ways["einsum_before"] = lambda: einsum_before(sc, h, it, ty)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, call in ways.items():
            times[name].append(_us_per_call(call))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run, print the figures, write the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 12, 32, 128])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    sc = IncrementalScorer.load(ensure_model(get_settings()), threads=1)
    kernel, status = native.load_built("model._gru_step")
    figures = measure(sc, kernel, args.rows, args.repeats)
    result = {
        "units": sc._units,
        "hidden_size": sc.hidden_size,
        "native": status,
        "repeats": args.repeats,
        "us_per_call": figures,
    }
    print(json_out.dumps(result, indent=2) if args.json else result)
    if not args.no_report:
        _report(result, " ".join(sys.argv[1:]))
    return 0


def _report(result: dict[str, Any], arguments: str) -> None:
    figures: dict[str, dict[str, float]] = result["us_per_call"]
    ways = list(next(iter(figures.values())))
    fig, ax = plots.figure(7.5, 3.8)
    series = {w: [figures[b][w] for b in figures] for w in ways}
    plots.grouped_bars(ax, [f"{b} rows" for b in figures], series)
    ax.set_ylabel("µs per call (median)")
    ax.set_yscale("log")
    ax.set_title("One GRU step of a round's users")
    picture = plots.save(fig, REPORTS / "gru_step.png")
    (REPORTS / "gru_step.json").write_text(json_out.dumps(result, indent=1) + "\n", encoding="utf-8")
    report = REPORTS / "gru_step.md"
    header = (
        "| rows | "
        + " | ".join(f"`{w}` µs / call" for w in ways)
        + " | "
        + " | ".join(f"`{w}` µs / row" for w in ways)
    )
    lines = [header + " |", "|---" * (1 + 2 * len(ways)) + "|"]
    for b, row in figures.items():
        per_call = " | ".join(f"{row[w]:.1f}" for w in ways)
        per_row = " | ".join(f"{row[w] / int(b):.2f}" for w in ways)
        lines.append(f"| {b} | {per_call} | {per_row} |")
    machine = platform.processor() or platform.machine()
    numpy = np.__version__
    command = ("python benchmarks/gru_step.py " + arguments).strip()
    table = "\n".join(lines)
    images = "\n".join(plots.markdown_images([("µs per call, log scale", picture)], report))
    report.write_text(
        f"""# One GRU step of a round's users: C against numpy

Command: `{command}`.
Run: {datetime.now(UTC):%Y-%m-%d %H:%M}Z on {machine}, Python {platform.python_version()}, numpy {numpy}.
Model: {result["units"]} GRU units, state of {result["hidden_size"]} floats; {result["native"]}.
Median of {result["repeats"]} interleaved timings of {CALLS} calls each.

{table}

{images}

`c` and `numpy` give the same bits (checked here on each size, and by `tests/model/test_gru_kernel.py`);
`einsum_before` is the step until 2026-12-06, for its cost only. What each way is: the module docstring
of `benchmarks/gru_step.py`.
"""
    )


if __name__ == "__main__":
    raise SystemExit(main())
