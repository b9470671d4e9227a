"""Policy lab: push policies against the simulated shop in-process, in seconds instead of minutes.

`push_outcomes.py` measures the real worker on the broker (minutes per world). This lab runs pure
pushers (anything with ``observe_event`` / ``observe_catalog`` / ``observe_consent`` / ``due``, the
protocol of ``benchmarks/baselines.py``) directly against :class:`stream.simulator.World`, with the
same lock steps, the same holdout and the same delivery as the benchmark, so a policy idea can be
tried on many worlds before it is built into the engine. Each arm is paired with the no-push world
user by user, and with a reference arm (common random numbers: same world, same response draws for
the same shopper and item).

Arms: ``marketer_rules`` and ``cart_abandonment_1h`` (the benchmark's baselines); the prototypes
of ``benchmarks/lab_pushers.py``: ``session_end`` (the shopper's abandoned item when they leave),
``popular_discovery`` (the most popular unengaged item of their recent categories),
``value_discovery`` (those ranked by popularity, discount and relative price), ``covisit_discovery``
(unengaged neighbours by co-views) and ``model_discovery`` (the GRU's best unengaged item);
``learned_discovery`` of ``benchmarks/lab_learned.py`` (``value_discovery``'s items, weights learned
from the shop's organic discoveries); and the
oracles of ``benchmarks/lab_oracles.py``, which read the world's ground truth to bound what a policy
could reach: ``oracle_item`` (the same moments, the abandoned item with the true best conversion),
``oracle_discovery`` (the unengaged item of true highest utility), ``pool_oracle_discovery``
(``popular_discovery``'s candidates ranked by true utility) and ``vector_oracle_discovery``
(``value_discovery`` plus the true item vectors against a taste estimated from the shopper's history);
``reminder`` (``session_end`` plus the engine's reminder a day after the shopper's last activity, if
they stay away), ``abandoned_or_discovery`` (the same moments, ``value_discovery``'s items when
nothing was abandoned), ``cart_then_discovery`` (carts only at the session end; the reminder an
abandoned item, else discovery), ``cart_then_discovery_first`` (the same, discovery first at the
reminder), ``returning_shopper`` (the same, nothing at the session end of a shopper back within
12 h), ``reminder_again`` (the same, and the reminder moment again 8 h later if the shopper is
still away) and ``reminder_gap`` (the same, the first reminder moment waiting until a day after the
shopper's last push), of ``benchmarks/lab_reminders.py``.

``.venv/bin/python benchmarks/policy_lab.py --seeds 11 12 13 14 15 16 17 18`` (about a minute per
arm on 2 cores) prints the table and writes ``benchmarks/reports/policy_lab.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from benchmarks.baselines import Baseline, CartAbandonmentPusher  # noqa: E402
from benchmarks.lab_learned import LearnedDiscoveryPusher, TitleTasteDiscoveryPusher  # noqa: E402
from benchmarks.lab_oracles import (  # noqa: E402
    OracleDiscoveryPusher,
    OracleItemPusher,
    OwnedOraclePusher,
    PoolOracleDiscoveryPusher,
    VectorOracleDiscoveryPusher,
    parts_oracle,
)
from benchmarks.lab_pushers import (  # noqa: E402
    CovisitDiscoveryPusher,
    ModelDiscoveryPusher,
    PopularDiscoveryPusher,
    SessionEndPusher,
    ValueDiscoveryPusher,
)
from benchmarks.lab_reminders import (  # noqa: E402
    AbandonedOrDiscoveryPusher,
    CartThenDiscoveryFirstPusher,
    CartThenDiscoveryPusher,
    ReminderAgainPusher,
    ReminderGapPusher,
    ReminderPusher,
    ReturningShopperPusher,
)
from benchmarks.marketer_rules import MarketerRulesPusher  # noqa: E402
from benchmarks.outcomes.config import BenchConfig, lock_step_days_error  # noqa: E402
from benchmarks.outcomes.training import ensure_model  # noqa: E402
from model.scorer import IncrementalScorer  # noqa: E402
from stream.contract import CatalogUpdate, ConsentUpdate, Event  # noqa: E402
from stream.simulator import DAY, World  # noqa: E402

REPORT = ROOT / "benchmarks" / "reports" / "policy_lab.md"
BASELINES = ("marketer_rules", "cart_abandonment_1h")


@dataclass
class LabConfig(BenchConfig):
    """A lab run's worlds: the push benchmark's setup (each world replaces the seed), plus a burn-in."""

    burn_in_days: float = 0.0


ARMS: dict[str, Callable[[Callable[[str], bool]], Baseline]] = {
    "marketer_rules": MarketerRulesPusher,
    "cart_abandonment_1h": CartAbandonmentPusher,
    "session_end": SessionEndPusher,
    "oracle_item": OracleItemPusher,
    "oracle_discovery": OracleDiscoveryPusher,
    "popular_discovery": PopularDiscoveryPusher,
    "value_discovery": ValueDiscoveryPusher,
    "covisit_discovery": CovisitDiscoveryPusher,
    "model_discovery": ModelDiscoveryPusher,
    "learned_discovery": LearnedDiscoveryPusher,
    "pool_oracle_discovery": PoolOracleDiscoveryPusher,
    "vector_oracle_discovery": VectorOracleDiscoveryPusher,
    "reminder": ReminderPusher,
    "abandoned_or_discovery": AbandonedOrDiscoveryPusher,
    "cart_then_discovery": CartThenDiscoveryPusher,
    "cart_then_discovery_first": CartThenDiscoveryFirstPusher,
    "returning_shopper": ReturningShopperPusher,
    "reminder_again": ReminderAgainPusher,
    "reminder_gap": ReminderGapPusher,
    "utility_oracle_discovery": parts_oracle(("taste", "appeal", "need", "price", "discount"), False),
    "utility_but_taste_oracle_discovery": parts_oracle(("appeal", "need", "price", "discount"), False),
    "utility_but_need_oracle_discovery": parts_oracle(("taste", "appeal", "price", "discount"), False),
    "taste_oracle_discovery": parts_oracle(("taste",), True),
    "owned_oracle_discovery": OwnedOraclePusher,
    "title_taste_discovery": TitleTasteDiscoveryPusher,
}
COUNTERS = ("purchases", "revenue", "pushes", "opt_outs", "opt_out_risk", "quiet_pushes")


def run_world(cfg: LabConfig, seed: int, arm: str | None) -> dict[str, np.ndarray]:
    """Per-user counters over the evaluated days of one world, pushed by ``arm`` (None: nobody).

    With ``cfg.burn_in_days`` the pusher also reads that many days before the evaluated period, as a
    worker that has been running would have, and its pushes then are dropped (never delivered): it
    starts the evaluated period with history, without a burst of overdue pushes.
    """
    bench = replace(cfg, seed=seed)
    world = World(bench.sim_config())
    start, step = bench.start(), bench.step_minutes * 60.0
    pusher = ARMS[arm](bench.holdout()) if arm is not None else None
    if pusher is not None:
        if hasattr(pusher, "world"):  # an oracle: it reads the world's ground truth
            pusher.world = world
        if hasattr(pusher, "scorer"):  # the model the push benchmark trains on this world's warm-up
            pusher.scorer = IncrementalScorer.load(lab_model(cfg, seed))
        for update in world.initial_catalog():
            pusher.observe_catalog(update)
        for consent in world.initial_consent():
            pusher.observe_consent(consent)
    burn_in = int(round(cfg.burn_in_days * DAY / step))
    world.advance(start - burn_in * step)
    for k in range(-burn_in, 0):
        _step(world, pusher, start + (k + 1) * step, deliver=False)
    before = {k: np.asarray(world.user_counters[k], dtype=float).copy() for k in COUNTERS}
    for end in bench.step_ends():
        _step(world, pusher, end, deliver=True)
    return {k: np.asarray(world.user_counters[k], dtype=float) - before[k] for k in COUNTERS}


def _step(world: World, pusher: Baseline | None, end: float, deliver: bool) -> None:
    """One lock step: the world to ``end``, the pusher reads it, what is due is delivered (or dropped)."""
    messages = world.advance(end)
    if pusher is None:
        return
    for m in messages:
        if isinstance(m, Event):
            pusher.observe_event(m)
        elif isinstance(m, CatalogUpdate):
            pusher.observe_catalog(m)
        elif isinstance(m, ConsentUpdate):
            pusher.observe_consent(m)
    for push in pusher.due(end):
        if deliver:
            world.deliver_push(push, world.now)


def lab_model(cfg: LabConfig, seed: int) -> Path:
    """The push benchmark's model of this world (trained on its warm-up days once, then cached)."""
    return ensure_model(replace(cfg, seed=seed))


