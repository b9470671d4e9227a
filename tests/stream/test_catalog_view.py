"""Catalog changes at event time: the view by time, and announcements independent of delivery timing."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from stream.catalog_view import CATALOG_RETENTION_SECONDS, CatalogView
from stream.contract import CatalogUpdate
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
from tests.stream.test_extreme_input import DAY, _jackets
from tests.stream.test_session_end import clock, neighbour
from tests.stream.test_session_end import engine as session_engine


def test_a_lookup_reads_the_version_in_force_at_its_time() -> None:
    view = CatalogView()
    assert view.put(catalog_entry("i1", price=100.0, updated_at=T0), base=True) == (False, None)
    first = view.latest("i1")
    # A drop read early (its time is ahead): decisions before it still see the old price.
    assert view.put(catalog_entry("i1", price=80.0, updated_at=T0 + 300)) == (True, first)
    assert view.at("i1", T0 + 299).price == 100.0  # type: ignore[union-attr]
    assert view.at("i1", T0 + 300).price == 80.0  # type: ignore[union-attr]
    assert view.latest("i1").price == 80.0  # type: ignore[union-attr]
    # A bootstrap version holds before its time; an item first read live does not exist before it.
    assert view.at("i1", T0 - 10).price == 100.0  # type: ignore[union-attr]
    assert view.put(catalog_entry("new", updated_at=T0 + 50)) == (True, None)
    assert view.at("new", T0 + 49) is None and view.at("new", T0 + 50) is not None
    assert view.at("nope", T0) is None and "i1" in view and len(view) == 2
    assert view.remove("i1") and view.at("i1", T0 + 5000) is None and not view.remove("i1")


def test_a_bootstrap_takes_an_items_first_version_as_a_base_and_its_later_ones_as_changes() -> None:
    """A worker's start-up read: with nothing before it, the first version read is no change (a
    compacted topic may have dropped what came before); every later one is a change from the version
    before it, which a partition announces if its stored announced-until is before it."""
    view = CatalogView()
    first = catalog_entry("i1", price=100.0, updated_at=T0)
    drop = catalog_entry("i1", price=80.0, updated_at=T0 + 300)
    assert view.put(first, base=True) == (False, None)
    assert view.put(drop, base=True) == (True, first)
    assert view.put(drop, base=True) == (False, None)  # read again
    assert view.put(catalog_entry("i1", price=90.0, updated_at=T0 + 100), base=True) == (False, first)
    assert view.at("i1", T0 - 10) == first  # the first still holds from the beginning of time


def test_a_lookup_is_the_latest_version_at_or_before_its_time_however_many_versions() -> None:
    """``at`` against its definition, for items of one version (read without bisect) and of several,
    bootstrapped or first read live, at times before, on and after each version's."""
    rng = random.Random(5)
    view = CatalogView()
    kept: dict[str, tuple[list[float], bool]] = {}
    for n in range(60):
        item, base = f"i{n}", rng.random() < 0.5
        offsets = sorted(rng.sample(range(0, 1000, 10), rng.choice([1, 1, 2, 3])))
        for k, dt in enumerate(offsets):
            view.put(catalog_entry(item, price=float(k + 1), updated_at=T0 + dt), base=base and k == 0)
        kept[item] = ([T0 + dt for dt in offsets], base)
    for item, (times, base) in kept.items():
        for t in [T0 - 5.0, *times, *(x - 0.5 for x in times), *(x + 0.5 for x in times), T0 + 2000.0]:
            before = [k for k, x in enumerate(times) if x <= t]
            expected = before[-1] + 1.0 if before else (1.0 if base else None)
            found = view.at(item, t)
            assert (found and found.price) == expected, (item, t)


def test_items_are_filed_under_the_category_of_every_kept_version() -> None:
    view = CatalogView()
    for item, category in (("b", "coats"), ("a", "coats"), ("c", "hats")):
        view.put(catalog_entry(item).model_copy(update={"category": category}), base=True)
    assert view.in_category("coats") == ["a", "b"] and view.in_category("shoes") == []
    # A move read ahead of its time leaves the item where it was before it, for the decisions before
    # it (with the newest version only, when the reader read the move would reach them).
    view.put(catalog_entry("a", updated_at=T0).model_copy(update={"category": "hats"}))
    assert view.in_category("coats") == ["a", "b"] and view.in_category("hats") == ["a", "c"]
    assert view.category_size("hats") == 2
    # Once the older version is forgotten, only the category it had leaves.
    view.forget_until(T0 + 1)
    assert view.in_category("coats") == ["b"] and view.in_category("hats") == ["a", "c"]
    view.remove("c")
    view.remove("a")
    assert view.in_category("hats") == [] and view.category_size("hats") == 0


def test_a_version_read_again_or_older_than_the_newest_is_no_change() -> None:
    view = CatalogView()
    old, new = (
        catalog_entry("i1", price=100.0, updated_at=T0),
        catalog_entry("i1", price=80.0, updated_at=T0 + 300),
    )
    view.put(old, base=True)
    assert view.put(new) == (True, old)
    assert view.put(new) == (False, None)  # the reader restarted from offset 0
    assert view.put(old) == (False, None)
    # An older version not seen before is kept for lookups, and is no change either.
    mid = catalog_entry("i1", price=90.0, updated_at=T0 + 100)
    assert view.put(mid)[0] is False
    assert view.at("i1", T0 + 150) == mid


