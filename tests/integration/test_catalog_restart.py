"""A catalog change published while no worker runs is announced after the restart, and only once.

Real broker, real worker processes on one state directory, real (small) model. Each partition stores
the time up to which catalog changes were announced to it, and the worker's start-up read of the
catalog topic logs an item's later versions as changes (``docs/architecture.md``, the catalog's
bootstrap): a price drop published during a deploy's restart window reaches the shopper who browsed
the item, where the partition's event-time clock passes the drop's time, and a second restart does
not announce it again. Before session 50 the start-up read announced nothing, and the drop was lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_triggers import (
    DAY0,
    ENV,
    _event,
    _item,
    _processed,
    _same_partition_as,
    _send_catalog,
    _send_events,
    _wait_push,
)
from tests.support.worker import WorkerProcess, pushes_for

pytestmark = pytest.mark.integration

APP_ID = "kairos-catalog-restart"


def _started(broker: str, state: Path, model_dir: Path) -> WorkerProcess:
    worker = WorkerProcess(broker, state, model_dir, ENV, app_id=APP_ID).start()
    worker.wait_ready(120)
    return worker


def test_a_price_drop_published_while_the_worker_is_down_is_pushed_after_the_restart_once(
    broker: str, model_dir: Path, known_items: list[str], tmp_path: Path
) -> None:
    t0 = DAY0 + 30 * 86_400.0
    fan = "u-restart-fan"
    (clock,) = _same_partition_as(fan, "u-restart-clock")
    item, filler = known_items[100], known_items[101:104]
    _send_catalog(broker, [_item(i, t0 - 60) for i in (item, *filler)])
    state = tmp_path / "state"

    first = _started(broker, state, model_dir)
    try:
        views = [_event(f"{fan}-v{k}", fan, "view", item, t0 + 20 * k, f"{fan}-s") for k in range(4)]
        _send_events(broker, views)
        _processed(first, len(views))  # the fan's candidates are scored and indexed
    finally:
        first.stop()

    # While no worker runs: the drop, timed after the partition's clock (t0 + 60).
    _send_catalog(broker, [_item(item, t0 + 100, price=79.0)])

    second = _started(broker, state, model_dir)
    try:
        assert [p for p in pushes_for(broker, fan) if p.trigger == "price_drop"] == []
        _send_events(broker, [_event(f"{clock}-v1", clock, "view", filler[0], t0 + 130, f"{clock}-s")])
        push = _wait_push(broker, fan, "price_drop")
        assert push.item_id == item and push.event_ts == t0 + 100
        assert push.created_at == pytest.approx(t0 + 130)  # where the stream passed the drop's time
        assert push.price == pytest.approx(79.0) and push.features["previous_price"] == pytest.approx(100.0)
    finally:
        second.stop()

    third = _started(broker, state, model_dir)
    try:
        _send_events(broker, [_event(f"{clock}-v2", clock, "view", filler[1], t0 + 200, f"{clock}-s")])
        _processed(third, 1)
        third_pushes = [p for p in pushes_for(broker, fan) if p.trigger == "price_drop"]
        assert [p.push_id for p in third_pushes] == [push.push_id]  # announced once
    finally:
        third.stop()
