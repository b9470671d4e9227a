"""Operations against a real worker: Prometheus scraping it, readiness across recovery, model hot reload."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from model.scorer import IncrementalScorer
from stream.contract import Event, Push
from stream.model_reload import install_model
from tests.integration.test_worker import SCRIPTED_ENV, T0, _catalog, _event, _world
from tests.ops.test_prometheus import SYNTHETIC, exposed_names, metric_names, used_expressions
from tests.support.prometheus import PrometheusServer, prometheus_binary
from tests.support.worker import WorkerProcess, produce, read_topic, settings_for, train_small_model, wait_for

pytestmark = pytest.mark.integration


def _valid(worker: WorkerProcess) -> float:
    return worker.metric("kairos_events_total", outcome="processed") + worker.metric(
        "kairos_events_total", outcome="unknown_item"
    )


def test_prometheus_scrapes_the_worker_and_readiness_follows_recovery(
    broker: str, model_dir: Path, tmp_path: Path
):
    if prometheus_binary() is None:
        pytest.skip("the prometheus binary is missing: run deploy/install-test-deps.sh (make test does)")
    items = _catalog(broker, _world())
    worker = WorkerProcess(broker, tmp_path / "state", model_dir, SCRIPTED_ENV, app_id="kairos-ops").start()
    try:
        # The web server comes up before the group join: readiness must say "not yet" until recovery ends.
        wait_for(lambda: worker.get("/healthz")[0] == 200, 60, what="/healthz")
        status, body = worker.get("/readyz")
        assert status == 503 and "recover" in body
        worker.wait_ready()
        assert worker.get("/readyz")[0] == 200

        topics = settings_for(broker).topics
        good = [_event(i, f"u-ops-{i % 5}", "view", items[i], T0 + i) for i in range(40)]
        bad = [(b"u-ops-bad", b"{broken") for _ in range(7)]
        produce(broker, topics.events, [*good, *bad])
        wait_for(
            lambda: _valid(worker) >= 40 and worker.metric("kairos_dead_letters_total") >= 7,
            30,
            what="worker processed the events",
        )
        with PrometheusServer([f"127.0.0.1:{worker.web_port}"]) as prom:
            prom.wait_for_scrape()
            assert prom.query_value('sum(kairos_events_total{outcome=~"processed|unknown_item"})') == 40
            assert prom.query_value('sum(kairos_dead_letters_total{reason="bad_json"})') == 7
            assert prom.query_value("kairos_worker_up") == 1
            version = IncrementalScorer.load(model_dir).version
            assert prom.query_value(f'kairos_model_info{{version="{version}"}}') == 1
        # Every metric the dashboard and the alert rules use is one this live worker exports.
        exposed = exposed_names(worker.get("/metrics")[1])
        for where, expr in used_expressions():
            unknown = {n for n in metric_names(expr) if n not in exposed and n not in SYNTHETIC}
            assert not unknown, f"{where} uses {sorted(unknown)}, which the worker does not export"
    finally:
        worker.stop()


def test_hot_reload_during_a_steady_stream_loses_nothing_and_refuses_a_corrupt_model(
    own_broker: str, model_dir: Path, tmp_path: Path
):
    broker = own_broker
    items = _catalog(broker, _world())
    served = tmp_path / "models" / "current"
    install_model(model_dir, served)
    first = IncrementalScorer.load(served).version
    second_dir = train_small_model(tmp_path / "second" / "artifact")
    second = IncrementalScorer.load(second_dir).version
    assert second != first

    # No caps: every browsing event may push, so pushes before and after the swap name their model.
    uncapped = {
        f"KAIROS_POLICY__{name}": value
        for name, value in [
            ("MIN_GAP_SECONDS", "0"),
            ("MAX_PUSHES_PER_24H", "100000"),
            ("MAX_PUSHES_PER_7D", "100000"),
            ("MAX_PUSHES_PER_LOCAL_DAY", "100000"),
            ("MAX_PER_CATEGORY_PER_LOCAL_DAY", "0"),
            ("ITEM_REPEAT_WINDOW_SECONDS", "0"),
        ]
    }
    env = {**SCRIPTED_ENV, **uncapped, "KAIROS_MODEL__RELOAD_CHECK_SECONDS": "0.3"}
    worker = WorkerProcess(broker, tmp_path / "state", served, env, app_id="kairos-reload").start()
    topics = settings_for(broker).topics
    sent: list[Event] = []

    def stream() -> None:
        for n in range(60):
            batch = [
                _event(n, f"u-reload-{u}", "view", items[(n * 7 + u) % 200], T0 + n * 61 + u)
                for u in range(20)
            ]
            produce(broker, topics.events, batch)
            sent.extend(e for _, e in batch)
            time.sleep(0.1)

    try:
        worker.wait_ready()
        producer = threading.Thread(target=stream)
        producer.start()
        time.sleep(1.5)
        install_model(second_dir, served)  # mid-stream
        wait_for(lambda: worker.metric("kairos_model_info", version=second) == 1, 30, what="the new model")
        corrupt = tmp_path / "corrupt"
        shutil.copytree(second_dir, corrupt)
        weights = max(corrupt.iterdir(), key=lambda p: p.stat().st_size)
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
        install_model(corrupt, served)
        wait_for(lambda: worker.metric("kairos_model_load_failures_total") >= 1, 30, what="the refusal")
        producer.join()
        wait_for(lambda: _valid(worker) >= len(sent), 60, what="every event processed")

        assert _valid(worker) == len(sent) == 1200  # nothing lost
        assert worker.metric("kairos_events_total", outcome="duplicate") == 0  # nothing twice
        assert worker.metric("kairos_model_info", version=second) == 1  # the corrupt one was refused
        assert worker.metric("kairos_model_load_failures_total", reason="checksum") >= 1
        pushes = [
            Push.model_validate_json(m.value(), strict=False) for m in read_topic(broker, topics.pushes)
        ]
        versions = {p.model_version for p in pushes if p.user_id.startswith("u-reload-")}
        assert versions <= {first, second} and second in versions
    finally:
        worker.stop()
