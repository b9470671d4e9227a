"""Running the push-outcomes benchmark: one arm through the evaluated days in lock step with a fresh
world and broker (:func:`run_arm`), the world with no pushes at all (:func:`no_push_outcomes`), every
``(seed, arm)`` job in its own process (:func:`run_jobs`), and one arm's runs on several worlds merged
(:func:`merge_runs`).
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from benchmarks.outcomes.arms import Arm, make_arms
from benchmarks.outcomes.broker_io import Publisher, PushReader
from benchmarks.outcomes.config import BENCH_DIR, CLOCK_USER, COUNTERS, BenchConfig, _say
from stream.broker import EmbeddedBroker
from stream.contract import CatalogUpdate, Event
from stream.partitioning import partition_for
from stream.settings import Settings
from stream.simulator import DAY, World, local_hour
from stream.topics import ensure_topics


@dataclass
class ArmRun:
    """Per-user counters over the evaluated period and run facts."""

    name: str
    deltas: dict[str, np.ndarray]
    opted_out_during: np.ndarray
    late_deliveries: int
    pushes_by_trigger: dict[str, int]
    wall_seconds: float
    # Per trigger: pushes delivered in each hour (0-23) of the receiving user's local day.
    pushes_by_trigger_hour: dict[str, list[int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    expired: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, float] = field(default_factory=dict)


def clock_users(partitions: int) -> list[str]:
    """One heartbeat user id per partition of the events topic (murmur2, like every producer here)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        user = f"{CLOCK_USER}-{n}"
        found.setdefault(partition_for(user, partitions), user)
        n += 1
    return [found[p] for p in range(partitions)]


def _snapshot(world: World) -> dict[str, np.ndarray]:
    return {k: np.asarray(world.user_counters[k], dtype=float).copy() for k in COUNTERS}


def run_arm(cfg: BenchConfig, arm: Arm) -> ArmRun:
    """Run one pusher through the evaluated days in lock step with a fresh world and broker."""
    started = time.monotonic()
    world = World(cfg.sim_config())
    world.advance(cfg.start())
    before = _snapshot(world)
    opted_before = np.array(world.opted_in, dtype=bool)
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{arm.name}-", dir=BENCH_DIR))
    late = 0
    by_trigger: dict[str, int] = {}
    by_hour: dict[str, list[int]] = {}
    zones: dict[str, ZoneInfo] = {}
    expired: list[dict[str, Any]] = []
    diagnostics: dict[str, float] = {}
    with EmbeddedBroker() as broker:
        settings = Settings()
        settings.kafka.bootstrap_servers = broker.bootstrap
        ensure_topics(settings)
        pub = Publisher(settings)
        pub.send([*world.initial_catalog(), *world.initial_consent()])
        reader = PushReader(settings)
        try:
            arm.start(settings, run_dir)
            previous_end = cfg.start()
            per_day = int(round(DAY / (cfg.step_minutes * 60.0)))
            for k, end in enumerate(cfg.step_ends()):
                msgs = world.advance(end)
                catalog = [m for m in msgs if isinstance(m, CatalogUpdate)]
                inputs: list[Any] = [m for m in msgs if not isinstance(m, CatalogUpdate)]
                if arm.needs_clock:
                    # One heartbeat per partition: a partition's event-time clock moves only with its
                    # own inputs, so a quiet partition's timers would otherwise fire a step late.
                    inputs += [
                        Event(
                            event_id=f"bench-clock-{k}-{p}",
                            user_id=clock_user,
                            type="push_dismiss",
                            item_id=CLOCK_USER,
                            ts=end,
                        )
                        for p, clock_user in enumerate(clock_users(settings.topics.partitions))
                    ]
                pub.send(catalog)
                arm.before_events(pub, end)
                pub.send(inputs)
                arm.after_events(pub, end)
                for push in reader.drain():
                    if push.created_at <= previous_end:
                        late += 1
                    by_trigger[push.trigger] = by_trigger.get(push.trigger, 0) + 1
                    try:
                        zone_name = world.user_time_zone(push.user_id)
                    except KeyError:  # not one of the world's users: the world ignores the push too
                        zone_name = ""
                    if zone_name:
                        zone = zones.setdefault(zone_name, ZoneInfo(zone_name))
                        hours = by_hour.setdefault(push.trigger, [0] * 24)
                        hours[int(local_hour(world.now, zone)) % 24] += 1
                    if push.expires_at < world.now:
                        expired.append(
                            {
                                "trigger": push.trigger,
                                "lifetime_s": round(push.expires_at - push.created_at, 1),
                                "delivered_after_s": round(world.now - push.created_at, 1),
                                "promotion": push.promotion_id is not None,
                            }
                        )
                    world.deliver_push(push, world.now)
                previous_end = end
                if (k + 1) % per_day == 0:
                    n_pushes = sum(by_trigger.values())
                    _say(
                        f"[bench] {arm.name}: day {(k + 1) // per_day} done, {n_pushes} pushes, "
                        f"{time.monotonic() - started:.0f}s"
                    )
            diagnostics = arm.diagnostics()
        finally:
            arm.stop()
            reader.close()
            pub.producer.flush(10)
            del pub  # librdkafka clients go before the broker does (no reconnect noise)
    shutil.rmtree(run_dir, ignore_errors=True)
    after = _snapshot(world)
    return ArmRun(
        arm.name,
        {k: after[k] - before[k] for k in COUNTERS},
        opted_before & ~np.array(world.opted_in, dtype=bool),
        late,
        by_trigger,
        time.monotonic() - started,
        by_hour,
        getattr(arm, "env", {}),
        expired[:20],
        diagnostics,
    )


