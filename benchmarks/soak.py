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
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, ConfigResource  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from stream.broker import EmbeddedBroker  # noqa: E402
from stream.contract import ConsentUpdate  # noqa: E402
from stream.demo import ensure_model as ensure_demo_model  # noqa: E402
from stream.partition_state import COVISIT_PREFIX, INTEREST_PREFIX  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.sim_runner import ShopSimulator  # noqa: E402
from stream.simulator import DAY, SimConfig, World  # noqa: E402
from stream.state import UserState  # noqa: E402
from stream.topics import changelog_topic, ensure_topics  # noqa: E402
from tests.support.worker import PRODUCTION_DECISIONS, WorkerProcess, settings_for  # noqa: E402

CACHE = ROOT / ".kairos" / "bench"
MODEL_DIR = CACHE / "soak-model"
REPORTS = ROOT / "benchmarks" / "reports"
APP_ID = "kairos-soak"
# Production defaults, except the event-time clock (see the module docstring) and quieter logs.
SOAK_ENV: dict[str, str] = {
    **PRODUCTION_DECISIONS,  # TEST_ENV switches the active rule and session ends off: undo it
    "KAIROS_WORKER__CLOCK": "event",
    "KAIROS_WORKER__TICK_SECONDS": "1.0",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.005",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.05",
    "KAIROS_LOG__LEVEL": "WARNING",
}
TTL_HINTS = ("ttl", "expir", "inactiv")
HEAD_PROBE_RECORDS = 500  # records per partition read again from offset 0 at every sample
# A series "levels off" when its last third adds at most LEVEL_FLAT_SHARE of its final value, or at most
# LEVEL_GROWTH_SHARE while its slope there is at most LEVEL_SLOPE_SHARE of the first third's (a warm-up
# ramp that flattens). The slope test alone would pass any series with a steep start, e.g. the first
# users' state appearing at once, whatever follows.
LEVEL_FLAT_SHARE = 0.02
LEVEL_GROWTH_SHARE = 0.05
LEVEL_SLOPE_SHARE = 0.25
# A level that falls back again and again (RocksDB's files between compactions) is "bounded" when its
# last third peaks at most SAWTOOTH_PEAK_GROWTH times the earlier peak; a fall is a drop below
# SAWTOOTH_DROP of the previous sample.
SAWTOOTH_DROP = 0.67
SAWTOOTH_PEAK_GROWTH = 1.10
# A series with a cap in the code (an index that evicts beyond a configured size) is "capped" when it
# still grows but stays under its cap and its growth slows to at most LEVEL_SLOPE_SHARE of the first
# third's: it cannot pass the cap, and the report says how near it is.


