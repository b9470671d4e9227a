"""Shared fixtures: one small simulated shop, advanced two days, reused by the world tests."""

from __future__ import annotations

import pytest

from stream.simulator import DAY, Message, SimConfig, World

SMALL = SimConfig(seed=11, n_users=800, n_items=500, n_categories=12, restock_hours=6.0, promotion_rate=0.02)


@pytest.fixture(scope="package")
def two_days() -> tuple[World, list[Message]]:
    """A small world and everything it produced in its first two simulated days."""
    world = World(SMALL)
    return world, world.advance(world.now + 2 * DAY)