def merge_runs(runs: list[ArmRun]) -> ArmRun:
    """One arm's runs on several worlds as one: per-user arrays joined, counts added."""
    if len(runs) == 1:
        return runs[0]

    def added(tables: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in tables:
            for key, value in table.items():
                if isinstance(value, list):
                    out[key] = [a + b for a, b in zip(out.get(key, [0] * len(value)), value, strict=True)]
                else:
                    out[key] = out.get(key, 0) + value
        return dict(sorted(out.items()))

    return ArmRun(
        runs[0].name,
        {k: np.concatenate([r.deltas[k] for r in runs]) for k in COUNTERS},
        np.concatenate([r.opted_out_during for r in runs]),
        sum(r.late_deliveries for r in runs),
        added([r.pushes_by_trigger for r in runs]),
        sum(r.wall_seconds for r in runs),
        added([r.pushes_by_trigger_hour for r in runs]),
        runs[0].env,
        [e for r in runs for e in r.expired][:20],
        added([r.diagnostics for r in runs]),
    )


def no_push_outcomes(cfg: BenchConfig) -> dict[str, np.ndarray]:
    """Per-user purchases and revenue over the evaluated days when nobody pushes (the counterfactual)."""
    world = World(cfg.sim_config())
    world.advance(cfg.start())
    before = _snapshot(world)
    world.advance(cfg.step_ends()[-1])
    after = _snapshot(world)
    return {k: after[k] - before[k] for k in ("purchases", "revenue")}


NO_PUSH = ""  # the job that runs a world with no pushes at all (the counterfactual)


def _job(cfg_fields: dict[str, Any], name: str) -> dict[str, Any]:
    """One job, in a pool process: an arm on one world (``ArmRun`` as a dict), or the no-push world.

    Plain dicts in and out: they cross to the pool's processes and back whatever the parent runs as
    ``__main__`` (the pool's processes import that as another module).
    """
    cfg = BenchConfig(**cfg_fields)
    if name == NO_PUSH:
        return no_push_outcomes(cfg)
    (arm,) = make_arms(cfg, [name])
    _say(f"[bench] seed {cfg.seed}: running {name} ...")
    return asdict(run_arm(cfg, arm))


def run_jobs(cfg: BenchConfig, jobs: list[tuple[int, str]], workers: int) -> dict[tuple[int, str], Any]:
    """Run every ``(seed, arm)`` job (``NO_PUSH``: the no-push world), ``workers`` at once.

    Every job builds its own world and broker from the seed alone (and the Kairos arm's worker decides
    on event time in lock steps), so a job's figures do not depend on what runs beside it: one
    worker or several give the same results, only sooner. Kairos jobs, the longest, go first.
    """
    ordered = sorted(jobs, key=lambda job: job[1] != "kairos")
    out: dict[tuple[int, str], Any] = {}
    if workers <= 1:
        results = {job: _job(asdict(replace(cfg, seed=job[0])), job[1]) for job in ordered}
    else:
        # Spawned, not forked: no librdkafka or torch threads carried into the children.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {job: pool.submit(_job, asdict(replace(cfg, seed=job[0])), job[1]) for job in ordered}
            results = {job: future.result() for job, future in futures.items()}
    for job, result in results.items():
        out[job] = result if job[1] == NO_PUSH else ArmRun(**result)
    return out
