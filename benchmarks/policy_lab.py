"""Policy lab: push policies against the simulated shop in-process, in seconds instead of minutes.

`push_outcomes.py` measures the real worker on the broker (minutes per world). This lab runs pure
pushers (anything with ``observe_event`` / ``observe_catalog`` / ``observe_consent`` / ``due``, the
protocol of ``benchmarks/baselines.py``) directly against :class:`stream.simulator.World`, with the
same lock steps, the same holdout and the same delivery as the benchmark, so a policy idea can be
tried on many worlds before it is built into the engine. Each arm is paired with the no-push world
user by user, and with a reference arm (common random numbers: same world, same response draws for
the same shopper and item).

Arms:

* ``marketer_rules``, ``cart_abandonment_1h``: the benchmark's baselines.
* ``session_end``: a prototype of "push when they leave": ``delay`` after a shopper's last behaviour
  event, their best abandoned item (carted first, else viewed at least twice; any day's, not pushed in
  the last 7 days), quiet hours held to their end, one push per local day.
* ``oracle_item``: ``session_end`` that knows each item's true push conversion probability (open x
  click x buy, from the simulator's response model): an upper bound on what a better item choice at
  those moments can add.

``.venv/bin/python benchmarks/policy_lab.py --seeds 11 12 13 14 15 16 17 18`` (about 2 minutes per
arm on 2 cores) prints the table and writes ``benchmarks/reports/policy_lab.md``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import Baseline, BaselinePusher, CartAbandonmentPusher, baseline_push  # noqa: E402
from benchmarks.marketer_rules import MarketerRulesPusher  # noqa: E402
from stream.contract import CatalogUpdate, ConsentUpdate, Event  # noqa: E402
from stream.policy import in_holdout, quiet_hours_end  # noqa: E402
from stream.policy_config import PolicyConfig  # noqa: E402
from stream.simulator import DAY, SimConfig, World  # noqa: E402

REPORT = ROOT / "benchmarks" / "reports" / "policy_lab.md"
BEHAVIOUR = frozenset({"view", "add_to_cart", "remove_from_cart", "purchase", "search"})
HOLDOUT_SALT = PolicyConfig.model_validate({}).holdout_salt


@dataclass(frozen=True)
class LabConfig:
    """One lab world: the push benchmark's defaults."""

    users: int = 3000
    items: int = 1000
    days: float = 3.0
    warmup_days: float = 4.0
    step_seconds: float = 900.0
    holdout_share: float = 0.5

    def holdout(self, user_id: str) -> bool:
        return in_holdout(user_id, self.holdout_share, HOLDOUT_SALT)


