"""The embedded broker's start: the listener on its port must be its own process."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import BrokerError, EmbeddedBroker, _log_tail, listener_pids


def _listening(family: socket.AddressFamily, host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack: IPv4 reaches it too
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot listen on {host}: {exc}")
    sock.listen()
    return sock


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another listener (this test process) holds for the test's length."""
    sock = _listening(socket.AF_INET, "127.0.0.1")
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_listener_pids_name_the_listening_process(taken_port: int) -> None:
    assert listener_pids(taken_port) == {os.getpid()}
    assert listener_pids(taken_port, "127.0.0.1") == {os.getpid()}


def test_a_listener_on_another_address_with_the_same_port_is_not_the_brokers_rival() -> None:
    # Only a listener a connection to the broker's address can reach counts: one on 127.0.0.2 does
    # not stop a broker on 127.0.0.1 from binding the same port (it was taken for the broker's rival,
    # and the start waited until its timeout).
    other = _listening(socket.AF_INET, "127.0.0.2")
    try:
        port = int(other.getsockname()[1])
        assert listener_pids(port, "127.0.0.1") == set()
        with EmbeddedBroker(port=port) as broker:
            assert broker.port == port
            assert listener_pids(port, "127.0.0.1") == {broker._proc.pid}  # type: ignore[union-attr]
    finally:
        other.close()


def test_an_ipv6_wildcard_listener_is_seen_on_an_ipv4_address() -> None:
    # A dual-stack [::] listener takes the port for IPv4 too, and answers connections to 127.0.0.1.
    sock = _listening(socket.AF_INET6, "::")
    try:
        assert listener_pids(int(sock.getsockname()[1]), "127.0.0.1") == {os.getpid()}
    finally:
        sock.close()


def test_a_picked_port_taken_before_tansu_binds_is_retried_on_another(taken_port: int) -> None:
    broker = EmbeddedBroker()
    broker.port = taken_port  # as if a parallel test bound it between free_port() and Tansu's bind
    with broker:
        assert broker.port != taken_port
        assert listener_pids(broker.port, broker.host) == {broker._proc.pid}  # type: ignore[union-attr]


def test_a_configured_port_that_is_taken_is_a_clear_error(taken_port: int) -> None:
    with pytest.raises(BrokerError, match=f"port {taken_port} is taken by another process"):
        EmbeddedBroker(port=taken_port).start()


def test_the_error_of_a_tansu_that_exits_quotes_its_log_tail_as_one_plain_line(tmp_path: Path) -> None:
    log = tmp_path / "tansu.log"
    log.write_bytes(b"x" * 5000 + b"\n\x1b[31mERROR\x1b[0m bind failed\n  address in use\n")
    tail = _log_tail(log)
    assert tail.endswith("ERROR bind failed address in use")
    assert len(tail) <= 2000 and "\x1b" not in tail and "\n" not in tail
