"""A cold item end to end: real broker, real worker, a real small model trained with a content mapping.

The model never saw the new item: the worker places it in the item space from its catalog message
(title and category through the bundled text model and the mapping fitted at training time), announces
it as a ``new_arrival`` to a shopper who browsed items like it, and steps the GRU on it when it is
viewed (no ``unknown_item``). A catalog message with a non-finite image vector is a dead letter.

Thresholds as in ``test_triggers.py``: the trigger under test needs interest >= 0 (the outcome does
not depend on the small model's calibration), ``in_session`` needs 1 (never reached), and every scored
candidate enters the interest index. ``new_arrival_similar_items`` covers the whole category: which
items of it a two-epoch model finds closest is not what this test is about.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.contract import CatalogUpdate, Event, EventContext, Push
from stream.dead_letters import DeadLetter
from stream.partitioning import partition_for
from stream.settings import Settings
from stream.simulator import SimConfig, World
from tests.support.worker import (
    WorkerProcess,
    produce,
    pushes_for,
    read_topic,
    running_worker,
    settings_for,
    train_small_model,
    wait_for,
)

pytestmark = pytest.mark.integration

ENV = {
    "KAIROS_POLICY__TRIGGER_THRESHOLDS": json.dumps(
        {"in_session": 1.0, "promotion_ending": 1.0, "cart_abandonment": 1.0, "new_arrival": 0.0}
    ),
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__MAX_THRESHOLD": "1.0",
    "KAIROS_POLICY__INTEREST_INDEX_MIN_INTEREST": "0.0",
    # Every item of the new item's category counts as similar: the small model's item space is young.
    "KAIROS_POLICY__NEW_ARRIVAL_SIMILAR_ITEMS": "100",
    "KAIROS_MODEL__CONTENT": "require",
}
T0 = 1_780_401_600.0  # 2026-06-02T12:00Z
UTC = EventContext(device="web", locale="en-GB", time_zone="UTC")
NEW = "n-arrival-1"


@pytest.fixture(scope="module")
def content_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The integration tests' small model, plus a content mapping fitted on the shop's catalog."""
    return train_small_model(tmp_path_factory.mktemp("content-model") / "artifact", content=True)


@pytest.fixture(scope="module")
def shop() -> list[CatalogUpdate]:
    """The simulated shop's catalog (seed 7: the model's training world)."""
    return World(SimConfig(seed=7, n_users=1500, n_items=600)).initial_catalog()


@pytest.fixture(scope="module")
def worker(
    broker: str, content_model: Path, shop: list[CatalogUpdate], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    # The known catalog is there before the worker starts: its first read is a bootstrap (no arrivals).
    produce(broker, settings_for(broker).topics.catalog, [(c.item_id.encode(), c) for c in shop])
    with running_worker(
        broker, tmp_path_factory.mktemp("arrival-state"), content_model, ENV, "kairos-arrival"
    ) as w:
        wait_for(lambda: w.metric("kairos_catalog_updates_total") >= len(shop), 60, what="the catalog read")
        yield w


def _event(event_id: str, user: str, item: str, ts: float) -> Event:
    return Event(
        event_id=event_id,
        user_id=user,
        type="view",
        item_id=item,
        ts=ts,
        session_id=f"{user}-s",
        price=100.0,
        context=UTC,
    )


def _same_partition_as(user: str, prefix: str) -> str:
    n = Settings().topics.partitions
    mine = partition_for(user, n)
    return next(f"{prefix}-{i}" for i in range(1000) if partition_for(f"{prefix}-{i}", n) == mine)


def test_a_cold_item_is_placed_announced_and_stepped_on(
    broker: str, worker: WorkerProcess, content_model: Path, shop: list[CatalogUpdate]
) -> None:
    known = set(json.loads((content_model / "items.json").read_text()))
    by_category: dict[str, list[CatalogUpdate]] = {}
    for c in shop:
        if c.item_id in known and c.stock > 0:
            by_category.setdefault(c.category, []).append(c)
    category = max(sorted(by_category), key=lambda name: len(by_category[name]))
    liked = by_category[category][:4]
    assert NEW not in known

    fan = "u-arrival-fan"
    views = [_event(f"{fan}-v{k}", fan, c.item_id, T0 + 20 * k) for k, c in enumerate(liked * 2)]
    produce(broker, settings_for(broker).topics.events, [(fan.encode(), e) for e in views])
    wait_for(lambda: worker.metric("kairos_events_total") >= len(views), 30, what="the fan's views")

    # A new item of that category, its title in the shop's words (an adjective of the category).
    adjective = liked[0].title.split()[1]
    new = CatalogUpdate(
        item_id=NEW,
        title=f"Novo {adjective} {category}",
        category=category,
        price=80.0,
        stock=9,
        updated_at=T0 + 200,
    )
    produce(broker, settings_for(broker).topics.catalog, [(NEW.encode(), new)])
    wait_for(lambda: worker.metric("kairos_content_items_added_total") >= 1, 30, what="the new item placed")

    # Announced where the fan's partition's stream passes its time.
    clock = _same_partition_as(fan, "u-arrival-clock")
    produce(
        broker,
        settings_for(broker).topics.events,
        [(clock.encode(), _event(f"{clock}-v", clock, liked[0].item_id, T0 + 230))],
    )
    found: list[Push] = []

    def announced() -> bool:
        found[:] = [p for p in pushes_for(broker, fan) if p.trigger == "new_arrival"]
        return bool(found)

    wait_for(announced, 30, interval=0.3, what="a new_arrival push for the fan")
    (push,) = found
    assert push.item_id == NEW and push.event_ts == T0 + 200
    assert push.title == new.title and push.category == category and push.price == pytest.approx(80.0)
    assert push.reason == f"New in: like the {category.lower()} you looked at"
    assert 0.0 <= push.score <= 1.0 and push.features["calibrated_p"] > 0.0

    # The model steps on the new item like on any other: no unknown item.
    unknown = worker.metric("kairos_events_total", outcome="unknown_item")
    seen = worker.metric("kairos_events_total")
    viewer = "u-arrival-viewer"
    produce(
        broker,
        settings_for(broker).topics.events,
        [(viewer.encode(), _event("v-new", viewer, NEW, T0 + 300))],
    )
    wait_for(lambda: worker.metric("kairos_events_total") > seen, 30, what="the view of the new item")
    assert worker.metric("kairos_events_total", outcome="unknown_item") == unknown


def test_a_non_finite_image_vector_is_a_dead_letter(broker: str, worker: WorkerProcess) -> None:
    topics = settings_for(broker).topics
    before = len(read_topic(broker, topics.dead_letters))
    raw = json.dumps(
        {
            "item_id": "n-bad-image",
            "title": "Broken vector",
            "category": "x",
            "price": 1.0,
            "stock": 1,
            "updated_at": T0,
            "image": [0.5, float("nan")],
        }
    ).encode()
    produce(broker, topics.catalog, [(b"n-bad-image", raw)])
    wait_for(lambda: len(read_topic(broker, topics.dead_letters)) > before, 30, what="the dead letter")
    letters = [
        DeadLetter.model_validate_json(m.value(), strict=False)
        for m in read_topic(broker, topics.dead_letters)
    ]
    bad = [d for d in letters if d.source_topic == topics.catalog]
    assert [d.reason for d in bad] == ["invalid_field"] and "image" in bad[0].error
    assert worker.get("/healthz")[0] == 200
