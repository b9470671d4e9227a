"""Shared builders for the policy tests: configs, catalog entries, candidates and local-time clocks."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stream.contract import CatalogUpdate, Promotion
from stream.policy import Candidate
from stream.policy_config import PolicyConfig

T0 = 1_717_236_000.0  # 2024-06-01 10:00:00 UTC: daytime in UTC, no quiet hours


def local_ts(zone: str, year: int, month: int, day: int, *clock: int, fold: int = 0) -> float:
    """Epoch seconds of a wall-clock time in an IANA zone (``clock``: hour, minute, second)."""
    hour, minute, second = (*clock, 0, 0, 0)[:3]
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(zone), fold=fold).timestamp()


def config(**overrides: Any) -> PolicyConfig:
    """A config with the holdout off (unless given) so rule tests see every user.

    Thresholds are pinned here so the rule tests do not move when the tuned defaults do.
    """
    values: dict[str, Any] = {
        "holdout_share": 0.0,
        "threshold": 0.5,
        "trigger_thresholds": {"cart_abandonment": 0.35, "promotion_ending": 0.4},
        "min_push_lifetime_seconds": 0.0,
    }
    values.update(overrides)
    return PolicyConfig.model_validate(values)


def catalog(
    item_id: str = "i1",
    stock: int = 5,
    price: float = 100.0,
    category: str = "shoes",
    promotion: Promotion | None = None,
    updated_at: float = T0,
) -> CatalogUpdate:
    """A catalog entry."""
    return CatalogUpdate(
        item_id=item_id,
        title=f"Item {item_id}",
        category=category,
        price=price,
        stock=stock,
        promotion=promotion,
        updated_at=updated_at,
    )


def candidate(
    item_id: str = "i1",
    interest: float = 0.8,
    trigger: str = "in_session",
    category: str | None = "shoes",
    event_ts: float = T0,
    **overrides: Any,
) -> Candidate:
    """A candidate that passes every per-candidate rule unless overridden."""
    values: dict[str, Any] = {
        "item_id": item_id,
        "trigger": trigger,
        "interest": interest,
        "raw_score": 1.0,
        "features": {"calibrated_p": interest},
        "category": category,
        "title": f"Item {item_id}",
        "price": 100.0,
        "promotion_id": None,
        "discount": 0.0,
        "in_stock": True,
        "promotion_valid": True,
        "event_ts": event_ts,
        "cause": f"ev-{item_id}-{event_ts}",
    }
    values.update(overrides)
    return Candidate(**values)


@pytest.fixture
def cfg() -> PolicyConfig:
    """Default rules, holdout off."""
    return config()
