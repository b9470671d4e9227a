"""The embedded broker's start: the listener on its port must be its own process."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from stream.broker import BrokerError, EmbeddedBroker, listener_owner


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another listener (this test process) holds for the test's length."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_listener_owner_names_the_listening_process(taken_port: int) -> None:
    assert listener_owner(taken_port) == os.getpid()


def test_a_picked_port_taken_before_tansu_binds_is_retried_on_another(taken_port: int) -> None:
    broker = EmbeddedBroker()
    broker.port = taken_port  # as if a parallel test bound it between free_port() and Tansu's bind
    with broker:
        assert broker.port != taken_port
        assert listener_owner(broker.port) == broker._proc.pid  # type: ignore[union-attr]


def test_a_configured_port_that_is_taken_is_a_clear_error(taken_port: int) -> None:
    with pytest.raises(BrokerError, match=f"port {taken_port} is taken by another process"):
        EmbeddedBroker(port=taken_port).start()
