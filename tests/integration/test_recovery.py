"""Recovery, health and scale-out against the real embedded broker, with real worker processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream.broker import EmbeddedBroker
from stream.topics import changelog_topic, ensure_topics, topic_specs
from tests.integration.test_worker import SCRIPTED_ENV, T0, _catalog, _event, _world
from tests.support.worker import ROOT, WorkerProcess, produce, settings_for, wait_for

pytestmark = pytest.mark.integration

# Quick group membership, a short broker timeout (so a stale broker check shows within the test).
FAST_ENV = {
    **SCRIPTED_ENV,
    "KAIROS_WORKER__BROKER_TIMEOUT_SECONDS": "4",
    "KAIROS_WORKER__BROKER_PROBE_SECONDS": "1",
}


def test_the_worker_refuses_to_start_when_consent_has_another_partition_count(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        settings = settings_for(broker.bootstrap)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        specs = topic_specs(settings)
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=2 if s.name == settings.topics.consent else s.partitions)
                for s in specs
            ]
        )
        for future in futures.values():
            future.result(15)
        env = {
            "KAIROS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAIROS_WORKER__STATE_DIR": str(tmp_path / "state"),
            "KAIROS_WORKER__WEB_PORT": "0",
            "PATH": "/usr/bin:/bin",
        }
        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 78, done.stderr.decode()[-2000:]
    message = done.stderr.decode()
    assert "refusing to start" in message and "consent=2" in message and "events=4" in message
    assert changelog_topic(settings) in message  # every user-keyed topic's count is shown


@pytest.fixture
def one_partition_broker() -> Iterator[str]:
    """A broker whose user-keyed topics have one partition: a second worker has nothing to own."""
    with EmbeddedBroker() as b:
        settings = settings_for(b.bootstrap)
        settings.topics.partitions = 1
        ensure_topics(settings)
        yield b.bootstrap


def test_an_idle_member_stays_ready_with_a_healthy_broker(
    one_partition_broker: str, model_dir: Path, tmp_path: Path
) -> None:
    # Observed: the member that owned no partition turned 503 "broker silent for more than 30s".
    broker = one_partition_broker
    _catalog(broker, _world())
    env = {**FAST_ENV, "KAIROS_TOPICS__PARTITIONS": "1"}
    first = WorkerProcess(broker, tmp_path / "a", model_dir, env, app_id="kairos-idle").start()
    second = None
    try:
        first.wait_ready()
        second = WorkerProcess(broker, tmp_path / "b", model_dir, env, app_id="kairos-idle").start()
        second.wait_ready()
        wait_for(
            lambda: (
                first.metric("kairos_owned_partitions") + second.metric("kairos_owned_partitions") == 1
                and first.get("/readyz")[0] == 200
            ),
            60,
            what="one owner, one idle member",
        )
        idle = first if first.metric("kairos_owned_partitions") == 0 else second
        time.sleep(8)  # twice the broker timeout with nothing to consume
        status, body = idle.get("/readyz")
        assert status == 200, body
        assert idle.get("/healthz")[0] == 200
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_three_workers_share_the_partitions_and_report_only_their_lag(
    own_broker: str, model_dir: Path, tmp_path: Path
) -> None:
    # Observed: the third member (a restarted one) got nothing (sticky 2+2+0), and lag series of
    # partitions a worker no longer owned stayed on its /metrics.
    broker = own_broker
    items = _catalog(broker, _world())
    topics = settings_for(broker).topics
    workers = [
        WorkerProcess(broker, tmp_path / f"w{i}", model_dir, FAST_ENV, app_id="kairos-scale")
        for i in range(3)
    ]
    try:
        workers[0].start().wait_ready()
        produce(
            broker,
            topics.events,
            [_event(i, f"u-s-{i % 40}", "view", items[i % len(items)], T0 + i) for i in range(400)],
        )
        for w in workers[1:]:
            w.start()
        for w in workers:
            w.wait_ready(120)

        def owned() -> list[float]:
            return [w.metric("kairos_owned_partitions") for w in workers]

        wait_for(lambda: sum(owned()) == 4 and min(owned()) >= 1, 120, what="every worker owns a partition")
        produce(
            broker,
            topics.events,
            [
                _event(i, f"u-s-{i % 40}", "view", items[i % len(items)], T0 + 1000 + i)
                for i in range(400, 800)
            ],
        )

        def processed() -> float:
            return sum(
                w.metric("kairos_events_total", outcome="processed")
                + w.metric("kairos_events_total", outcome="unknown_item")
                + w.metric("kairos_events_total", outcome="duplicate")
                for w in workers
            )

        wait_for(lambda: processed() >= 800, 90, what="all events processed")
        time.sleep(1.0)  # one more tick publishes the lag
        for w in workers:
            body = w.get("/metrics")[1]
            series = [line for line in body.splitlines() if line.startswith("kairos_consumer_lag_messages{")]
            # One series per owned partition of events and consent, nothing else, all at 0.
            assert len(series) == 2 * w.metric("kairos_owned_partitions"), series
            assert w.metric("kairos_consumer_lag_messages") == 0, series
        pauses = [w.metric("kairos_rebalance_pause_seconds_sum") for w in workers]
        counts = [w.metric("kairos_rebalance_pause_seconds_count") for w in workers]
        print(f"rebalance pauses (joins): sum {pauses} s over {counts} rebalances")

        # kill -9 one and restart it on its state dir: it must get work again (not 2+2+0).
        workers[2].kill9()
        wait_for(lambda: owned()[0] + owned()[1] == 4, 90, what="the survivors take every partition")
        restarted = WorkerProcess(
            broker, tmp_path / "w2", model_dir, FAST_ENV, app_id="kairos-scale", log_path=tmp_path / "w2r.log"
        ).start()
        workers[2] = restarted
        restarted.wait_ready(120)
        wait_for(lambda: sum(owned()) == 4 and min(owned()) >= 1, 120, what="the restarted worker gets work")
        pauses = [w.metric("kairos_rebalance_pause_seconds_sum") for w in workers]
        counts = [w.metric("kairos_rebalance_pause_seconds_count") for w in workers]
        print(f"rebalance pauses (all): sum {pauses} s over {counts} rebalances")
    finally:
        for w in workers:
            w.stop()
