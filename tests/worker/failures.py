"""What the worker tests of failure paths share: a store that cannot be re-read, an exit that is caught."""

from __future__ import annotations

from typing import Any

import pytest

from stream.engine import Engine


class Exited(Exception):
    """Raised where the worker would end the process (``exit_for_redelivery``)."""


def unreadable_partitions(engine: Engine) -> None:
    """Make every re-read of a partition from its store fail."""

    def unreadable(partition: int, store: Any) -> Any:
        raise RuntimeError("partition row does not decode")

    engine.load_partition = unreadable  # type: ignore[method-assign]


def caught_exits(monkeypatch: pytest.MonkeyPatch, module: str) -> list[str]:
    """Replace ``module``'s ``exit_for_redelivery`` by one that records its message and raises
    :class:`Exited`; returns the messages."""
    exits: list[str] = []

    def exit_for_redelivery(what: str) -> None:
        exits.append(what)
        raise Exited

    monkeypatch.setattr(f"{module}.exit_for_redelivery", exit_for_redelivery)
    return exits
