"""Fixtures for the operations tests: the Prometheus tools and a live metrics server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream import metrics_record
from stream.web import Health, WebServer, start_web_server

ROOT = Path(__file__).resolve().parents[2]


def _install_prometheus() -> None:
    # `make test` runs this script first; running it here too lets plain `pytest` work. It is a no-op when
    # the tools are present and exits quietly without root.
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "install-test-deps.sh")], timeout=600, check=False, capture_output=True
    )


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool; skips only when it is absent and cannot be installed."""
    if shutil.which("promtool") is None:
        _install_prometheus()
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed and deploy/install-test-deps.sh could not install it (needs root)"
        )
    return path


@pytest.fixture(scope="session")
def prometheus_available() -> None:
    """Skips only when the prometheus server binary is absent and cannot be installed."""
    if shutil.which("prometheus") is None:
        _install_prometheus()
    if shutil.which("prometheus") is None:
        pytest.skip(
            "prometheus is not installed and deploy/install-test-deps.sh could not install it (needs root)"
        )


@pytest.fixture()
def live_server() -> Iterator[tuple[WebServer, Health]]:
    """A stream.web server on a free loopback port, with every known label set initialised."""
    metrics_record.init_labels(["events", "catalog", "consent"])
    health = Health()
    server = start_web_server("127.0.0.1", 0, health)
    try:
        yield server, health
    finally:
        server.stop()