def test_versions_and_changes_are_forgotten_by_time_not_by_count() -> None:
    view = CatalogView()
    view.put(catalog_entry("i1", price=100.0, updated_at=T0), base=True)
    for k in range(1, 11):
        is_change, previous = view.put(catalog_entry("i1", price=100.0 - k, updated_at=T0 + 100 * k))
        view.record_change(previous, view.latest("i1"))  # type: ignore[arg-type]
    assert view.at("i1", T0 + 150).price == 99.0  # type: ignore[union-attr]
    assert view.forget_until(T0 + 550) == 5 and view.pending_changes() == 5
    # The version in force at the horizon stays, and holds before it from now on.
    assert view.at("i1", T0 + 550).price == 95.0  # type: ignore[union-attr]
    assert view.at("i1", T0).price == 95.0  # type: ignore[union-attr]
    assert view.at("i1", T0 + 1000).price == 90.0  # type: ignore[union-attr]


def test_changes_come_out_by_time_then_item_and_a_removal_drops_its_pending_changes() -> None:
    view = CatalogView()
    b = view.record_change(None, catalog_entry("b", updated_at=T0 + 20))
    c = view.record_change(None, catalog_entry("c", updated_at=T0 + 10))
    a = view.record_change(None, catalog_entry("a", updated_at=T0 + 20))
    assert view.changes_between(T0, T0 + 20) == [c, a, b]  # same time: by item, not by arrival
    assert view.changes_between(T0 + 10, T0 + 19) == []  # exclusive start, inclusive end
    view.put(catalog_entry("a", updated_at=T0 + 20))
    assert view.remove("a") and view.changes_between(T0, T0 + 20) == [c, b]


def test_promotions_are_judged_in_the_version_in_force() -> None:
    from stream.contract import Promotion

    view = CatalogView()
    promo = Promotion(promotion_id="p", discount=0.3, starts_at=T0, ends_at=T0 + 1000)
    on = catalog_entry("i1", updated_at=T0).model_copy(update={"promotion": promo})
    view.put(on, base=True)
    small = Promotion(promotion_id="q", discount=0.1, starts_at=T0, ends_at=T0 + 1000)
    view.put(catalog_entry("i2", updated_at=T0).model_copy(update={"promotion": small}), base=True)
    # The promotion's removal, read early, does not take i1 off before its time.
    view.put(catalog_entry("i1", updated_at=T0 + 500))
    assert view.active(T0 + 100, 5) == ["i1", "i2"]
    assert view.active(T0 + 600, 5) == ["i2"]
    assert view.active(T0 + 100, 1) == ["i1"]
    view.forget_until(T0 + 2000)  # both promotions over: off the board
    assert view.active(T0 + 2000, 5) == []


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


def _replay(
    deliver_after: int,
) -> tuple[list[tuple[str, float, float | None]], dict[tuple[int, bytes], bytes]]:
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
    users = [
        next(u for i in range(200) if partition_for(u := f"m{i}", PARTITIONS) == p) for p in range(PARTITIONS)
    ]
    for p, user in enumerate(users):
        engine.process([ev(f"t{p}", user, "view", "i3", T0 + 200)], store)
    engine.tick(store)
    assert engine.catalog.pending_changes() == 1  # kept for the retention, for partitions behind
    for p, user in enumerate(users):
        engine.process([ev(f"u{p}", user, "view", "i3", T0 + 200 + CATALOG_RETENTION_SECONDS)], store)
    engine.tick(store)
    assert engine.catalog.pending_changes() == 0


def _random_ops(view: CatalogView, rng: random.Random, n: int) -> list[Any]:
    """``n`` random changes to the view (versions, moves between categories, promotions, removals, the
    log's reads and purges, forgetting by time), and what each answered."""
    from stream.contract import Promotion

    answers: list[Any] = []
    for _ in range(n):
        roll = rng.random()
        item = f"i{rng.randrange(8)}"
        if roll < 0.6:
            price, at = float(rng.randrange(50, 150)), T0 + rng.randrange(50)
            entry = catalog_entry(item, price=price, updated_at=at)
            entry = entry.model_copy(update={"category": f"c{rng.randrange(3)}"})
            if rng.random() < 0.3:
                discount = rng.choice([0.1, 0.2, 0.3])
                promo = Promotion(promotion_id="p", discount=discount, starts_at=T0, ends_at=T0 + 40)
                entry = entry.model_copy(update={"promotion": promo})
            is_change, previous = view.put(entry, base=rng.random() < 0.1)
            answers.append((is_change, previous))
            if is_change:
                answers.append(view.record_change(previous, entry).seq)
        elif roll < 0.75:
            answers.append(view.remove(item))
        elif roll < 0.85:
            answers.append(view.changes_between(T0 + rng.randrange(50), T0 + 60))
        elif roll < 0.92:
            answers.append(view.forget_until(T0 + rng.randrange(60)))
        else:
            answers.append((view.pending_changes(), view.active(T0 + rng.randrange(50), 3)))
    return answers


