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
import hashlib
import json
import math
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

from benchmarks.baselines import (  # noqa: E402
    Baseline,
    BrokerPusher,
    CartAbandonmentPusher,
    PopularPromotionPusher,
)
from benchmarks.marketer_rules import MarketerRulesPusher  # noqa: E402
from stream.broker import EmbeddedBroker  # noqa: E402
from stream.contract import CatalogUpdate, ConsentUpdate, Event, Push, to_json_bytes  # noqa: E402
from stream.demo import DEMO_TRAINING  # noqa: E402
from stream.partitioning import partition_for  # noqa: E402
from stream.policy import in_holdout  # noqa: E402
from stream.policy_config import PolicyConfig  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.simulator import DAY, WORLD_VERSION, SimConfig, World, local_hour  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402
from tests.support.worker import PRODUCTION_DECISIONS, WorkerProcess, metric_sum  # noqa: E402

BENCH_DIR = ROOT / ".kairos" / "bench"
REPORT = ROOT / "benchmarks" / "reports" / "push_outcomes.md"
CLOCK_USER = "bench-clock"
# Steps end this much before the quarter hour, so no step straddles a quiet-hours boundary.
STEP_EPSILON = 1e-3
# Model training: the demo model's shape (small and quick on 2 cores).
TRAINING: dict[str, float | int] = {**DEMO_TRAINING, "threads": 2}
COUNTERS = (
    "pushes",
    "opens",
    "clicks",
    "dismisses",
    "push_purchases",
    "push_revenue",
    "purchases",
    "revenue",
    "opt_outs",
    "opt_out_risk",
    "quiet_pushes",
    "expired_pushes",
    "pushes_after_opt_out",
)


@dataclass
class BenchConfig:
    """One benchmark run's setup."""

    seed: int = 11
    users: int = 3000
    items: int = 1000
    days: float = 3.0
    warmup_days: float = 4.0
    step_minutes: float = 15.0
    holdout_share: float = 0.5
    holdout_salt: str = PolicyConfig.model_validate({}).holdout_salt
    kairos_env: dict[str, str] = field(default_factory=dict)

    def sim_config(self) -> SimConfig:
        """The simulated shop (defaults otherwise)."""
        return SimConfig(seed=self.seed, n_users=self.users, n_items=self.items)

    def start(self) -> float:
        """Simulated time where the evaluated period starts (end of the warm-up)."""
        return self.sim_config().start_time + self.warmup_days * DAY - STEP_EPSILON

    def step_ends(self) -> list[float]:
        """End of every lock step (just before each quarter hour)."""
        step = self.step_minutes * 60.0
        n = int(round(self.days * DAY / step))
        return [self.start() + (k + 1) * step for k in range(n)]

    def holdout(self) -> Callable[[str], bool]:
        """Kairos's holdout rule with this run's share and salt."""
        share, salt = self.holdout_share, self.holdout_salt
        return lambda user_id: in_holdout(user_id, share, salt)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the model ------------------------------------------------------------------------------------


def ensure_model(cfg: BenchConfig) -> Path:
    """A model trained on the warm-up days of this world, cached under ``.kairos/bench/``."""
    from model.artifact import ArtifactError
    from model.cli import train_main
    from model.scorer import IncrementalScorer

    # The training config is part of the key: a changed DEMO_TRAINING must not reuse a stale model.
    key = hashlib.sha256(json.dumps([TRAINING, WORLD_VERSION], sort_keys=True).encode()).hexdigest()[:8]
    work = BENCH_DIR / f"model-s{cfg.seed}-u{cfg.users}-i{cfg.items}-w{cfg.warmup_days:g}-{key}"
    artifact = work / "artifact"
    try:
        IncrementalScorer.load(artifact)
        return artifact
    except (ArtifactError, FileNotFoundError, OSError):
        pass
    work.mkdir(parents=True, exist_ok=True)
    world = World(cfg.sim_config())
    events = work / "warmup-events.jsonl"
    n = 0
    with open(events, "wb") as f:
        for msg in world.advance(cfg.start()):
            if isinstance(msg, Event):
                f.write(to_json_bytes(msg) + b"\n")
                n += 1
    (work / "train.json").write_text(json.dumps(TRAINING))
    if artifact.exists():
        shutil.rmtree(artifact)
    started = time.monotonic()
    _say(f"[bench] training a model on {n} warm-up events ...")
    code = train_main(
        [
            "--train",
            str(events),
            "--train-format",
            "events",
            "--out",
            str(artifact),
            "--config",
            str(work / "train.json"),
            "--quiet",
        ]
    )
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    _say(f"[bench] model trained in {time.monotonic() - started:.0f}s -> {artifact}")
    return artifact


