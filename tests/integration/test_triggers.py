"""Catalog and timer triggers end to end: real broker, real worker process, real (small) model.

(b) A catalog change (price drop, back in stock, promotion start) for an item reaches the user who
    browsed it several times, as a push with that trigger and every contract field filled; a user who
    never engaged with the item gets nothing.
(c) An ``add_to_cart`` without purchase yields a ``cart_abandonment`` push once the delay has passed
    in event time (not before); a purchase before the delay cancels it.

Settings that make the scenarios deterministic (``ENV`` below), on top of the test defaults (event-time
clock, no holdout, 0.2 s ticks):

* ``TRIGGER_THRESHOLDS``: the triggers under test need interest >= 0, so the outcome does not depend
  on how the small test model happens to calibrate; ``in_session`` and ``promotion_ending`` need
  interest >= 1, which a calibrated probability never reaches, so no in-session push takes the user's
  minimum gap, item-repeat window or caps before the trigger under test fires.
* ``MIN_THRESHOLD`` 0 / ``MAX_THRESHOLD`` 1: the thresholds above are not clipped.
* ``INTEREST_INDEX_MIN_INTEREST`` 0: every scored candidate enters the item -> users index. Who is
  reached is then decided by *which* items were the user's candidates (the browsed item is; an item
  the user never engaged with, nor co-visited, nor trending for them, is not), which is what (b) checks.
* ``CART_ABANDONMENT_DELAY_SECONDS`` 300: five minutes of event time.

Event time: each partition's clock is its event-time watermark (the highest event time seen on that
partition), so time is moved forward with later events of other users of the same partition, never
with the wall clock. Every test uses
its own users, items and day (``DAY0 + n days``, midday UTC, users in UTC, so no quiet hours); the
watermark only moves forward across the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.contract import CatalogUpdate, Event, EventContext, Promotion, Push
from stream.partitioning import partition_for
from stream.settings import Settings
from tests.support.worker import (
    WorkerProcess,
    produce,
    pushes_for,
    running_worker,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration

ENV = {
    "KAIROS_POLICY__TRIGGER_THRESHOLDS": json.dumps(
        {
            "in_session": 1.0,
            "promotion_ending": 1.0,
            "price_drop": 0.0,
            "back_in_stock": 0.0,
            "promotion_start": 0.0,
            "cart_abandonment": 0.0,
            "new_arrival": 1.0,  # the test items are first seen live: no arrival push may take a gap
        }
    ),
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__MAX_THRESHOLD": "1.0",
    "KAIROS_POLICY__INTEREST_INDEX_MIN_INTEREST": "0.0",
    "KAIROS_POLICY__CART_ABANDONMENT_DELAY_SECONDS": "300",
}
DELAY = 300.0
DAY0 = 1_780_401_600.0  # 2026-06-02T12:00Z
UTC = EventContext(device="web", locale="en-GB", time_zone="UTC")


@pytest.fixture(scope="module")
def worker(broker: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module, with the deterministic trigger settings."""
    with running_worker(
        broker, tmp_path_factory.mktemp("triggers-state"), model_dir, ENV, "kairos-triggers"
    ) as w:
        yield w


def _settings(broker: str) -> Settings:
    return settings_for(broker)


def _event(event_id: str, user: str, kind: str, item: str, ts: float, session: str) -> Event:
    return Event(
        event_id=event_id,
        user_id=user,
        type=kind,  # type: ignore[arg-type]
        item_id=item,
        ts=ts,
        session_id=session,
        price=100.0,
        quantity=1 if kind in ("add_to_cart", "purchase") else None,
        context=UTC,
    )


def _item(
    item: str, ts: float, price: float = 100.0, stock: int = 5, promotion: Promotion | None = None
) -> CatalogUpdate:
    return CatalogUpdate(
        item_id=item,
        title=f"Test item {item}",
        category="test-category",
        price=price,
        stock=stock,
        promotion=promotion,
        updated_at=ts,
    )


