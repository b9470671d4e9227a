"""Catalog changes across restarts: each announced exactly once, wherever a restart or a crash falls.

A partition stores the time up to which catalog changes were announced to it
(``PartitionState.catalog_until``, with the commit of any announcement), and the catalog read at
start-up logs an item's later versions as changes (``CatalogView.put``): a restarted engine announces
exactly the changes after that time, those that came while no worker ran and those a crash lost with
the batch that announced them, and none again that a committed batch announced.
"""

from __future__ import annotations

from collections.abc import Callable

from stream.contract import CatalogUpdate
from stream.engine import Engine, Inbound
from stream.partition_rows import META_ROW
from stream.partitioning import partition_for
from stream.settings import Settings
from tests.stream.fakes import (
    ITEMS,
    PARTITIONS,
    T0,
    DictState,
    FakeScorer,
    PartitionView,
    catalog_entry,
    catalog_record,
    ev,
    make_settings,
)
from tests.stream.test_engine import neighbour_of

SETTINGS = make_settings(trigger_thresholds={"price_drop": 0.3})
WALL = make_settings({"clock": "wall"}, trigger_thresholds={"price_drop": 0.3})
START = [catalog_entry(i) for i in ITEMS]  # what the catalog held before the tests' changes
DROP = catalog_entry("i1", price=80.0, updated_at=T0 + 300)
U1 = partition_for("u1", PARTITIONS)


def started(
    settings: Settings,
    store: DictState,
    catalog: list[CatalogUpdate],
    clock: Callable[[], float] = lambda: 0.0,
) -> Engine:
    """An engine as a worker starts one: the whole catalog topic read as a bootstrap, then every
    partition recovered from the store."""
    engine = Engine(settings, FakeScorer(), clock=clock)
    engine.owned = set(range(PARTITIONS))
    engine.apply_catalog([catalog_record(c) for c in catalog], DictState(), announce=False)
    engine.owned = set()
    for p in range(PARTITIONS):
        engine.adopt(p, engine.load_partition(p, PartitionView(store, p)))
    return engine


def interested(
    settings: Settings = SETTINGS, clock: Callable[[], float] = lambda: 0.0
) -> tuple[Engine, DictState]:
    """u1 viewed i1 at T0 (interest 0.5: in the interest index, no push)."""
    store = DictState()
    engine = started(settings, store, START, clock)
    assert engine.process([ev("e1", "u1", "view", "i1", T0)], store).pushes == []
    return engine, store


def later(ts: float) -> Inbound:
    """An event of another user of u1's partition: it moves the partition's clock to ``ts``."""
    return ev(f"n{ts:.0f}", neighbour_of("u1"), "remove_from_cart", "i3", ts)


def test_a_price_drop_published_while_no_worker_ran_is_announced_after_the_restart() -> None:
    _, store = interested()
    # The drop was published after the worker stopped: the restarted one reads it at its bootstrap.
    engine = started(SETTINGS, store, [*START, DROP])
    assert engine.part(U1).catalog_until == T0  # as stored
    out = engine.process([later(T0 + 400)], store)
    assert [(p.trigger, p.user_id, p.price, p.features["previous_price"]) for _, p in out.pushes] == [
        ("price_drop", "u1", 80.0, 100.0)
    ]


def test_a_change_announced_before_a_restart_is_not_announced_again() -> None:
    engine, store = interested()
    engine.apply_catalog([catalog_record(DROP)], store)
    assert [p.trigger for _, p in engine.process([later(T0 + 400)], store).pushes] == ["price_drop"]
    again = started(SETTINGS, store, [*START, DROP])
    assert again.part(U1).catalog_until == T0 + 400
    out = again.process([later(T0 + 500)], store)
    assert out.pushes == [] and not [k for k, n in out.suppressions.items() if n and k[0] == "price_drop"]


def test_a_change_announced_by_a_batch_lost_to_a_crash_is_announced_by_its_redelivery() -> None:
    reference, uninterrupted = interested()
    reference.apply_catalog([catalog_record(DROP)], uninterrupted)
    pushed = [p for _, p in reference.process([later(T0 + 400)], uninterrupted).pushes]
    assert [p.trigger for p in pushed] == ["price_drop"]

    engine, store = interested()
    engine.apply_catalog([catalog_record(DROP)], store)
    committed = dict(store.data)
    assert [p for _, p in engine.process([later(T0 + 400)], store).pushes] == pushed
    store.data = committed  # the crash: the push went out, the batch's writes did not
    restarted = started(SETTINGS, store, [*START, DROP])
    restarted.apply_recovered_pushes(U1, pushed, store)
    out = restarted.process([later(T0 + 400)], store)
    assert out.pushes == [] and out.suppressions[("price_drop", "duplicate")] == 1
    # Announced again, the change completes the push's record as the batch did before the crash. (All
    # but the partition row: it holds the input offsets, and the fakes number records across the tests.)
    assert {k: v for k, v in store.data.items() if k[1] != META_ROW} == {
        k: v for k, v in uninterrupted.data.items() if k[1] != META_ROW
    }


def test_with_the_wall_clock_a_drop_published_during_a_restart_is_announced_at_the_first_tick() -> None:
    wall = [T0]
    engine, store = interested(WALL, lambda: wall[0])
    wall[0] = T0 + 60
    before = dict(store.data)
    assert engine.tick(store).pushes == []
    # An idle partition's announced-until moves at every tick, but is stored only with an announcement
    # (or with a batch): idle ticks write nothing.
    assert engine.part(U1).catalog_until == T0 + 60 and store.data == before
    wall[0] = T0 + 600  # the drop came at T0 + 300, while no worker ran
    restarted = started(WALL, store, [*START, DROP], lambda: wall[0])
    assert restarted.part(U1).catalog_until == T0
    out = restarted.tick(store)
    assert [(p.trigger, p.user_id) for _, p in out.pushes] == [("price_drop", "u1")]
    # Stored with that tick's commit: a second restart announces nothing again.
    stored = [v for (p, k), v in store.data.items() if p == U1 and k == META_ROW]
    assert b'"a":' in stored[0]
    wall[0] = T0 + 700
    assert started(WALL, store, [*START, DROP], lambda: wall[0]).tick(store).pushes == []