# -- broker I/O -----------------------------------------------------------------------------------


class PushReader:
    """Reads the pushes topic from the start, a step at a time (to its current end)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.pushes
        self.consumer = Consumer(
            {
                **settings.kafka.confluent_config(),
                "group.id": f"bench-push-reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.kafka.fetch_max_wait_ms,
            }
        )
        meta = self.consumer.list_topics(self.topic, timeout=10)
        self.partitions = sorted(meta.topics[self.topic].partitions)
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in self.partitions])
        self.next = dict.fromkeys(self.partitions, 0)

    def drain(self, timeout: float = 30.0) -> list[Push]:
        """Every push produced since the last call (up to the partitions' current ends)."""
        high = {
            p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self.partitions
        }
        out: list[Push] = []
        deadline = time.monotonic() + timeout
        while any(self.next[p] < high[p] for p in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("pushes topic not read to its end")
            for msg in self.consumer.consume(2000, timeout=0.05):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"push reader: {err}")
                    continue
                self.next[msg.partition() or 0] = (msg.offset() or 0) + 1
                out.append(Push.model_validate_json(msg.value() or b"", strict=False))
        return out

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


class Publisher:
    """Produces the world's messages, keyed like the simulator does, and counts them per topic."""

    def __init__(self, settings: Settings) -> None:
        self.topics = settings.topics
        self.producer = Producer(
            {
                **settings.kafka.confluent_config(),
                "partitioner": "murmur2_random",
                "linger.ms": 2,
                "queue.buffering.max.messages": 500_000,
            }
        )
        self.counts = {self.topics.events: 0, self.topics.catalog: 0, self.topics.consent: 0}

    def send(self, messages: list[Any]) -> None:
        """Produce and wait for the acks."""
        for m in messages:
            if isinstance(m, Event):
                topic, key = self.topics.events, m.user_id
            elif isinstance(m, ConsentUpdate):
                topic, key = self.topics.consent, m.user_id
            else:
                topic, key = self.topics.catalog, m.item_id
            while True:
                try:
                    self.producer.produce(topic, to_json_bytes(m), key.encode())
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.counts[topic] += 1
        if messages and self.producer.flush(30):
            raise RuntimeError("messages not delivered to the broker")


# -- the pushers under test -----------------------------------------------------------------------


class Arm:
    """A pusher under test, driven in lock step."""

    name = ""
    needs_clock = False

    def start(self, settings: Settings, run_dir: Path) -> None:
        """Start after the initial catalog and consent are on the broker."""

    def before_events(self, pub: Publisher, now: float) -> None:
        """The step's catalog changes are on the broker, its events not yet: take the changes in."""

    def after_events(self, pub: Publisher, now: float) -> None:
        """The step's catalog changes and events are on the broker: catch up, emit what is due at ``now``."""

    def diagnostics(self) -> dict[str, float]:
        """Pusher-specific counters for the report (none by default)."""
        return {}

    def stop(self) -> None:
        """Stop and release everything."""


class KairosArm(Arm):
    """The real worker process on the broker."""

    name = "kairos"
    needs_clock = True

    def __init__(self, cfg: BenchConfig, model_dir: Path, tick_seconds: float = 0.05) -> None:
        self.cfg = cfg
        self.model_dir = model_dir
        self.tick = tick_seconds
        self.worker: WorkerProcess | None = None
        self.env: dict[str, str] = {}

    def start(self, settings: Settings, run_dir: Path) -> None:
        self.env = {
            **PRODUCTION_DECISIONS,  # not the tests' defaults (they switch the active rule off)
            "KAIROS_WORKER__CLOCK": "event",
            "KAIROS_WORKER__TICK_SECONDS": str(self.tick),
            "KAIROS_LOG__LEVEL": "WARNING",
            "KAIROS_POLICY__HOLDOUT_SHARE": str(self.cfg.holdout_share),
            "KAIROS_POLICY__HOLDOUT_SALT": self.cfg.holdout_salt,
            **self.cfg.kairos_env,
        }
        assert settings.kafka.bootstrap_servers
        self.worker = WorkerProcess(
            settings.kafka.bootstrap_servers,
            run_dir / "state",
            self.model_dir,
            env=self.env,
            app_id="kairos-bench",
            log_path=run_dir / "worker.log",
        ).start()
        self.worker.wait_ready(120)
        time.sleep(2.0)  # the initial consent and catalog are read before the first events

    def before_events(self, pub: Publisher, now: float) -> None:
        # The worker's catalog view holds the step's changes before its events arrive, so each is
        # announced where its partition's stream reaches its time: the same place in every run.
        # Removals and refused records count as taken in (none in this world, but no hang if any).
        catalog = pub.topics.catalog
        counters = ("kairos_catalog_updates_total", "kairos_catalog_removals_total")
        self._wait_for(pub.counts[catalog], counters, dead_letters_of=catalog)

    def after_events(self, pub: Publisher, now: float) -> None:
        # Pushes are produced (and acknowledged) before the events that caused them are counted
        # (refused events too: outcome "dead_letter").
        self._wait_for(pub.counts[pub.topics.events], ("kairos_events_total",))

    def _wait_for(self, target: int, metrics: tuple[str, ...], dead_letters_of: str | None = None) -> None:
        """Until the worker's ``metrics`` (plus the topic's dead letters) reach ``target``."""
        assert self.worker is not None
        worker = self.worker

        def taken() -> float:
            # One scrape per poll: each renders the worker's whole registry on its event loop.
            _, body = worker.get("/metrics")
            refused = (
                metric_sum(body, "kairos_dead_letters_total", topic=dead_letters_of) if dead_letters_of else 0
            )
            return sum(metric_sum(body, m) for m in metrics) + refused

        deadline = time.monotonic() + 120
        metric = " + ".join(metrics)
        while taken() < target:
            if self.worker.proc is not None and self.worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.worker.tail_log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker's {metric} did not reach {target}: {self.worker.tail_log()}")
            time.sleep(0.02)

    def diagnostics(self) -> dict[str, float]:
        """The worker's suppression counters by ``trigger/reason`` (why candidates were not pushed)."""
        out: dict[str, float] = {}
        if self.worker is None:
            return out
        _, body = self.worker.get("/metrics")
        for line in body.splitlines():
            if not line.startswith("kairos_push_suppressions_total{"):
                continue
            head, _, value = line.rpartition(" ")
            labels = dict(part.split("=", 1) for part in head[head.index("{") + 1 : -1].split(","))
            key = f"{labels['trigger'].strip(chr(34))}/{labels['reason'].strip(chr(34))}"
            if float(value) > 0:
                out[key] = out.get(key, 0.0) + float(value)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


class BaselineArm(Arm):
    """A baseline pusher (``benchmarks/baselines.py``) reading and writing the broker."""

    def __init__(self, name: str, make: Callable[[], Baseline]) -> None:
        self.name = name
        self.make = make
        self.pusher: BrokerPusher | None = None

    def start(self, settings: Settings, run_dir: Path) -> None:
        self.pusher = BrokerPusher(settings, self.make())

    def after_events(self, pub: Publisher, now: float) -> None:
        assert self.pusher is not None
        self.pusher.sync(dict(pub.counts))
        self.pusher.emit(now)

    def stop(self) -> None:
        if self.pusher is not None:
            self.pusher.close()
            self.pusher = None


# -- running an arm -------------------------------------------------------------------------------


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

    Plain dicts in and out: the pool's processes import this file as another module than the
    parent's ``__main__``, so its dataclasses are rebuilt on each side.
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


def _paired(diff: np.ndarray) -> tuple[float, float]:
    """Sum of per-user differences and its 95 % interval half-width (users independent)."""
    if diff.size < 2:
        return float(diff.sum()), float("nan")
    return float(diff.sum()), 1.96 * float(diff.std(ddof=1)) * math.sqrt(diff.size)


def compare_with(first: ArmRun, other: ArmRun, treat: np.ndarray) -> dict[str, float]:
    """``other`` minus ``first`` on the same world, user by user (treatment users): purchases, revenue."""
    out: dict[str, float] = {}
    for key in ("purchases", "revenue"):
        total, ci = _paired(other.deltas[key][treat] - first.deltas[key][treat])
        out[f"vs_first_{key}"] = total
        out[f"vs_first_{key}_ci95"] = ci
    return out


# -- figures --------------------------------------------------------------------------------------


def figures(
    cfg: BenchConfig, run: ArmRun, holdout_mask: np.ndarray, no_push: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The outcome figures of one arm (treatment group unless said otherwise)."""
    baseline = no_push["purchases"]
    d = run.deltas
    treat = ~holdout_mask
    n_t, n_h = int(treat.sum()), int(holdout_mask.sum())

    def total(name: str, mask: np.ndarray = treat) -> float:
        return float(d[name][mask].sum())

    pushes = total("pushes")
    ppu_t = total("purchases") / n_t
    ppu_h = total("purchases", holdout_mask) / n_h if n_h else float("nan")
    diff_se = math.sqrt(
        d["purchases"][treat].var(ddof=1) / n_t + d["purchases"][holdout_mask].var(ddof=1) / n_h
    )
    paired = d["purchases"][treat] - baseline[treat]
    revenue, revenue_ci = _paired(d["revenue"][treat] - no_push["revenue"][treat])

    def rate(name: str) -> float:
        return total(name) / pushes if pushes else 0.0

    return {
        "pushes": int(pushes),
        "pushes_per_user_per_day": pushes / n_t / cfg.days,
        "open_rate": rate("opens"),
        "click_rate": rate("clicks"),
        "conversion_rate": rate("push_purchases"),
        "push_revenue": total("push_revenue"),
        "lift_vs_holdout": ppu_t / ppu_h - 1.0 if ppu_h else float("nan"),
        "purchases_per_user_treatment": ppu_t,
        "purchases_per_user_holdout": ppu_h,
        "incremental_purchases": (ppu_t - ppu_h) * n_t,
        "incremental_purchases_ci95": 1.96 * diff_se * n_t,
        "incremental_revenue": (total("revenue") / n_t - total("revenue", holdout_mask) / n_h) * n_t,
        "incremental_purchases_vs_no_push": float(paired.sum()),
        "incremental_purchases_vs_no_push_ci95": 1.96 * float(paired.std(ddof=1)) * math.sqrt(n_t),
        "lift_vs_no_push": float(d["purchases"][treat].sum() / baseline[treat].sum() - 1.0),
        "incremental_revenue_vs_no_push": revenue,
        "incremental_revenue_vs_no_push_ci95": revenue_ci,
        "opt_out_rate": float(run.opted_out_during[treat].sum()) / n_t,
        "expected_opt_out_rate": total("opt_out_risk") / n_t,
        "quiet_hours_share": rate("quiet_pushes"),
        "expired_share": rate("expired_pushes"),
        "pushes_after_opt_out": int(total("pushes_after_opt_out")),
        "holdout_pushes": int(total("pushes", holdout_mask)),
        "late_deliveries": run.late_deliveries,
        "pushes_by_trigger": dict(sorted(run.pushes_by_trigger.items())),
        "pushes_by_trigger_local_hour": dict(sorted(run.pushes_by_trigger_hour.items())),
        "expired_pushes_detail": run.expired,
        "suppressions": run.diagnostics,
        "wall_seconds": round(run.wall_seconds, 1),
    }


def make_arms(cfg: BenchConfig, names: list[str]) -> list[Arm]:
    """The arms to run, in order."""
    holdout = cfg.holdout()
    ttl = PolicyConfig.model_validate({}).push_ttl_seconds
    arms: list[Arm] = []
    for name in names:
        if name == "kairos":
            arms.append(KairosArm(cfg, ensure_model(cfg)))
        elif name == "popular_promotion":
            arms.append(
                BaselineArm(name, lambda: PopularPromotionPusher(holdout, hour_utc=18.0, ttl_seconds=ttl))
            )
        elif name == "cart_abandonment_1h":
            arms.append(BaselineArm(name, lambda: CartAbandonmentPusher(holdout, 3600.0, ttl)))
        elif name == "marketer_rules":
            arms.append(BaselineArm(name, lambda: MarketerRulesPusher(holdout, 3600.0, ttl)))
        else:
            raise ValueError(f"unknown arm {name!r}")
    return arms


ARMS = ["kairos", "popular_promotion", "cart_abandonment_1h", "marketer_rules"]
KEYS = [
    "pushes_per_user_per_day",
    "open_rate",
    "conversion_rate",
    "lift_vs_holdout",
    "incremental_purchases",
    "incremental_purchases_vs_no_push",
    "incremental_revenue_vs_no_push",
    "vs_first_purchases",
    "vs_first_revenue",
    "opt_out_rate",
    "expected_opt_out_rate",
    "quiet_hours_share",
    "expired_share",
]


def _fmt(value: Any, key: str) -> str:
    if isinstance(value, float):
        if key.endswith(("rate", "share")) or key.startswith("lift"):
            return f"{100 * value:.2f} %"
        return f"{value:.2f}"
    return str(value)


def _arms(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every arm's figures by name, in the usual order."""
    rows = {result.get("arm", "kairos"): result, **result.get("baselines", {})}
    return {n: rows[n] for n in ARMS if n in rows}


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
    incr = {
        "vs holdout": [rows[n]["incremental_purchases"] for n in names],
        "vs no pushes (paired)": [rows[n]["incremental_purchases_vs_no_push"] for n in names],
    }
    incr_err = {
        "vs holdout": [rows[n]["incremental_purchases_ci95"] for n in names],
        "vs no pushes (paired)": [rows[n]["incremental_purchases_vs_no_push_ci95"] for n in names],
    }
    if all("vs_first_purchases" in rows[n] for n in names[1:]) and len(names) > 1:
        # The first arm against itself is 0 by construction; its bar is left at 0 with no interval.
        label = f"vs {names[0]} (paired)"
        incr[label] = [0.0] + [rows[n]["vs_first_purchases"] for n in names[1:]]
        incr_err[label] = [0.0] + [rows[n]["vs_first_purchases_ci95"] for n in names[1:]]
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
        for ax, n in zip(axes[0], names, strict=True):
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


def write_report(
    cfg: BenchConfig,
    result: dict[str, Any],
    command: str,
    report: Path = REPORT,
    figures: list[tuple[str, Path]] | None = None,
) -> None:
    """Write the figures block of the report (default ``benchmarks/reports/push_outcomes.md``)."""
    from benchmarks.plots import markdown_images

    rows = _arms(result)
    names = list(rows)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    extra = [
        "click_rate",
        "incremental_purchases_ci95",
        "incremental_purchases_vs_no_push_ci95",
        "incremental_revenue_vs_no_push_ci95",
        "vs_first_purchases_ci95",
        "vs_first_revenue_ci95",
        "lift_vs_no_push",
        "pushes",
        "holdout_pushes",
        "pushes_after_opt_out",
        "late_deliveries",
        "wall_seconds",
    ]
    for key in KEYS + extra:
        lines.append(f"| `{key}` | " + " | ".join(_fmt(rows[n].get(key), key) for n in names) + " |")
    lines.append(
        "| `pushes_by_trigger` | "
        + " | ".join(
            ", ".join(f"{t} {c}" for t, c in rows[n]["pushes_by_trigger"].items()) or "-" for n in names
        )
        + " |"
    )
    per_seed = result.get("per_seed")
    if per_seed:
        # Each world alone: the effect vs no push (its 95 % interval) and the paired difference to the
        # first arm, so "better on every seed" can be read off, not only the pooled figure.
        lines += [
            "",
            "Per world (incremental purchases vs no push ± 95 %; paired difference to the first arm):",
            "",
        ]
        lines += ["| seed | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for seed, world in per_seed.items():
            cells = []
            for n in names:
                f = world[n]
                effect, ci = f["incremental_purchases_vs_no_push"], f["incremental_purchases_vs_no_push_ci95"]
                cell = f"{effect:+.0f} ± {ci:.0f}"
                if n != names[0]:
                    cell += f" ({f['vs_first_purchases']:+.0f} ± {f['vs_first_purchases_ci95']:.0f})"
                cells.append(cell)
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if figures:
        lines += ["", *markdown_images(figures, report)]
    table = "\n".join(lines).rstrip()
    seeds = result.get("seeds", [cfg.seed])
    pooled = "pooled: every arm runs every world, users counted together; " if len(seeds) > 1 else ""
    setup = (
        f"`{command}`\n\n"
        f"World: seed {', '.join(str(x) for x in seeds)} ({pooled}{cfg.users} users each), "
        f"{cfg.items} items, {cfg.warmup_days:g} warm-up days "
        f"(model training), {cfg.days:g} evaluated days in {cfg.step_minutes:g}-minute lock steps; holdout "
        f"share {cfg.holdout_share:g} (salt `{cfg.holdout_salt}`): {result['treatment_users']} treatment, "
        f"{result['holdout_users']} holdout users. Kairos env overrides: "
        f"`{json.dumps(result.get('kairos_env', {}), sort_keys=True)}`. "
        "Counterfactual (no pushes at all) purchases of the treatment users: "
        f"{result['no_push_purchases']:.0f}. "
        f"Total wall time {result['total_wall_seconds']:.0f} s."
    )
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    block = f"{begin}\n{setup}\n\n{table}\n{end}"
    text = report.read_text() if report.exists() else f"# Push outcomes\n\n{begin}\n{end}\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)


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
        world = World(replace(cfg, seed=seed).sim_config())
        masks.append(np.array([replace(cfg, seed=seed).holdout()(u) for u in world.user_ids], dtype=bool))
    jobs = [(seed, name) for name in args.arms for seed in seeds] + [(seed, NO_PUSH) for seed in seeds]
    done = run_jobs(cfg, jobs, args.workers)
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
        _say(f"[bench] {name}: " + json.dumps({k: per_arm[name][k] for k in KEYS}))
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
        (args.out / "push_outcomes.json").write_text(json.dumps(saved, sort_keys=True, indent=1) + "\n")
        publish(cfg, result, command.strip(), args.out)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


PER_SEED_KEYS = (
    "incremental_purchases_vs_no_push",
    "incremental_purchases_vs_no_push_ci95",
    "incremental_revenue_vs_no_push",
    "pushes_per_user_per_day",
)


def per_seed_figures(
    cfg: BenchConfig,
    seeds: list[int],
    runs: dict[str, list[ArmRun]],
    masks: list[np.ndarray],
    no_pushes: list[dict[str, np.ndarray]],
    arms: list[str],
) -> dict[str, dict[str, dict[str, float]]]:
    """Each world's own figures per arm (effect vs no push, and paired against the first arm)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for i, seed in enumerate(seeds):
        first = runs[arms[0]][i]
        world: dict[str, dict[str, float]] = {}
        for name in arms:
            run = runs[name][i]
            fig = figures(cfg, run, masks[i], no_pushes[i])
            world[name] = {k: fig[k] for k in PER_SEED_KEYS if k in fig} | compare_with(first, run, ~masks[i])
        out[str(seed)] = world
    return out


def publish(cfg: BenchConfig, result: dict[str, Any], command: str, out: Path) -> Path:
    """Draw the figures and write the report's figures block, which links them, under ``out``."""
    report = out / REPORT.name
    figures = draw_figures(result, out)
    write_report(cfg, result, command, report, figures)
    _say(f"[bench] report: {report} ({len(figures)} figures)")
    return report


if __name__ == "__main__":
    sys.exit(main())
