"""A catalog slice the engine fails on leaves the engine as it was before the slice.

``Engine.apply_catalog`` folds a slice into the catalog view, offers its new items for placement and
announces the late changes partition by partition. When it raises half-way (a bug), everything it
changed engine-wide (the view, the items waiting for placement, the new items, the arrival pools) is
rolled back, and the exception names the partitions whose in-memory state it may have changed: the
worker re-reads those from the store (``stream.worker_tick``) and retries the records one at a time.
Without the rollback, the retry read every record of the slice "again" (no change, no announcement).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from stream.catalog_view import CatalogView
from stream.content_items import Unplaced
from stream.contract import CatalogUpdate, to_json_bytes
from stream.engine import CatalogFailure, Engine, Inbound, Outcome
from stream.new_items import NewItems
from stream.partitioning import partition_for
from tests.stream.fakes import PARTITIONS, T0, DictState, PartitionView, catalog_entry, ev, make_settings
from tests.stream.test_new_arrival import ContentFakeScorer
from tests.stream.test_partition_state import normalised

NEW_A, NEW_B = "n-coat", "n-boots"


class PoisonScorer(ContentFakeScorer):
    """A content model with a bug: scoring the ``poison`` item raises (off until a test turns it on)."""

    def __init__(self) -> None:
        super().__init__({NEW_A: ["i1"], NEW_B: ["i2"]})
        self.poison: str | None = None

    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        if self.poison is not None and (candidates == self.index.get(self.poison, -2)).any():
            raise RuntimeError(f"bug on {self.poison}")
        return super().score(states, candidates)


# Who cares about what (user -> item viewed), over partitions 0, 2 and 3; the poison (a price drop of
# i5) reaches u5 on partition 3, announced after partitions 0 and 2.
VIEWS = {"u1": "i1", "u9": "i3", "u0": "i2", "u2": "i4", "u5": "i5", "u11": "i3"}


def views() -> list[Inbound]:
    """Each shopper's view, at the same offsets whichever engine or worker reads them (stored with it)."""
    events = [ev(f"e-{u}", u, "view", item, T0 + 600 + k) for k, (u, item) in enumerate(VIEWS.items())]
    return [Inbound(r.topic, r.partition, k, r.key, r.value) for k, r in enumerate(events)]


def new(item_id: str, updated_at: float) -> CatalogUpdate:
    title = f"New {item_id}"
    return CatalogUpdate(
        item_id=item_id, title=title, category="Outdoor", price=90.0, stock=3, updated_at=updated_at
    )


def slice_records(poisoned: bool) -> list[Inbound]:
    """New items (for the shoppers of i1 and i2), price drops of i3 and i4, and, ``poisoned``, a price
    drop of i5. All but i4's are behind the partitions' clocks (announced at once); i4's is ahead
    (announced when a clock passes it)."""
    updates = [
        new(NEW_A, T0 + 300),
        catalog_entry("i3", price=70.0, updated_at=T0 + 301),
        catalog_entry("i5", price=60.0, updated_at=T0 + 302),
        new(NEW_B, T0 + 303),
        catalog_entry("i4", price=50.0, updated_at=T0 + 5000),
    ]
    records = [Inbound("catalog", 0, k, u.item_id.encode(), to_json_bytes(u)) for k, u in enumerate(updates)]
    return records if poisoned else [r for r in records if r.key != b"i5"]