def _send_events(broker: str, events: list[Event]) -> None:
    produce(broker, _settings(broker).topics.events, [(e.user_id.encode(), e) for e in events])


def _send_catalog(broker: str, updates: list[CatalogUpdate]) -> None:
    produce(broker, _settings(broker).topics.catalog, [(u.item_id.encode(), u) for u in updates])


def _processed(worker: WorkerProcess, at_least: float) -> None:
    wait_for(
        lambda: worker.metric("kairos_events_total") >= at_least, 30, what=f"{at_least} events processed"
    )


def _wait_push(broker: str, user: str, trigger: str, timeout: float = 30.0) -> Push:
    found: list[Push] = []

    def has() -> bool:
        found[:] = [p for p in pushes_for(broker, user) if p.trigger == trigger]
        return bool(found)

    wait_for(has, timeout, interval=0.3, what=f"a {trigger} push for {user}")
    assert len(found) == 1, found
    return found[0]


def _assert_filled(push: Push, with_promotion: bool) -> None:
    """Every contract field carries a real value (``promotion_id`` only when a promotion runs)."""
    data: dict[str, Any] = push.model_dump()
    for name, value in data.items():
        if name == "promotion_id" and not with_promotion:
            assert value is None
            continue
        assert value is not None, name
        if isinstance(value, str | dict):
            assert value, name
    assert push.expires_at > push.created_at
    assert push.threshold == 0.0 <= push.score <= 1.0
    assert {"calibrated_p", "interest", "threshold"} <= set(push.features)


CATALOG_CASES = {
    # trigger: (before, after) as (price, stock, promotion?) of the browsed item
    "price_drop": ((100.0, 5, False), (79.0, 5, False)),
    "back_in_stock": ((100.0, 0, False), (100.0, 7, False)),
    "promotion_start": ((100.0, 5, False), (100.0, 5, True)),
}


@pytest.mark.parametrize("trigger", list(CATALOG_CASES))
def test_catalog_change_reaches_the_interested_user(
    trigger: str, broker: str, worker: WorkerProcess, known_items: list[str]
) -> None:
    n = list(CATALOG_CASES).index(trigger)
    t0 = DAY0 + n * 86_400.0
    fan, other = f"u-fan-{trigger}", f"u-other-{trigger}"
    item = known_items[10 + n]
    others = known_items[40 + 4 * n : 44 + 4 * n]  # the other user's own items: >= 3 (no trending)
    (before_price, before_stock, _), (after_price, after_stock, promo) = CATALOG_CASES[trigger]
    _send_catalog(
        broker, [_item(item, t0 - 60, before_price, before_stock), *(_item(i, t0 - 60) for i in others)]
    )

    # The other user browses their own items first (before the item is trending), the fan after.
    start = worker.metric("kairos_events_total")
    theirs = [
        _event(f"{other}-v{k}", other, "view", i, t0 - 300 + 20 * k, f"{other}-s")
        for k, i in enumerate(others)
    ]
    _send_events(broker, theirs)
    _processed(worker, start + len(theirs))
    fans = [_event(f"{fan}-v{k}", fan, "view", item, t0 + 20 * k, f"{fan}-s") for k in range(4)]
    _send_events(broker, fans)
    _processed(worker, start + len(theirs) + len(fans))  # the fan's candidates are scored and indexed

    promotion = (
        Promotion(promotion_id=f"promo-{item}", discount=0.25, starts_at=t0, ends_at=t0 + 3 * 86_400.0)
        if promo
        else None
    )
    change_ts = t0 + 100
    read = worker.metric("kairos_catalog_updates_total")
    _send_catalog(broker, [_item(item, change_ts, after_price, after_stock, promotion)])
    wait_for(lambda: worker.metric("kairos_catalog_updates_total") > read, 30, what="the change read")
    time.sleep(1.0)  # several ticks: the fan's partition clock (t0 + 60) has not reached the change
    assert [p for p in pushes_for(broker, fan) if p.trigger == trigger] == []

    # The change is announced where the fan's partition's stream passes its time: an event at t0 + 130.
    (clock,) = _same_partition_as(fan, f"u-clock-{trigger}")
    _send_events(broker, [_event(f"{clock}-v", clock, "view", others[0], t0 + 130, f"{clock}-s")])
    push = _wait_push(broker, fan, trigger)
    assert push.item_id == item
    assert push.event_ts == change_ts
    assert push.created_at == pytest.approx(t0 + 130)  # decided there, not when it was read
    assert push.price == pytest.approx(after_price * (0.75 if promo else 1.0))
    assert push.title == f"Test item {item}" and push.category == "test-category"
    if promo:
        assert push.promotion_id == f"promo-{item}"
        assert push.features["discount"] == pytest.approx(0.25)
    if trigger == "price_drop":
        assert push.features["previous_price"] == pytest.approx(before_price)
    _assert_filled(push, with_promotion=promo)
    # A user who never engaged with the item is not in its interest index: nothing for them.
    assert [p for p in pushes_for(broker, other) if p.item_id == item] == []


