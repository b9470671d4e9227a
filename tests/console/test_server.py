"""The console's web server without Kafka: the page and its assets, the JSON and SSE feeds, its bounds."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from stream.console.feed import ConsoleFeed
from stream.console.server import CSP, MAX_MESSAGE_BYTES, ConsoleServer, encode
from stream.settings import Settings

T0 = 1_780_315_200.0


@pytest.fixture
def console() -> Iterator[ConsoleServer]:
    settings = Settings()
    settings.console.port = 0
    settings.console.max_clients = 1
    settings.console.update_seconds = 0.05
    feed = ConsoleFeed(holdout_share=0.0)
    feed.on_push(
        {"push_id": "p1", "user_id": "u1", "item_id": "i1", "trigger": "in_session", "reason": "r",
         "score": 0.6, "threshold": 0.3, "created_at": T0, "expires_at": T0 + 60}
    )  # fmt: skip
    server = ConsoleServer(settings, feed=feed, read_topics=False).start()
    yield server
    server.stop()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_binds_loopback_by_default():
    assert Settings().console.host == "127.0.0.1"


def test_serves_the_page_and_its_assets_from_the_package_with_a_strict_csp(console: ConsoleServer):
    status, headers, body = _get(console.url)
    assert status == 200 and b'<script src="/static/app.js"' in body
    assert headers["Content-Security-Policy"] == CSP and "default-src 'self'" in CSP
    assert b"http://" not in body and b"https://" not in body  # nothing fetched from elsewhere
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, body = _get(console.url + "static/" + name)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert b"http://" not in body and b"https://" not in body
    assert _get(console.url + "static/../server.py")[0] == 404
    assert _get(console.url + "nothing")[0] == 404


def test_state_answers_deltas(console: ConsoleServer):
    _, _, body = _get(console.url + "api/state")
    state = json.loads(body)
    assert state["reset"] and [p["push_id"] for p in state["pushes"]] == ["p1"]
    _, _, body = _get(console.url + f"api/state?after={state['seq']}")
    assert json.loads(body)["pushes"] == []
    # a position from an earlier console process (past this one's seq) starts over
    _, _, body = _get(console.url + "api/state?after=999999")
    assert json.loads(body)["reset"]


def test_the_event_stream_sends_the_window_then_changes_and_is_bounded(console: ConsoleServer):
    host, port = console.httpd.server_address[:2]
    with socket.create_connection((str(host), port), timeout=5) as s:
        s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = s.makefile("rb")
        assert b"200" in reader.readline()
        messages: list[dict[str, Any]] = []
        while len(messages) < 1:
            line = reader.readline()
            if line.startswith(b"data: "):
                messages.append(json.loads(line[6:]))
        assert messages[0]["reset"] and messages[0]["pushes"][0]["push_id"] == "p1"
        # a second live page is refused: max_clients is 1 here
        assert _get(console.url + "api/stream")[0] == 503
        console.feed.on_event({"user_id": "u1", "type": "push_open", "push_id": "p1", "ts": T0 + 5})
        while len(messages) < 2:
            line = reader.readline()
            if line.startswith(b"data: "):
                messages.append(json.loads(line[6:]))
        update = messages[1]
        assert not update["reset"]
        assert [(p["push_id"], p["status"]) for p in update["pushes"]] == [("p1", ["open"])]
        assert update["triggers"]["in_session"]["opens"] == 1


def test_idle_connections_past_the_cap_are_refused_without_a_thread(console: ConsoleServer):
    from stream.console.server import EXTRA_CONNECTIONS

    host, port = console.httpd.server_address[:2]
    idle = [socket.create_connection((str(host), port), timeout=5) for _ in range(1 + EXTRA_CONNECTIONS)]
    try:
        time.sleep(0.3)  # let the server accept them all (each now holds a thread, waiting for a request)
        status, _, _ = _get(console.url)
        assert status == 503
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while _get(console.url)[0] != 200:  # the slots come back once the idle clients are gone
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_latest_event_time_is_bounded_by_the_workers_skew_setting() -> None:
    settings = Settings()
    settings.console.port = 0
    settings.worker.max_future_skew_seconds = 5.0
    server = ConsoleServer(settings, read_topics=False)
    try:
        assert server.feed.max_future_skew_seconds == 5.0
        server.feed.on_event({"user_id": "u1", "type": "view", "ts": time.time() + 60})
        assert server.payload(0)["last_event_ts"] is None
    finally:
        server.httpd.server_close()


def _worst(n: int, chars: int) -> str:
    """``chars`` characters that JSON writes 12 bytes each (an emoji as \\ud83d\\ude00), unique by ``n``."""
    return (str(n) + "\U0001f600" * chars)[:chars]


def _worst_case_feed() -> ConsoleFeed:
    """A full window where every string is at the feed's limit and escapes to the most bytes."""
    feed = ConsoleFeed(holdout_share=0.0)
    for n in range(feed.window):
        feed.on_push(
            {"push_id": _worst(n, 256), "user_id": _worst(n, 256), "item_id": _worst(n, 256),
             "trigger": _worst(n % 32, 64), "reason": _worst(n, 512), "title": _worst(n, 256),
             "category": _worst(n, 128), "model_version": _worst(n, 128), "score": 0.6, "threshold": 0.3,
             "created_at": T0 + n, "expires_at": T0 + n + 60}
        )  # fmt: skip
        feed.on_decision(
            {"user_id": _worst(n, 256), "item_id": _worst(n, 256), "trigger": _worst(n, 64),
             "outcome": _worst(n, 16), "reason": _worst(n, 64), "score": 0.1, "threshold": 0.5, "ts": T0 + n}
        )  # fmt: skip
        feed.on_dead_letter(
            {
                "reason": _worst(n, 64),
                "error": _worst(n, 200),
                "source_topic": _worst(n, 249),
                "received_at": T0,
            }
        )
    return feed


