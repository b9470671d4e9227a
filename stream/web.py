"""The worker's small HTTP side: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready to serve).

A stdlib ``ThreadingHTTPServer`` in a daemon thread, so it keeps answering while the worker's event
loop is busy. The worker owns one :class:`Health` and tells it what happens; the server only reads it.

- ``/healthz``: 200 while the main loop has called :meth:`Health.beat` within ``liveness_timeout``
  seconds (a stuck loop turns it 503 and the orchestrator restarts the container).
- ``/readyz``: 200 only when state recovery is complete, a model is loaded and the broker answered
  within ``broker_timeout`` seconds; otherwise 503 with ``{"ready": false, "missing": [...]}``.
- ``/metrics``: Prometheus exposition (merged across processes in multi-process mode).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from stream import metrics

log = logging.getLogger(__name__)


class Health:
    """Liveness and readiness of one worker process; thread-safe, cheap to update on the hot path.

    Starts as alive (for ``liveness_timeout`` seconds, so a slow start is not killed) and not ready:
    recovering, no model, broker not yet seen.
    """

    def __init__(
        self,
        liveness_timeout: float = 30.0,
        broker_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.liveness_timeout = liveness_timeout
        self.broker_timeout = broker_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._recovering = True
        self._model_version: str | None = None
        self._broker_ok_at: float | None = None

    def beat(self) -> None:
        """The main loop is making progress (call once per loop iteration or batch)."""
        # A single float store is atomic in CPython; no lock on the hot path.
        self._last_beat = self._clock()

    def set_recovering(self, recovering: bool) -> None:
        """State recovery started (True) or is complete (False)."""
        with self._lock:
            self._recovering = recovering

    def set_model(self, version: str | None) -> None:
        """The model version now served (None: no model loaded)."""
        with self._lock:
            self._model_version = version

    def set_broker_ok(self, ok: bool) -> None:
        """The broker answered (True: a fetch, produce or metadata call succeeded) or failed (False)."""
        with self._lock:
            self._broker_ok_at = self._clock() if ok else None

    @property
    def model_version(self) -> str | None:
        """The model version last set."""
        return self._model_version

    def alive(self) -> bool:
        """True while the last heartbeat is at most ``liveness_timeout`` seconds old."""
        return self._clock() - self._last_beat <= self.liveness_timeout

    def ready(self) -> tuple[bool, list[str]]:
        """Whether the worker should receive traffic, and if not, what is missing (human-readable)."""
        now = self._clock()
        missing: list[str] = []
        with self._lock:
            if self._recovering:
                missing.append("state recovery in progress")
            if self._model_version is None:
                missing.append("no model loaded")
            if self._broker_ok_at is None:
                missing.append("broker not reached yet")
            elif now - self._broker_ok_at > self.broker_timeout:
                missing.append(f"broker silent for more than {self.broker_timeout:g}s")
        if not self.alive():
            missing.append(f"main loop silent for more than {self.liveness_timeout:g}s")
        return (not missing, missing)

    def snapshot(self) -> dict[str, object]:
        """Everything known, for the JSON bodies."""
        ready, missing = self.ready()
        return {
            "alive": self.alive(),
            "ready": ready,
            "missing": missing,
            "model_version": self._model_version,
            "recovering": self._recovering,
            "last_beat_seconds_ago": round(self._clock() - self._last_beat, 3),
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "kairos"
    health: Health  # set on the subclass made per server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = metrics.render_latest()
            self._send(200, body, content_type)
        elif path == "/healthz":
            snap = self.health.snapshot()
            alive = {k: snap[k] for k in ("alive", "last_beat_seconds_ago")}
            self._json(200 if snap["alive"] else 503, alive)
        elif path == "/readyz":
            snap = self.health.snapshot()
            self._json(200 if snap["ready"] else 503, snap)
        else:
            self._json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            code = 200 if self.health.alive() else 503
        elif path == "/readyz":
            code = 200 if self.health.ready()[0] else 503
        elif path == "/metrics":
            code = 200
        else:
            code = 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, code: int, payload: dict[str, object]) -> None:
        self._send(code, json.dumps(payload).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        # Scrapes and probes every few seconds would drown the worker's log.
        log.debug("web: " + format, *args)


class WebServer:
    """A running metrics/health server; :attr:`port` is the bound port, :meth:`stop` shuts it down."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL (``http://host:port``) to reach the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_web_server(host: str, port: int, health: Health) -> WebServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (0 picks a free port) in a thread."""
    handler = type("KairosHandler", (_Handler,), {"health": health})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="kairos-web", daemon=True
    )
    thread.start()
    server = WebServer(httpd, thread)
    log.info("metrics and health on %s:%d", server.host, server.port)
    return server
