"""Phases B and C of the stream worker benchmark: event→push latency through the worker at a fixed
offered rate (:func:`measure_latency`) and the broker's own produce→consume floor at the same rate
(:func:`measure_floor`), with the paced producer, the reader thread and the percentiles (overall, per
window of the run, and split at each push's create time).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.throughput.config import (
    FETCH_WAIT_MS,
    FLOOR_TOPIC,
    LATENCY_ENV,
    LATENCY_WINDOW_SECONDS,
    WARMUP_SECONDS,
)
from benchmarks.throughput.throughput_phase import _outcomes, _stage_seconds
from benchmarks.throughput.workload import Workload, _stamped
from tests.support.worker import WorkerProcess, produce, producer, settings_for


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
