"""Phase A of the stream worker benchmark: events per second through the worker process on
pre-produced events (:func:`measure_throughput`, the worker optionally under py-spy), and the parse
ceiling of a bare consumer running the worker's own decoder (:func:`measure_ceiling`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.throughput.config import FETCH_WAIT_MS, POLL_SECONDS, ROOT, THROUGHPUT_ENV
from benchmarks.throughput.workload import Workload
from stream.event_decoder import decode_event
from stream.partition_rows import INTEREST_PREFIX, ITEM_PREFIX, META_ROW
from stream.store import META_KEY
from tests.support.worker import WorkerProcess, produce, read_topic, settings_for


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
    """Pre-produce, start the worker, time the first to the last processed event.

    See the docstring of ``benchmarks/stream_throughput.py``.
    """
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
        loads = worker.metric_by("kairos_user_record_loads_total", "source")
    finally:
        worker.stop()
    assert t0 is not None and c0 is not None
    window = max(t_last - t0, 1e-6)
    changelog = read_topic(bootstrap, "bench-throughput-user-state-changelog", timeout=30)
    user_records = [m for m in changelog if m.key() and not m.key().startswith(b"\x00")]
    kinds = Counter(row_kind(m.key() or b"") for m in changelog)
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
        "changelog_records_per_event_by_kind": {kind: count / n for kind, count in sorted(kinds.items())},
        "bytes_per_user_record": (
            sum(len(m.value() or b"") for m in user_records) / len(user_records) if user_records else None
        ),
        # User records loaded per event (kairos_user_record_loads_total): kept warm, read from the store.
        "user_loads_per_event": {source: loads.get(source, 0.0) / n for source in ("warm", "store")},
        # The worker's own kairos_stage_seconds_total, over every event (start-up batches included).
        "stage_us_per_event": {k: 1e6 * v / n for k, v in stages.items()},
    }


# The changelog's records by what they hold (stream.partition_rows, stream.store): first match wins.
ROW_KINDS: tuple[tuple[str, bytes], ...] = (
    ("item rows", ITEM_PREFIX),
    ("interest rows", INTEREST_PREFIX),
    ("partition meta", META_ROW),
    ("store meta", META_KEY),
    ("other partition rows", b"\x00"),
)


def row_kind(key: bytes) -> str:
    """What a changelog record holds, by its key: a user record or one of :data:`ROW_KINDS`."""
    for kind, prefix in ROW_KINDS:
        if key.startswith(prefix):
            return kind
    return "user records"


def _stage_seconds(worker: WorkerProcess) -> dict[str, float]:
    """``kairos_stage_seconds_total`` per stage, in the worker's order (stream.outcome.STAGES)."""
    from stream.outcome import STAGES

    found = worker.metric_by("kairos_stage_seconds_total", "stage")
    return {stage: found[stage] for stage in STAGES if stage in found}


def _outcomes(worker: WorkerProcess) -> dict[str, int]:
    found = worker.metric_by("kairos_events_total", "outcome")
    return {k: int(v) for k, v in found.items() if v}


def measure_ceiling(bootstrap: str, topic: str, n: int, passes: int = 3) -> dict[str, Any]:
    """A bare confluent-kafka loop: consume the whole topic and parse every record (first to last).

    The median of ``passes`` reads, each from the beginning with a new group: one read of the
    benchmark's 60,000 events takes a quarter of a second, short enough for one scheduling pause on two
    shared cores to halve it (one pass gave 366,435 and 189,388 events/s in two runs of one day).
    """

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

    parsed = [read(parse=True) for _ in range(passes)]
    bare = [read(parse=False) for _ in range(passes)]
    return {
        "ceiling_events_per_s": statistics.median(parsed),
        "consume_only_events_per_s": statistics.median(bare),
        "ceiling_passes": parsed,
        "consume_only_passes": bare,
    }