def _same_partition_as(user: str, *prefixes: str) -> list[str]:
    """One user id per prefix, each on ``user``'s partition."""
    n = Settings().topics.partitions
    mine = partition_for(user, n)
    return [next(f"{p}-{i}" for i in range(1000) if partition_for(f"{p}-{i}", n) == mine) for p in prefixes]


def test_cart_abandonment_after_the_delay_and_cancelled_by_purchase(
    broker: str, worker: WorkerProcess, known_items: list[str]
) -> None:
    t0 = DAY0 + 10 * 86_400.0
    # Timers follow their partition's event-time clock: the three users share one partition.
    abandoner = "u-cart-abandoner"
    buyer, clock = _same_partition_as(abandoner, "u-cart-buyer", "u-cart-clock")
    carted, bought = known_items[60], known_items[61]
    filler = known_items[62:66]
    _send_catalog(broker, [_item(i, t0 - 60) for i in (carted, bought, *filler)])

    start = worker.metric("kairos_events_total")
    events = [
        _event("ab-v", abandoner, "view", carted, t0, "ab-s"),
        _event("ab-c", abandoner, "add_to_cart", carted, t0 + 10, "ab-s"),
        _event("by-v", buyer, "view", bought, t0, "by-s"),
        _event("by-c", buyer, "add_to_cart", bought, t0 + 10, "by-s"),
        _event("by-p", buyer, "purchase", bought, t0 + 60, "by-s"),  # before the delay: cancels
        # Event time moves to t0 + 200: the carts are 190 s old, under the 300 s delay.
        _event("ck-1", clock, "view", filler[0], t0 + 200, "ck-s"),
    ]
    _send_events(broker, events)
    _processed(worker, start + len(events))
    time.sleep(1.0)  # several worker ticks at watermark t0 + 200
    assert [p for p in pushes_for(broker, abandoner) if p.trigger == "cart_abandonment"] == []

    # Later events of another user move event time past t0 + 10 + 300: the abandoner's timer is due.
    later = [_event(f"ck-{k}", clock, "view", filler[k % 4], t0 + 200 + 100 * k, "ck-s") for k in range(2, 4)]
    _send_events(broker, later)
    push = _wait_push(broker, abandoner, "cart_abandonment")
    assert push.item_id == carted
    assert push.event_ts == pytest.approx(t0 + 10)  # the add_to_cart that armed the timer
    # Decided when the partition's clock passed the due time (t0 + 310): the clock event at t0 + 400.
    assert push.created_at == pytest.approx(t0 + 400)
    assert push.expires_at > push.created_at and push.reason and push.model_version
    # The same sweep saw the buyer's timer, if it had still been there: the purchase cancelled it.
    assert [p for p in pushes_for(broker, buyer) if p.trigger == "cart_abandonment"] == []
