"""Catalog changes at event time: the view by time, and announcements independent of delivery timing."""

from __future__ import annotations

from stream.catalog_view import VERSIONS_KEPT, CatalogView
from stream.engine import Engine, Inbound
from stream.partitioning import partition_for
from tests.stream.fakes import (
    PARTITIONS,
    T0,
    DictState,
    catalog_entry,
    catalog_record,
    ev,
    make_engine,
    make_settings,
)


def test_a_lookup_reads_the_version_in_force_at_its_time() -> None:
    view = CatalogView()
    assert view.put(catalog_entry("i1", price=100.0, updated_at=T0)) is None
    first = view.latest("i1")
    # A drop read early (its time is ahead): decisions before it still see the old price.
    assert view.put(catalog_entry("i1", price=80.0, updated_at=T0 + 300)) == first
    assert view.at("i1", T0 + 299).price == 100.0  # type: ignore[union-attr]
    assert view.at("i1", T0 + 300).price == 80.0  # type: ignore[union-attr]
    assert view.latest("i1").price == 80.0  # type: ignore[union-attr]
    # Before every known version the item reads as its oldest; an unknown item is None.
    assert view.at("i1", T0 - 10).price == 100.0  # type: ignore[union-attr]
    assert view.at("nope", T0) is None and "i1" in view and len(view) == 1
    # Versions are kept by count (never by timing): the oldest go first.
    for k in range(VERSIONS_KEPT + 3):
        view.put(catalog_entry("i1", price=50.0 - k, updated_at=T0 + 1000 + k))
    assert view.at("i1", T0).price == 50.0 - 3  # type: ignore[union-attr]
    assert view.remove("i1") and view.at("i1", T0 + 5000) is None and not view.remove("i1")


def test_changes_come_out_by_time_then_arrival_and_are_forgotten() -> None:
    view = CatalogView()
    a = view.record_change(None, catalog_entry("a", updated_at=T0 + 20))
    b = view.record_change(None, catalog_entry("b", updated_at=T0 + 10))
    c = view.record_change(None, catalog_entry("c", updated_at=T0 + 20))
    assert view.changes_between(T0, T0 + 20) == [b, a, c]
    assert view.changes_between(T0 + 10, T0 + 19) == []  # exclusive start, inclusive end
    assert view.forget_changes_until(T0 + 10) == 1 and view.pending_changes() == 2


def _engine() -> tuple[Engine, DictState]:
    engine = make_engine(make_settings(trigger_thresholds={"price_drop": 0.3}))
    return engine, DictState()


def _stream() -> list[Inbound]:
    # The same records (offsets included) for every replay.
    if not _STREAM:
        _STREAM.extend(_make_stream())
    return list(_STREAM)


_STREAM: list[Inbound] = []


def _make_stream() -> list[Inbound]:
    # u1 views i1 (interest indexed); others on u1's partition move its clock past the drop.
    mine = partition_for("u1", PARTITIONS)
    others = [u for i in range(200) if partition_for(u := f"n{i}", PARTITIONS) == mine][:3]
    return [
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", others[0], "view", "i2", T0 + 100),
        ev("e3", others[1], "view", "i3", T0 + 200),
        ev("e4", others[2], "view", "i4", T0 + 400),
        ev("e5", "u1", "view", "i2", T0 + 500),
    ]


def _replay(deliver_after: int) -> tuple[list[tuple[str, float, float]], dict[tuple[int, bytes], bytes]]:
    """Process the stream with the price drop (time T0 + 150) read after ``deliver_after`` records."""
    engine, store = _engine()
    drop = catalog_record(catalog_entry("i1", price=80.0, updated_at=T0 + 150))
    records = _stream()
    pushes = []
    for k in range(len(records) + 1):
        if k == deliver_after:
            out = engine.apply_catalog([drop], store)
            assert out.catalog_late == 0
            pushes += out.pushes
        if k < len(records):
            pushes += engine.process([records[k]], store).pushes
    return [(p.push_id, p.created_at, p.price) for _, p in pushes], dict(store.data)


def test_a_change_read_before_the_stream_reaches_it_is_announced_at_the_same_place() -> None:
    # Read before any event, or after records whose times are before the change: same pushes, same states.
    first_pushes, first_state = _replay(0)
    assert [(price, created) for _, created, price in first_pushes] == [(80.0, T0 + 200)]
    for k in (1, 2):
        assert _replay(k) == (first_pushes, first_state)


def test_a_change_read_after_the_stream_passed_it_is_announced_at_once_and_counted() -> None:
    engine, store = _engine()
    for rec in _stream()[:4]:
        engine.process([rec], store)
    out = engine.apply_catalog([catalog_record(catalog_entry("i1", price=80.0, updated_at=T0 + 150))], store)
    assert out.catalog_late == 1
    assert [(p.trigger, p.created_at) for _, p in out.pushes] == [("price_drop", T0 + 400)]


def test_the_tick_forgets_changes_every_owned_partition_announced() -> None:
    engine, store = _engine()
    engine.apply_catalog([catalog_record(catalog_entry("i1", price=80.0, updated_at=T0 + 150))], store)
    assert engine.catalog.pending_changes() == 1
    engine.tick(store)
    assert engine.catalog.pending_changes() == 1  # no partition's clock reached it yet
    for p in range(PARTITIONS):
        user = next(u for i in range(200) if partition_for(u := f"m{i}", PARTITIONS) == p)
        engine.process([ev(f"t{p}", user, "view", "i3", T0 + 200)], store)
    engine.tick(store)
    assert engine.catalog.pending_changes() == 0