def test_no_message_passes_its_byte_bound_even_with_the_longest_strings_escaped_to_the_most_bytes() -> None:
    settings = Settings()
    settings.console.port = 0
    settings.console.update_seconds = 0.05
    server = ConsoleServer(settings, feed=_worst_case_feed(), read_topics=False).start()
    try:
        snapshot = server.payload(0)
        assert len(json.dumps(snapshot).encode()) > 15_000_000  # what the first message was: ~18 MB
        _, _, body = _get(server.url + "api/state")
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((str(host), port), timeout=10) as s:
            s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            reader = s.makefile("rb")
            line = b""
            while not line.startswith(b"data: "):  # past the status line, the headers, the SSE id
                line = reader.readline()
            assert reader.readline() == b"\n"  # the end of the first message
    finally:
        server.stop()
    assert len(line) <= len(b"data: \n") + MAX_MESSAGE_BYTES and json.loads(line[6:])["omitted"]["pushes"] > 0
    state = json.loads(body)
    assert len(body) <= MAX_MESSAGE_BYTES and state["reset"]
    # The oldest rows were left out, and the message says how many; the newest are all there.
    omitted = state["omitted"]
    assert sum(omitted.values()) > 0
    for name in ("pushes", "decisions", "dead_letters"):
        assert len(state[name]) + omitted[name] == len(snapshot[name])
        assert state[name] == snapshot[name][omitted[name] :]
    kept_seqs = [row["seq"] for name in ("pushes", "decisions", "dead_letters") for row in state[name]]
    dropped_seqs = [row["seq"] for name in omitted for row in snapshot[name][: omitted[name]]]
    assert max(dropped_seqs) < min(kept_seqs)
    assert MAX_MESSAGE_BYTES - len(body) < 30_000  # not more left out than needed (a row is at most ~22 KB)


def test_a_message_within_the_bound_is_sent_whole_and_says_nothing_was_left_out() -> None:
    feed = ConsoleFeed(holdout_share=0.0)
    feed.on_push(
        {"push_id": "p1", "user_id": "u1", "item_id": "i1", "trigger": "in_session", "reason": "r",
         "score": 0.6, "threshold": 0.3, "created_at": T0, "expires_at": T0 + 60}
    )  # fmt: skip
    payload = feed.delta(0)
    state = json.loads(encode(payload))
    assert state["omitted"] == {"pushes": 0, "decisions": 0, "dead_letters": 0}
    assert state["pushes"] == payload["pushes"]
    # A bound smaller than the aggregates alone: every row goes, the aggregates still do.
    tiny = json.loads(encode(payload, limit=10))
    assert tiny["pushes"] == [] and tiny["omitted"]["pushes"] == 1 and tiny["triggers"] == payload["triggers"]
