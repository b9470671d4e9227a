"""Stream worker benchmark: throughput, its parse ceiling, and event→push latency against the broker floor.

    .venv/bin/python benchmarks/stream_throughput.py [--json] [--events N] [--rate R] [--seconds S]
                                                     [--profile] [--py-spy PATH] [--out DIR]
    .venv/bin/python benchmarks/stream_throughput.py --from-json benchmarks/reports/stream_throughput.json
    .venv/bin/python benchmarks/stream_throughput.py --engine-only [--events N]   # no broker, seconds

Everything runs for real in one run: the embedded Tansu broker, ``python -m stream.cli worker`` in its
own process, a GRU model trained (once, cached under ``.kairos/bench/``) on the replayed events.

Events are the real ``retailrocket-sample`` stream (``stream.replay``, moved in time to the simulated
shop's era) merged in time order with simulated shop events (``stream.simulator.generate_events``);
users of the two sources are disjoint, so every user's events stay in order. Each item gets a catalog
entry on the ``catalog`` topic first (synthetic entries for the dataset items, the simulated shop's
own catalog for the rest).

Phase A (broker 1) - throughput:
  1. produce the catalog and N events to ``events``, before any worker exists; the events' times are
     spaced ``1 / pace`` apart (default 50,000/s: the event times a shop at the goal rate would send;
     see :func:`live_paced`);
  2. start the worker (production defaults, except ``clock=event`` so the decisions follow the event
     times, deterministically); poll its ``/metrics`` ``kairos_events_total`` every 0.5 s (a scrape
     renders every series while holding the GIL: polled often, it slows the worker it measures);
  3. ``events_per_s = (N - c0) / (t_last - t0)``: ``(t0, c0)`` is the first poll that sees a processed
     event, so group join, recovery, model load and the first fetch are all before ``t0`` and the c0
     events processed before it are not counted; ``t_last`` is the worker's own
     ``kairos_last_event_timestamp_seconds`` once the counter reaches N;
  4. ``ceiling_events_per_s``: the same topic read from offset 0 by a bare confluent-kafka consumer
     that parses every record with the worker's own parser, ``stream.event_decoder.decode_event``
     (first record to last).
Phase A' (another fresh broker): steps 1-3 again with the dataset's own event times
  (``replay_events_per_s``), i.e. a replay where event time runs far faster than wall time.
Phase B (broker 2, fresh) - latency at a fixed offered rate, one measurement after the other:
  5. floor: on its own topic ``bench-floor`` (as many partitions as ``events``), a bare producer
     (the tests' producer: murmur2_random, linger 2 ms) sends events at R/s
     whose ``ts`` is the wall clock at produce; a bare consumer (``fetch.wait.max.ms=10``) records
     receive time minus ``ts``;
  6. the worker (wall clock, permissive policy: see ``LATENCY_ENV``) reads the same kind of events
     at R/s; a consumer on ``pushes`` (``fetch.wait.max.ms=10``) records receive time minus
     ``push.event_ts`` (= the triggering event's produce time). The first second of pushes is
     dropped as warm-up. After the producer stops, the measurement waits (up to 120 s) until the
     worker processed every event sent, so a worker that fell behind is measured on its backlog too.
Phase C (broker 3, fresh): steps 5-6 again at ``--high-rate`` (default 10,000/s) for
  ``--high-seconds`` (default 5 s): the issue's second latency point.

``--profile`` adds (a) py-spy on the worker during phase A (when py-spy is found), aggregated into
time shares per stage, and (b) cProfile of ``Engine.process`` in-process on the same events.
Writes ``<out>/stream_throughput.md`` (default ``benchmarks/reports``), its figures
``<out>/stream_throughput-*.png`` and the raw results ``<out>/stream_throughput.json``; ``--from-json``
writes the report and figures again from that file without running anything. A measurement, never a
test assertion.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import heapq
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from stream.broker import EmbeddedBroker  # noqa: E402
from stream.contract import CatalogUpdate, Event, to_json_bytes  # noqa: E402
from stream.demo import DEMO_TRAINING  # noqa: E402
from stream.event_decoder import decode_event  # noqa: E402
from stream.replay import replay  # noqa: E402
from stream.settings import Settings, get_settings  # noqa: E402
from stream.simulator import WORLD_VERSION, SimConfig, World, generate_events  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402
from tests.support.worker import (  # noqa: E402
    PRODUCTION_DECISIONS,
    WorkerProcess,
    produce,
    producer,
    read_topic,
    settings_for,
)

CACHE = ROOT / ".kairos" / "bench"
REPORT = ROOT / "benchmarks" / "reports" / "stream_throughput.md"
SIM_CONFIG = SimConfig.model_validate({"seed": 11})
SIM_TRAIN_EVENTS = 60_000
TRAINING: dict[str, float | int] = {**DEMO_TRAINING, "threads": 2}

# Phase A: production defaults, except the event-time clock (the dataset's timestamps are from 2015,
# so under the wall clock every event would be "stale" and never scored) and TEST_ENV's changes undone.
THROUGHPUT_ENV: dict[str, str] = {
    **PRODUCTION_DECISIONS,  # TEST_ENV switches the active rule and session ends off: undo it
    "KAIROS_WORKER__CLOCK": "event",
    "KAIROS_WORKER__TICK_SECONDS": "1.0",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.005",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.05",
    "KAIROS_LOG__LEVEL": "WARNING",
}
# Phase B: every decision may emit (no threshold, gap, caps, quiet hours or holdout), so each user's
# first browsing event (and every add-to-cart) gives a push: hundreds of latency samples a second.
# The decision interval stays at its default (60 s of event time per user): with 0, every event is a
# decision and the worker (about 1,100 events/s then) is overloaded at 2,000/s; see the report.
LATENCY_ENV: dict[str, str] = {
    "KAIROS_WORKER__CLOCK": "wall",
    "KAIROS_WORKER__TICK_SECONDS": "1.0",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.005",
    "KAIROS_POLICY__THRESHOLD": "0.0",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__TRIGGER_THRESHOLDS": "{}",
    "KAIROS_POLICY__MIN_GAP_SECONDS": "0",
    "KAIROS_POLICY__ITEM_REPEAT_WINDOW_SECONDS": "0",
    "KAIROS_POLICY__MAX_PUSHES_PER_24H": "1000000",
    "KAIROS_POLICY__MAX_PUSHES_PER_7D": "1000000",
    "KAIROS_POLICY__MAX_PUSHES_PER_LOCAL_DAY": "1000000",
    "KAIROS_POLICY__MAX_PER_CATEGORY_PER_LOCAL_DAY": "0",
    "KAIROS_POLICY__QUIET_HOURS_START": "00:00",
    "KAIROS_POLICY__QUIET_HOURS_END": "00:00",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.0",
    # In-session pushes measure event -> push; by default the active rule holds every push until the
    # shopper has left (30 min), and send time may delay it: both off for this phase.
    "KAIROS_POLICY__ACTIVE_WINDOW_SECONDS": "0",
    "KAIROS_POLICY__SEND_TIME_ENABLED": "false",
    "KAIROS_LOG__LEVEL": "WARNING",
}
FETCH_WAIT_MS = 10
FLOOR_TOPIC = "bench-floor"  # same partition count as events, on the latency phase's broker
WARMUP_SECONDS = 1.0
POLL_SECONDS = 0.5  # /metrics polls in the throughput phase (see the module doc)
LATENCY_WINDOW_SECONDS = 2.0  # the latency runs' percentiles are also reported per window this long


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- data and model ----------------------------------------------------------------------------


@dataclass
class Workload:
    """The events (key, JSON value) in produce order, and the catalog entries they need."""

    events: list[tuple[bytes, bytes]]
    catalog: list[tuple[bytes, bytes]]
    n_dataset: int
    n_simulated: int


def _sim_events_file() -> Path:
    path = CACHE / f"sim-{SIM_CONFIG.seed}-{SIM_TRAIN_EVENTS}-w{WORLD_VERSION}.jsonl"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for event in generate_events(SIM_CONFIG, SIM_TRAIN_EVENTS):
                f.write(to_json_bytes(event) + b"\n")
        tmp.replace(path)
    return path


def _dataset(settings: Settings, shift: float = 0.0) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The dataset's events and catalog entries, their times moved by ``shift`` seconds."""
    events: list[bytes] = []
    catalog: list[tuple[bytes, bytes]] = []
    for msg in replay("retailrocket", settings.data_dir, with_catalog=True):
        m = msg.message
        if isinstance(m, Event):
            events.append(to_json_bytes(m.model_copy(update={"ts": m.ts + shift})))
        elif isinstance(m, CatalogUpdate):
            moved = m.model_copy(update={"updated_at": m.updated_at + shift})
            catalog.append((m.item_id.encode(), to_json_bytes(moved)))
    return events, catalog