class SessionEndPusher(BaselinePusher):
    """``delay`` after a shopper's last behaviour event, push their best abandoned item (see module doc)."""

    def __init__(
        self,
        holdout: Callable[[str], bool],
        delay_seconds: float = 3600.0,
        min_views: int = 2,
        repeat_seconds: float = 7 * DAY,
        ttl_seconds: float = 6 * 3600.0,
    ) -> None:
        super().__init__(holdout)
        self.delay, self.min_views, self.repeat, self.ttl = (
            delay_seconds,
            min_views,
            repeat_seconds,
            ttl_seconds,
        )
        self._quiet = PolicyConfig.model_validate({})
        self._zones: dict[str, ZoneInfo] = {}
        self.zone: dict[str, ZoneInfo] = {}
        self.cart: dict[str, dict[str, float]] = {}  # user -> item -> add time
        self.views: dict[str, dict[str, int]] = {}  # user -> item -> views, not bought
        self.pushed: dict[tuple[str, str], float] = {}
        self.per_day: dict[tuple[str, date], int] = {}
        self._due: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}  # user -> the live due time

    def observe_event(self, event: Event) -> None:
        """Track the cart, views and zone; (re-)arm the user's session end."""
        if event.context is not None and event.context.time_zone:
            name = event.context.time_zone
            self.zone[event.user_id] = self._zones.setdefault(name, ZoneInfo(name))
        if event.type not in BEHAVIOUR:
            return
        u, i = event.user_id, event.item_id
        cart, views = self.cart.setdefault(u, {}), self.views.setdefault(u, {})
        if i is not None:
            if event.type == "view":
                views[i] = views.get(i, 0) + 1
            elif event.type == "add_to_cart":
                cart[i] = event.ts
            elif event.type in ("remove_from_cart", "purchase"):
                cart.pop(i, None)
                views.pop(i, None)
        self._armed[u] = event.ts + self.delay
        heapq.heappush(self._due, (event.ts + self.delay, u))

    def value(self, user_id: str, item_id: str, carted: bool, now: float) -> float:
        """How much a push of the item is worth; carts first (the rule's ranking)."""
        return (1.0 if carted else 0.0) + self.views.get(user_id, {}).get(item_id, 0) * 1e-3

    def due(self, now: float) -> list[Any]:
        """The pushes of every session end due at ``now`` that passes the guards."""
        out, later = [], []
        while self._due and self._due[0][0] <= now:
            at, u = heapq.heappop(self._due)
            if self._armed.get(u) != at:
                continue
            del self._armed[u]
            if not self.audience.reachable(u):
                continue
            zone = self.zone.get(u) or ZoneInfo("UTC")
            quiet_end = quiet_hours_end(now, zone, self._quiet)
            if quiet_end is not None:
                self._armed[u] = quiet_end
                later.append((quiet_end, u))
                continue
            day = datetime.fromtimestamp(now, zone).date()
            if self.per_day.get((u, day), 0) >= 1:
                continue
            best: tuple[float, str, bool] | None = None
            cart = self.cart.get(u, {})
            candidates = [(i, True) for i in cart] + [
                (i, False) for i, n in self.views.get(u, {}).items() if n >= self.min_views and i not in cart
            ]
            for item_id, carted in candidates:
                item = self.catalog.get(item_id)
                if (
                    item is None
                    or item.stock <= 0
                    or now - self.pushed.get((u, item_id), -math.inf) < self.repeat
                ):
                    continue
                v = self.value(u, item_id, carted, now)
                if best is None or (v, item_id) > best[:2]:
                    best = (v, item_id, carted)
            if best is None:
                continue
            _, item_id, carted = best
            self.pushed[(u, item_id)] = now
            self.per_day[(u, day)] = 1
            trigger = "cart_abandonment" if carted else "browse_abandonment"
            out.append(
                baseline_push(u, self.catalog[item_id], trigger, f"end@{at:.0f}", now, self.ttl, "lab")
            )
        for entry in later:
            heapq.heappush(self._due, entry)
        return out


class OracleItemPusher(SessionEndPusher):
    """:class:`SessionEndPusher` that ranks items by their true push conversion probability."""

    world: World | None = None

    def value(self, user_id: str, item_id: str, carted: bool, now: float) -> float:
        assert self.world is not None
        probe = baseline_push(user_id, self.catalog[item_id], "cart_abandonment", "probe", now, 3600.0, "lab")
        p = self.world.response_probabilities(probe, now)
        return p.open * p.click * p.purchase


ARMS: dict[str, Callable[[Callable[[str], bool]], Baseline]] = {
    "marketer_rules": MarketerRulesPusher,
    "cart_abandonment_1h": CartAbandonmentPusher,
    "session_end": SessionEndPusher,
    "oracle_item": OracleItemPusher,
}
COUNTERS = ("purchases", "revenue", "pushes", "opt_outs", "quiet_pushes")


def run_world(cfg: LabConfig, seed: int, arm: str | None) -> dict[str, np.ndarray]:
    """Per-user counters over the evaluated days of one world, pushed by ``arm`` (None: nobody)."""
    world = World(SimConfig(seed=seed, n_users=cfg.users, n_items=cfg.items))
    start = world.config.start_time + cfg.warmup_days * DAY - 1e-3
    pusher = ARMS[arm](cfg.holdout) if arm is not None else None
    if isinstance(pusher, OracleItemPusher):
        pusher.world = world
    if pusher is not None:
        for update in world.initial_catalog():
            pusher.observe_catalog(update)
        for consent in world.initial_consent():
            pusher.observe_consent(consent)
    world.advance(start)
    before = {k: np.asarray(world.user_counters[k], dtype=float).copy() for k in COUNTERS}
    for k in range(int(round(cfg.days * DAY / cfg.step_seconds))):
        end = start + (k + 1) * cfg.step_seconds
        messages = world.advance(end)
        if pusher is None:
            continue
        for m in messages:
            if isinstance(m, Event):
                pusher.observe_event(m)
            elif isinstance(m, CatalogUpdate):
                pusher.observe_catalog(m)
            elif isinstance(m, ConsentUpdate):
                pusher.observe_consent(m)
        for push in pusher.due(end):
            world.deliver_push(push, world.now)
    return {k: np.asarray(world.user_counters[k], dtype=float) - before[k] for k in COUNTERS}


