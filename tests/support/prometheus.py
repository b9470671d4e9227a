"""A real Prometheus server for tests: scrapes given targets every second, answers PromQL over HTTP.

Uses the ``prometheus`` binary (Debian's package; ``deploy/install-test-deps.sh`` installs it). Each
server gets a temporary directory for its config and TSDB and a free loopback port::

    with PrometheusServer(["127.0.0.1:8123"]) as prom:
        prom.wait_for_scrape()
        prom.query('sum(kairos_events_total)')   # -> [{"metric": {...}, "value": [ts, "12"]}]
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` executable, or None when it is not installed."""
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusError(RuntimeError):
    """The server did not start, or a query failed."""


class PrometheusServer:
    """A throwaway Prometheus scraping ``targets`` (``host:port`` strings, path ``/metrics``).

    ``scrape_interval`` and ``evaluation_interval`` default to 1 s so tests stay short. ``rule_files``
    are loaded as alerting/recording rules. Use as a context manager; :meth:`stop` kills the server
    and deletes its data.
    """

    def __init__(
        self,
        targets: list[str],
        scrape_interval: str = "1s",
        job: str = "kairos-worker",
        rule_files: Sequence[Path] = (),
        start_timeout: float = 30.0,
    ) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise PrometheusError("the prometheus binary is not installed (run deploy/install-test-deps.sh)")
        self.binary = binary
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.start_timeout = start_timeout
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server's HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        """Write the config, start the server and wait until it reports ready."""
        self._tmp = tempfile.TemporaryDirectory(prefix="kairos-prom-")
        root = Path(self._tmp.name)
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        last_error = ""
        for _ in range(3):  # the free port can be taken between picking and binding
            self.port = _free_port()
            log_file = (root / "prometheus.log").open("wb")
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
            log_file.close()
            if self._wait_ready():
                return self
            last_error = (root / "prometheus.log").read_text(errors="replace")[-2000:]
            self._kill()
        self.stop()
        raise PrometheusError(f"prometheus did not become ready: {last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
        if payload.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {payload.get('errorType')}: {payload.get('error')}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of the HTTP API (vectors: ``{"metric", "value"}`` items)."""
        data = self._api("/api/v1/query", {"query": promql})
        result = data["result"]
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_value(self, promql: str) -> float | None:
        """The single value of an instant query (None when the result is empty)."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def targets_health(self) -> list[dict[str, Any]]:
        """The active targets with their ``health`` ("up"/"down"/"unknown") and ``lastError``."""
        return list(self._api("/api/v1/targets", {"state": "active"})["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts currently pending or firing."""
        return list(self._api("/api/v1/alerts")["alerts"])

    def wait_for_scrape(self, timeout: float = 20.0, after: float | None = None) -> None:
        """Wait until every target has been scraped successfully (after wall time ``after`` if given)."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.targets_health()
            if len(last) == len(self.targets) and all(
                t["health"] == "up" and (after is None or _scrape_time(t) > after) for t in last
            ):
                return
            time.sleep(0.2)
        raise PrometheusError(f"targets not scraped within {timeout}s: {last}")

    def stop(self) -> None:
        """Stop the server and delete its data directory."""
        self._kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _scrape_time(target: dict[str, Any]) -> float:
    # lastScrape is RFC 3339 with nanoseconds, e.g. 2026-01-01T10:00:00.123456789Z
    stamp = str(target.get("lastScrape", ""))
    if not stamp or stamp.startswith("0001-"):
        return 0.0
    from datetime import datetime

    main, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(main + "+00:00").timestamp()
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    return base + (float("0." + digits) if digits else 0.0)
