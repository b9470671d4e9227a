"""Integration-test support: a real worker process on the embedded broker, a small trained model, topic I/O.

Nothing here mocks Kafka: the broker is Tansu, the worker is ``python -m stream.cli worker`` in its
own process, the model is trained for real on simulated events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream.broker import free_port
from stream.contract import Push, to_json_bytes
from stream.policy_config import PolicyConfig
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# Settings for tests: event-time clock (deterministic), no holdout, quick timers. Most integration
# tests watch the worker through its in-session pushes, so the production rule that holds every push
# until the shopper has left (and session-end decisions, and send time) is off here; the tests about
# those rules (tests/integration/test_session_end.py) switch them back on.
# The production defaults of the rules TEST_ENV switches off: benchmarks measure the real thing.
PRODUCTION_DECISIONS: dict[str, str] = {
    "KAIROS_POLICY__ACTIVE_WINDOW_SECONDS": str(PolicyConfig.model_fields["active_window_seconds"].default),
    "KAIROS_POLICY__SESSION_END_SECONDS": str(PolicyConfig.model_fields["session_end_seconds"].default),
    "KAIROS_POLICY__SEND_TIME_ENABLED": str(PolicyConfig.model_fields["send_time_enabled"].default).lower(),
}
TEST_ENV: dict[str, str] = {
    "KAIROS_WORKER__CLOCK": "event",
    "KAIROS_WORKER__TICK_SECONDS": "0.2",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.01",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.0",
    "KAIROS_POLICY__ACTIVE_WINDOW_SECONDS": "0",
    "KAIROS_POLICY__SESSION_END_SECONDS": "0",
    "KAIROS_POLICY__SEND_TIME_ENABLED": "false",
    "KAIROS_LOG__LEVEL": "INFO",
}


def train_small_model(out: Path, n_events: int = 30_000, seed: int = 7, content: bool = False) -> Path:
    """Train a small real GRU model on simulated shop events (a few seconds); returns ``out``.

    ``content``: also fit the content mapping (``--items``) on the simulated shop's catalog, so the
    model can place items it never saw from their title and category.
    """
    from model.cli import train_main
    from stream.simulator import SimConfig, World, write_jsonl

    out.parent.mkdir(parents=True, exist_ok=True)
    events = out.parent / f"events-{seed}.jsonl"
    sim = SimConfig(seed=seed, n_users=1500, n_items=600)
    write_jsonl(events, n_events, sim)
    extra: list[str] = []
    if content:
        items = out.parent / f"items-{seed}.jsonl"
        items.write_bytes(b"".join(to_json_bytes(c) + b"\n" for c in World(sim).initial_catalog()))
        extra = ["--items", str(items)]
    config = out.parent / "train.json"
    config.write_text(
        json.dumps(
            {
                "embedding_size": 32,
                "hidden_size": 32,
                "n_negatives": 128,
                "batch_size": 128,
                "epochs": 2,
                "patience": 1,
                "max_valid_cases": 1000,
                "threads": 1,
                # The worker runs the same kind of model as the demo: with session memory.
                "session_window": 10,
                "window_decay": 0.9,
                "repeat_bonus": 2.0,
                "neighbour_weight": 0.3,
                "neighbour_backward": 0.5,
            }
        )
    )
    code = train_main(
        [
            "--train",
            str(events),
            "--train-format",
            "events",
            "--out",
            str(out),
            "--config",
            str(config),
            *extra,
        ]
    )
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    return out


class WorkerProcess:
    """``kairos worker`` as a child process with its own state dir and web port."""

    def __init__(
        self,
        bootstrap: str,
        state_dir: Path,
        model_dir: Path,
        env: dict[str, str] | None = None,
        app_id: str = "kairos-test",
        log_path: Path | None = None,
    ) -> None:
        self.web_port = free_port()
        self.log_path = log_path or state_dir / f"worker-{self.web_port}.log"
        self.env = {
            **os.environ,
            **TEST_ENV,
            "KAIROS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "KAIROS_WORKER__STATE_DIR": str(state_dir),
            "KAIROS_WORKER__WEB_PORT": str(self.web_port),
            "KAIROS_WORKER__WEB_HOST": "127.0.0.1",
            "KAIROS_WORKER__APP_ID": app_id,
            "KAIROS_MODEL__DIR": str(model_dir),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str) -> tuple[int, str]:
        """HTTP GET on the worker's web port: (status, body); (0, "") when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until /readyz answers 200 (recovery done, model loaded, broker answering)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; log: {self.tail_log()}")
            status, _ = self.get("/readyz")
            if status == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready within {timeout}s; log: {self.tail_log()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching ``labels`` from the live /metrics."""
        _, body = self.get("/metrics")
        return metric_sum(body, name, **labels)

    def metric_by(self, name: str, label: str) -> dict[str, float]:
        """A metric's samples summed per value of one label, from the live /metrics."""
        _, body = self.get("/metrics")
        found: dict[str, float] = {}
        needle = f'{label}="'
        for line in body.splitlines():
            if not line.startswith(name + "{"):
                continue
            head, _, value = line.rpartition(" ")
            if needle in head:
                key = head.split(needle, 1)[1].split('"', 1)[0]
                found[key] = found.get(key, 0.0) + float(value)
        return found

    def kill9(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail_log(self, n: int = 3000) -> str:
        """The end of the worker's log."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextmanager
def running_worker(
    bootstrap: str,
    state_dir: Path,
    model_dir: Path,
    env: dict[str, str],
    app_id: str,
    ready_timeout: float = 90,
) -> Iterator[WorkerProcess]:
    """A worker process, started and ready for the block, stopped after it (for module fixtures)."""
    worker = WorkerProcess(bootstrap, state_dir, model_dir, env=env, app_id=app_id).start()
    try:
        worker.wait_ready(ready_timeout)
        yield worker
    finally:
        worker.stop()


def settings_for(bootstrap: str) -> Settings:
    """Settings pointing at ``bootstrap`` (topic names and partitions as the worker uses them)."""
    settings = Settings()
    settings.kafka.bootstrap_servers = bootstrap
    return settings


def producer(bootstrap: str) -> Producer:
    """A producer with the Java default partitioner, like every Kairos producer."""
    return Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 2})


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | Any]]) -> int:
    """Produce (key, value) pairs; contract objects are serialised; returns the count."""
    p = producer(bootstrap)
    n = 0
    for key, value in messages:
        raw = value if isinstance(value, bytes | None) else to_json_bytes(value)
        p.produce(topic, value=raw, key=key)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    p.flush(30)
    return n


def pushes_for(bootstrap: str, user: str) -> list[Push]:
    """The pushes on the pushes topic for ``user``, in topic order."""
    found = []
    for msg in read_topic(bootstrap, settings_for(bootstrap).topics.pushes, timeout=5):
        push = Push.model_validate_json(msg.value(), strict=False)
        if push.user_id == user:
            found.append(push)
    return found


def read_topic(bootstrap: str, topic: str, timeout: float = 5.0) -> list[Any]:
    """Every message currently on ``topic`` (all partitions), read to the end (partition EOF)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = list(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        out = []
        deadline = time.monotonic() + timeout
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition() or 0)
        return out
    finally:
        consumer.close()


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    """Poll ``predicate()`` until true or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def metric_sum(body: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples matching ``labels`` in a Prometheus text page (one scrape, many reads)."""
    total = 0.0
    for line in body.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name = head.split("{", 1)[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
