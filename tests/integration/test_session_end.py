"""A session ends on the real broker: the abandonment push comes after the configured inactivity, never
while the shopper is still on the site (real worker process, real small model, event-time clock)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.contract import CatalogUpdate, Event, EventContext, EventType
from stream.partitioning import partition_for
from tests.support.worker import (
    WorkerProcess,
    produce,
    pushes_for,
    running_worker,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration

GAP = 600.0  # session end and the active window, event-time seconds
ENV = {
    "KAIROS_POLICY__ACTIVE_WINDOW_SECONDS": str(GAP),
    "KAIROS_POLICY__SESSION_END_SECONDS": str(GAP),
    "KAIROS_POLICY__THRESHOLD": "0.0",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__TRIGGER_THRESHOLDS": json.dumps({"cart_abandonment": 0.0, "browse_abandonment": 0.0}),
    "KAIROS_POLICY__CART_ABANDONMENT_DELAY_SECONDS": "1e9",  # only the session end may push
    "KAIROS_POLICY__MAX_PER_CATEGORY_PER_LOCAL_DAY": "0",
}
T0 = 1_781_006_400.0  # 2026-06-09T12:00Z: midday, users in UTC, no quiet hours
UTC = EventContext(device="web", locale="en-GB", time_zone="UTC")


@pytest.fixture(scope="module")
def worker(broker: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(
        broker, tmp_path_factory.mktemp("session-end-state"), model_dir, ENV, "kairos-session-end"
    ) as w:
        yield w


def _event(event_id: str, user: str, kind: EventType, item: str, ts: float) -> Event:
    return Event(
        event_id=event_id,
        user_id=user,
        type=kind,
        item_id=item,
        ts=ts,
        session_id=f"{user}-s",
        context=UTC,  # type: ignore[arg-type]
    )


def _send(broker: str, worker: WorkerProcess, events: list[Event]) -> None:
    start = worker.metric("kairos_events_total")
    produce(broker, settings_for(broker).topics.events, [(e.user_id.encode(), e) for e in events])
    wait_for(lambda: worker.metric("kairos_events_total") >= start + len(events), 30, what="events processed")
    time.sleep(1.0)  # several ticks: anything due has been decided and produced


def test_the_abandonment_push_comes_after_the_inactivity_and_never_during_activity(
    broker: str, worker: WorkerProcess, model_dir: Path
) -> None:
    items = [i for i in json.loads((model_dir / "items.json").read_text()) if isinstance(i, str)][100:104]
    settings = settings_for(broker)
    produce(
        broker,
        settings.topics.catalog,
        [
            (
                i.encode(),
                CatalogUpdate(
                    item_id=i, title=f"Item {i}", category="c", price=50.0, stock=5, updated_at=T0 - 60
                ),
            )
            for i in items
        ],
    )
    shopper = "u-leaves"
    mine = partition_for(shopper, settings.topics.partitions)
    clock = next(
        u for n in range(1000) if partition_for(u := f"u-clock-{n}", settings.topics.partitions) == mine
    )
    # Browsing: two views of one item, a cart of another. Nothing is pushed while the shopper is here.
    _send(
        broker,
        worker,
        [
            _event("s-1", shopper, "view", items[0], T0),
            _event("s-2", shopper, "view", items[0], T0 + 30),
            _event("s-3", shopper, "add_to_cart", items[1], T0 + 60),
            _event("c-1", clock, "view", items[3], T0 + 500),  # 440 s after the last event: still a session
        ],
    )
    assert pushes_for(broker, shopper) == []
    # The shopper comes back before the gap ends: the session goes on, the session end moves.
    _send(
        broker,
        worker,
        [
            _event("s-4", shopper, "view", items[2], T0 + 550),
            _event("c-2", clock, "view", items[3], T0 + 1000),
        ],
    )
    assert pushes_for(broker, shopper) == []  # would have fired at T0 + 660 without the return
    # Away for the whole gap: the session has ended, and one abandonment push goes out.
    _send(broker, worker, [_event("c-3", clock, "view", items[3], T0 + 1200)])
    wait_for(lambda: bool(pushes_for(broker, shopper)), 30, interval=0.3, what="the session-end push")
    [push] = pushes_for(broker, shopper)
    assert (push.item_id, push.trigger) in {(items[1], "cart_abandonment"), (items[0], "browse_abandonment")}
    assert push.event_ts == pytest.approx(T0 + 550)  # the last event before the gap
    assert push.created_at == pytest.approx(T0 + 1200)  # decided when the clock passed T0 + 1150
    assert push.collapse_key == f"kairos-{shopper}"
