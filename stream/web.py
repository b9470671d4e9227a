"""The worker's small HTTP side: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready to serve).

A stdlib ``ThreadingHTTPServer`` in a daemon thread, so it keeps answering while the worker's event
loop is busy or blocked, which is exactly when liveness must say so. The worker owns one
:class:`Health` and tells it what happens; the server only reads it.

- ``/healthz`` (alive): 503 when the event loop has not run its heartbeat task for ``loop_timeout``
  seconds (blocked or starved), when the periodic tick has not run for ``liveness_timeout`` seconds,
  or when the consume loop stalls: owned, recovered partitions have lag but no batch completed
  for ``consume_timeout`` seconds. An orchestrator restarts the container.
- ``/readyz``: 200 only when no owned partition is recovering, the catalog is loaded, a model is
  loaded, the group assignment arrived (an assignment of no partition is fine: an idle member is
  ready) and the broker answered within ``broker_timeout`` seconds; otherwise 503 with
  ``{"ready": false, "missing": [...]}``.
- ``/metrics``: Prometheus exposition (merged across processes in multi-process mode).

The server serves at most ``max_connections`` requests at once (more are answered 503 at once and
closed) and drops a client idle for ``socket_timeout`` seconds, so slow or stuck scrapers cannot pile
up threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stream import metrics, metrics_exposition

log = logging.getLogger(__name__)


class Health:
    """Liveness and readiness of one worker process; thread-safe, cheap to update on the hot path.

    Starts as alive (every timeout starts at creation, so a slow start is not killed) and not
    ready: recovering, no model, broker not yet seen, no assignment yet.
    """

    def __init__(
        self,
        liveness_timeout: float = 30.0,
        broker_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        loop_timeout: float | None = None,
        consume_timeout: float = 60.0,
    ) -> None:
        self.liveness_timeout = liveness_timeout
        self.broker_timeout = broker_timeout
        self.loop_timeout = liveness_timeout if loop_timeout is None else loop_timeout
        self.consume_timeout = consume_timeout
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._last_beat = now
        self._last_loop = now
        self._loop_seen = False
        self._last_batch = now
        self._pending_since: float | None = None
        self._recovering = True
        self._assigned = False
        self._model_version: str | None = None
        self._broker_ok_at: float | None = None

    def beat(self) -> None:
        """The periodic tick ran (the worker's timer)."""
        # A single float store is atomic in CPython; no lock on the hot path.
        self._last_beat = self._clock()

    def loop_beat(self) -> None:
        """The event loop ran its heartbeat task (called from a tiny task on the loop)."""
        self._last_loop = self._clock()
        self._loop_seen = True

    def batch_done(self) -> None:
        """The consume loop completed a batch."""
        self._last_batch = self._clock()

    def set_work_pending(self, pending: bool) -> None:
        """Whether owned, recovered partitions have records waiting (lag > 0).

        The consume loop is stalled when work has been pending, with no batch completed, for
        ``consume_timeout`` seconds.
        """
        with self._lock:
            if not pending:
                self._pending_since = None
            elif self._pending_since is None:
                self._pending_since = self._clock()

    def set_recovering(self, recovering: bool) -> None:
        """State recovery (of an owned partition, or of the catalog) started (True) or is complete (False)."""
        with self._lock:
            self._recovering = recovering

    def set_assigned(self, assigned: bool = True) -> None:
        """The group assignment arrived (even an empty one)."""
        with self._lock:
            self._assigned = assigned

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

    def problems(self) -> list[str]:
        """Why the process is not alive (empty: alive)."""
        now = self._clock()
        out: list[str] = []
        # Until the loop's heartbeat task first runs (faust starts services and joins the group
        # first), the longer start-up allowance applies.
        loop_timeout = self.loop_timeout if self._loop_seen else max(self.loop_timeout, self.liveness_timeout)
        if now - self._last_loop > loop_timeout:
            out.append(f"event loop blocked for more than {loop_timeout:g}s")
        if now - self._last_beat > self.liveness_timeout:
            out.append(f"main loop silent for more than {self.liveness_timeout:g}s")
        with self._lock:
            pending_since = self._pending_since
        if pending_since is not None:
            stalled_for = now - max(pending_since, self._last_batch)
            if stalled_for > self.consume_timeout:
                out.append(f"consume loop made no progress for more than {self.consume_timeout:g}s")
        return out

    def alive(self) -> bool:
        """True while the event loop, the tick and the consume loop all make progress."""
        return not self.problems()

    def ready(self) -> tuple[bool, list[str]]:
        """Whether the worker should receive traffic, and if not, what is missing (human-readable)."""
        now = self._clock()
        missing: list[str] = []
        with self._lock:
            if not self._assigned:
                missing.append("no partition assignment yet")
            if self._recovering:
                missing.append("state recovery in progress")
            if self._model_version is None:
                missing.append("no model loaded")
            if self._broker_ok_at is None:
                missing.append("broker not reached yet")
            elif now - self._broker_ok_at > self.broker_timeout:
                missing.append(f"broker silent for more than {self.broker_timeout:g}s")
        missing.extend(self.problems())
        return (not missing, missing)

    def snapshot(self) -> dict[str, object]:
        """Everything known, for the JSON bodies."""
        ready, missing = self.ready()
        now = self._clock()
        problems = self.problems()
        return {
            "alive": not problems,
            "problems": problems,
            "ready": ready,
            "missing": missing,
            "model_version": self._model_version,
            "recovering": self._recovering,
            "last_beat_seconds_ago": round(now - self._last_beat, 3),
            "last_loop_seconds_ago": round(now - self._last_loop, 3),
            "last_batch_seconds_ago": round(now - self._last_batch, 3),
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "kairos"
    health: Health  # set on the subclass made per server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = metrics_exposition.render_latest()
            self._send(200, body, content_type)
        elif path == "/healthz":
            snap = self.health.snapshot()
            alive = {
                k: snap[k] for k in ("alive", "problems", "last_beat_seconds_ago", "last_loop_seconds_ago")
            }
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


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a cap on connections served at once (each holds a thread).

    Past the cap a connection is answered ``503`` at once from the accepting thread and closed, so
    a flood of slow clients costs no thread each; ``on_refused`` is called for each (a metric).
    Used by the worker's metrics/health server and by ``kairos console``.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        cap: int,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max(1, cap))
        self._on_refused = on_refused

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            if self._on_refused is not None:
                self._on_refused()
            try:
                request.settimeout(0.5)
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def start_web_server(
    host: str,
    port: int,
    health: Health,
    max_connections: int = 16,
    socket_timeout: float = 5.0,
) -> WebServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (0 picks a free port) in a thread.

    At most ``max_connections`` requests are served at once; a client idle for ``socket_timeout``
    seconds is disconnected.
    """
    handler = type("KairosHandler", (_Handler,), {"health": health, "timeout": socket_timeout})
    httpd = BoundedHTTPServer((host, port), handler, max_connections, metrics.WEB_REFUSED.inc)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="kairos-web", daemon=True
    )
    thread.start()
    server = WebServer(httpd, thread)
    log.info("metrics and health on %s:%d", server.host, server.port)
    return server