def shop() -> tuple[Engine, DictState, PoisonScorer]:
    """The five known items catalogued (bootstrap); each shopper viewed one (interest 0.5, indexed, no
    push), the clocks of partitions 0, 2 and 3 at T0 + 600."""
    scorer = PoisonScorer()
    settings = make_settings(trigger_thresholds={"price_drop": 0.3, "new_arrival": 0.6})
    engine = Engine(settings, scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    store = DictState()
    bootstrap = [catalog_entry(i) for i in ("i1", "i2", "i3", "i4", "i5")]
    engine.apply_catalog(
        [Inbound("catalog", 0, 0, u.item_id.encode(), to_json_bytes(u)) for u in bootstrap], store, False
    )
    events = views()
    assert engine.process(events, store).pushes == []
    assert {partition_for(u, PARTITIONS) for u in VIEWS} == {0, 2, 3}
    return engine, store, scorer


def pushes(out: Outcome) -> list[tuple[str, str, str]]:
    return sorted((p.user_id, p.item_id, p.trigger) for _, p in out.pushes)


def view_snapshot(view: CatalogView) -> Any:
    """Everything the view answers from (its private parts: a white-box check of the rollback)."""
    items = {i: (list(e.versions), e.base) for i, e in view._items.items()}
    return (
        items,
        sorted(view._multi),
        list(view.changes_between(-np.inf, np.inf)),
        view.pending_changes(),
        dict(view._promoted),
        dict(view._categories_of),
        {c: sorted(m) for c, m in view._by_category.items()},
    )


def partition_snapshot(engine: Engine, p: int) -> Any:
    part = engine.part(p)
    return (
        part.watermark,
        normalised(part.covisitation.to_dict()),
        normalised(part.trending.to_dict()),
        normalised(part.interest.to_dict()),
        part.timers.to_dict(),
        part.arrival_hour if part.arrivals_asked else None,  # an hour no one was asked in is not stored
        part.arrivals_asked,
        part.offsets,
        part.last_seen,
    )


def fresh_snapshot(engine: Engine, store: DictState, p: int) -> Any:
    """What a partition re-read from the store holds."""
    probe = Engine(engine.settings, engine.scorer, clock=lambda: 0.0)
    probe.adopt(p, probe.load_partition(p, PartitionView(store, p)))
    return partition_snapshot(probe, p)


class Staged:
    """A transaction over a :class:`DictState`: writes wait for :meth:`commit` (as ``stream.store``'s)."""

    def __init__(self, store: DictState) -> None:
        self.store = store
        self.writes: dict[tuple[int, bytes], bytes | None] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        if (partition, key) in self.writes:
            return self.writes[(partition, key)]
        return self.store.get(partition, key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.writes[(partition, key)] = value

    def commit(self) -> None:
        for (partition, key), value in self.writes.items():
            self.store.put(partition, key, value)


def isolate(engine: Engine, store: DictState, records: Sequence[Inbound]) -> tuple[Outcome, list[Inbound]]:
    """What the worker's tick does with a slice (``stream.worker_tick``), on a dict store: the slice;
    when it fails, the partitions it named re-read from the store, then one record at a time, each
    committed, each failure's partitions re-read. Returns the outcome and the records that failed alone."""
    txn = Staged(store)
    try:
        out = engine.apply_catalog(records, txn)
        txn.commit()
        return out, []
    except CatalogFailure as failure:
        touched = set(failure.partitions)  # the failed attempt's writes are dropped with txn
    out, failed = Outcome(), []
    for rec in records:
        for p in sorted(touched):
            engine.adopt(p, engine.load_partition(p, PartitionView(store, p)))
        txn = Staged(store)
        try:
            out.extend(engine.apply_catalog([rec], txn))
            txn.commit()
            touched = set()
        except CatalogFailure as failure:
            failed.append(rec)
            touched = set(failure.partitions)
    for p in sorted(touched):
        engine.adopt(p, engine.load_partition(p, PartitionView(store, p)))
    return out, failed


def test_a_failed_slice_leaves_the_view_and_the_waiting_items_as_they_were() -> None:
    engine, store, scorer = shop()
    view, waiting = view_snapshot(engine.catalog), engine.unplaced.waiting()
    generations = {c: engine.catalog.generation_of(c) for c in ("Outdoor", "cat-i3", "cat-i5")}
    scorer.poison = "i5"
    before = {p: partition_snapshot(engine, p) for p in range(PARTITIONS)}

    with pytest.raises(CatalogFailure) as failed:
        engine.apply_catalog(slice_records(poisoned=True), Staged(store))

    assert isinstance(failed.value.error, RuntimeError) and "bug on i5" in str(failed.value.error)
    assert view_snapshot(engine.catalog) == view
    assert engine.unplaced.waiting() == waiting
    # Caches keyed by a category's generation never take the failed attempt's entries for current ones.
    for category, generation in generations.items():
        assert engine.catalog.generation_of(category) == generation
    # Partitions 0 and 2 were announced to before partition 3 failed; partition 1 has no one.
    assert failed.value.partitions == frozenset({0, 2, 3})
    changed = {p for p in range(PARTITIONS) if partition_snapshot(engine, p) != before[p]}
    assert changed <= failed.value.partitions
    assert partition_snapshot(engine, 1) == fresh_snapshot(engine, store, 1)


def test_the_records_of_a_failed_slice_are_announced_as_if_the_bad_one_was_never_there() -> None:
    reference, ref_store, _ = shop()
    expected = reference.apply_catalog(slice_records(poisoned=False), ref_store)
    assert pushes(expected) == [
        ("u0", NEW_B, "new_arrival"),
        ("u1", NEW_A, "new_arrival"),
        ("u11", "i3", "price_drop"),
        ("u9", "i3", "price_drop"),
    ]
    engine, store, scorer = shop()
    scorer.poison = "i5"

    out, failed = isolate(engine, store, slice_records(poisoned=True))

    assert [r.key for r in failed] == [b"i5"]
    assert pushes(out) == pushes(expected)
    scorer.poison = None
    # The change ahead of the clocks (i4) is announced when the stream gets there, once.
    later = [ev("later", "u2", "search", None, T0 + 6000, query="q")]
    assert pushes(reference.process(later, ref_store)) == [("u2", "i4", "price_drop")]
    assert pushes(engine.process(later, store)) == [("u2", "i4", "price_drop")]


def test_after_a_failed_slice_every_partition_holds_what_its_store_holds() -> None:
    engine, store, scorer = shop()
    scorer.poison = "i5"
    isolate(engine, store, slice_records(poisoned=True))
    for p in range(PARTITIONS):
        assert partition_snapshot(engine, p) == fresh_snapshot(engine, store, p)
    # And the engine goes on deciding like one that never met the bad record.
    scorer.poison = None
    reference, ref_store, _ = shop()
    reference.apply_catalog(slice_records(poisoned=False), ref_store)
    later = [ev(f"l-{u}", u, "view", "i2", T0 + 6000 + k) for k, u in enumerate(VIEWS)]
    assert pushes(engine.process(later, store)) == pushes(reference.process(later, ref_store))
    assert store.data == ref_store.data  # every user record and partition row, byte for byte


def test_a_slice_that_fails_placing_its_new_items_places_the_others_and_letters_the_bad_one() -> None:
    """A model bug placing one item's content: the item waits no more, so it breaks nothing after."""
    engine, store, scorer = shop()
    add_items = scorer.add_items

    def breaks_on_b(item_ids: Sequence[str], contents: Sequence[Any]) -> int:
        if NEW_B in item_ids:
            raise ValueError("text encoder bug")
        return add_items(item_ids, contents)

    scorer.add_items = breaks_on_b  # type: ignore[method-assign]
    out, failed = isolate(engine, store, slice_records(poisoned=False))
    assert [r.key for r in failed] == [NEW_B.encode()]
    assert NEW_B not in engine.catalog and all(u.item_id != NEW_B for u in engine.unplaced.waiting())
    assert ("u1", NEW_A, "new_arrival") in pushes(out) and ("u9", "i3", "price_drop") in pushes(out)
    assert engine.tick(store).content_items_added == 0  # nothing left that fails again


def test_the_items_waiting_for_placement_roll_back_in_their_order_less_those_placed_since() -> None:
    scorer = PoisonScorer()
    unplaced = Unplaced()
    a, b, c = new("a", T0), new("b", T0), new("c", T0)
    unplaced.offer(scorer, [a, b, c])
    unplaced.checkpoint()
    unplaced.forget("b")
    unplaced.offer(scorer, [new("d", T0), new("a", T0 + 1)])
    unplaced.rollback(scorer)
    assert unplaced.waiting() == [a, b, c]
    unplaced.checkpoint()
    assert unplaced.place_some(scorer, 2) == [a, b]  # the model knows them now
    unplaced.offer(scorer, [new("e", T0)])
    unplaced.rollback(scorer)
    assert unplaced.waiting() == [c]  # a model cannot forget an item: a and b stay placed


def test_the_new_items_roll_back_to_their_filing_at_the_checkpoint() -> None:
    catalog = CatalogView()
    items = NewItems()
    a, b = new("a", T0), new("b", T0 + 1)
    for update in (a, b):
        catalog.put(update, base=True)
        items.add(update)
    assert items.in_categories(["Outdoor", "Boots"], catalog, T0 + 2, 10) == ["b", "a"]
    items.checkpoint()
    items.forget("a")  # a tombstone
    moved = b.model_copy(update={"category": "Boots", "updated_at": T0 + 5})
    catalog.put(moved)
    items.refile(moved)  # moved to another category
    items.add(new("c", T0 + 3))  # placed during the slice
    assert items.in_categories(["Boots"], catalog, T0 + 10, 10) == ["b"]
    items.rollback()
    assert len(items) == 2 and items.in_categories(["Outdoor", "Boots"], catalog, T0 + 2, 10) == ["b", "a"]
    assert items.in_categories(["Boots"], catalog, T0 + 10, 10) == []  # b filed under Outdoor only
    items.checkpoint()
    items.forget("b")
    items.release()  # the slice held
    assert len(items) == 1
    with pytest.raises(RuntimeError, match="without a checkpoint"):
        items.rollback()
