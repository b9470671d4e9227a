"""``kairos console``: a plain web page for marketing, live from the topics.

Serves, on ``console.host:console.port`` (loopback by default):

- ``/``: the page (``static/index.html``, ``app.js``, ``style.css``, shipped with the package; nothing
  is fetched from elsewhere and the Content-Security-Policy forbids it);
- ``/api/stream``: Server-Sent Events; the first message is the whole window, then only what changed
  (``stream.console.feed.ConsoleFeed.delta``), at most every ``console.update_seconds``; no message
  past :data:`MAX_MESSAGE_BYTES` (the oldest rows are left out, and ``omitted`` says how many);
- ``/api/state?after=SEQ``: the same as one JSON answer (for scripts, or a browser without SSE);
- ``/healthz``: ``ok`` while the topic reader runs.

Bounded: at most ``console.max_clients`` live streams at once (more get 503), at most 8 other
connections besides, each request's socket times out, and the feed holds only its bounded window and
aggregates.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stream.console.feed import ConsoleFeed
from stream.console.reader import TopicReader
from stream.settings import Settings, warn_unknown_variables
from stream.web import BoundedHTTPServer

log = logging.getLogger("kairos.console")

STATIC: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Everything the page needs comes from this server; inline scripts and other origins are refused.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"
EXTRA_CONNECTIONS = 8  # connections served at once besides the live streams (page, assets, /api/state)
PING_SECONDS = 15.0  # an SSE comment this often keeps proxies and the browser from closing an idle stream
# The most bytes one message of the feed (/api/stream, /api/state) may take, JSON-encoded. The feed's
# limits count characters, and JSON's escapes make one up to 12 bytes (an emoji is \ud83d\ude00): the
# window at those limits came to ~18 MB. A full window of the longest titles and reasons in a
# non-Latin script (6 bytes a character) stays under this; past it the oldest rows are left out.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
ROW_LISTS: tuple[str, ...] = ("pushes", "decisions", "dead_letters")


def _static(name: str) -> bytes:
    return resources.files("stream.console").joinpath("static", name).read_bytes()


class ConsoleServer:
    """The feed, the topic reader and the HTTP server, started and stopped together."""

    def __init__(self, settings: Settings, feed: ConsoleFeed | None = None, read_topics: bool = True) -> None:
        self.settings = settings
        c = settings.console
        self.feed = feed or ConsoleFeed(
            window=c.window,
            attribution_pushes=c.attribution_pushes,
            attribution_window_seconds=settings.policy.attribution_window_seconds,
            holdout_share=settings.policy.holdout_share,
            holdout_salt=settings.policy.holdout_salt,
            max_future_skew_seconds=settings.worker.max_future_skew_seconds,
        )
        self.reader = TopicReader(settings, self.feed) if read_topics else None
        self.stop_event = threading.Event()
        self.clients = threading.BoundedSemaphore(c.max_clients)
        # Live pages hold a connection each; a few more serve assets and API calls meanwhile.
        self.httpd = BoundedHTTPServer((c.host, c.port), _handler(self), c.max_clients + EXTRA_CONNECTIONS)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def meta(self) -> dict[str, Any]:
        """What the page shows besides the feed: topics, settings that explain the figures, reader health."""
        t = self.settings.topics
        return {
            "topics": {
                "pushes": t.pushes,
                "decisions": t.decisions,
                "events": t.events,
                "dead_letters": t.dead_letters,
            },
            "start": self.settings.console.start,
            "audit_hint": "KAIROS_WORKER__AUDIT_DECISIONS=true",
            "reader_error": self.reader.error if self.reader is not None else None,
            "reader_alive": self.reader.is_alive() if self.reader is not None else False,
            "missing_topics": self.reader.missing_topics if self.reader is not None else [],
            "server_time": time.time(),
        }

    def payload(self, after: int) -> dict[str, Any]:
        """The feed's delta since ``after`` plus :meth:`meta` (``after`` past the feed's seq: from 0)."""
        if after > self.feed.seq:  # the page saw an earlier console process: start over
            after = 0
        return {**self.feed.delta(after), "meta": self.meta()}

    def start(self) -> ConsoleServer:
        """Start reading the topics and serving (returns at once)."""
        if self.reader is not None:
            self.reader.start()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="kairos-console-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (open streams end) and reading."""
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.reader is not None:
            self.reader.stop()