def _job(args: tuple[LabConfig, int, str | None]) -> tuple[int, str | None, dict[str, np.ndarray]]:
    cfg, seed, arm = args
    return seed, arm, run_world(cfg, seed, arm)


def _interval(diff: np.ndarray) -> float:
    return 1.96 * float(diff.std(ddof=1)) * math.sqrt(diff.size) if diff.size > 1 else float("nan")


def compare(cfg: LabConfig, arms: list[str], seeds: list[int], workers: int = 2) -> dict[str, Any]:
    """Every arm on every world, paired with no pushes and with the first arm (treatment users)."""
    jobs = [(cfg, s, a) for s in seeds for a in [None, *arms]]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        runs = {(s, a): r for s, a, r in pool.map(_job, jobs)}
    treat = ~np.array([cfg.holdout(f"u{k:06d}") for k in range(cfg.users)])
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
            "quiet_hours_share": sum(float(runs[s, arm]["quiet_pushes"][treat].sum()) for s in seeds)
            / max(pushes, 1.0),
        }
    return out


def table(result: dict[str, Any], seeds: list[int]) -> list[str]:
    """The result as markdown rows."""
    first = next(iter(result))
    rows = [
        f"| arm | vs no push ± 95 % | vs {first} ± 95 % | worlds ahead | revenue "
        "| pushes / user / day | opt-outs | per world |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in result.items():
        per = " ".join(f"{r['per_world'][str(s)]:+.0f}" for s in seeds)
        rows.append(
            f"| {arm} | {r['incremental_purchases']:+.0f} ± {r['incremental_purchases_ci95']:.0f} "
            f"| {r['vs_first_purchases']:+.0f} ± {r['vs_first_purchases_ci95']:.0f} "
            f"| {r['worlds_ahead_of_first']}/{len(seeds)} | {r['incremental_revenue']:+.0f} "
            f"| {r['pushes_per_user_per_day']:.3f} | {r['opt_outs']:.0f} | {per} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15, 16, 17, 18])
    p.add_argument(
        "--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="The first is the reference."
    )
    p.add_argument("--users", type=int, default=LabConfig.users)
    p.add_argument("--workers", type=int, default=2, help="Processes (one world each at a time).")
    p.add_argument("--json", action="store_true", help="Last stdout line: one JSON object.")
    p.add_argument("--no-report", action="store_true", help="Do not rewrite the markdown report.")
    args = p.parse_args(argv)
    cfg = LabConfig(users=args.users)
    started = time.monotonic()
    result = compare(cfg, args.arms, args.seeds, args.workers)
    seconds = time.monotonic() - started
    rows = table(result, args.seeds)
    print("\n".join(rows))
    print(f"({seconds:.0f} s)")
    if not args.no_report:
        words = " ".join(argv if argv is not None else sys.argv[1:])
        REPORT.write_text(
            "# Policy lab\n\n"
            f"`.venv/bin/python benchmarks/policy_lab.py {words}`\n\n"
            f"Worlds (seeds) {', '.join(map(str, args.seeds))}, {cfg.users} users and {cfg.items} items "
            f"each, {cfg.warmup_days:g} warm-up days, {cfg.days:g} evaluated days in "
            f"{cfg.step_seconds / 60:g}-minute lock steps, holdout share {cfg.holdout_share}; treatment "
            f"users only, pooled over the worlds. Wall time {seconds:.0f} s.\n\n" + "\n".join(rows) + "\n"
        )
    if args.json:
        print(json.dumps({"seconds": round(seconds, 1), "arms": result}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