def _job(args: tuple[LabConfig, int, str | None]) -> tuple[int, str | None, dict[str, np.ndarray]]:
    cfg, seed, arm = args
    return seed, arm, run_world(cfg, seed, arm)


def _interval(diff: np.ndarray) -> float:
    return 1.96 * float(diff.std(ddof=1)) * math.sqrt(diff.size) if diff.size > 1 else float("nan")


def compare(cfg: LabConfig, arms: list[str], seeds: list[int], workers: int = 2) -> dict[str, Any]:
    """Every arm on every world, paired with no pushes and with the first arm (treatment users)."""
    if "model_discovery" in arms:
        for seed in seeds:  # train once, before the workers start
            lab_model(cfg, seed)
    jobs = [(cfg, s, a) for s in seeds for a in [None, *arms]]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        runs = {(s, a): r for s, a, r in pool.map(_job, jobs)}
    holdout = cfg.holdout()
    treat = ~np.array([holdout(f"u{k:06d}") for k in range(cfg.users)])
    out: dict[str, Any] = {}
    for arm in arms:
        effect = np.concatenate(
            [(runs[s, arm]["purchases"] - runs[s, None]["purchases"])[treat] for s in seeds]
        )
        revenue = np.concatenate([(runs[s, arm]["revenue"] - runs[s, None]["revenue"])[treat] for s in seeds])
        vs_first = np.concatenate(
            [(runs[s, arm]["purchases"] - runs[s, arms[0]]["purchases"])[treat] for s in seeds]
        )
        pushes = sum(float(runs[s, arm]["pushes"][treat].sum()) for s in seeds)
        out[arm] = {
            "incremental_purchases": float(effect.sum()),
            "incremental_purchases_ci95": _interval(effect),
            "incremental_revenue": float(revenue.sum()),
            "vs_first_purchases": float(vs_first.sum()),
            "vs_first_purchases_ci95": _interval(vs_first),
            "worlds_ahead_of_first": sum(
                1
                for s in seeds
                if runs[s, arm]["purchases"][treat].sum() > runs[s, arms[0]]["purchases"][treat].sum()
            ),
            "per_world": {
                str(s): float((runs[s, arm]["purchases"] - runs[s, None]["purchases"])[treat].sum())
                for s in seeds
            },
            "pushes_per_user_per_day": pushes / (int(treat.sum()) * len(seeds) * cfg.days),
            "opt_outs": sum(float(runs[s, arm]["opt_outs"][treat].sum()) for s in seeds),
            "expected_opt_outs": sum(float(runs[s, arm]["opt_out_risk"][treat].sum()) for s in seeds),
            "quiet_hours_share": sum(float(runs[s, arm]["quiet_pushes"][treat].sum()) for s in seeds)
            / max(pushes, 1.0),
        }
    return out