def index_caps(env: dict[str, str], items: int, partitions: int) -> dict[str, int]:
    """The configured caps of the partitions' two big indexes, as the worker's environment sets them.

    Co-visitation keeps, per partition, at most ``covisit_max_items`` items (never more than the shop
    has), one row each (its touch order and up to ``2 * covisit_top_n`` neighbours); the interest index keeps
    at most ``interest_index_per_item`` users per item and ``interest_index_max_entries`` in all.
    """
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        policy = Settings().policy
    finally:
        os.environ.clear()
        os.environ.update(saved)
    covisit_items = min(items, policy.covisit_max_items)
    return {
        "changelog_live_covisit_rows": partitions * covisit_items,
        "changelog_live_interest_rows": partitions
        * min(policy.interest_index_max_entries, items * policy.interest_index_per_item),
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the workload ------------------------------------------------------------------------------


class ChurningWorld(World):
    """The simulated shop with shoppers who come and go.

    Each of the ``n_users`` slots is taken by a new user id (``u000123-g4``) every ``lifetime`` simulated
    seconds, staggered over the slots so that arrivals are steady; the slot keeps its taste and habits
    (a similar shopper). A new user's first message is its consent (a fresh draw of the opt-out share).
    Pushes addressed to a user who has left count as the world's ``unknown_pushes``.
    """

    def __init__(self, config: SimConfig, lifetime: float) -> None:
        super().__init__(config)
        n = config.n_users
        self.lifetime = lifetime
        self.arrivals = n
        self._base = list(self.user_ids)
        self._phase = np.arange(n, dtype=np.float64) * (lifetime / n)
        self._generation = self._generation_at(self.now)
        self._consent_rng = random.Random(config.seed + 1)
        self._rename(range(n))

    def _generation_at(self, now: float) -> np.ndarray:
        return ((now - self.config.start_time + self._phase) // self.lifetime).astype(np.int64)

    def _rename(self, slots: Sequence[int] | range) -> None:
        # The world looks users up by id (pushes, ground truth): keep its index in step with the ids.
        index = self._user_index
        for u in slots:
            new = f"{self._base[u]}-g{int(self._generation[u])}"
            index.pop(self.user_ids[u], None)
            index[new] = u
            self.user_ids[u] = new

    def advance(self, until: float, max_events: int | None = None) -> list[Any]:
        """New users take over their slots (their consent first), then the world advances as usual."""
        generation = self._generation_at(self.now)
        moved = np.flatnonzero(generation != self._generation).tolist()
        out: list[Any] = []
        if moved:
            self._generation[moved] = generation[moved]
            self._rename(moved)
            self.arrivals += len(moved)
            share = self.config.opt_out_share
            for u in moved:
                self.opted_in[u] = self._consent_rng.random() >= share
                out.append(ConsentUpdate(user_id=self.user_ids[u], opted_in=self.opted_in[u], ts=self.now))
        out.extend(super().advance(until, max_events))
        return out


class SoakShop(ShopSimulator):
    """``kairos demo``'s simulated shop (rate-paced, answering pushes) on a :class:`ChurningWorld`."""

    def __init__(self, settings: Settings, config: SimConfig, rate: float, lifetime: float) -> None:
        super().__init__(settings, config, rate=rate, start_now=False, create_topics=False)
        self.world = ChurningWorld(self.config, lifetime)


def natural_rate(config: SimConfig) -> float:
    """Rough organic events per simulated second of a world (to place its start in the past)."""
    return config.n_users * config.sessions_per_day * config.mean_session_actions / DAY


def user_ttl_variable() -> str | None:
    """The environment variable of the worker's inactive-user expiry setting, when there is one."""
    for group, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name in model.model_fields:
            lowered = name.lower()
            # A push's own time to live (policy.push_ttl_seconds) is not about users.
            if any(hint in lowered for hint in TTL_HINTS) and "push" not in lowered:
                return f"KAIROS_{group.upper()}__{name.upper()}"
    return None


# --- measurements ------------------------------------------------------------------------------


def rss_bytes(pid: int | None) -> tuple[int, int]:
    """(resident, peak resident) bytes of a process; (0, 0) when it is gone."""
    if pid is None:
        return 0, 0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        try:
            import psutil  # optional: only where /proc is missing

            info = psutil.Process(pid).memory_info()
            return int(info.rss), int(info.rss)
        except Exception:  # noqa: BLE001 - no process, no psutil: nothing to measure
            return 0, 0
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in found:
            found[key] = int(rest.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (RocksDB's SST, WAL, manifest ...)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                continue  # RocksDB removed it between the listing and the stat
    return total


def _consumer(bootstrap: str, name: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"soak-{name}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            **extra,
        }
    )


def _where(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message (-1 where librdkafka has none)."""
    partition, offset = msg.partition(), msg.offset()
    return (-1 if partition is None else partition), (-1 if offset is None else offset)


@dataclass(eq=False)  # a Thread must stay hashable
class ChangelogTail(threading.Thread):
    """Follows the changelog from offset 0: records, bytes, live keys, tombstones, watermarks."""

    bootstrap: str
    topic: str
    partitions: int
    records: int = 0
    bytes_read: int = 0
    tombstones: int = 0
    samples: int = 0  # samples taken (the head probe runs on every tenth)
    gaps: int = 0  # offsets skipped between consecutive records (removed before this reader got there)
    live: dict[tuple[int, bytes], int] = field(default_factory=dict)  # key -> size of its latest value
    # User records that hold nothing but an opt-out (kept for good: an opt-out is never forgotten).
    optouts: set[tuple[int, bytes]] = field(default_factory=set)
    last_offset: dict[int, int] = field(default_factory=dict)
    high: dict[int, int] = field(default_factory=dict)
    low: dict[int, int] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None

    def __post_init__(self) -> None:
        super().__init__(name="soak-changelog-tail", daemon=True)

    def run(self) -> None:
        """Consume until stopped (explicit offset 0: no ListOffsets)."""
        # A long fetch wait: the embedded broker's fetch cost grows with what a partition holds, and a
        # tail polling ten times a second pegged it at 100 % CPU and stalled the worker it measures.
        consumer = _consumer(self.bootstrap, "tail", **{"fetch.wait.max.ms": 1000})
        tps = [TopicPartition(self.topic, p, 0) for p in range(self.partitions)]
        try:
            consumer.assign(tps)
            while not self.stop_event.is_set():
                batch = consumer.consume(5000, timeout=0.5)
                with self.lock:
                    for msg in batch:
                        if msg.error() is not None:
                            continue
                        self._count(*_where(msg), msg.key() or b"", msg.value())
                    for tp in tps:
                        low, high = consumer.get_watermark_offsets(tp, cached=True)
                        if high >= 0:
                            self.high[tp.partition] = high
                        if low >= 0:
                            self.low[tp.partition] = low
        except Exception as exc:  # noqa: BLE001 - surfaced in the report
            self.error = repr(exc)
        finally:
            consumer.close()

    def _count(self, partition: int, offset: int, key: bytes, value: bytes | None) -> None:
        previous = self.last_offset.get(partition, -1)
        if offset > previous + 1:
            self.gaps += offset - previous - 1
        self.last_offset[partition] = offset
        self.records += 1
        self.bytes_read += len(key) + len(value or b"")
        if value is None:
            self.tombstones += 1
            self.live.pop((partition, key), None)
            self.optouts.discard((partition, key))
        else:
            self.live[(partition, key)] = len(key) + len(value)
            if _is_optout_only(key, value):
                self.optouts.add((partition, key))
            else:
                self.optouts.discard((partition, key))

    def snapshot(self) -> dict[str, int]:
        """The counts so far."""
        with self.lock:
            return {
                "changelog_records_read": self.records,
                "changelog_bytes_read": self.bytes_read,
                "changelog_offsets": sum(self.high.values()) - sum(self.low.values()),
                "changelog_high_watermark": sum(self.high.values()),
                "changelog_live_keys": len(self.live),
                # User records vs the partitions' shared rows (index entries, clock: keys from \x00).
                "changelog_live_users": sum(1 for _, key in self.live if not key.startswith(b"\x00")),
                "changelog_live_optouts": len(self.optouts),
                "changelog_live_active_users": sum(1 for _, key in self.live if not key.startswith(b"\x00"))
                - len(self.optouts),
                "changelog_live_partition_rows": sum(1 for _, key in self.live if key.startswith(b"\x00")),
                # The two indexes that hold the bulk of those rows, each with its own configured cap.
                "changelog_live_covisit_rows": sum(1 for _, k in self.live if k.startswith(COVISIT_PREFIX)),
                "changelog_live_interest_rows": sum(1 for _, k in self.live if k.startswith(INTEREST_PREFIX)),
                "changelog_live_bytes": sum(self.live.values()),
                "changelog_tombstones": self.tombstones,
                "changelog_gaps_seen": self.gaps,
            }


OPTOUT_RECORD_MAX_BYTES = 512  # an opt-out-only record is small; larger ones are not decoded


def _is_optout_only(key: bytes, value: bytes) -> bool:
    """Whether a changelog value is a user record holding only an opt-out (no events)."""
    if key.startswith(b"\x00") or len(value) > OPTOUT_RECORD_MAX_BYTES:
        return False
    try:
        state = UserState.from_bytes(value)
    except ValueError:
        return False
    return state.n_events == 0 and state.policy.opted_in is False


def probe_head(bootstrap: str, topic: str, partitions: int, n: int = HEAD_PROBE_RECORDS) -> dict[str, int]:
    """Read the first ``n`` records of each partition again from offset 0: are offsets still contiguous?

    A compacted log loses superseded records from its old end first, so gaps (or a first offset above 0)
    there mean the broker compacted (or deleted) something.
    """
    consumer = _consumer(bootstrap, "probe", **{"enable.partition.eof": True})
    first: dict[int, int] = {}
    seen: dict[int, list[int]] = {p: [] for p in range(partitions)}
    done: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 15
        while len(done) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(2000, timeout=0.5):
                p, offset = _where(msg)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(p)
                    continue
                if p in done:
                    continue
                seen[p].append(offset)
                first.setdefault(p, offset)
                if len(seen[p]) >= n:
                    done.add(p)
    finally:
        consumer.close()
    missing = sum((max(offs) + 1 - len(offs)) for offs in seen.values() if offs)
    return {
        "head_records": sum(len(v) for v in seen.values()),
        "head_missing_offsets": missing,
        "head_first_offset_max": max(first.values(), default=0),
    }


def full_scan(bootstrap: str, topic: str, partitions: int, highs: dict[int, int]) -> dict[str, Any]:
    """Read the whole changelog again: records present vs offsets written, distinct and live keys.

    ``highs`` (the reader's high watermarks) says where each partition ends at least; the partition-EOF
    offsets of this scan replace them.
    """
    highs = dict(highs)
    consumer = _consumer(bootstrap, "scan", **{"enable.partition.eof": True})
    present = 0
    keys: dict[tuple[int, bytes], bool] = {}
    done: set[int] = set()
    started = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 600
        while len(done) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=0.5):
                err = msg.error()
                p, offset = _where(msg)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and offset >= highs.get(p, 0):
                        done.add(p)
                        highs[p] = offset  # the end of the partition as this fetch saw it
                    continue
                present += 1
                keys[(p, msg.key() or b"")] = msg.value() is not None
    finally:
        consumer.close()
    written = sum(highs.values())
    return {
        "offsets_written": written,
        "records_present": present,
        "records_removed": written - present,
        "distinct_keys": len(keys),
        "live_keys": sum(1 for alive in keys.values() if alive),
        "scan_seconds": round(time.monotonic() - started, 1),
        "complete": len(done) == partitions,
    }


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configuration as the broker describes it (empty when it does not answer)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        futures = admin.describe_configs([ConfigResource("topic", topic)])
        entries = next(iter(futures.values())).result(timeout=10)
        return {name: str(entry.value) for name, entry in entries.items() if entry.value is not None}
    except Exception as exc:  # noqa: BLE001 - informative only
        return {"error": repr(exc)[:200]}


@dataclass
class Run:
    """What one soak run saw."""

    samples: list[dict[str, float]] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] = field(default_factory=dict)


def take_sample(
    started: float,
    worker: WorkerProcess,
    broker_pid: int | None,
    state_dir: Path,
    shop: SoakShop,
    tail: ChangelogTail,
    bootstrap: str,
    partitions: int,
) -> dict[str, float]:
    """One row of every series (see the module docstring)."""
    pid = worker.proc.pid if worker.proc is not None else None
    rss, peak = rss_bytes(pid)
    broker_rss, _ = rss_bytes(broker_pid)
    world = shop.world
    sim = shop.summary()
    row: dict[str, float] = {
        "minute": (time.monotonic() - started) / 60.0,
        "worker_rss_bytes": rss,
        "worker_peak_rss_bytes": peak,
        "broker_rss_bytes": broker_rss,
        "rocksdb_disk_bytes": dir_bytes(state_dir),
        "state_keys": worker.metric("kairos_state_keys"),
        "state_bytes": worker.metric("kairos_state_bytes"),
        "events_produced": sim.get("produced.events", 0.0),
        "events_processed": worker.metric("kairos_events_total"),
        "pushes": worker.metric("kairos_pushes_total"),
        "dead_letters": worker.metric("kairos_dead_letters_total"),
        "consumer_lag": worker.metric("kairos_consumer_lag_messages"),
        "users_arrived": float(getattr(world, "arrivals", 0)),
        "sim_days": (world.now - world.config.start_time) / DAY,
        "pushes_answered": sim.get("pushes_consumed", 0.0),
    }
    row.update({k: float(v) for k, v in tail.snapshot().items()})
    # The head probe re-reads from offset 0 (costly on the embedded broker): every tenth sample only.
    tail.samples += 1
    if tail.samples % 10 == 1:
        row.update({k: float(v) for k, v in probe_head(bootstrap, tail.topic, partitions).items()})
    return row


def run_soak(args: argparse.Namespace, model_dir: Path, workdir: Path) -> Run:
    """Broker, worker, shop, changelog reader; sample until the time is up; drain; scan."""
    run = Run()
    ttl_var = args.ttl_variable or user_ttl_variable()
    env = dict(SOAK_ENV)
    if ttl_var:
        env[ttl_var] = str(args.user_ttl_seconds)
    for item in args.worker_env:
        key, _, value = item.partition("=")
        env[key] = value
    lifetime = args.user_lifetime_days * DAY
    config = SimConfig.model_validate({"seed": args.seed, "n_users": args.users, "n_items": args.items})
    # Start far enough back that event times stay behind the wall clock for the whole run (x3 margin).
    span = args.minutes * 60.0 * args.rate / natural_rate(config)
    config = config.model_copy(update={"start_time": float(int(time.time() - 3 * span - 7 * DAY))})
    run.setup = {
        "minutes": args.minutes,
        "rate": args.rate,
        "sample_seconds": args.sample_seconds,
        "users": args.users,
        "items": args.items,
        "seed": args.seed,
        "user_lifetime_days": args.user_lifetime_days,
        "ttl_variable": ttl_var,
        "user_ttl_seconds": args.user_ttl_seconds if ttl_var else None,
        "worker_env": env,
        "cpus": os.cpu_count(),
    }
    with EmbeddedBroker() as broker:
        settings = settings_for(broker.bootstrap)
        settings.worker.app_id = APP_ID
        ensure_topics(settings)
        topic = changelog_topic(settings)
        partitions = settings.topics.partitions
        run.setup["changelog_topic"] = topic
        run.setup["changelog_config"] = topic_config(broker.bootstrap, topic)
        run.setup["caps"] = index_caps(env, args.items, partitions)
        broker_proc = getattr(broker, "_proc", None)  # the broker's own process, for its RSS
        broker_pid = broker_proc.pid if broker_proc is not None else None
        state_dir = workdir / "state"
        worker = WorkerProcess(
            broker.bootstrap, state_dir, model_dir, env=env, app_id=APP_ID, log_path=workdir / "worker.log"
        ).start()
        tail = ChangelogTail(broker.bootstrap, topic, partitions)
        shop = SoakShop(settings, config, args.rate, lifetime)
        try:
            worker.wait_ready(180)
            tail.start()
            shop.start()
            started = time.monotonic()
            _say(f"[soak] running {args.minutes:g} min at {args.rate:g} events/s; state in {state_dir}")
            end = started + args.minutes * 60.0
            next_sample = started
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    row = take_sample(
                        started, worker, broker_pid, state_dir, shop, tail, broker.bootstrap, partitions
                    )
                    run.samples.append(row)
                    _say(_progress(row))
                    next_sample += args.sample_seconds
                if now >= end:
                    break
                if worker.proc is not None and worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.proc.returncode}: {worker.tail_log()}")
                if shop.error is not None:
                    raise RuntimeError(f"simulator failed: {shop.error}")
                time.sleep(min(1.0, max(0.05, min(next_sample, end) - time.monotonic())))
            shop.stop()
            run.end["drain_seconds"], run.end["drained"] = _drain(worker, shop)
            run.end["final"] = take_sample(
                started, worker, broker_pid, state_dir, shop, tail, broker.bootstrap, partitions
            )
            run.end["sim"] = {k: v for k, v in shop.summary().items() if k.startswith(("produced.", "push"))}
            run.end["sim"]["unknown_pushes"] = float(shop.world.unknown_pushes)
            run.end["outcomes"] = _outcomes(worker)
            shop._publisher = None  # drops its producer now, as `kairos demo` does (no reconnect noise)
            worker.stop()  # no more changelog writes: the reader and the scan see the same topic
            time.sleep(3.0)  # the reader catches up with the last changelog writes
            tail.stop_event.set()
            tail.join(30)
            run.end["tail_error"] = tail.error
            run.end["final"].update({k: float(v) for k, v in tail.snapshot().items()})  # caught up now
            run.end["scan"] = full_scan(broker.bootstrap, topic, partitions, dict(tail.high))
            run.end["changelog_config_after"] = topic_config(broker.bootstrap, topic)
            run.end["broker_log_tail"] = _broker_log_tail(broker)
        finally:
            shop.stop()
            tail.stop_event.set()
            worker.stop()
            run.end["worker_exit"] = worker.proc.returncode if worker.proc is not None else None
            run.end["worker_log_tail"] = worker.tail_log(1500)
    return run


def _drain(worker: WorkerProcess, shop: SoakShop, timeout: float = 90.0) -> tuple[float, bool]:
    """Wait for the worker to process what the shop produced (lag gauge at 0): (seconds, drained)."""
    started = time.monotonic()
    produced = shop.summary().get("produced.events", 0.0)
    while time.monotonic() - started < timeout:
        if (
            worker.metric("kairos_events_total") >= produced
            and worker.metric("kairos_consumer_lag_messages") <= 0
        ):
            return round(time.monotonic() - started, 1), True
        time.sleep(0.5)
    return round(time.monotonic() - started, 1), False


def _outcomes(worker: WorkerProcess) -> dict[str, int]:
    found = worker.metric_by("kairos_events_total", "outcome")
    return {k: int(v) for k, v in found.items() if v}


def _broker_log_tail(broker: EmbeddedBroker) -> str:
    path = getattr(broker, "_log_path", None)
    try:
        return Path(path).read_text(errors="replace")[-800:] if path else ""
    except OSError:
        return ""


def _progress(row: dict[str, float]) -> str:
    return (
        f"[soak] {row['minute']:5.1f} min: worker RSS {row['worker_rss_bytes'] / 2**20:.0f} MiB, "
        f"broker RSS {row['broker_rss_bytes'] / 2**20:.0f} MiB, "
        f"RocksDB {row['rocksdb_disk_bytes'] / 2**20:.1f} MiB, "
        f"keys {row['state_keys']:.0f}, changelog {row['changelog_records_read']:.0f} rec "
        f"{row['changelog_bytes_read'] / 2**20:.0f} MiB ({row['changelog_live_keys']:.0f} live keys), "
        f"processed {row['events_processed']:.0f}/{row['events_produced']:.0f}, "
        f"lag {row['consumer_lag']:.0f}, "
        f"sim day {row['sim_days']:.1f}"
    )


# --- analysis ----------------------------------------------------------------------------------

# Series that should level off (a level), and counters that should grow at a steady rate.
LEVELS: dict[str, str] = {
    "worker_rss_bytes": "worker RSS",
    "broker_rss_bytes": "broker RSS (holds every topic: memory storage)",
    "rocksdb_disk_bytes": "RocksDB on disk",
    "state_keys": "state keys (kairos_state_keys)",
    "state_bytes": "state bytes (kairos_state_bytes)",
    "changelog_records_read": "changelog records",
    "changelog_bytes_read": "changelog bytes",
    "changelog_live_keys": "changelog live keys",
    "changelog_live_bytes": "changelog live bytes",
    "changelog_live_users": "changelog live user records (all)",
    "changelog_live_active_users": "changelog live user records, opt-out-only ones apart",
    "changelog_live_covisit_rows": "changelog live co-visitation rows",
    "changelog_live_interest_rows": "changelog live interest-index rows",
    "consumer_lag": "consumer lag",
}
COUNTERS: dict[str, str] = {
    "events_produced": "events produced",
    "events_processed": "events processed",
    "pushes": "pushes",
    "dead_letters": "dead letters",
    "users_arrived": "user ids arrived",
    "changelog_live_optouts": "opt-out-only user records (kept for good, one per user who opted out)",
}


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or max(xs) - min(xs) <= 0:
        return float("nan")
    return float(np.polyfit(np.array(xs), np.array(ys), 1)[0])


def _noisy_level(xs: list[float], ys: list[float]) -> bool:
    """A level that only fluctuates: the last third's mean within LEVEL_GROWTH_SHARE of the middle third's
    (a slope fitted to a third of a noisy flat series can be anything)."""
    total = xs[-1] - xs[0]
    mid = [y for x, y in zip(xs, ys, strict=True) if xs[0] + total / 3 < x < xs[-1] - total / 3]
    last = [y for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3]
    if not mid or not last or sum(mid) <= 0:
        return False
    return abs(sum(last) / len(last) / (sum(mid) / len(mid)) - 1.0) <= LEVEL_GROWTH_SHARE


def _sawtooth_bounded(xs: list[float], ys: list[float]) -> bool:
    """A series that keeps falling back (RocksDB between compactions): at least two drops of a third or
    more, and the last third's peak within 10 % of the first two thirds' peak."""
    drops = sum(1 for a, b in zip(ys, ys[1:], strict=False) if a > 0 and b < SAWTOOTH_DROP * a)
    total = xs[-1] - xs[0]
    early = [y for x, y in zip(xs, ys, strict=True) if x < xs[-1] - total / 3]
    late = [y for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3]
    return drops >= 2 and bool(early) and bool(late) and max(late) <= SAWTOOTH_PEAK_GROWTH * max(early)


def trend(samples: list[dict[str, float]], key: str, level: bool, cap: float | None = None) -> dict[str, Any]:
    """Slopes (per minute) of the first and last thirds of the run, and a verdict.

    A level series "levels off" when its last third adds at most LEVEL_FLAT_SHARE of its final value, or
    at most LEVEL_GROWTH_SHARE with a slope there of at most LEVEL_SLOPE_SHARE of the first third's; it
    "falls" when the last third removes more than LEVEL_GROWTH_SHARE. A counter has a "steady rate" when
    its last-third rate is within 20 % of the first third's. A level with a ``cap`` in the code that
    still grows, stays under the cap and slows to at most LEVEL_SLOPE_SHARE of its first-third slope is
    "capped at N % of its bound": it cannot pass the cap, but it has not levelled off below it either.
    """
    xs = [s["minute"] for s in samples]
    ys = [s.get(key, 0.0) for s in samples]
    if len(xs) < 2:
        return {"verdict": "too short"}
    if not any(key in s for s in samples):
        return {"verdict": "not measured in this run"}
    total = xs[-1] - xs[0]
    first = [(x, y) for x, y in zip(xs, ys, strict=True) if x <= xs[0] + total / 3]
    last = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3]
    s1 = _slope([x for x, _ in first], [y for _, y in first])
    s3 = _slope([x for x, _ in last], [y for _, y in last])
    out: dict[str, Any] = {"start": ys[0], "end": ys[-1], "slope_first": s1, "slope_last": s3}
    if np.isnan(s1) or np.isnan(s3):
        out["verdict"] = "too short"
        return out
    if level:
        growth = s3 * total / 3 / max(abs(ys[-1]), 1e-9)
        out["last_third_growth_share"] = growth
        if s3 < 0 and growth < -LEVEL_GROWTH_SHARE:
            out["verdict"] = "falls"
        elif growth <= LEVEL_FLAT_SHARE or (
            growth <= LEVEL_GROWTH_SHARE and s1 > 0 and s3 <= LEVEL_SLOPE_SHARE * s1
        ):
            out["verdict"] = "levels off"
        elif cap is not None and ys[-1] <= cap and s1 > 0 and s3 <= LEVEL_SLOPE_SHARE * s1:
            out["verdict"] = f"capped: {ys[-1] / cap:.0%} of its bound {cap:,.0f}"
        elif _sawtooth_bounded(xs, ys):
            early = max(y for x, y in zip(xs, ys, strict=True) if x < xs[-1] - total / 3)
            late = max(y for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3)
            out["verdict"] = (
                f"bounded: falls back at compactions, last third's peak {late / early:.2f}x the earlier"
            )
        elif _noisy_level(xs, ys):
            out["verdict"] = "levels off (noisy: last third's mean within 5 % of the middle third's)"
        else:
            out["verdict"] = "still grows"
        if cap is not None:
            out["cap"] = cap
    else:
        steady = s1 > 0 and abs(s3 - s1) <= 0.2 * s1
        out["verdict"] = "steady rate" if steady else ("zero" if s1 == 0 and s3 == 0 else "rate changed")
    return out


def analyse(run: Run) -> dict[str, Any]:
    """Trends of every series, compaction findings and the headline figures."""
    samples = run.samples
    caps = run.setup.get("caps", {})
    trends = {k: trend(samples, k, True, caps.get(k)) for k in LEVELS}
    trends.update({k: trend(samples, k, False) for k in COUNTERS})
    final = run.end.get("final", samples[-1] if samples else {})
    scan = run.end.get("scan", {})
    removed = int(scan.get("records_removed", 0))
    head_missing = max((s.get("head_missing_offsets", 0.0) for s in samples), default=0.0)
    compacted = removed > 0 or head_missing > 0 or final.get("changelog_gaps_seen", 0) > 0
    minutes = samples[-1]["minute"] - samples[0]["minute"] if len(samples) > 1 else 0.0
    processed = samples[-1]["events_processed"] - samples[0]["events_processed"] if samples else 0.0
    return {
        "trends": trends,
        "compaction_observed": compacted,
        "changelog_records_removed": removed,
        "changelog_head_missing_offsets_max": head_missing,
        "minutes": minutes,
        "events_per_s": processed / (minutes * 60.0) if minutes else None,
    }


def summary_json(run: Run, analysis: dict[str, Any]) -> dict[str, Any]:
    """The one-line JSON summary."""
    final = run.end.get("final", {})
    scan = run.end.get("scan", {})
    return {
        "minutes": round(analysis["minutes"], 2),
        "rate": run.setup.get("rate"),
        "events_per_s": analysis["events_per_s"],
        "ttl_variable": run.setup.get("ttl_variable"),
        "user_ttl_seconds": run.setup.get("user_ttl_seconds"),
        "sim_days": final.get("sim_days"),
        "users_arrived": final.get("users_arrived"),
        "worker_rss_mib": final.get("worker_rss_bytes", 0) / 2**20,
        "worker_peak_rss_mib": final.get("worker_peak_rss_bytes", 0) / 2**20,
        "broker_rss_mib": final.get("broker_rss_bytes", 0) / 2**20,
        "rocksdb_disk_mib": final.get("rocksdb_disk_bytes", 0) / 2**20,
        "state_keys": final.get("state_keys"),
        "changelog_records": final.get("changelog_records_read"),
        "changelog_mib": final.get("changelog_bytes_read", 0) / 2**20,
        "changelog_live_keys": final.get("changelog_live_keys"),
        "changelog_live_users": final.get("changelog_live_users"),
        "changelog_live_partition_rows": final.get("changelog_live_partition_rows"),
        "changelog_live_covisit_rows": final.get("changelog_live_covisit_rows"),
        "changelog_live_interest_rows": final.get("changelog_live_interest_rows"),
        "changelog_live_optouts": final.get("changelog_live_optouts"),
        "changelog_live_active_users": final.get("changelog_live_active_users"),
        "index_caps": run.setup.get("caps"),
        "changelog_live_mib": final.get("changelog_live_bytes", 0) / 2**20,
        "changelog_records_removed": scan.get("records_removed"),
        "compaction_observed": analysis["compaction_observed"],
        "events_produced": final.get("events_produced"),
        "events_processed": final.get("events_processed"),
        "pushes": final.get("pushes"),
        "dead_letters": final.get("dead_letters"),
        "max_consumer_lag": max((s.get("consumer_lag", 0.0) for s in run.samples), default=None),
        "drained": run.end.get("drained"),
        "worker_exit": run.end.get("worker_exit"),
        "verdicts": {k: v["verdict"] for k, v in analysis["trends"].items()},
    }


# --- report ------------------------------------------------------------------------------------

PLOTS: list[tuple[str, str, list[tuple[str, str, float]]]] = [
    (
        "memory",
        "MiB",
        [
            ("worker_rss_bytes", "worker RSS", 2**20),
            ("worker_peak_rss_bytes", "worker peak RSS", 2**20),
            ("broker_rss_bytes", "broker RSS", 2**20),
        ],
    ),
    (
        "state",
        "MiB",
        [
            ("rocksdb_disk_bytes", "RocksDB on disk", 2**20),
            ("state_bytes", "kairos_state_bytes", 2**20),
            ("changelog_live_bytes", "changelog live bytes", 2**20),
        ],
    ),
    (
        "keys",
        "keys / users",
        [
            ("state_keys", "kairos_state_keys", 1.0),
            ("changelog_live_users", "changelog live user records", 1.0),
            ("changelog_live_optouts", "of which opt-out only (kept for good)", 1.0),
            ("changelog_live_partition_rows", "changelog live partition rows (indexes)", 1.0),
            ("changelog_live_covisit_rows", "of which co-visitation", 1.0),
            ("users_arrived", "user ids arrived", 1.0),
        ],
    ),
    (
        "changelog",
        "records (thousands) / MiB",
        [
            ("changelog_records_read", "changelog records (k)", 1e3),
            ("changelog_bytes_read", "changelog MiB", 2**20),
        ],
    ),
    (
        "flow",
        "count (thousands)",
        [
            ("events_produced", "events produced (k)", 1e3),
            ("events_processed", "events processed (k)", 1e3),
            ("pushes", "pushes (k)", 1e3),
            ("dead_letters", "dead letters (k)", 1e3),
            ("consumer_lag", "consumer lag (k)", 1e3),
        ],
    ),
]


def write_plots(samples: list[dict[str, float]], final: dict[str, float], out: Path) -> list[str]:
    """One PNG per group of series; thirds of the run shaded, the after-drain sample a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    xs = [s["minute"] for s in samples]
    for name, unit, series in PLOTS:
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        for key, label, scale in series:
            line = ax.plot(xs, [s.get(key, 0.0) / scale for s in samples], marker=".", label=label)[0]
            if final:
                ax.plot([final["minute"]], [final.get(key, 0.0) / scale], "x", color=line.get_color())
        if len(xs) > 1:
            third = (xs[-1] - xs[0]) / 3
            ax.axvspan(xs[0], xs[0] + third, color="0.92", zorder=0)
            ax.axvspan(xs[-1] - third, xs[-1], color="0.92", zorder=0)
        ax.set_xlabel("minutes")
        ax.set_ylabel(unit)
        ax.set_title(f"soak: {name} (thirds compared shaded; x: after the drain)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        filename = f"soak-{name}.png"
        fig.savefig(out / filename, dpi=90)
        plt.close(fig)
        names.append(filename)
    return names


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if np.isnan(value):
            return "-"
        if abs(value) < 0.01:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def write_report(run: Run, analysis: dict[str, Any], plots: list[str], out: Path, command: str) -> Path:
    """``<out>/soak.md``: setup, verdict per series, compaction, every sample, the plots."""
    s = run.setup
    final = run.end.get("final", {})
    scan = run.end.get("scan", {})
    trends = analysis["trends"]
    lines = [
        "# Soak benchmark",
        "",
        f"Generated by `benchmarks/soak.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{analysis['minutes']:.1f} minutes sampled, {s['cpus']} CPUs.",
        "",
        f"    {command}",
        "",
        "## Setup",
        "",
        f"- Embedded Tansu broker (memory storage), one worker process (`{APP_ID}`), the simulated shop of "
        f"`kairos demo` at {s['rate']:g} events/s answering the pushes it gets.",
        f"- {s['users']:,} user slots, each taken by a new user id every {s['user_lifetime_days']:g} "
        f"simulated days (staggered): new users keep arriving, at most {s['users']:,} at once.",
        f"- Simulated time ran {final.get('sim_days', 0.0):.1f} days (event time; the worker runs "
        "`clock=event`, the shop starts in the past so no event is ahead of the wall clock).",
    ]
    if s.get("ttl_variable"):
        lines.append(
            f"- Inactive-user expiry: `{s['ttl_variable']}={s['user_ttl_seconds']:g}` (event-time seconds)."
        )
    else:
        lines.append(
            "- **Inactive-user expiry: the worker has no such setting** (no setting's name contains `ttl`, "
            "`expir` or `inactiv` apart from the pushes' own TTL), so nothing removes a user who left: the "
            "state cannot level off."
        )
    lines.append(f"- Worker environment: `{' '.join(f'{k}={v}' for k, v in s['worker_env'].items())}`.")
    lines += [
        "",
        "## Does it level off?",
        "",
        "Slopes are least-squares fits per minute over the first and the last third of the samples. "
        f'A level "levels off" when the last third adds at most {LEVEL_FLAT_SHARE:.0%} of its final value, '
        f"or at most {LEVEL_GROWTH_SHARE:.0%} with a slope of at most {LEVEL_SLOPE_SHARE:.0%} of the first "
        "third's (a warm-up that flattens); "
        'a counter has a "steady rate" when its last-third rate is within 20 % of the first third\'s.',
    ]
    achieved = analysis.get("events_per_s") or 0.0
    if achieved < 0.9 * s["rate"]:
        lines += [
            "",
            f"**The worker did not keep up**: it processed {achieved:,.0f} events/s of the "
            f"{s['rate']:g} offered (the consumer lag grew), so the state and changelog grew more slowly "
            "than the shop would make them grow, and the verdicts describe an overloaded worker: run it "
            "on an otherwise idle machine, or lower `--rate`.",
        ]
    lines += [
        "",
        "| series | start | end | slope, first third (/min) | slope, last third (/min) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in {**LEVELS, **COUNTERS}.items():
        t = trends[key]
        scale = 2**20 if "bytes" in key else 1.0
        shown = [_fmt(t[k] / scale) if k in t else "-" for k in ("start", "end", "slope_first", "slope_last")]
        unit = ", MiB" if scale != 1.0 else ""
        lines.append(f"| {label}{unit} | " + " | ".join(shown) + f" | **{t['verdict']}** |")
    lines += [
        "",
        "`kairos_state_keys` is RocksDB's `estimate-num-keys`, which counts overwritten and deleted entries "
        "until RocksDB compacts its files: it overstates the users held. The exact count is the changelog's "
        "live user records (every state write goes to the changelog); the partitions' shared rows "
        "(index entries and clock, keys starting with \\x00) are counted apart.",
    ]
    written = scan.get("offsets_written", 0)
    lines += [
        "",
        "## Changelog compaction",
        "",
        f"Topic `{s.get('changelog_topic')}`; the broker describes its configuration as "
        f"`{json.dumps(s.get('changelog_config', {}))}`.",
        "",
        f"- Offsets written (high watermarks from fetch responses): {written:,}; records still present "
        f"when read again from offset 0 at the end: {scan.get('records_present', 0):,} "
        f"(read in {scan.get('scan_seconds', '-')} s, complete: {scan.get('complete')}); "
        f"removed: {scan.get('records_removed', 0):,}.",
        f"- Offsets missing among the first {HEAD_PROBE_RECORDS} records of each partition, read again at "
        f"every tenth sample: at most {analysis['changelog_head_missing_offsets_max']:.0f}.",
        f"- Distinct keys ever written: {scan.get('distinct_keys', 0):,}; live keys (latest record not a "
        f"tombstone): {scan.get('live_keys', 0):,}; tombstones written: "
        f"{final.get('changelog_tombstones', 0):,.0f}.",
        "",
    ]
    if analysis["compaction_observed"]:
        lines.append("**The broker compacted the changelog** (records were removed; see the figures above).")
    else:
        lines.append(
            "**The broker never compacted the changelog.** It holds "
            f"{final.get('changelog_records_read', 0):,.0f} records "
            f"({final.get('changelog_bytes_read', 0) / 2**20:,.1f} MiB) for "
            f"{final.get('changelog_live_keys', 0):,.0f} live keys "
            f"({final.get('changelog_live_bytes', 0) / 2**20:,.1f} MiB): a compacting broker would keep "
            "about the live part. This matches Tansu upstream: its memory and S3 storage engines ignore "
            "`cleanup.policy` (github.com/nisshi-io/nisshi issue #649, open; "
            "PR #686 that implemented compaction and retention for them was closed), so with the embedded "
            "broker the changelog and every other topic grow in the broker's memory for as long as it runs, "
            "and a recovery from the changelog alone replays all of it. A real Kafka compacts only closed "
            "segments: with the default `segment.bytes` (1 GiB) and `segment.ms` (7 days) a changelog "
            "partition is not compacted until it rolls."
        )
    lines += ["", "## End of the run", ""]
    lines.append(
        f"- Drain after the shop stopped: {run.end.get('drain_seconds', '-')} s "
        f"({'caught up' if run.end.get('drained') else 'NOT caught up: the worker fell behind the rate'}); "
        "worker exit code "
        f"{run.end.get('worker_exit')}; event outcomes `{json.dumps(run.end.get('outcomes', {}))}`."
    )
    lines.append(f"- Shop: `{json.dumps(run.end.get('sim', {}))}`.")
    if run.end.get("tail_error"):
        lines.append(f"- Changelog reader error: `{run.end['tail_error']}`.")
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots]
    cols = [
        ("minute", "min", 1.0),
        ("worker_rss_bytes", "worker RSS MiB", 2**20),
        ("broker_rss_bytes", "broker RSS MiB", 2**20),
        ("rocksdb_disk_bytes", "RocksDB MiB", 2**20),
        ("state_keys", "state keys", 1.0),
        ("state_bytes", "state MiB", 2**20),
        ("changelog_records_read", "changelog records", 1.0),
        ("changelog_bytes_read", "changelog MiB", 2**20),
        ("changelog_live_users", "live users", 1.0),
        ("changelog_live_optouts", "opt-out records", 1.0),
        ("changelog_live_partition_rows", "live index rows", 1.0),
        ("changelog_live_covisit_rows", "co-visitation rows", 1.0),
        ("changelog_live_interest_rows", "interest rows", 1.0),
        ("users_arrived", "users arrived", 1.0),
        ("events_processed", "processed", 1.0),
        ("pushes", "pushes", 1.0),
        ("dead_letters", "dead letters", 1.0),
        ("consumer_lag", "lag", 1.0),
        ("sim_days", "sim days", 1.0),
    ]
    lines += ["", "## Samples", "", "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in [*run.samples, *([final] if final else [])]:
        lines.append("| " + " | ".join(_fmt(row.get(k, 0.0) / scale) for k, _, scale in cols) + " |")
    lines.append("")
    lines.append("The last row is taken after the shop stopped and the worker drained.")
    path = out / "soak.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- entry point -------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    """Run the soak (or reload one), write the report and plots, print the JSON summary."""
    args = build_parser().parse_args(argv)
    command = "benchmarks/soak.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        run = Run(saved["samples"], saved["setup"], saved["end"])
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
        (args.out / "soak.json").write_text(json.dumps(saved, default=str))
    analysis = analyse(run)
    plots = write_plots(run.samples, run.end.get("final", {}), args.out) if run.samples else []
    report = write_report(run, analysis, plots, args.out, command)
    _say(f"[soak] report: {report}")
    print(json.dumps(summary_json(run, analysis)), flush=True)
    return 0 if run.end.get("worker_exit") in (0, None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
