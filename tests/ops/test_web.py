"""Health/readiness logic, the HTTP server and JSON logging."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.error
import urllib.request

import pytest

from stream import metrics
from stream.logs import JsonFormatter, configure_logging
from stream.web import Health, start_web_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def test_health_readiness_lists_what_is_missing() -> None:
    clock = FakeClock()
    health = Health(liveness_timeout=10, broker_timeout=5, clock=clock)
    ready, missing = health.ready()
    assert not ready
    assert missing == ["state recovery in progress", "no model loaded", "broker not reached yet"]
    health.set_broker_ok(True)
    health.set_model("gru-1")
    assert health.ready() == (False, ["state recovery in progress"])
    health.set_recovering(False)
    assert health.ready() == (True, [])
    clock.now += 6  # broker silent longer than broker_timeout
    assert health.ready() == (False, ["broker silent for more than 5s"])
    health.set_broker_ok(True)
    health.set_model(None)
    assert health.ready() == (False, ["no model loaded"])
    health.set_model("gru-2")
    health.set_broker_ok(False)
    assert health.ready()[1] == ["broker not reached yet"]


def test_health_liveness_follows_heartbeat() -> None:
    clock = FakeClock()
    health = Health(liveness_timeout=10, clock=clock)
    assert health.alive()  # a fresh process gets one timeout to start
    clock.now += 9
    health.beat()
    clock.now += 9
    assert health.alive()
    clock.now += 2
    assert not health.alive()
    health.set_recovering(False)
    health.set_model("m")
    health.set_broker_ok(True)
    assert health.ready() == (False, ["main loop silent for more than 10s"])
    health.beat()
    assert health.alive() and health.ready()[0]


def test_web_server_endpoints() -> None:
    clock = FakeClock()
    health = Health(liveness_timeout=10, broker_timeout=30, clock=clock)
    metrics.init_labels(["events"])
    server = start_web_server("127.0.0.1", 0, health)
    try:
        assert server.port > 0
        status, body, _ = get(server.url + "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True

        # Recovering: not ready, and the body says why.
        health.set_model("gru-1")
        health.set_broker_ok(True)
        status, body, ctype = get(server.url + "/readyz")
        assert status == 503 and ctype == "application/json"
        payload = json.loads(body)
        assert payload["ready"] is False and payload["missing"] == ["state recovery in progress"]

        health.set_recovering(False)
        status, body, _ = get(server.url + "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        assert json.loads(body)["model_version"] == "gru-1"

        clock.now += 11  # the main loop stopped beating
        status, _, _ = get(server.url + "/healthz")
        assert status == 503
        assert get(server.url + "/readyz")[0] == 503

        status, body, ctype = get(server.url + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert b"# TYPE kairos_events_total counter" in body
        assert get(server.url + "/nope")[0] == 404

        request = urllib.request.Request(server.url + "/healthz", method="HEAD")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 503
    finally:
        server.stop()
    # Nothing listens any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
    server.stop()  # idempotent


def test_json_logs_have_fields_extras_and_redaction() -> None:
    stream = io.StringIO()
    configure_logging("INFO", json_format=True, stream=stream)
    configure_logging("INFO", json_format=True, stream=stream)  # idempotent: one line per record
    log = logging.getLogger("kairos.test")
    extra = {"user_id": "u-1", "trigger": "price_drop", "query": "red shoes"}
    log.info("push emitted for %s", "u-1", extra=extra)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    log.debug("hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "kairos.test"
    assert first["message"] == "push emitted for u-1"
    assert first["user_id"] == "u-1" and first["trigger"] == "price_drop"
    assert first["query"] == "[redacted]"
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_text_logs_append_extras() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", json_format=False, stream=stream)
    try:
        logging.getLogger("kairos.test").debug("hello", extra={"partition": 3})
    finally:
        configure_logging("WARNING", json_format=False)
    line = stream.getvalue().strip()
    assert line.endswith("DEBUG kairos.test: hello partition=3")


def test_json_formatter_copes_with_odd_extras() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.obj = object()
    record.items = ("a", 1)
    payload = json.loads(JsonFormatter().format(record))
    assert payload["items"] == ["a", 1] and payload["obj"].startswith("<object")
