"""Fixtures for the integration tests: a real Tansu broker per module and one trained model per session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker
from stream.topics import ensure_topics
from tests.support.worker import settings_for, train_small_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GRU model trained for real on simulated shop events (seed 7, 600 items)."""
    return train_small_model(tmp_path_factory.mktemp("model") / "artifact")


@pytest.fixture(scope="module")
def known_items(model_dir: Path) -> list[str]:
    """Items the model knows (only those are scored, hence indexed), in a stable order."""
    items = json.loads((model_dir / "items.json").read_text())
    return [i for i in items if isinstance(i, str) and i.startswith("i")]


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """An embedded broker (memory storage) with Kairos's topics, shared by a module's tests."""
    with EmbeddedBroker() as b:
        ensure_topics(settings_for(b.bootstrap))
        yield b.bootstrap


@pytest.fixture
def own_broker() -> Iterator[str]:
    """A broker for one test alone, so everything on its topics is that test's."""
    with EmbeddedBroker() as b:
        ensure_topics(settings_for(b.bootstrap))
        yield b.bootstrap