def live_paced(work: Workload, pace: float) -> Workload:
    """The same events with event times spaced ``1 / pace`` apart, as a shop at that rate sends them.

    Replaying the dataset's own times runs event time thousands of times faster than wall time, which
    makes every event-time-driven refresh (trending top list, decays) fire far more often than in a
    live shop; this is the live-shop view of the same events. Order and every other field are kept.
    """
    base = _ts(work.events[0][1])
    events = [(k, _stamped(v, base + i / pace)) for i, (k, v) in enumerate(work.events)]
    return Workload(events, work.catalog, work.n_dataset, work.n_simulated)


def _ts(raw: bytes) -> float:
    return float(json.loads(raw)["ts"])


def build_workload(settings: Settings, n_events: int) -> Workload:
    """The real dataset and simulated events merged in time order, cut to ``n_events``.

    The dataset (2015) is moved in time to start with the simulated shop (2026): mixing eras would
    send the event-time clock back by 11 years, which the decayed counters do not survive (see the
    report). Merging by time keeps every user's events in order (the two sources share no user).
    """
    sim_lines = _sim_events_file().read_bytes().splitlines()
    rr_first = _dataset_first_ts(settings)
    rr_events, rr_catalog = _dataset(settings, _ts(sim_lines[0]) - rr_first)
    n_sim = min(len(sim_lines), max(n_events - len(rr_events), n_events // 4))
    n_rr = min(len(rr_events), n_events - n_sim)
    mixed = [
        v
        for _, v in heapq.merge(
            ((_ts(v), v) for v in rr_events[:n_rr]),
            ((_ts(v), v) for v in sim_lines[:n_sim]),
            key=lambda x: x[0],
        )
    ]
    events = [(json.loads(v)["user_id"].encode(), v) for v in mixed]
    sim_catalog = [(c.item_id.encode(), to_json_bytes(c)) for c in World(SIM_CONFIG).initial_catalog()]
    return Workload(events, rr_catalog + sim_catalog, n_rr, n_sim)


def _dataset_first_ts(settings: Settings) -> float:
    for msg in replay("retailrocket", settings.data_dir, with_catalog=False):
        return float(msg.message.updated_at if isinstance(msg.message, CatalogUpdate) else msg.message.ts)
    raise ValueError("empty dataset")


def ensure_model(settings: Settings) -> Path:
    """Train (once) a model on the dataset + simulated events; cached by training config."""
    from model.cli import train_main

    key = hashlib.sha256(
        json.dumps([TRAINING, SIM_CONFIG.seed, SIM_TRAIN_EVENTS, WORLD_VERSION], sort_keys=True).encode()
    ).hexdigest()[:10]
    out = CACHE / f"model-{key}"
    if (out / ".complete").exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    train_file = CACHE / "train-events.jsonl"
    rr_events, _ = _dataset(settings)
    with open(train_file, "wb") as f:
        for line in rr_events:
            f.write(line + b"\n")
        f.write(_sim_events_file().read_bytes())
    config = CACHE / f"training-{key}.json"
    config.write_text(json.dumps(TRAINING))
    if out.exists():
        shutil.rmtree(out)
    _say(f"[bench] training the benchmark model -> {out} (once; cached)")
    started = time.monotonic()
    code = train_main(
        ["--train", str(train_file), "--train-format", "events", "--out", str(out), "--config", str(config)]
    )
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    (out / ".complete").write_text(f"{time.monotonic() - started:.1f}\n")
    return out


# --- phase A: throughput and ceiling -------------------------------------------------------------


class ProfiledWorker(WorkerProcess):
    """The worker under ``py-spy record`` (raw collapsed stacks), when a py-spy binary is given."""

    def __init__(
        self, *args: Any, py_spy: str | None = None, profile_out: Path | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.py_spy = py_spy
        self.profile_out = profile_out

    def start(self) -> ProfiledWorker:
        """Start the worker, wrapped in py-spy when profiling."""
        if not self.py_spy or self.profile_out is None:
            super().start()
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        cmd = [
            self.py_spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--threads",
            "--nonblocking",
            "-o",
            str(self.profile_out),
            "--",
            sys.executable,
            "-m",
            "stream.cli",
            "worker",
        ]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> None:
        """SIGINT to py-spy (it forwards nothing; so stop the worker itself first), then wait."""
        if not self.py_spy or self.proc is None:
            super().stop()
            return
        worker_pids = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in worker_pids:
            os.kill(int(pid), 15)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def measure_throughput(
    bootstrap: str,
    model_dir: Path,
    work: Workload,
    workdir: Path,
    py_spy: str | None,
    profile_out: Path | None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Pre-produce, start the worker, time the first to the last processed event (see module doc)."""
    produce(bootstrap, "catalog", work.catalog)
    started = time.monotonic()
    produce(bootstrap, "events", work.events)
    produce_s = time.monotonic() - started
    n = len(work.events)
    worker = ProfiledWorker(
        bootstrap,
        workdir / "state-throughput",
        model_dir,
        env={**THROUGHPUT_ENV, **(env or {})},
        app_id="bench-throughput",
        py_spy=py_spy,
        profile_out=profile_out,
    ).start()
    spawned = time.time()
    try:
        t0 = c0 = None
        deadline = time.monotonic() + 120 + n / 1000
        count = 0.0
        while time.monotonic() < deadline:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {worker.tail_log()}")
            count = worker.metric("kairos_events_total")
            now = time.time()
            if t0 is None and count > 0:
                t0, c0 = now, count
            if count >= n:
                break
            time.sleep(POLL_SECONDS)
        else:
            raise TimeoutError(f"worker processed {count:.0f} of {n} events; log: {worker.tail_log()}")
        t_last = worker.metric("kairos_last_event_timestamp_seconds")
        outcomes = _outcomes(worker)
        pushes = worker.metric("kairos_pushes_total")
        per_event_hist = worker.metric("kairos_event_processing_seconds_sum")
        batches = worker.metric("kairos_batch_events_count")
        stages = _stage_seconds(worker)
    finally:
        worker.stop()
    assert t0 is not None and c0 is not None
    window = max(t_last - t0, 1e-6)
    changelog = read_topic(bootstrap, "bench-throughput-user-state-changelog", timeout=30)
    user_records = [m for m in changelog if m.key() and not m.key().startswith(b"\x00")]
    return {
        "events": n,
        "events_per_s": (n - c0) / window,
        "window_s": window,
        "excluded_startup_s": t0 - spawned,
        "excluded_events": int(c0),
        "produce_events_per_s": n / produce_s,
        "engine_and_commit_us_per_event": 1e6 * per_event_hist / n,
        "mean_batch": n / batches if batches else None,
        "pushes": int(pushes),
        "outcomes": outcomes,
        # What the state costs: changelog records and bytes (key + value) per event, user records apart.
        "changelog_records_per_event": len(changelog) / n,
        "changelog_bytes_per_event": sum(len(m.key() or b"") + len(m.value() or b"") for m in changelog) / n,
        "user_records_per_event": len(user_records) / n,
        "bytes_per_user_record": (
            sum(len(m.value() or b"") for m in user_records) / len(user_records) if user_records else None
        ),
        # The worker's own kairos_stage_seconds_total, over every event (start-up batches included).
        "stage_us_per_event": {k: 1e6 * v / n for k, v in stages.items()},
    }


def _stage_seconds(worker: WorkerProcess) -> dict[str, float]:
    """``kairos_stage_seconds_total`` per stage, in the worker's order (stream.outcome.STAGES)."""
    from stream.outcome import STAGES

    found = worker.metric_by("kairos_stage_seconds_total", "stage")
    return {stage: found[stage] for stage in STAGES if stage in found}


def _outcomes(worker: WorkerProcess) -> dict[str, int]:
    found = worker.metric_by("kairos_events_total", "outcome")
    return {k: int(v) for k, v in found.items() if v}


def measure_ceiling(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    """A bare confluent-kafka loop: consume the whole topic and parse every record (first to last)."""

    def read(parse: bool) -> float:
        consumer = Consumer(
            {
                **settings_for(bootstrap).kafka.confluent_config(),  # security from KAIROS_KAFKA__*
                "group.id": f"bench-ceiling-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            }
        )
        try:
            parts = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            seen = 0
            first = None
            deadline = time.monotonic() + 120
            while seen < n and time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    if first is None:
                        first = time.perf_counter()
                    if parse:
                        decode_event(msg.value())
                    seen += 1
            if first is None or seen < n:
                raise TimeoutError(f"ceiling reader saw {seen} of {n}")
            return (seen - 1) / (time.perf_counter() - first)
        finally:
            consumer.close()

    return {"ceiling_events_per_s": read(parse=True), "consume_only_events_per_s": read(parse=False)}


# --- phase B: latency and floor ------------------------------------------------------------------


def _stamped(template: bytes, ts: float) -> bytes:
    data = json.loads(template)
    data["ts"] = ts
    return json.dumps(data, separators=(",", ":")).encode()


def paced_produce(
    bootstrap: str, topic: str, events: Iterator[tuple[bytes, bytes]], rate: float, seconds: float
) -> tuple[int, float]:
    """Produce at ``rate``/s for ``seconds``; each event's ``ts`` becomes the wall clock at produce."""
    p = producer(bootstrap)
    started = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = int((time.monotonic() - started) * rate) + 1
        while sent < min(due, total):
            key, template = next(events)
            p.produce(topic, value=_stamped(template, time.time()), key=key)
            sent += 1
        p.poll(0)
        time.sleep(0.0005)
    p.flush(30)
    return sent, sent / (time.monotonic() - started)


@dataclass(eq=False)  # a Thread must stay hashable
class LatencyReader(threading.Thread):
    """Reads a topic from the start; records (receive wall time - stamp) for each message.

    ``hops`` splits each latency at the message's create time (set by the producing client when it
    produced the message, on this machine's clock): (stamp, stamp → produced, produced → received).
    For the pushes topic that is the worker's side (the input hop, the batch, the engine) and the
    output hop.
    """

    bootstrap: str
    topic: str
    stamp: Callable[[bytes], float]
    samples: list[tuple[float, float]] = field(default_factory=list)  # (stamp, latency seconds)
    hops: list[tuple[float, float, float]] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(name=f"bench-reader-{self.topic}", daemon=True)

    def run(self) -> None:
        consumer = Consumer(
            {
                **settings_for(self.bootstrap).kafka.confluent_config(),
                "group.id": f"bench-latency-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            }
        )
        try:
            parts = list(consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            consumer.consume(1, timeout=0.5)  # connect and fetch once before anyone produces
            self.ready.set()
            while not self.stop_event.is_set():
                # poll() returns as soon as a message is there; consume(n) would wait for n or the timeout.
                msg = consumer.poll(0.1)
                if msg is None or msg.error() is not None:
                    continue
                now = time.time()
                stamp = self.stamp(cast(bytes, msg.value()))
                self.samples.append((stamp, now - stamp))
                kind, millis = msg.timestamp()
                if kind == TIMESTAMP_CREATE_TIME:
                    self.hops.append((stamp, millis / 1000.0 - stamp, now - millis / 1000.0))
        finally:
            consumer.close()


def _latency_stats(samples: list[tuple[float, float]], after: float) -> dict[str, float]:
    values = np.array([lat for stamp, lat in samples if stamp >= after]) * 1000.0
    if values.size == 0:
        return {"n": 0}
    return {
        "n": int(values.size),
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }


def _latency_windows(
    samples: list[tuple[float, float]], after: float, width: float = LATENCY_WINDOW_SECONDS
) -> list[dict[str, float]]:
    """p50 and p99 per ``width`` seconds of stamps from ``after`` on: how latency moved during the run.

    The embedded broker's fetches cost CPU in proportion to the data already in the partition (measured
    2026-12-04), so on one broker the same rate gets slower as its topics grow: the first windows show
    the pipeline on a fresh broker, the last ones on a full one.
    """
    kept = sorted((stamp - after, lat) for stamp, lat in samples if stamp >= after)
    out: list[dict[str, float]] = []
    start = 0.0
    while kept and start <= kept[-1][0]:
        values = np.array([lat for t, lat in kept if start <= t < start + width]) * 1000.0
        if values.size:
            out.append(
                {
                    "from_s": start,
                    "n": int(values.size),
                    "p50_ms": float(np.percentile(values, 50)),
                    "p99_ms": float(np.percentile(values, 99)),
                }
            )
        start += width
    return out


def _hop_split(hops: list[tuple[float, float, float]], after: float) -> dict[str, Any]:
    """Latency split at the push's create time: the worker's side (event → produced: the input hop,
    the batch and the engine) and the output hop (produced → read), overall and per window."""
    if not hops:
        return {}
    to_produce = [(stamp, a) for stamp, a, _ in hops]
    to_read = [(stamp, b) for stamp, _, b in hops]
    read_at = {w["from_s"]: w for w in _latency_windows(to_read, after)}
    return {
        "event_to_produce": _latency_stats(to_produce, after),
        "produce_to_read": _latency_stats(to_read, after),
        "windows": [
            {
                "from_s": w["from_s"],
                "event_to_produce_p99_ms": w["p99_ms"],
                "produce_to_read_p99_ms": read_at[w["from_s"]]["p99_ms"],
            }
            for w in _latency_windows(to_produce, after)
            if w["from_s"] in read_at
        ],
    }


def _cycle(events: list[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """The events over and over; from the second pass on, event ids get a suffix (no duplicates)."""
    rounds = 0
    while True:
        if rounds == 0:
            yield from events
        else:
            for key, value in events:
                data = json.loads(value)
                data["event_id"] = f"{data['event_id']}~{rounds}"
                yield key, json.dumps(data, separators=(",", ":")).encode()
        rounds += 1


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient(settings_for(bootstrap).kafka.confluent_config())
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions)]).values():
        future.result()


def measure_floor(bootstrap: str, work: Workload, rate: float, seconds: float) -> dict[str, Any]:
    """The broker's own produce→consume latency: bare producer and bare consumer, same rate."""
    reader = LatencyReader(bootstrap, FLOOR_TOPIC, lambda raw: float(json.loads(raw)["ts"]))
    reader.start()
    reader.ready.wait(15)
    started = time.time()
    sent, achieved = paced_produce(bootstrap, FLOOR_TOPIC, _cycle(work.events), rate, seconds)
    time.sleep(1.0)
    reader.stop_event.set()
    reader.join(10)
    return {
        "sent": sent,
        "achieved_rate": achieved,
        **_latency_stats(reader.samples, started + WARMUP_SECONDS),
        "windows": _latency_windows(reader.samples, started + WARMUP_SECONDS),
    }


def _latency_met(r: dict[str, Any]) -> str:
    """Whether p99 is within 10 ms of the floor's, when the floor itself is a valid measurement.

    A floor whose bare producer could not keep the offered rate (another process took the cores)
    measured the machine, not the broker: its p99 says nothing, and "met" would be an accident. The
    same holds for the worker run's producer (the worker was then offered less than the rate).
    """
    for run, name in ((r.get("floor") or {}, "floor's"), (r.get("latency") or {}, "worker run's")):
        achieved = run.get("achieved_rate", r["rate"])
        if achieved < 0.95 * r["rate"]:
            return f"no verdict: the {name} producer reached {achieved:,.0f}/s of {r['rate']:,.0f}"
    return "yes" if r["p99_ms"] - r["floor_p99_ms"] <= 10 else "no"


def _window_rows(r: dict[str, Any]) -> list[str]:
    """The report's table of latency per window of the run (none for runs without windows)."""
    lat, flo = r["latency"].get("windows") or [], r["floor"].get("windows") or []
    if not lat or not flo:
        return []
    floor_at = {w["from_s"]: w for w in flo}
    hop_at = {w["from_s"]: w for w in (r["latency"].get("hops") or {}).get("windows", [])}
    split = " event → produced p99 / produced → read p99, ms |" if hop_at else ""
    rows = [
        "",
        f"Latency during the run at {r['rate']:,.0f} events/s, per {LATENCY_WINDOW_SECONDS:.0f} s after the "
        "warm-up (the embedded broker's fetches cost CPU in proportion to what its partitions already hold, "
        "so each run slows as its topics grow; the floor's topic grows the same way)"
        + (
            "; each push's latency is also split at its create time, into the worker's side (the input "
            "hop, the batch, the engine) and the output hop:"
            if hop_at
            else ":"
        ),
        "",
        f"| seconds | floor p50 / p99, ms | worker p50 / p99, ms | worker p99 − floor p99, ms |{split}",
        "|---|---|---|---|" + ("---|" if hop_at else ""),
    ]
    for w in lat:
        f = floor_at.get(w["from_s"])
        floor_cell = f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f}" if f else "–"
        gap = f"{w['p99_ms'] - f['p99_ms']:+.1f}" if f else "–"
        span = f"{w['from_s']:.0f}–{w['from_s'] + LATENCY_WINDOW_SECONDS:.0f}"
        row = f"| {span} | {floor_cell} | {w['p50_ms']:.1f} / {w['p99_ms']:.1f} | {gap} |"
        if hop_at:
            h = hop_at.get(w["from_s"])
            row += (
                f" {h['event_to_produce_p99_ms']:.1f} / {h['produce_to_read_p99_ms']:.1f} |" if h else " – |"
            )
        rows.append(row)
    return [*rows, ""]


def _hop_line(hops: dict[str, Any] | None) -> list[str]:
    """The report's line on where a push's latency is spent (none for runs without the split)."""
    if not hops or not hops["event_to_produce"].get("n"):
        return []
    a, b = hops["event_to_produce"], hops["produce_to_read"]
    return [
        f"- Split at each push's create time: event → produced (the input hop, the batch, the engine) "
        f"p50 / p99 {a['p50_ms']:.1f} / {a['p99_ms']:.1f} ms; produced → read (the output hop) "
        f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} ms."
    ]


def _high_rate_rows(high: dict[str, Any] | None) -> list[str]:
    """The report's rows for the second latency point (none when it was skipped)."""
    if not high:
        return []
    lat, floor = high["latency"], high["floor"]
    if not lat.get("n"):
        return [f"| p50 / p99 event→push at {high['rate']:,.0f} events/s | no push seen | | |"]
    behind = (
        f"; processed {lat['processed']:,} of {lat['sent']:,}, {lat['drained_after_s']:.1f} s after "
        "the producer stopped"
    )
    return [
        f"| p50 / p99 event→push, ms at {high['rate']:,.0f} events/s ({high['seconds']:.0f} s{behind})"
        f" | {lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} | | |",
        f"| floor p50 / p99 produce→consume, ms, {high['rate']:,.0f} events/s"
        f" | {floor.get('p50_ms', float('nan')):.1f} / {floor.get('p99_ms', float('nan')):.1f} | | |",
    ]


def measure_latency(
    bootstrap: str,
    model_dir: Path,
    work: Workload,
    workdir: Path,
    rate: float,
    seconds: float,
    drain_seconds: float = 120.0,
    name: str = "latency",
) -> dict[str, Any]:
    """Event→push latency through the worker at ``rate`` (see ``LATENCY_ENV``).

    After the producer stops, waits up to ``drain_seconds`` for the worker to process every event
    sent (``drained_after_s``: how long that took; ``processed`` < ``sent`` when it did not).
    """
    produce(bootstrap, "catalog", work.catalog)
    worker = WorkerProcess(
        bootstrap, workdir / f"state-{name}", model_dir, env=LATENCY_ENV, app_id=f"bench-{name}"
    ).start()
    reader = LatencyReader(bootstrap, "pushes", lambda raw: float(json.loads(raw)["event_ts"]))
    try:
        worker.wait_ready(120)
        time.sleep(2.5)  # two catalog ticks: every item is known before the first event
        reader.start()
        reader.ready.wait(15)
        started = time.time()
        sent, achieved = paced_produce(
            bootstrap, "events", _cycle(work.events), rate, seconds + WARMUP_SECONDS
        )
        produced_at = time.time()
        # A worker slower than the offered rate drains its backlog after the producer stops: wait for
        # it (bounded), so the pushes of the last events are measured too, not cut off.
        deadline = time.monotonic() + drain_seconds
        while worker.metric("kairos_events_total") < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_after = time.time() - produced_at
        time.sleep(1.5)
        reader.stop_event.set()
        reader.join(10)
        processed = worker.metric("kairos_events_total")
        outcomes = _outcomes(worker)
        stages = _stage_seconds(worker)
        batches = worker.metric("kairos_batch_events_count")
    finally:
        reader.stop_event.set()
        worker.stop()
    stats = _latency_stats(reader.samples, started + WARMUP_SECONDS)
    return {
        "sent": sent,
        "achieved_rate": achieved,
        "processed": int(processed),
        "pushes": len(reader.samples),
        "outcomes": outcomes,
        "mean_batch": processed / batches if batches else None,
        "stage_us_per_event": {k: 1e6 * v / max(processed, 1) for k, v in stages.items()},
        "drained_after_s": drained_after,
        **stats,
        "windows": _latency_windows(reader.samples, started + WARMUP_SECONDS),
        "hops": _hop_split(reader.hops, started + WARMUP_SECONDS),
    }


# --- profiles ----------------------------------------------------------------------------------

# (stage, substring of a frame "function (file)") in priority order: the first match names a sample.
STAGES: list[tuple[str, str]] = [
    ("start-up (imports)", "importlib._bootstrap"),
    ("metrics scrape (benchmark's own polling)", "web.py"),
    ("parse (stream.event_decoder, stream.contract)", "event_decoder.py"),
    ("parse (stream.event_decoder, stream.contract)", "contract.py"),
    ("GRU step (scorer.step)", "step (model/scorer.py"),
    ("scoring (scorer.interest/score)", "interest (model/scorer.py"),
    ("scoring (scorer.interest/score)", "score (model/scorer.py"),
    ("candidate gathering", "gather_candidates"),
    ("policy (decide, push building)", "stream/decider.py"),
    ("state encode/decode (UserRecords.load/save)", "save (stream/engine/users.py"),
    ("state encode/decode (UserRecords.load/save)", "load (stream/engine/users.py"),
    ("engine bookkeeping (rest of Engine.process)", "stream/engine/"),
    ("output + changelog produce/flush (BatchCommitter.commit)", "commit (stream/batch_commit.py"),
    ("metrics/lag bookkeeping in the agent", "_consume (stream/app.py"),
    ("timers/catalog tick", "_tick (stream/worker_tick.py"),
    ("recovery and startup", "_recover (stream/worker_recovery.py"),
    ("event loop in select() (waiting for I/O)", "select (selectors.py"),
    ("faust stream + aiokafka (take_events, fetch, decode)", "faust"),
    ("faust stream + aiokafka (take_events, fetch, decode)", "aiokafka"),
    ("faust stream + aiokafka (take_events, fetch, decode)", "mode/"),
    ("asyncio event loop", "asyncio"),
]


def summarise_py_spy(path: Path) -> dict[str, Any]:
    """Time shares per stage from py-spy's collapsed stacks (main thread vs all threads)."""
    per_stage: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        per_thread[thread] += count
        total += count
        rest = frames[1:]
        stage = "other"
        for name, needle in STAGES:
            if any(needle in f for f in rest):
                stage = name
                break
        per_stage[stage] += count
    return {
        "samples": total,
        "stages": dict(per_stage.most_common()),
        "threads": dict(per_thread.most_common(8)),
    }


class DictState:
    """An in-memory stand-in for the store transaction (``get``/``put``)."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes | None] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The staged or stored value."""
        return self.data.get((partition, key))

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Stage a value."""
        self.data[(partition, key)] = value


def profile_engine(
    model_dir: Path, work: Workload, batch: int = 512, only_plain: bool = False
) -> dict[str, Any]:
    """``Engine.process`` in-process on the events, in worker-sized batches: plain, then cProfile.

    ``only_plain``: the plain run alone, with the engine's own stage times and a SHA-256 of every
    stored row and push id (``--engine-only``: a change that must not alter decisions keeps it), and
    one of the push ids alone (``pushes_sha256``: the decisions, for a change that moves stored floats).
    """
    from model.scorer import IncrementalScorer
    from stream import gc_tuning
    from stream.engine import Engine, Inbound, Scorer, StateAccess
    from stream.partitioning import partition_for

    settings = get_settings().model_copy(deep=True)
    settings.worker.clock = "event"
    scorer = IncrementalScorer.load(model_dir, threads=1)
    gc_tuning.configure(settings.worker.gc_young_threshold)  # as the worker does (stream/gc_tuning.py)
    records = [Inbound("events", partition_for(k, 4), i, k, v) for i, (k, v) in enumerate(work.events)]
    catalog = [Inbound("catalog", 0, i, k, v) for i, (k, v) in enumerate(work.catalog)]

    stages: dict[str, float] = {}
    digest = hashlib.sha256()
    recorded: list[str] = []  # the recorded run's push ids

    def run(record: bool = False) -> float:
        engine = Engine(settings, cast(Scorer, scorer))
        engine.owned = {0, 1, 2, 3}
        store = DictState()
        state = cast(StateAccess, store)
        # As the worker's start-up read of the pre-produced topic: a bootstrap (versions by time, the
        # first holding from the start), so the engine alone decides exactly what the worker does.
        engine.apply_catalog(catalog, state, announce=False)
        gc_tuning.freeze_long_lived(settings.worker.gc_freeze)  # the worker freezes at catalog ready
        pushes: list[str] = []
        started = time.perf_counter()
        for i in range(0, len(records), batch):
            out = engine.process(records[i : i + batch], state)
            if record:
                pushes += [push.push_id for _, push in out.pushes]
                for stage, seconds in out.stage_seconds.items():
                    stages[stage] = stages.get(stage, 0.0) + seconds
        elapsed = time.perf_counter() - started
        if record:  # what the run decided and stored: equal digests, equal decisions and states
            # The user records name the model's version, which holds its training time: left out, so two
            # checkouts that each trained the same weights (the cache is per checkout) compare.
            version = scorer.version.encode()
            for (partition, key), value in sorted(store.data.items()):
                stored = (value or b"").replace(version, b"<model>")
                digest.update(b"%d\x1e%s\x1e%s\x1d" % (partition, key, stored))
            digest.update("\n".join(pushes).encode())
            recorded[:] = pushes
        return elapsed

    plain = run(record=True)
    if only_plain:
        n = len(records)
        return {
            "events": n,
            "batch": batch,
            "engine_us_per_event": 1e6 * plain / n,
            "engine_events_per_s": n / plain,
            "stage_us_per_event": {k: 1e6 * v / n for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
            "state_and_pushes_sha256": digest.hexdigest(),
            "pushes": len(recorded),
            # The pushes alone: the decisions, for a change that moves stored floats.
            "pushes_sha256": hashlib.sha256("\n".join(recorded).encode()).hexdigest(),
        }
    prof = cProfile.Profile()
    prof.enable()
    profiled = run()
    prof.disable()
    stats = pstats.Stats(prof)
    wanted = {
        "decode_event": ("stream/event_decoder.py", "decode_event"),
        "GRU step (scorer.step)": ("model/scorer.py", "step"),
        "scorer.interest": ("model/scorer.py", "interest"),
        "scorer.score": ("model/scorer.py", "score"),
        "gather_candidates": ("stream/candidates.py", "gather_candidates"),
        "policy (Decider.decide)": ("stream/decider.py", "decide"),
        "state decode (UserRecords.load)": ("stream/engine/users.py", "load"),
        "state encode (UserRecords.save)": ("stream/engine/users.py", "save"),
        "catalog apply (not per event)": ("stream/engine/core.py", "apply_catalog"),
        "Engine.process (all)": ("stream/engine/core.py", "process"),
    }
    n = len(records)
    found: dict[str, float] = {}
    raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for label, (file_part, func) in wanted.items():
        cum = sum(v[3] for (fname, _, fn), v in raw_stats.items() if fn == func and fname.endswith(file_part))
        found[label] = 1e6 * cum / n
    top = sorted(((v[2], f"{Path(k[0]).name}:{k[1]}:{k[2]}") for k, v in raw_stats.items()), reverse=True)[
        :15
    ]
    return {
        "events": n,
        "engine_us_per_event": 1e6 * plain / n,
        "engine_events_per_s": n / plain,
        "profiled_us_per_event": 1e6 * profiled / n,
        "cumulative_us_per_event_under_cprofile": found,
        "top_self_time_us_per_event": [(name, 1e6 * t / n) for t, name in top],
    }


# --- figures -------------------------------------------------------------------------------------


def draw_figures(r: dict[str, Any], out: Path) -> list[tuple[str, Path]]:
    """PNGs of one run's results: throughput per stage, the per-event budget, latency percentiles."""
    from benchmarks import plots

    t, c = r["throughput"], r["ceiling"]
    drawn: list[tuple[str, Path]] = []

    fig, ax = plots.figure(8.0, 3.6)
    stages = [
        ("pre-produce (tests' producer)", t.get("produce_events_per_s"), plots.OTHER),
        ("bare consume", c.get("consume_only_events_per_s"), plots.OTHER),
        ("bare consume + decode_event (ceiling)", r["ceiling_events_per_s"], plots.OTHER),
        ("worker, live-paced event times", r["events_per_s"], plots.OURS),
        ("worker, dataset's own event times", r.get("replay_events_per_s"), plots.OURS),
    ]
    compared = r.get("compared")
    if compared:
        stages.append(
            (f"worker, {compared['input_reader']} input (same run)", compared["events_per_s"], plots.OTHER)
        )
    shown = [(label, float(v), col) for label, v, col in stages if v is not None]
    plots.hbars(ax, [s[0] for s in shown], [s[1] for s in shown], [s[2] for s in shown])
    ax.set_xscale("log")
    ax.axvline(50_000, color="tab:red", linestyle="--", linewidth=1, label="goal: 50,000 events/s")
    ax.set_xlabel("events per second (log scale)")
    ax.set_title("Throughput per stage (one worker process, embedded broker)")
    ax.legend(fontsize=8, loc="lower right")
    drawn.append(("Throughput per stage", plots.save(fig, out / "stream_throughput-stages.png")))

    per_event = 1e6 / r["events_per_s"]
    per_stage = {k: float(v) for k, v in (t.get("stage_us_per_event") or {}).items()}
    budget = [("all (1 / events_per_s)", per_event, plots.OURS)]
    budget += [(f"stage: {k}", v, plots.OTHER) for k, v in per_stage.items()]
    if per_stage:
        budget.append(("in no stage (loop, lag, metrics)", per_event - sum(per_stage.values()), plots.OTHER))
    else:  # a run from before the worker timed its stages
        in_batch = float(t["engine_and_commit_us_per_event"])
        budget += [("in the batch", in_batch, plots.OTHER), ("outside it", per_event - in_batch, plots.OTHER)]
    fig, ax = plots.figure(8.0, 0.9 + 0.32 * len(budget))
    plots.hbars(ax, [b[0] for b in budget], [b[1] for b in budget], [b[2] for b in budget])
    ax.set_xlabel("µs per event")
    ax.set_title("Time per live-paced event in the worker, by stage")
    drawn.append(("Per-event time budget", plots.save(fig, out / "stream_throughput-budget.png")))

    lat, flo = r["latency"], r["floor"]
    names = ["p50", "p90", "p99", "max"]
    series = {
        "worker event→push": [float(lat.get(f"{n}_ms", float("nan"))) for n in names],
        "broker floor produce→consume": [float(flo.get(f"{n}_ms", float("nan"))) for n in names],
    }
    fig, ax = plots.figure(7.5, 3.8)
    plots.grouped_bars(ax, names, series)
    goal = r["floor_p99_ms"] + 10.0
    ax.axhline(
        goal, color="tab:red", linestyle="--", linewidth=1, label=f"p99 goal: floor p99 + 10 ms = {goal:.1f}"
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency, ms")
    ax.set_title(f"Latency at {r['rate']:,.0f} events/s offered ({lat.get('n', 0):,} worker samples)")
    drawn.append(("Latency percentiles", plots.save(fig, out / "stream_throughput-latency.png")))

    if lat.get("windows") and flo.get("windows"):  # runs from before 2026-12-04 have none
        fig, ax = plots.figure(7.5, 3.8)
        for label, run, color in (("worker event→push", lat, plots.OURS), ("broker floor", flo, plots.OTHER)):
            xs = [w["from_s"] + LATENCY_WINDOW_SECONDS / 2 for w in run["windows"]]
            ax.plot(xs, [w["p99_ms"] for w in run["windows"]], color=color, marker="o", label=f"{label}, p99")
            ax.plot(
                xs, [w["p50_ms"] for w in run["windows"]], color=color, linestyle=":", label=f"{label}, p50"
            )
        ax.set_yscale("log")
        ax.set_xlabel(f"seconds after the warm-up ({LATENCY_WINDOW_SECONDS:.0f} s windows)")
        ax.set_ylabel("latency, ms (log scale)")
        ax.set_title(f"Latency during the run at {r['rate']:,.0f} events/s (the broker's topics grow)")
        ax.legend(fontsize=8, loc="upper left")
        drawn.append(("Latency during the run", plots.save(fig, out / "stream_throughput-latency-time.png")))
    return drawn


# --- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def reading(r: dict[str, Any]) -> list[str]:
    """The per-event budget of the live-paced run, split with this run's own figures."""
    t = r["throughput"]
    per_event = 1e6 / r["events_per_s"]
    in_batch = t["engine_and_commit_us_per_event"]
    per_stage = t.get("stage_us_per_event") or {}
    lines: list[str] = []
    if per_stage:
        ranked = sorted(per_stage.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{k} {v:.0f}" for k, v in ranked)
        lines.append(
            f"- Per event the worker spends {per_event:.0f} µs (1 / events_per_s), with "
            f"`input_reader={r.get('input_reader', 'faust')}` and a mean batch of "
            f"{t['mean_batch'] or 0:.0f} events. The worker's own `kairos_stage_seconds_total` splits "
            f"it, in µs per event: {listed}; {per_event - sum(per_stage.values()):.0f} µs are in no "
            "stage (the event loop, lag bookkeeping, metrics, waiting for the broker)."
        )
    else:
        lines.append(
            f"- Per event the worker spends {per_event:.0f} µs (1 / events_per_s). Of that, "
            f"{in_batch:.0f} µs are inside the batch (`kairos_event_processing_seconds`), and "
            f"{per_event - in_batch:.0f} µs outside it."
        )
    compared = r.get("compared")
    if compared:
        lines.append(
            f"- The same live-paced run with `input_reader={compared['input_reader']}`: "
            f"{compared['events_per_s']:,.0f} events/s, mean batch {compared['mean_batch'] or 0:.0f} "
            f"(this run's `{r.get('input_reader')}`: {r['events_per_s']:,.0f})."
        )
    eng = (r.get("profile") or {}).get("engine")
    if eng:
        e = eng["engine_us_per_event"]
        lines.append(
            f"- `Engine.process` alone costs {e:.0f} µs/event in-process, so about "
            f"{in_batch - e:.0f} µs/event of the batch is `_commit` (produce, flush the pushes, "
            "produce and flush the changelog, write "
            f"RocksDB) and the smaller batches the worker sees (mean {t['mean_batch'] or 0:.0f} events, "
            "not the 512 of the in-process run)."
        )
        scale = e / max(eng["profiled_us_per_event"], 1e-9)
        parts = eng["cumulative_us_per_event_under_cprofile"]
        inside = ", ".join(
            f"{k} ≈ {v * scale:.0f}"
            for k, v in parts.items()
            if k not in ("Engine.process (all)", "catalog apply (not per event)")
        )
        lines.append(
            f"- Inside the engine (cProfile figures scaled by {scale:.2f} to the unprofiled time, "
            f"µs/event): {inside}; the rest of the engine's per-event bookkeeping (rounds, feedback, "
            "engagement, co-visitation, trending, timers) makes up the difference."
        )
    lat = r["latency"]
    share = lat["pushes"] / max(lat["sent"], 1)
    lat_stages = lat.get("stage_us_per_event") or {}
    capacity = 1e6 / sum(lat_stages.values()) if lat_stages else None
    if capacity is not None and capacity < r["rate"]:
        largest = sorted(lat_stages.items(), key=lambda kv: -kv[1])[:5]
        top_stages = ", ".join(f"{k} {v:.0f}" for k, v in largest)
        latency = (
            f"- Latency: with the latency settings (every event may be decided; {share:.0%} of the events "
            f"pushed) the worker's stages add up to {sum(lat_stages.values()):.0f} µs per event, a capacity "
            f"of about {capacity:,.0f} events/s, below the {r['rate']:,.0f}/s offered: it fell behind, and "
            "p50 and p99 measure the queue that grew during the run, not the broker floor. The largest "
            f"stages there, µs per event: {top_stages} (mean batch {lat.get('mean_batch') or 0:.0f})."
        )
    elif r["rate"] > r["events_per_s"]:
        latency = (
            f"- Latency: {r['rate']:,.0f} events/s is more than this worker's throughput "
            f"({r['events_per_s']:,.0f} events/s in this run), so it fell behind: p50 and p99 measure "
            "the queue that grew during the run, not the broker floor. A `--rate` below the throughput "
            "separates the two."
        )
    else:
        latency = (
            f"- Latency: at {r['rate']:,.0f} events/s the worker ran below its throughput; the latency "
            f"settings push on about {share:.0%} of the events, and the benchmark's producer and consumer "
            "and the broker share the same 2 cores, so part of p50 and p99 is queueing on those cores."
        )
    lines += [
        latency,
        "",
        "Found while building this benchmark (2026-11-22), both fixed since: `ForwardDecay.at` overflowed "
        "for a time far before its landmark (a valid far-future `ts` crashed the agent; it now reads as the "
        "landmark), and `TrendingItems.top` recomputed its list whenever event time moved 30 s either way "
        "(it now refreshes on the write path, at most once per 32 observations).",
    ]
    return lines


def write_report(
    result: dict[str, Any], command: str, report: Path = REPORT, figures: list[tuple[str, Path]] | None = None
) -> None:
    """Write the markdown report (default ``benchmarks/reports/stream_throughput.md``)."""
    from benchmarks.plots import markdown_images

    r = result
    t, c, lat, flo = r["throughput"], r["ceiling"], r["latency"], r["floor"]
    m = r["machine"]
    lines = [
        "# Stream worker throughput and event→push latency",
        "",
        f"Command: `{command}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(r['started_at']))}, "
        f"{r['wall_seconds']:.0f} s wall.  ",
        f"Machine: {m['cpu']}, {m['cores']} cores shared with other work (load average at start "
        f"{m['load_avg_at_start']}), Python {m['python']}, embedded Tansu broker (memory storage).",
        "",
        "## Figures",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
        f"| events_per_s (one worker process, live-paced event times) | {r['events_per_s']:,.0f} "
        "| ≥ 50,000 | "
        f"{'yes' if r['events_per_s'] >= 50_000 else 'no'} |",
        f"| replay_events_per_s (same events, the dataset's own"
        f" times) | {r['replay_events_per_s']:,.0f} | | |",
        *(
            [
                f"| events_per_s with input_reader={r['compared']['input_reader']} (same run, same events) "
                f"| {r['compared']['events_per_s']:,.0f} | | |"
            ]
            if r.get("compared")
            else []
        ),
        f"| ceiling_events_per_s (bare consume + decode_event) | {r['ceiling_events_per_s']:,.0f} | | |",
        f"| ratio events_per_s / ceiling | {r['ratio']:.3f} |"
        f" ≥ 0.25 | {'yes' if r['ratio'] >= 0.25 else 'no'} |",
        f"| p50 / p99 event→push, ms at {r['rate']:,.0f} events/s"
        f" | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | | |",
        f"| floor p50 / p99 produce→consume, ms, same rate | {r['floor_p50_ms']:.1f}"
        f" / {r['floor_p99_ms']:.1f} | | |",
        f"| p99 − floor p99, ms | {r['p99_ms'] - r['floor_p99_ms']:.1f} | ≤ 10 | {_latency_met(r)} |",
        *_high_rate_rows(r.get("high_rate")),
        "",
        *(["## Pictures", "", *markdown_images(figures, report)] if figures else []),
        "## Details",
        "",
        f"- Workload: {t['events']:,} events = {r['n_dataset']:,} real `retailrocket-sample` events "
        f"(moved to 2026) merged in time order with {r['n_simulated']:,} simulated ones "
        f"(seed {SIM_CONFIG.seed}); "
        f"{r['n_catalog']:,} catalog entries produced first.",
        f"- Live-paced run: event times {1e6 / r['pace']:.0f} µs apart "
        f"({r['pace']:,.0f} events/s of event time)."
        f" Replay run: {r['throughput_replay']['window_s']:.2f} s window, outcomes "
        f"{r['throughput_replay']['outcomes']}, pushes {r['throughput_replay']['pushes']}, worker-side "
        f"{r['throughput_replay']['engine_and_commit_us_per_event']:.0f} µs/event, mean batch "
        f"{r['throughput_replay']['mean_batch'] or 0:.0f}.",
        f"- Throughput window {t['window_s']:.2f} s; excluded before it: {t['excluded_startup_s']:.1f} s of "
        f"start-up (process start, group join, recovery, model load, first fetch) and the "
        f"{t['excluded_events']:,} events processed by the first poll that saw any.",
        f"- Outcomes in the throughput run: {t['outcomes']}; pushes {t['pushes']}; mean batch "
        f"{t['mean_batch'] or 0:.0f} events; the worker's own `kairos_event_processing_seconds` "
        f"(engine + produce/flush + RocksDB per batch) averages"
        f" {t['engine_and_commit_us_per_event']:.0f} µs/event.",
        *(
            [
                f"- State: {t['changelog_records_per_event']:.2f} changelog records and "
                f"{t['changelog_bytes_per_event']:,.0f} bytes per event ({t['user_records_per_event']:.2f} "
                f"user records per event, {t['bytes_per_user_record'] or 0:,.0f} bytes per user record; the "
                "rest are the partitions' index rows and offsets)."
            ]
            if "changelog_bytes_per_event" in t
            else []
        ),
        f"- Pre-produce rate (tests' producer, linger 2 ms): {t['produce_events_per_s']:,.0f} events/s; "
        f"bare consume without parsing: {c['consume_only_events_per_s']:,.0f} events/s.",
        f"- Latency run: {lat['sent']:,} events offered at {lat['achieved_rate']:,.0f}/s, "
        f"{lat['pushes']:,} pushes, {lat['n']:,} samples after the {WARMUP_SECONDS:.0f} s warm-up; "
        f"p90 {lat.get('p90_ms', 0):.1f} ms, max {lat.get('max_ms', 0):.1f} ms. Outcomes: {lat['outcomes']}.",
        *_hop_line(lat.get("hops")),
        f"- Floor run: {flo['sent']:,} events at {flo['achieved_rate']:,.0f}/s, {flo['n']:,} samples; "
        f"p90 {flo.get('p90_ms', 0):.1f} ms, max {flo.get('max_ms', 0):.1f} ms.",
        *_window_rows(r),
        "",
        "## How it is measured",
        "",
        "See the module docstring of `benchmarks/stream_throughput.py`. In short: phase A pre-produces the",
        "catalog and the events, starts `python -m stream.cli worker`, and polls `/metrics` every 0.5 s;",
        "the window opens at the first poll that sees a processed event and closes at the worker's",
        "`kairos_last_event_timestamp_seconds` once `kairos_events_total` reaches N. The throughput worker",
        "runs production defaults except `KAIROS_WORKER__CLOCK=event` (decisions follow event times).",
        "Phase B uses a fresh broker; the floor and the worker latency are measured one after the other at",
        "the same offered rate, the worker with these settings:",
        "",
        "```",
        *[f"{k}={v}" for k, v in LATENCY_ENV.items()],
        "```",
        "",
        "The floor and the worker latency run on the same broker instance, one after the other.",
        "The event→push path crosses the broker twice (events → worker, worker → pushes), so the",
        "pipeline's floor is about twice the single-hop floor reported here; the goal compares with the",
        "single-hop floor as specified. The floor's consumer and the pushes reader wait at most",
        f"{FETCH_WAIT_MS} ms per fetch (the floor's best); the worker reads with the production default",
        f"(`KAIROS_KAFKA__FETCH_MAX_WAIT_MS`, {Settings().kafka.fetch_max_wait_ms} ms: the README's Input",
        "section says why).",
    ]
    prof = r.get("profile")
    if prof:
        lines += ["", "## Where the time goes", ""]
        for title, eng in (
            ("live-paced event times", prof.get("engine")),
            ("the dataset's own event times", prof.get("engine_replay")),
        ):
            if not eng:
                continue
            lines += [f"### Engine alone, {title}", ""]
            lines += [
                f"`Engine.process` alone, in-process, batches of 512, dict-backed state: "
                f"{eng['engine_us_per_event']:.0f} µs/event ({eng['engine_events_per_s']:,.0f} events/s); "
                f"under cProfile {eng['profiled_us_per_event']:.0f}"
                f" µs/event. Cumulative µs/event under cProfile:",
                "",
                "| part | µs/event (cProfile) |",
                "|---|---|",
                *[f"| {k} | {v:.1f} |" for k, v in eng["cumulative_us_per_event_under_cprofile"].items()],
                "",
                "Top self time (µs/event under cProfile): "
                + "; ".join(f"`{n}` {v:.1f}" for n, v in eng["top_self_time_us_per_event"][:10]),
                "",
            ]
        spy = prof.get("py_spy")
        if spy:
            total = max(spy["samples"], 1)
            lines += [
                f"py-spy on the worker process during phase A ({spy['samples']:,} samples at 200 Hz, "
                "all Python threads, idle excluded):",
                "",
                "| stage | share of samples |",
                "|---|---|",
                *[f"| {k} | {100 * v / total:.1f} % |" for k, v in spy["stages"].items()],
                "",
                "Threads: " + "; ".join(f"{k} {100 * v / total:.0f} %" for k, v in spy["threads"].items()),
            ]
    notes = reading(r)
    if notes:
        lines += ["", "## Reading", "", *notes]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a summary (and with ``--json`` one JSON object as the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Print one JSON object as the last line.")
    parser.add_argument(
        "--events",
        type=int,
        default=60_000,
        help="Events for the throughput phase (a window of several seconds).",
    )
    parser.add_argument(
        "--pace", type=float, default=50_000.0, help="Event-time spacing (events/s) of the live-paced run."
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="Offered rate of the latency phase.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of each latency measurement.")
    parser.add_argument(
        "--high-rate",
        type=float,
        default=10_000.0,
        help="A second latency point (floor and worker) at this offered rate; 0 skips it.",
    )
    parser.add_argument(
        "--high-seconds", type=float, default=5.0, help="Length of each measurement at --high-rate."
    )
    parser.add_argument(
        "--profile", action="store_true", help="Also profile (py-spy on the worker, cProfile)."
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary for --profile.")
    parser.add_argument("--no-report", action="store_true", help="Do not write the markdown report.")
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="Only the engine in-process on the live-paced events (no broker, no report): µs per event "
        "per stage and a digest of the states and pushes, in seconds.",
    )
    parser.add_argument(
        "--input-reader",
        choices=("bulk", "faust"),
        default="bulk",
        help="How the measured worker reads its inputs (KAIROS_WORKER__INPUT_READER).",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="Skip phase A with the other input reader (run by default, for the README's choice).",
    )
    parser.add_argument(
        "--out", type=Path, default=REPORT.parent, help="Report folder (default benchmarks/reports)."
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="Write the report and figures again from a run's stream_throughput.json (nothing is run).",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/stream_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        publish(saved["result"], saved["command"], args.out)
        return 0

    random.seed(0)
    started = time.time()
    reader_env = {"KAIROS_WORKER__INPUT_READER": args.input_reader}
    LATENCY_ENV.update(reader_env)
    other = "faust" if args.input_reader == "bulk" else "bulk"
    settings = get_settings()
    mach = machine()
    model_dir = ensure_model(settings)
    work = build_workload(settings, args.events)
    live = live_paced(work, args.pace)
    if args.engine_only:
        timing = profile_engine(model_dir, live, only_plain=True)
        engine_only = {"command": command, "machine": mach, **timing}
        print(json.dumps(engine_only) if args.json else json.dumps(engine_only, indent=1))
        return 0
    # Enough distinct events for the latency run (it repeats them, renamed, when it needs more).
    offered = build_workload(settings, int(args.rate * (args.seconds + WARMUP_SECONDS)))
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    profile: dict[str, Any] = {}
    spy_out = workdir / "py-spy.txt" if args.profile and args.py_spy else None
    try:
        with EmbeddedBroker() as broker:
            ensure_topics(settings_for(broker.bootstrap))
            _say(f"[bench] phase A: {len(live.events):,} live-paced events through the worker")
            thr = measure_throughput(
                broker.bootstrap, model_dir, live, workdir, args.py_spy, spy_out, reader_env
            )
            _say(f"[bench] worker {thr['events_per_s']:,.0f} events/s; ceiling read")
            ceil = measure_ceiling(broker.bootstrap, "events", len(live.events))
        compared: dict[str, Any] | None = None
        if not args.no_compare:
            with EmbeddedBroker() as broker:
                ensure_topics(settings_for(broker.bootstrap))
                _say(f"[bench] phase A with input_reader={other}")
                compared = measure_throughput(
                    broker.bootstrap,
                    model_dir,
                    live,
                    workdir / other,
                    None,
                    None,
                    {"KAIROS_WORKER__INPUT_READER": other},
                )
                _say(f"[bench] worker ({other} input) {compared['events_per_s']:,.0f} events/s")
        with EmbeddedBroker() as broker:
            ensure_topics(settings_for(broker.bootstrap))
            _say(f"[bench] phase A': {len(work.events):,} events with the dataset's own times")
            replayed = measure_throughput(
                broker.bootstrap, model_dir, work, workdir / "replay", None, None, reader_env
            )
            _say(f"[bench] worker {replayed['events_per_s']:,.0f} events/s with replay timestamps")
        offered_high = (
            build_workload(settings, int(args.high_rate * (args.high_seconds + WARMUP_SECONDS)))
            if args.high_rate > 0
            else None
        )
        # The paced producer and the latency readers are threads of this process, which holds the
        # workloads (millions of objects): a full collection over them stalled the producer below the
        # offered rate. Freeze what exists now (phase C's workload included), so collections during
        # phases B and C skip it.
        gc.collect()
        gc.freeze()
        with EmbeddedBroker() as broker:
            ensure_topics(settings_for(broker.bootstrap))
            _create_topic(broker.bootstrap, FLOOR_TOPIC, settings.topics.partitions)
            _say(f"[bench] phase B: floor at {args.rate:,.0f}/s for {args.seconds:.0f} s")
            floor = measure_floor(broker.bootstrap, offered, args.rate, args.seconds)
            _say(f"[bench] phase B: worker latency at {args.rate:,.0f}/s for {args.seconds:.0f} s")
            lat = measure_latency(broker.bootstrap, model_dir, offered, workdir, args.rate, args.seconds)
        high: dict[str, Any] | None = None
        if offered_high is not None:
            with EmbeddedBroker() as broker:
                ensure_topics(settings_for(broker.bootstrap))
                _create_topic(broker.bootstrap, FLOOR_TOPIC, settings.topics.partitions)
                _say(f"[bench] phase C: floor and worker latency at {args.high_rate:,.0f}/s")
                high = {
                    "rate": args.high_rate,
                    "seconds": args.high_seconds,
                    "floor": measure_floor(broker.bootstrap, offered_high, args.high_rate, args.high_seconds),
                    "latency": measure_latency(
                        broker.bootstrap,
                        model_dir,
                        offered_high,
                        workdir,
                        args.high_rate,
                        args.high_seconds,
                        name="latency-high",
                    ),
                }
        if args.profile:
            if spy_out is not None and spy_out.exists():
                profile["py_spy"] = summarise_py_spy(spy_out)
                shutil.copy(spy_out, CACHE / "last-py-spy.txt")  # raw stacks for a closer look
            _say("[bench] profiling Engine.process in-process")
            profile["engine"] = profile_engine(model_dir, live)
            profile["engine_replay"] = profile_engine(model_dir, work)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result: dict[str, Any] = {
        "events_per_s": thr["events_per_s"],
        "ceiling_events_per_s": ceil["ceiling_events_per_s"],
        "ratio": thr["events_per_s"] / ceil["ceiling_events_per_s"],
        "p50_ms": lat.get("p50_ms", float("nan")),
        "p99_ms": lat.get("p99_ms", float("nan")),
        "floor_p50_ms": floor.get("p50_ms", float("nan")),
        "floor_p99_ms": floor.get("p99_ms", float("nan")),
        "rate": args.rate,
        "latency_samples": lat.get("n", 0),
        "n_dataset": work.n_dataset,
        "n_simulated": work.n_simulated,
        "n_catalog": len(work.catalog),
        "replay_events_per_s": replayed["events_per_s"],
        "pace": args.pace,
        "throughput": thr,
        "throughput_replay": replayed,
        "input_reader": args.input_reader,
        "compared": None if compared is None else {"input_reader": other, **compared},
        "ceiling": ceil,
        "latency": lat,
        "floor": floor,
        "high_rate": high,
        "machine": mach,
        "model_dir": str(model_dir),
        "started_at": started,
        "wall_seconds": time.time() - started,
    }
    if profile:
        result["profile"] = profile
    print(
        f"events_per_s {result['events_per_s']:,.0f}  ceiling {result['ceiling_events_per_s']:,.0f}  "
        f"ratio {result['ratio']:.3f}\n"
        f"event->push p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms "
        f"(floor p50 {result['floor_p50_ms']:.1f} p99 {result['floor_p99_ms']:.1f}) at {args.rate:,.0f}/s, "
        f"{result['latency_samples']} samples",
        flush=True,
    )
    if not args.no_report:
        args.out.mkdir(parents=True, exist_ok=True)
        # The raw results first: the report and figures can be redrawn from them (--from-json).
        saved = {"command": command.strip(), "result": result}
        (args.out / "stream_throughput.json").write_text(json.dumps(saved, default=str, indent=1) + "\n")
        publish(result, command.strip(), args.out)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def publish(result: dict[str, Any], command: str, out: Path) -> Path:
    """Draw the figures and write the markdown report that links them, both under ``out``."""
    report = out / REPORT.name
    figures = draw_figures(result, out)
    write_report(result, command, report, figures)
    _say(f"[bench] report: {report} ({len(figures)} figures)")
    return report


if __name__ == "__main__":
    sys.exit(main())