def _ci(half_width: float) -> str:
    """An interval's half-width in a table: ``n/a`` when undefined (one treatment user), as in
    push_outcomes' report."""
    return "n/a" if math.isnan(half_width) else f"{half_width:.0f}"


def table(result: dict[str, Any], seeds: list[int]) -> list[str]:
    """The result as markdown rows."""
    first = next(iter(result))
    rows = [
        f"| arm | vs no push ± 95 % | vs {first} ± 95 % | worlds ahead | revenue "
        "| pushes / user / day | opt-outs (expected) | per world |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, saved in result.items():
        # An interval that is undefined (one treatment user) is null in a saved run: the run's NaN again.
        r = {key: json_out.nan_if_null(value) for key, value in saved.items()}
        per = " ".join(f"{r['per_world'][str(s)]:+.0f}" for s in seeds)
        rows.append(
            f"| {arm} | {r['incremental_purchases']:+.0f} ± {_ci(r['incremental_purchases_ci95'])} "
            f"| {r['vs_first_purchases']:+.0f} ± {_ci(r['vs_first_purchases_ci95'])} "
            f"| {r['worlds_ahead_of_first']}/{len(seeds)} | {r['incremental_revenue']:+.0f} "
            f"| {r['pushes_per_user_per_day']:.3f} | {r['opt_outs']:.0f} "
            f"({r.get('expected_opt_outs', math.nan):.1f}) | {per} |"
        )
    return rows


def draw(result: dict[str, Any], out: Path) -> Path:
    """``policy_lab-arms.png``: each arm's effect against no push and against the reference, 95 %."""
    from benchmarks import plots

    arms = result["arms"]
    names = list(arms)
    fig, axes = plots.figure(width=10.0, height=0.5 * len(names) + 1.6, ncols=2)
    left, right = axes[0]
    colors = [plots.OTHER if name in BASELINES else plots.OURS for name in names]
    panels = [
        (
            left,
            "incremental_purchases",
            "Incremental purchases vs no pushes (95 %)",
            "purchases (treatment users, worlds pooled)",
        ),
        (right, "vs_first_purchases", f"Paired difference to {names[0]} (95 %)", "purchases"),
    ]
    for ax, key, title, xlabel in panels:
        values = [json_out.nan_if_null(arms[n][key]) for n in names]
        errors = [json_out.nan_if_null(arms[n][f"{key}_ci95"]) for n in names]  # null: undefined
        plots.hbars(ax, names, values, colors, errors)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
    right.set_yticks([])
    return plots.save(fig, out / "policy_lab-arms.png")


def write_report(result: dict[str, Any], out: Path) -> Path:
    """The report, its figure and the raw result (``policy_lab.json``) in ``out``."""
    from benchmarks import plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "policy_lab.json").write_text(json_out.dumps(result, indent=1, sort_keys=True) + "\n")
    cfg, seeds = result["config"], result["seeds"]
    report = out / "policy_lab.md"
    images = plots.markdown_images([("Effects per arm", draw(result, out))], report)
    report.write_text(
        "# Policy lab\n\n"
        f"`{result['command']}`\n\n"
        f"Worlds (seeds) {', '.join(map(str, seeds))}, {cfg['users']} users and {cfg['items']} items each, "
        f"{cfg['warmup_days']:g} warm-up days, {cfg['days']:g} evaluated days in "
        f"{cfg['step_minutes']:g}-minute lock steps, holdout share {cfg['holdout_share']}; treatment "
        f"users only, pooled over the worlds; pushers read {cfg['burn_in_days']:g} days of history first "
        f"(their pushes dropped). Wall time {result['seconds']:.0f} s. What the figures say: "
        '`benchmarks/README.md`, "Policy lab".\n\n'
        + "\n".join([*table(result["arms"], seeds), "", *images])
        + "\n"
    )
    return report


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse settings that cannot give figures, before any world runs."""
    days_error = lock_step_days_error(args.days, LabConfig.step_minutes)
    if days_error is not None:
        p.error(days_error)
    if args.burn_in_days < 0:
        p.error("--burn-in-days must be 0 or more")
    if min(args.seeds) < 0 or len(set(args.seeds)) < len(args.seeds):
        p.error("--seeds must be 0 or more, none repeated (a repeated world would be counted twice)")
    if args.users < 1 or args.workers < 1:
        p.error("--users and --workers must be 1 or more")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15, 16, 17, 18])
    p.add_argument(
        "--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="The first is the reference."
    )
    p.add_argument("--users", type=int, default=LabConfig.users)
    p.add_argument("--days", type=float, default=LabConfig.days, help="Evaluated simulated days.")
    p.add_argument(
        "--burn-in-days",
        type=float,
        default=LabConfig.burn_in_days,
        help="Days before the evaluated period the pushers read without delivering (history).",
    )
    p.add_argument("--workers", type=int, default=2, help="Processes (one world each at a time).")
    p.add_argument("--json", action="store_true", help="Last stdout line: one JSON object.")
    p.add_argument("--no-report", action="store_true", help="Do not rewrite the report.")
    p.add_argument("--out", type=Path, default=REPORT.parent, help="Folder of the report, figure and JSON.")
    p.add_argument("--from-json", type=Path, help="Redraw the report from a saved policy_lab.json.")
    args = p.parse_args(argv)
    if args.from_json is not None:
        print(write_report(json.loads(args.from_json.read_text()), args.out))
        return 0
    _check_args(p, args)
    cfg = LabConfig(users=args.users, days=args.days, burn_in_days=args.burn_in_days)
    started = time.monotonic()
    arms = compare(cfg, args.arms, args.seeds, args.workers)
    words = " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": f".venv/bin/python benchmarks/policy_lab.py {words}".strip(),
        "config": asdict(cfg),
        "seeds": args.seeds,
        "seconds": round(time.monotonic() - started, 1),
        "arms": arms,
    }
    print("\n".join(table(arms, args.seeds)))
    print(f"({result['seconds']:.0f} s)")
    if not args.no_report:
        write_report(result, args.out)
    if args.json:
        print(json_out.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