def _snapshot(view: CatalogView) -> Any:
    """Everything the view answers from."""
    return (
        sorted((i, list(e.versions), e.base) for i, e in view._items.items()),  # order: not state
        sorted(view._multi),
        view.changes_between(-math.inf, math.inf),
        dict(view._promoted),
        dict(view._categories_of),
        {c: sorted(m) for c, m in view._by_category.items()},
        view.active(T0 + 10, 8),
        {c: view.generation_of(c) for c in ("c0", "c1", "c2", "cat-i1")},
    )


def test_a_rollback_leaves_the_view_as_it_was_at_its_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random changes since a checkpoint, with the bounds on versions and changes small enough to bite:
    the view rolled back answers as it did at the checkpoint, and goes on exactly like a view that never
    saw them (the same answers, the same change numbers)."""
    monkeypatch.setattr("stream.catalog_view.MAX_VERSIONS", 3)
    monkeypatch.setattr("stream.catalog_view.MAX_CHANGES", 6)
    for seed in range(60):
        rng = random.Random(seed)
        view, twin = CatalogView(), CatalogView()
        before = rng.randrange(30)
        _random_ops(view, random.Random(seed), before)
        _random_ops(twin, random.Random(seed), before)
        rng = random.Random(seed + 1000)
        snapshot = _snapshot(view)
        generation = view.generation
        view.checkpoint()
        _random_ops(view, rng, rng.randrange(1, 30))
        view.rollback()
        assert _snapshot(view) == snapshot, seed
        assert view.generation > generation
        after = random.Random(seed + 2000)
        assert _random_ops(view, after, 30) == _random_ops(twin, random.Random(seed + 2000), 30), seed
        assert _snapshot(view)[:-1] == _snapshot(twin)[:-1], seed  # generations differ by design


def test_a_release_keeps_what_changed_since_the_checkpoint() -> None:
    view = CatalogView()
    view.checkpoint()
    view.put(catalog_entry("i1", updated_at=T0))
    view.release()
    assert "i1" in view
    with pytest.raises(RuntimeError):
        view.rollback()


def test_a_move_to_another_category_read_ahead_of_its_time_changes_no_discovery_before_it() -> None:
    """Found by the hostile-stream fuzz: the discovery pool listed the items whose newest version was
    in a category, so a move read early by the catalog reader took the item out of the pools of
    decisions before the move's time (and a move into the category put it in): the pushes depended
    on when the reader read it, which the catalog's versions by time are there to rule out."""
    runs = []
    for early in (False, True):
        e, store = session_engine(reminder_seconds=DAY), DictState()
        e.apply_catalog(_jackets(2), DictState(), announce=False)
        j2 = CatalogUpdate.model_validate_json(_jackets(2)[1].value or b"")
        coat = catalog_record(j2.model_copy(update={"category": "Coats", "updated_at": T0 + 2 * DAY}))
        if early:
            e.apply_catalog([coat], store)
        crowd = [ev(f"c{k}", neighbour("u1", k % 3), "view", "j2", T0 + k) for k in range(40)]
        out = e.process([*crowd, ev("d1", "u1", "view", "j1", T0 + 10)], store)
        out.extend(e.process([clock("u1", T0 + 10 + DAY, 4)], store))
        if not early:
            out.extend(e.apply_catalog([coat], store))
        runs.append([(p.trigger, p.item_id) for _, p in out.pushes if p.user_id == "u1"])
    assert runs[0] == [("discovery", "j2")]
    assert runs[1] == runs[0]


def test_a_late_events_decision_reads_the_same_version_whether_or_not_the_tick_forgot_older_ones() -> None:
    """Found by the hostile-stream fuzz (a tick after every batch changed a push's price). With the
    event clock an event decides at its own time; one that came more than the catalog's retention
    behind every partition's clock read a version the tick may have forgotten (forget_until keeps
    the version in force at its horizon as the base), so its push depended on the tick's timing. Such
    an event is now too late for an in-session push (``max_event_lag_seconds`` behind its partition's
    clock, as it is behind the wall clock with the wall clock), whether or not the tick ran."""
    clocks = [
        next(u for u in (f"c{k}" for k in range(100)) if partition_for(u, PARTITIONS) == p) for p in range(4)
    ]
    runs = []
    for tick in (False, True):
        engine, store = make_engine(), DictState()
        engine.apply_catalog([catalog_record(catalog_entry("i1", price=50.0, updated_at=T0 + 10))], store)
        engine.process([ev(f"n-{c}", c, "search", None, T0 + 3 * DAY, query="q") for c in clocks], store)
        if tick:
            engine.tick(store)
        late = [ev("a1", "user1", "view", "i1", T0), ev("a2", "user1", "add_to_cart", "i1", T0 + 1)]
        out = engine.process(late, store)
        runs.append([(p.trigger, p.item_id, p.price) for _, p in out.pushes])
        assert out.suppressions[("in_session", "stale_event")] == 2
    assert runs == [[], []]
