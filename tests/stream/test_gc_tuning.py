"""The worker's garbage-collector settings: the young threshold, and a freeze that thaws what it replaces."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from stream import gc_tuning


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_young_threshold_is_set_and_zero_keeps_pythons() -> None:
    before = gc.get_threshold()
    _, older, oldest = before
    gc_tuning.configure(0)
    assert gc.get_threshold() == before
    gc_tuning.configure(50_000)
    assert gc.get_threshold() == (50_000, older, oldest)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_a_cycle_frozen_and_then_dropped_is_collected_at_the_next_freeze() -> None:
    node = _Node()
    alive = weakref.ref(node)
    assert gc_tuning.freeze_long_lived() > 0
    del node
    gc.collect()
    assert alive() is not None  # frozen: full collections skip it
    gc_tuning.freeze_long_lived()  # e.g. after a model reload: thawed, collected, then frozen again
    assert alive() is None


def test_freezing_can_be_switched_off() -> None:
    gc.unfreeze()
    assert gc_tuning.freeze_long_lived(enabled=False) == 0
    assert gc.get_freeze_count() == 0
