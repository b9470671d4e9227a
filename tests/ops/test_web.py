"""Health/readiness logic, the HTTP server and JSON logging."""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY

from stream import metrics_record
from stream.logs import JsonFormatter, configure_logging
from stream.text import UNSAFE
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
    assert missing == [
        "no partition assignment yet",
        "state recovery in progress",
        "no model loaded",
        "broker not reached yet",
    ]
    health.set_assigned(True)
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
    health = Health(liveness_timeout=10, loop_timeout=100, clock=clock)
    assert health.alive()  # a fresh process gets one timeout to start
    clock.now += 9
    health.beat()
    clock.now += 9
    assert health.alive()
    clock.now += 2
    assert not health.alive()
    health.set_assigned(True)
    health.set_recovering(False)
    health.set_model("m")
    health.set_broker_ok(True)
    assert health.ready() == (False, ["main loop silent for more than 10s"])
    health.beat()
    assert health.alive() and health.ready()[0]


def test_healthz_fails_when_the_event_loop_is_blocked_though_the_timer_beat_recently() -> None:
    # Observed: only the 1 s timer fed liveness, so a loop stuck elsewhere... and a timer beating
    # while the consume loop waited forever both kept /healthz at 200.
    clock = FakeClock()
    health = Health(liveness_timeout=30, loop_timeout=5, clock=clock)
    clock.now += 6
    assert health.alive()  # start-up: the longer allowance until the heartbeat task first runs
    health.loop_beat()
    clock.now += 6
    health.beat()  # the tick ran, but the loop's own heartbeat task did not
    assert health.problems() == ["event loop blocked for more than 5s"]
    health.loop_beat()
    assert health.alive()


def test_healthz_fails_when_the_consume_loop_makes_no_progress_with_work_pending() -> None:
    clock = FakeClock()
    health = Health(liveness_timeout=30, loop_timeout=30, consume_timeout=20, clock=clock)
    health.set_work_pending(False)
    clock.now += 100  # idle for long: nothing to do is not a stall
    health.beat()
    health.loop_beat()
    assert health.alive()
    health.set_work_pending(True)  # lag appears on an owned, recovered partition
    clock.now += 15
    health.batch_done()  # a batch completed: progress
    health.set_work_pending(True)
    clock.now += 15
    health.beat()
    health.loop_beat()
    assert health.alive()
    clock.now += 6  # 21 s since the last batch, with lag all along
    health.beat()
    health.loop_beat()
    assert health.problems() == ["consume loop made no progress for more than 20s"]
    health.set_work_pending(False)  # caught up
    assert health.alive()


def test_web_server_endpoints() -> None:
    clock = FakeClock()
    health = Health(liveness_timeout=10, broker_timeout=30, loop_timeout=100, clock=clock)
    metrics_record.init_labels(["events"])
    server = start_web_server("127.0.0.1", 0, health)
    try:
        assert server.port > 0
        status, body, _ = get(server.url + "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True

        # Recovering: not ready, and the body says why.
        health.set_assigned(True)
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

        health.loop_beat()
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


def test_slow_clients_cannot_pile_up_threads() -> None:
    health = Health()
    server = start_web_server("127.0.0.1", 0, health, max_connections=3, socket_timeout=1.0)
    refused_before = REGISTRY.get_sample_value("kairos_web_connections_refused_total") or 0.0
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        time.sleep(0.3)  # the three idle clients hold every handler slot
        threads = threading.active_count()
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = extra.recv(200)
        extra.close()
        assert answer.startswith(b"HTTP/1.0 503")  # refused at once, no thread spent on it
        assert threading.active_count() <= threads
        refused = REGISTRY.get_sample_value("kairos_web_connections_refused_total") or 0.0
        assert refused - refused_before == 1
        time.sleep(1.5)  # the socket timeout drops the idle clients and frees their slots
        assert get(server.url + "/healthz")[0] == 200
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_the_default_bind_is_loopback_and_containers_set_it() -> None:
    from pathlib import Path

    from stream.settings import WorkerConfig

    assert WorkerConfig().web_host == "127.0.0.1"
    root = Path(__file__).resolve().parents[2]
    assert "KAIROS_WORKER__WEB_HOST=0.0.0.0" in (root / "deploy" / "Dockerfile").read_text()
    assert "KAIROS_WORKER__WEB_HOST: 0.0.0.0" in (root / "docker-compose.yml").read_text()


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


def test_json_logs_escape_every_unsafe_character_and_decode_to_what_was_logged() -> None:
    # Contract-valid ids and titles can hold any of these: C1 controls (NEL, CSI), DEL, the line and
    # paragraph separators, bidi overrides and isolates; a lone surrogate can come from bad input.
    # (Formatted directly: pytest's own log capture could not send a lone surrogate between processes.)
    hostile = "a\x85b\x9b31m\x7f\u2028c\u2029d\u202eexe.gpj\u202c\u2066e\u2069\u061c\u200f\n\x1b\ud800"
    kept = "\u00e9\U0001f600\u05d0\u200d"  # accents, emoji, right-to-left letters, joiners: left as they are
    record = logging.LogRecord("kairos.test", logging.INFO, __file__, 1, "item %s", (hostile + kept,), None)
    record.item_id = hostile
    record.nested = {hostile: [hostile]}
    setattr(record, hostile, 1)
    try:
        raise ValueError(hostile)
    except ValueError:
        failed = logging.LogRecord("kairos.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = "\n".join(JsonFormatter().format(r) for r in (record, failed))
    out.encode("utf-8")  # writable as UTF-8, lone surrogate and all
    assert not [c for c in out if ord(c) in UNSAFE and c != "\n"]
    assert len(out.splitlines()) == 2  # splitlines also breaks at NEL and U+2028
    assert "\\u202e" in out and "\\u2028" in out and "\\u0085" in out and kept in out
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["message"] == "item " + hostile + kept and first["item_id"] == hostile
    assert first["nested"] == {hostile: [hostile]} and first[hostile] == 1
    assert hostile in second["exc"]


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


def test_text_logs_keep_a_hostile_request_line_on_one_line_without_terminal_escapes() -> None:
    # http.server escapes control characters in its own log_message, which the worker replaces: the
    # request line reached a DEBUG text log as sent.
    stream = io.StringIO()
    configure_logging("DEBUG", json_format=False, stream=stream)
    server = start_web_server("127.0.0.1", 0, Health())
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /\x1b[2J\x1b]0;owned\x07\x85\xe2\x80\xae HTTP/1.0\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.0 400")
        logging.getLogger("kairos.test").info("done", extra={"user_id": "u\u202e1\n"})
    finally:
        server.stop()
        configure_logging("WARNING", json_format=False)
    lines = stream.getvalue().splitlines()
    request = [line for line in lines if '"GET /' in line]
    assert request and all("\\x1b[2J\\x1b]0;owned\\x07\\x85" in line for line in request)
    assert lines[-1].endswith("INFO kairos.test: done user_id=u\\u202e1\\x0a")
    assert not any(c in stream.getvalue() for c in "\x1b\x07\x85\u202e\r")
