"""Push-outcomes benchmark: Kairos against three baseline pushers on the same simulated shop.

    .venv/bin/python benchmarks/push_outcomes.py [--json] [--days 3] [--users 3000] [--items 1000]
        [--seed 11 | --seeds 11 12 ...] [--warmup-days 4] [--holdout-share 0.5] [--kairos-env KEY=VALUE ...]
        [--arms ...] [--workers 3] [--out DIR]
    .venv/bin/python benchmarks/push_outcomes.py --from-json benchmarks/reports/push_outcomes.json

Each arm runs the same world (same seed) through the real broker (embedded Tansu) for ``--days``
simulated days, after ``--warmup-days`` simulated offline (those days' events train the model, so the
model knows the world but never the evaluated days):

* ``kairos``: the real worker process (``python -m stream.cli worker``, ``KAIROS_WORKER__CLOCK=event``);
* ``popular_promotion``: a daily 18:00 UTC broadcast of the most popular promoted item;
* ``cart_abandonment_1h``: a push for every cart not bought within an hour;
* ``marketer_rules``: the rule set a marketer would configure in a push platform
  (``benchmarks/marketer_rules.py``): cart and browse abandonment after an hour, quiet hours in the
  user's zone, at most one push per user per local day.

**Lock step.** The world advances in steps of ``--step-minutes`` simulated minutes (15). Each step's
catalog changes go to the broker first (Kairos: its catalog counter on /metrics reaches what was
produced, so each change is announced where its partition's stream reaches the change's time), then
the step's events, and the pusher catches up (Kairos: its events counter reaches what was produced; a
heartbeat event at the step's end moves its event-time clock there so timers fire on time); then every
push emitted so far is delivered to the world at the step's end. So a push reaches the shopper at
most one step after it was decided; steps end just before every quarter hour, so a push decided
outside the quiet hours is never delivered inside them (every time zone's 22:00 and 08:00 fall on a
quarter hour). Pushes that show up a step late are counted (``late_deliveries``).

**In parallel.** Every arm of every seed, and every seed's world with no pushes, is one job in its own
process (``--workers`` at once, 3 by default: the Kairos arm spends part of its time waiting on its
worker and broker), with its own world and broker built from the seed alone. The figures therefore do
not depend on ``--workers`` (a test compares 1 and 2). Eight seeds of every arm, the eight models
trained from scratch included: 1,250 s with 3 workers on 2 cores, against 2,997 s one after the other
with the models cached.

Figures come from the simulator's ground truth over the evaluated days only. Lift is measured against
the holdout group (``stream.policy.in_holdout`` with the configured share and salt; the baselines
leave the same users alone) and, with less noise, against the same users in a counterfactual run of
the same world with no pushes at all (``incremental_purchases_vs_no_push``, and revenue likewise).
Every other arm is also compared with the first arm (Kairos) user by user on the same world
(``vs_first_purchases``, ``vs_first_revenue``, each with its own 95 % interval). ``opt_out_rate`` is
the share of treatment users who opted out during the evaluated days (a handful per world, so mostly
luck); ``expected_opt_out_rate`` the same expected from the response model (the sum of each push's
opt-out probability, ``World``'s ``opt_out_risk``), which compares arms far more precisely. Writes
``<out>/push_outcomes.md`` (default ``benchmarks/reports``; the figures table between its markers),
its figures ``<out>/push_outcomes-*.png`` (outcomes per arm with their 95 % intervals, pushes by trigger
over the users' local day) and the raw results ``<out>/push_outcomes.json``; ``--from-json`` writes the
table and figures again from that file without running. With ``--json`` the last stdout line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from benchmarks.outcomes.arms import ARMS  # noqa: E402
from benchmarks.outcomes.charts import draw_figures  # noqa: E402
from benchmarks.outcomes.config import BENCH_DIR, REPORT, BenchConfig, _say, lock_step_days_error  # noqa: E402
from benchmarks.outcomes.outcome_figures import compare_with, figures, per_seed_figures  # noqa: E402
from benchmarks.outcomes.report import KEYS, write_report  # noqa: E402
from benchmarks.outcomes.runner import NO_PUSH, ArmRun, merge_runs, run_jobs  # noqa: E402
from benchmarks.outcomes.training import TrainingFailed  # noqa: E402
from stream.simulator import DAY, World  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = BenchConfig()
    p.add_argument("--json", action="store_true", help="Last stdout line: one JSON object.")
    p.add_argument("--days", type=float, default=d.days, help="Evaluated simulated days.")
    p.add_argument("--users", type=int, default=d.users, help="Simulated shoppers.")
    p.add_argument("--items", type=int, default=d.items, help="Catalog items.")
    p.add_argument("--seed", type=int, default=d.seed, help="World seed (the same for every arm).")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="Pool several worlds (each seed is run through every arm; users of all worlds together).",
    )
    p.add_argument(
        "--warmup-days", type=float, default=d.warmup_days, help="Simulated days before (training)."
    )
    p.add_argument(
        "--step-minutes",
        type=float,
        default=d.step_minutes,
        choices=[5.0, 15.0],
        help="Lock-step length (divides the quarter hour).",
    )
    p.add_argument("--holdout-share", type=float, default=d.holdout_share, help="Holdout share (all arms).")
    p.add_argument(
        "--kairos-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra environment for the Kairos worker (policy tuning), repeatable.",
    )
    p.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS, help="Which pushers to run.")
    p.add_argument("--no-report", action="store_true", help="Do not rewrite the markdown report.")
    p.add_argument(
        "--workers",
        type=int,
        default=3,
        help="Worlds run at once (each arm of each seed, and each no-push world, is one job in its own "
        "process with its own broker; the figures do not depend on it).",
    )
    p.add_argument(
        "--out", type=Path, default=REPORT.parent, help="Report folder (default benchmarks/reports)."
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="Write the figures table and PNGs again from a run's push_outcomes.json (nothing is run).",
    )
    args = p.parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        publish(BenchConfig(**saved["config"]), saved["result"], saved["command"], args.out)
        return 0
    _check_args(p, args)
    env = dict(kv.split("=", 1) for kv in args.kairos_env)
    cfg = BenchConfig(
        args.seed,
        args.users,
        args.items,
        args.days,
        args.warmup_days,
        args.step_minutes,
        args.holdout_share,
        kairos_env=env,
    )
    started = time.monotonic()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or [cfg.seed]
    masks: list[np.ndarray] = []
    for seed in seeds:
        try:
            world = World(replace(cfg, seed=seed).sim_config())
        except ValidationError as exc:
            p.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        masks.append(np.array([replace(cfg, seed=seed).holdout()(u) for u in world.user_ids], dtype=bool))
    if all(mask.all() for mask in masks):
        p.error(f"no treatment users: all {cfg.users} users of each world drawn into the holdout")
    jobs = [(seed, name) for name in args.arms for seed in seeds] + [(seed, NO_PUSH) for seed in seeds]
    try:
        done = run_jobs(cfg, jobs, args.workers)
    except TrainingFailed as exc:
        print(f"push_outcomes.py: error: {exc}", file=sys.stderr)
        return 2
    no_pushes: list[dict[str, np.ndarray]] = [done[(seed, NO_PUSH)] for seed in seeds]
    runs: dict[str, list[ArmRun]] = {name: [done[(seed, name)] for seed in seeds] for name in args.arms}
    kairos_env: dict[str, str] = {}
    if "kairos" in runs:
        kairos_env = {k: v for k, v in runs["kairos"][0].env.items() if k.startswith("KAIROS_POLICY__")} | env
    holdout_mask = np.concatenate(masks)
    no_push = {k: np.concatenate([n[k] for n in no_pushes]) for k in ("purchases", "revenue")}
    baseline = no_push["purchases"]
    per_arm: dict[str, dict[str, Any]] = {}
    merged = {name: merge_runs(arm_runs) for name, arm_runs in runs.items()}
    first_run = merged[args.arms[0]]
    for name in args.arms:
        run = merged[name]
        per_arm[name] = figures(cfg, run, holdout_mask, no_push) | compare_with(first_run, run, ~holdout_mask)
        _say(f"[bench] {name}: " + json_out.dumps({k: per_arm[name][k] for k in KEYS}))
    first = args.arms[0]
    result: dict[str, Any] = {"arm": first, **per_arm[first]}
    result["baselines"] = {n: v for n, v in per_arm.items() if n != first}
    if len(seeds) > 1:
        result["per_seed"] = per_seed_figures(cfg, seeds, runs, masks, no_pushes, args.arms)
    result.update(
        {
            "days": cfg.days,
            "users": cfg.users,
            "items": cfg.items,
            "seed": cfg.seed,
            "seeds": seeds,
            "holdout_share": cfg.holdout_share,
            "treatment_users": int((~holdout_mask).sum()),
            "holdout_users": int(holdout_mask.sum()),
            "no_push_purchases": float(baseline[~holdout_mask].sum()),
            "no_push_revenue": float(no_push["revenue"][~holdout_mask].sum()),
            "kairos_env": kairos_env,
            "total_wall_seconds": round(time.monotonic() - started, 1),
        }
    )
    if not args.no_report:
        command = ".venv/bin/python benchmarks/push_outcomes.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        args.out.mkdir(parents=True, exist_ok=True)
        # The raw results first: the table and figures can be redrawn from them (--from-json).
        saved = {"command": command.strip(), "config": asdict(cfg), "result": result}
        (args.out / "push_outcomes.json").write_text(json_out.dumps(saved, sort_keys=True, indent=1) + "\n")
        publish(cfg, result, command.strip(), args.out)
    if args.json:
        print(json_out.dumps(result, sort_keys=True))
    else:
        print(json_out.dumps(result, indent=2, sort_keys=True))
    return 0


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse settings that cannot give figures, before any world runs."""
    days_error = lock_step_days_error(args.days, args.step_minutes)
    if days_error is not None:
        p.error(days_error)
    quarters = args.warmup_days * DAY / 900.0
    if args.warmup_days < 0 or abs(quarters - round(quarters)) > 1e-6:
        p.error(
            f"--warmup-days must be 0 or more and a whole number of quarter hours (the lock steps end "
            f"just before each), not {args.warmup_days:g}"
        )
    if not 0.0 <= args.holdout_share < 1.0:
        p.error("--holdout-share must be at least 0 and below 1 (at 1 nobody is pushed)")
    seeds = args.seeds or [args.seed]
    if len(set(seeds)) < len(seeds):
        p.error("--seeds: a seed is repeated (one world; its users would be counted twice)")
    if "kairos" in args.arms and args.warmup_days <= 0:
        p.error("the kairos arm trains its model on the warm-up days: --warmup-days must be above 0")


def publish(cfg: BenchConfig, result: dict[str, Any], command: str, out: Path) -> Path:
    """Draw the figures and write the report's figures block, which links them, under ``out``."""
    report = out / REPORT.name
    figures = draw_figures(result, out)
    write_report(cfg, result, command, report, figures)
    _say(f"[bench] report: {report} ({len(figures)} figures)")
    return report


if __name__ == "__main__":
    sys.exit(main())