def _handler(console: ConsoleServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kairos-console"
        timeout = 10.0  # a client that sends nothing, or reads nothing, for this long is dropped

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            url = urlsplit(self.path)
            path = url.path
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, _static("index.html"), STATIC["index.html"])
            elif path.startswith("/static/") and path[len("/static/") :] in STATIC:
                name = path[len("/static/") :]
                self._send(HTTPStatus.OK, _static(name), STATIC[name])
            elif path == "/api/state":
                after = _int(parse_qs(url.query).get("after", ["0"])[0])
                body = encode(console.payload(after))
                self._send(HTTPStatus.OK, body, "application/json")
            elif path == "/api/stream":
                self._stream(
                    _int(self.headers.get("Last-Event-ID") or parse_qs(url.query).get("after", ["0"])[0])
                )
            elif path == "/healthz":
                alive = console.reader is None or console.reader.is_alive()
                status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, b"ok\n" if alive else b"topic reader stopped\n", "text/plain")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _stream(self, after: int) -> None:
            if not console.clients.acquire(blocking=False):
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many live pages open\n", "text/plain")
                return
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Accel-Buffering", "no")
                self.end_headers()
                self.close_connection = True
                last, sent_at = -1, 0.0
                wait = max(console.settings.console.update_seconds, 0.05)
                while not console.stop_event.is_set():
                    now = time.monotonic()
                    if console.feed.seq != last or last < 0:
                        payload = console.payload(after)
                        after = last = payload["seq"]
                        self.wfile.write(f"id: {last}\ndata: ".encode() + encode(payload) + b"\n\n")
                        self.wfile.flush()
                        sent_at = now
                    elif now - sent_at >= PING_SECONDS:
                        self.wfile.write(b": ping\n\n")
                        self.wfile.flush()
                        sent_at = now
                    console.stop_event.wait(wait)
            except OSError:  # the page went away (closed, reloaded, timed out)
                pass
            finally:
                console.clients.release()

    return Handler


def encode(payload: dict[str, Any], limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """``payload`` as JSON of at most ``limit`` bytes, measured once encoded.

    Past the limit the oldest rows (lowest ``seq``, across pushes, decisions and dead letters) are
    left out until it fits, and ``omitted`` says how many of each (always present; zeros when none).
    The aggregates always go whole: their keys are bounded (``MAX_REASON_KEYS``, ``MAX_TRIGGER_KEYS``).
    """
    message = {**payload, "omitted": dict.fromkeys(ROW_LISTS, 0)}
    body = json.dumps(message).encode()
    if len(body) <= limit:
        return body
    # Oldest first; each row's share of the message: itself and the ", " before or after it.
    rows = sorted((row["seq"], name, i) for name in ROW_LISTS for i, row in enumerate(payload[name]))
    sizes = [len(json.dumps(payload[name][i]).encode()) + 2 for _, name, i in rows]
    dropped = 0  # rows[:dropped] are left out
    while len(body) > limit and dropped < len(rows):
        excess = len(body) - limit + 64  # room for the counts of `omitted` to grow
        while excess > 0 and dropped < len(rows):
            excess -= sizes[dropped]
            dropped += 1
        left_out = {(name, i) for _, name, i in rows[:dropped]}
        for name in ROW_LISTS:
            message[name] = [row for i, row in enumerate(payload[name]) if (name, i) not in left_out]
            message["omitted"][name] = len(payload[name]) - len(message[name])
        body = json.dumps(message).encode()
    return body


def _int(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def console_main(argv: list[str]) -> int:
    """``kairos console``: serve the page until SIGINT/SIGTERM; returns the exit code."""
    import argparse

    from stream.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="kairos console",
        description="Serve a live page of pushes, decisions and outcomes, read from the topics.",
    )
    parser.add_argument("--port", type=int, help="Port to serve on (default: KAIROS_CONSOLE__PORT).")
    parser.add_argument("--host", help="Address to bind (default: KAIROS_CONSOLE__HOST, loopback).")
    parser.add_argument(
        "--from-beginning", action="store_true", help="Read the topics from their start (default: now on)."
    )
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log.level, settings.log.json_format)
    warn_unknown_variables()
    if args.port is not None:
        settings.console.port = args.port
    if args.host is not None:
        settings.console.host = args.host
    if args.from_beginning:
        settings.console.start = "earliest"
    if not settings.kafka.bootstrap_servers:
        print("kairos console: set KAIROS_KAFKA__BOOTSTRAP_SERVERS (the workers' cluster)", file=sys.stderr)
        return 2
    console = ConsoleServer(settings).start()
    print(f"kairos console: {console.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            stop.wait(1.0)
    finally:
        console.stop()
    return 0
