"""Running the soak: the broker, the worker, the shop and the changelog reader for ``--minutes``,
one sample of every series every ``--sample-seconds`` (RSS, RocksDB on disk, the worker's gauges, the
changelog), then the drain and the final scan (:func:`run_soak`).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak_parts.changelog import ChangelogTail, full_scan, probe_head, topic_config
from benchmarks.soak_parts.config import APP_ID, SOAK_ENV, _say, index_caps
from benchmarks.soak_parts.workload import SoakShop, natural_rate, user_ttl_variable
from stream.broker import EmbeddedBroker
from stream.simulator import DAY, SimConfig
from stream.topics import changelog_topic, ensure_topics
from tests.support.worker import WorkerProcess, settings_for


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
    """One row of every series (see ``benchmarks/soak.py``)."""
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
