"""Soak benchmark: the simulated shop against one real worker process for a long time; does it level off?

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--rate 1000] [--sample-seconds 30]
        [--users 5000] [--user-lifetime-days 2] [--user-ttl-seconds 86400] [--worker-env KEY=VALUE ...]
        [--model-dir DIR] [--out DIR] [--from-json soak.json]

Everything is real: the embedded Tansu broker, ``python -m stream.cli worker`` in its own process
(:class:`tests.support.worker.WorkerProcess`), the simulated shop of ``kairos demo``
(:class:`stream.sim_runner.ShopSimulator`, consuming the pushes and answering them), and the demo's
model (:func:`stream.demo.ensure_model`, trained once and cached under ``.kairos/bench/soak-model``).

**Workload.** Events at a fixed ``--rate`` (default 1,000/s, what a 2-core machine sustains beside the
broker and the simulator). The shop has ``--users`` slots; each slot is taken by a new user id every
``--user-lifetime-days`` simulated days (staggered over the slots, see :class:`ChurningWorld`), and
every new user first sends its consent. So the number of users active at once is bounded, but new
users keep arriving: without expiry of inactive users the state grows without end; with it, it must
level off.

**Time.** Rate pacing runs the simulated clock thousands of times faster than the wall clock (about
4,000x with the defaults: a simulated day in ~20 s). Those event times would be far ahead of the wall
clock, which a clock-skew guard rightly refuses, so the shop starts far enough in the past that every
event time stays behind the wall clock, and the worker runs with ``clock=event`` (as the other
benchmarks do): timers, decisions and the inactive-user expiry follow event time. ``--user-ttl-seconds``
is therefore in event-time seconds.

**Expiry.** When the worker has an inactive-user expiry setting (any setting whose name contains
``ttl``, ``expir`` or ``inactiv``), its environment variable gets ``--user-ttl-seconds``; otherwise the
report says there is none (and the state cannot level off). A push's own time to live
(``policy.push_ttl_seconds``) is not it. ``--ttl-variable`` names the setting explicitly.

**Samples** (every ``--sample-seconds``): the worker's RSS and peak RSS (``/proc/<pid>/status``), the
broker's RSS (memory storage: every topic lives in its RAM), the RocksDB state directory's size on
disk, the worker's ``kairos_state_keys`` / ``kairos_state_bytes`` gauges, the changelog topic (records
and bytes as read by a consumer that follows it from offset 0, the high watermarks from its fetch
responses - never ListOffsets, which is wrong on this broker - and the live keys: keys whose latest
record is not a tombstone), events produced and processed, pushes, dead letters and the consumer lag
gauge. Each series' least-squares slope over the last third of the run is compared with the first
third's (see :func:`trend`).

**Compaction.** The changelog is ``cleanup.policy=compact``. At every sample the first records of each
partition are read again from offset 0: once the broker compacts, superseded records disappear and
the offsets there have gaps. At the end the whole changelog is read again and the records still
present are compared with the offsets written. If nothing was ever removed, the report puts the
changelog's live-key count beside its raw size.

Writes ``<out>/soak.md``, ``<out>/soak-*.png`` and the raw samples ``<out>/soak.json`` (default
``benchmarks/reports``; ``--from-json`` writes the report again from them) and prints one JSON object as
the last stdout line. A measurement, never a test assertion.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from benchmarks.soak_parts.analysis import analyse, summary_json  # noqa: E402
from benchmarks.soak_parts.charts import write_plots  # noqa: E402
from benchmarks.soak_parts.config import CACHE, MODEL_DIR, REPORTS, _say  # noqa: E402
from benchmarks.soak_parts.report import write_report  # noqa: E402
from benchmarks.soak_parts.runner import Run, run_soak  # noqa: E402
from stream.demo import ensure_model as ensure_demo_model  # noqa: E402
from stream.settings import Settings  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="How long the shop runs (default 30).")
    p.add_argument("--rate", type=float, default=1000.0, help="Events per second (default 1000).")
    p.add_argument("--sample-seconds", type=float, default=30.0, help="Sampling interval (default 30).")
    p.add_argument("--users", type=int, default=5000, help="User slots of the shop (default 5000).")
    p.add_argument("--items", type=int, default=3000, help="Catalog items (default 3000, the demo model's).")
    p.add_argument("--seed", type=int, default=7, help="Seed of the world (default 7, the demo model's).")
    p.add_argument(
        "--user-lifetime-days", type=float, default=2.0, help="Simulated days a user id lives (default 2)."
    )
    p.add_argument(
        "--user-ttl-seconds",
        type=float,
        default=86_400.0,
        help="Inactive-user expiry passed to the worker, event-time seconds (default 86400).",
    )
    p.add_argument("--ttl-variable", help="The expiry setting's environment variable (default: found).")
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="KEY=VALUE", help="Extra worker environment."
    )
    p.add_argument("--model-dir", type=Path, help="Model artifact (default: the demo model, cached).")
    p.add_argument("--out", type=Path, default=REPORTS, help="Report folder (default benchmarks/reports).")
    p.add_argument(
        "--from-json", type=Path, help="Write the report again from a run's soak.json (nothing is run)."
    )
    return p


def saved_run(saved: dict[str, Any]) -> Run:
    """A run read back from its ``soak.json`` as the run held it: a figure written ``null`` (NaN in the
    run, see ``benchmarks/json_out.py``) in a sample, the after-drain sample or the shop's summary is NaN
    again."""

    def figures(row: dict[str, Any]) -> dict[str, Any]:
        return {key: json_out.nan_if_null(value) for key, value in row.items()}

    end = dict(saved["end"])
    for key in ("final", "sim"):
        if isinstance(end.get(key), dict):
            end[key] = figures(end[key])
    return Run([figures(row) for row in saved["samples"]], saved["setup"], end)


def main(argv: list[str] | None = None) -> int:
    """Run the soak (or reload one), write the report and plots, print the JSON summary."""
    args = build_parser().parse_args(argv)
    command = "benchmarks/soak.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        run = saved_run(saved)
        command = saved["command"]
    else:
        if args.model_dir is None:
            settings = Settings()
            settings.model.dir = MODEL_DIR
            settings.worker.state_dir = CACHE / "soak" / "state"  # the demo trainer works beside it
            model_dir = Path(ensure_demo_model(settings))
        else:
            model_dir = args.model_dir
        CACHE.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="soak-run-", dir=CACHE))
        try:
            run = run_soak(args, model_dir, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        saved = {"command": command, "setup": run.setup, "samples": run.samples, "end": run.end}
        (args.out / "soak.json").write_text(json_out.dumps(saved, default=str))
    analysis = analyse(run)
    plots = write_plots(run.samples, run.end.get("final", {}), args.out) if run.samples else []
    report = write_report(run, analysis, plots, args.out, command)
    _say(f"[soak] report: {report}")
    print(json_out.dumps(summary_json(run, analysis)), flush=True)
    return 0 if run.end.get("worker_exit") in (0, None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
