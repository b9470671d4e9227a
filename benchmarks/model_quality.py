"""Model quality benchmark: baselines and the GRU on yoochoose-100k and Diginetica, next to the references.

    .venv/bin/python benchmarks/model_quality.py [--quick] [--json] [--report PATH]
    .venv/bin/python benchmarks/model_quality.py --tuned [--tune-budget SECONDS] [--quick] [--json]
    .venv/bin/python benchmarks/model_quality.py --from-json benchmarks/reports/model_quality.json
    .venv/bin/python benchmarks/model_quality.py --scorer-timing   # interest() cost, no data needed

Trains each model in a child process (``python -m model.cli train``, so its peak RSS is its own),
evaluates it and the baselines on the same full-catalog path, and writes
``benchmarks/reports/model_quality.md``, its figures (``model_quality-<dataset>-*.png``: training curves,
Recall/MRR against the references) and the raw results ``model_quality.json`` beside it; ``--from-json``
writes the report and figures again from such a file without training. ``--quick`` runs yoochoose
only. Hyper-parameters come from ``model/configs/<dataset>.json``; they were chosen on validation
splits (``train_tr``/``train_valid`` for yoochoose, the time-ordered tail of the training sessions for
Diginetica), never on test.

``--tuned`` trains with ``kairos train`` and no preset instead (the tuner chooses everything on the
time-ordered tail of the training file, ``model/tuning.py``) and writes
``benchmarks/reports/model_quality_tuned.md`` (+ ``.json``), with the tuning and training times and the
preset run's figures beside (from ``model_quality.json``). A tuned run also trains on
``retailrocket-sample`` (sessions starting in its last day are the test, :func:`split_retailrocket`): a
dataset with no preset and no published figure, the check that the self-tuning generalises; its anchor
is our strongest baseline (session-kNN there).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from benchmarks.quality.charts import draw_figures  # noqa: E402
from benchmarks.quality.config import DATASETS, UNSEEN  # noqa: E402
from benchmarks.quality.report import render  # noqa: E402
from benchmarks.quality.runner import run_dataset  # noqa: E402
from benchmarks.quality.scorer_timing import scorer_timing  # noqa: E402
from benchmarks.quality.unseen_split import split_retailrocket  # noqa: E402
from stream.settings import get_settings  # noqa: E402

# The parts live in benchmarks/quality/; callers that import this file by its old name use these.
__all__ = ["UNSEEN", "draw_figures", "render", "run_dataset", "scorer_timing", "split_retailrocket"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the markdown report; with --json print the results as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="yoochoose-100k only")
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted([*DATASETS, UNSEEN]), help=f"these only ({UNSEEN}: --tuned)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument(
        "--from-json", nargs="+", help="re-render the report from previous --json output files (merged)"
    )
    parser.add_argument("--report", help="default: reports/model_quality.md (_tuned.md with --tuned)")
    parser.add_argument("--tuned", action="store_true", help="no preset: kairos train tunes itself")
    parser.add_argument("--tune-budget", type=float, help="with --tuned: kairos train's --tune-budget")
    parser.add_argument(
        "--scorer-timing", action="store_true", help="only time the scorer's hot path (µs/event)"
    )
    args = parser.parse_args(argv)
    if args.scorer_timing:
        for row in scorer_timing():
            print(json_out.dumps(row))
        return 0
    data_dir = get_settings().data_dir
    if not args.from_json and not (data_dir / "yoochoose-100k").is_dir():
        print(f"datasets not found under {data_dir}", file=sys.stderr)
        return 2
    every = [*DATASETS, UNSEEN] if args.tuned else list(DATASETS)
    names = ["yoochoose-100k"] if args.quick else (args.datasets or every)
    results: dict[str, dict[str, Any]] = {}
    reports = ROOT / "benchmarks" / "reports"
    report = Path(args.report or reports / ("model_quality_tuned.md" if args.tuned else "model_quality.md"))
    report.parent.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        # Re-render a previous run's results (model_quality.json, or a --json run's last stdout line).
        # Several files (runs of single datasets) are merged, later files winning.
        for path in args.from_json:
            lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
            results.update(json.loads(lines[-1]))
    else:
        with tempfile.TemporaryDirectory(prefix="kairos-bench-") as work:
            for name in names:
                results[name] = run_dataset(name, data_dir, Path(work), args.tuned, args.tune_budget)
        # The raw results, one line: the report and figures can be redrawn from them (--from-json).
        report.with_suffix(".json").write_text(
            json_out.dumps(results, default=float) + "\n", encoding="utf-8"
        )
    tuned = any("tuning" in res for res in results.values())
    command = (
        "benchmarks/model_quality.py"
        + (" --tuned" if tuned else "")
        + (f" --tune-budget {args.tune_budget:g}" if args.tune_budget is not None else "")
        + (" --quick" if "diginetica" not in results else "")
    )
    presets = None
    if tuned and (reports / "model_quality.json").exists():
        presets = json.loads((reports / "model_quality.json").read_text(encoding="utf-8").splitlines()[-1])
    figures = draw_figures(results, report.parent, "model_quality_tuned" if tuned else "model_quality")
    report.write_text(render(results, command, figures, report, presets), encoding="utf-8")
    print(f"wrote {report}", file=sys.stderr)
    if args.json:
        print(json_out.dumps(results, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
