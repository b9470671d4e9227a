"""New items: placed in the model from their catalog content, announced to the shoppers of similar items."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.content_items import arrival_pool, arrival_users, content_scorer
from stream.contract import CatalogUpdate, push_id
from stream.engine import Engine, Inbound
from stream.interest_index import InterestIndex
from stream.partitioning import partition_for
from tests.stream.fakes import (
    ITEMS,
    PARTITIONS,
    T0,
    DictState,
    FakeScorer,
    catalog_entry,
    catalog_record,
    ev,
    make_settings,
)

NEW = "n-jacket"


class ContentFakeScorer(FakeScorer):
    """:class:`FakeScorer` with spare coordinates that ``add_items`` hands to new items.

    An added item's interest is its slot's prior (2.0: interest 2/3) plus what a user stepped on it.
    ``similar`` says which known items each item is closest to.
    """

    content_enabled = True
    image_width: int | None = 3
    n_artifact_items = len(ITEMS)

    def __init__(self, similar: dict[str, list[str]], spare: int = 4) -> None:
        super().__init__(items=list(ITEMS) + [f"\x00spare{k}" for k in range(spare)])
        self.index = {item: i for i, item in enumerate(ITEMS)}  # spare slots are nobody's yet
        self.prior[len(ITEMS) :] = 2.0
        self.similar = similar
        self.added: list[tuple[str, Any]] = []

    def add_items(self, item_ids: Sequence[str], contents: Sequence[Any]) -> int:
        n = 0
        for item, content in zip(item_ids, contents, strict=True):
            if item not in self.index:
                self.index[item] = len(ITEMS) + len(self.added)
                self.added.append((item, content))
                n += 1
        return n

    def similar_items(self, item_id: str, k: int, among: Sequence[str] | None = None) -> list[str]:
        found = [i for i in self.similar.get(item_id, []) if among is None or i in among]
        return found[:k]


def same_partition_as(user_id: str, n: int) -> list[str]:
    mine = partition_for(user_id, PARTITIONS)
    return [u for i in range(1000) if partition_for(u := f"m{i}", PARTITIONS) == mine][:n]


def new_item(updated_at: float = T0 + 300, **fields: Any) -> CatalogUpdate:
    return CatalogUpdate(
        item_id=NEW,
        title="Waxed cotton field jacket",
        category="Jackets",
        price=120.0,
        stock=5,
        updated_at=updated_at,
        **fields,
    )


def shop(scorer: FakeScorer) -> tuple[Engine, DictState]:
    """An engine with the five known items catalogued (bootstrap) and the new-arrival threshold 0.6."""
    engine = Engine(make_settings(trigger_thresholds={"new_arrival": 0.6}), scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    engine.apply_catalog([catalog_record(catalog_entry(i)) for i in ITEMS], DictState(), announce=False)
    return engine, DictState()


def test_a_new_item_reaches_the_shoppers_of_similar_items_only() -> None:
    scorer = ContentFakeScorer({NEW: ["i1", "i2"]})
    engine, store = shop(scorer)
    fan, other = "u1", same_partition_as("u1", 1)[0]
    # Interest 0.5 in i1 (indexed; below the in-session threshold 0.55), and in i3 for the other.
    engine.process([ev("e1", fan, "view", "i1", T0), ev("e2", other, "view", "i3", T0 + 1)], store)
    out = engine.apply_catalog([catalog_record(new_item())], store)
    assert out.content_items_added == 1 and out.pushes == []  # announced when the clock gets there
    assert [item for item, _ in scorer.added] == [NEW]
    content = scorer.added[0][1]
    assert (content.title, content.category, content.image) == ("Waxed cotton field jacket", "Jackets", None)
    out = engine.process([ev("e3", other, "view", "i3", T0 + 400)], store)
    pushes = [p for _, p in out.pushes if p.trigger == "new_arrival"]
    assert [(p.user_id, p.item_id) for p in pushes] == [(fan, NEW)]
    assert pushes[0].push_id == push_id(fan, NEW, "new_arrival", f"arrival@{NEW}")
    assert pushes[0].reason == "New in: like the jackets you looked at"
    assert pushes[0].event_ts == T0 + 300


def test_the_start_up_read_places_items_and_announces_nothing() -> None:
    scorer = ContentFakeScorer({NEW: ["i1"]})
    engine, store = shop(scorer)
    engine.process([ev("e1", "u1", "view", "i1", T0)], store)
    out = engine.apply_catalog([catalog_record(new_item(updated_at=T0 - 60))], store, announce=False)
    assert out.content_items_added == 1 and out.pushes == []
    assert engine.process([ev("e2", "u1", "view", "i2", T0 + 400)], store).pushes == []
    # Known to the model now: a later catalog change of it is an ordinary change, not an arrival.
    assert (
        engine.apply_catalog([catalog_record(new_item(updated_at=T0 + 500))], store).content_items_added == 0
    )


def test_a_model_without_content_leaves_a_new_item_unknown() -> None:
    engine, store = shop(FakeScorer())
    engine.process([ev("e1", "u1", "view", "i1", T0)], store)
    out = engine.apply_catalog([catalog_record(new_item())], store)
    assert out.content_items_added == 0 and not out.dead_letters
    assert engine.process([ev("e2", "u1", "view", "i2", T0 + 400)], store).pushes == []


def test_bad_image_vectors_are_dead_letters() -> None:
    scorer = ContentFakeScorer({NEW: ["i1"]})
    engine, store = shop(scorer)
    wrong_width = catalog_record(new_item(image=[0.1, 0.2]))
    good = new_item().model_dump()
    raw = json.dumps({**good, "image": [0.1, float("nan"), 0.3]}).encode()  # json writes NaN
    nan = dataclasses.replace(catalog_record(new_item()), value=raw)
    out = engine.apply_catalog([wrong_width, nan], store)
    assert [d.reason for d in out.dead_letters] == ["invalid_field", "invalid_field"]
    assert "image has 2 values" in out.dead_letters[0].error
    assert out.catalog_updates == 0 and scorer.added == [] and NEW not in engine.catalog
    # The right width is placed, with its vector.
    out = engine.apply_catalog([catalog_record(new_item(image=[0.1, 0.2, 0.3]))], store)
    assert out.content_items_added == 1
    np.testing.assert_allclose(scorer.added[0][1].image, [0.1, 0.2, 0.3])
    assert scorer.added[0][1].image.dtype == np.float32


def test_image_values_past_float32_are_dead_letters() -> None:
    """The model reads images as float32: a value JSON and the contract take as finite (1e39) is
    infinite there, and the real model refuses the whole placement call with it (every item placed
    with it included). It is refused at admission, with the reason, like a wrong width."""
    scorer = ContentFakeScorer({NEW: ["i1"]})
    engine, store = shop(scorer)
    out = engine.apply_catalog([catalog_record(new_item(image=[0.1, 1e39, 0.3]))], store)
    assert [d.reason for d in out.dead_letters] == ["invalid_field"]
    assert "float32" in out.dead_letters[0].error
    assert out.catalog_updates == 0 and scorer.added == [] and NEW not in engine.catalog
    # The largest float32 is still a number the model can read.
    out = engine.apply_catalog([catalog_record(new_item(image=[0.1, -3.4e38, 0.3]))], store)
    assert out.dead_letters == [] and out.content_items_added == 1


def test_a_model_that_reads_no_images_accepts_any_width() -> None:
    scorer = ContentFakeScorer({NEW: ["i1"]})
    scorer.image_width = None
    engine, store = shop(scorer)
    out = engine.apply_catalog([catalog_record(new_item(image=[0.1, 0.2]))], store)
    assert out.content_items_added == 1 and not out.dead_letters


def test_a_new_model_gets_the_catalogued_items_it_does_not_know() -> None:
    engine, store = shop(ContentFakeScorer({}))
    engine.apply_catalog([catalog_record(new_item())], store)
    fresh = ContentFakeScorer({})
    engine.swap_model(fresh)
    assert [item for item, _ in fresh.added] == [NEW]  # the known five are not added again


def test_arrival_users_are_the_best_of_the_similar_items_users_bounded() -> None:
    index = InterestIndex()
    for k, user in enumerate(["a", "b", "c", "d"]):
        index.update("i1", user, 0.2 + 0.1 * k, T0)
    index.update("i2", "a", 0.9, T0)  # a's best interest counts, once
    index.update("i3", "z", 0.99, T0)  # not similar: never asked
    scorer = ContentFakeScorer({NEW: ["i1", "i2"]})
    scorer.add_items([NEW], [None])
    cfg = make_settings(new_arrival_max_users=3).policy
    mapped = content_scorer(scorer)
    pool = arrival_pool(mapped, NEW, [], cfg.new_arrival_similar_items)
    assert pool == ["i1", "i2"]
    assert arrival_users(pool, index, T0, cfg) == ["a", "d", "c"]
    assert arrival_pool(mapped, "never-seen", [], 20) == []
    assert content_scorer(FakeScorer()) is None  # no content mapping: nobody
    assert arrival_pool(None, NEW, [], 20) == []
    assert arrival_pool(mapped, NEW, [], 0) == []
    # An item the model was trained on has a history: first seen here, it is still no arrival.
    assert arrival_pool(mapped, "i1", [], 20) == []


def test_the_category_reaches_shoppers_the_item_space_alone_would_miss() -> None:
    scorer = ContentFakeScorer({NEW: ["i1", "i2", "i3"]})
    scorer.add_items([NEW], [None])
    mapped = content_scorer(scorer)
    assert arrival_pool(mapped, NEW, [], 1) == ["i1"]
    # i3 shares the new item's category, far in the item space; the item itself is no peer.
    assert arrival_pool(mapped, NEW, ["i3", NEW], 1) == ["i1", "i3"]


def test_a_shopper_browsing_the_category_gets_the_new_item_as_a_candidate() -> None:
    scorer = ContentFakeScorer({})
    engine, store = shop(scorer)
    # The new item is in i1's category; it is catalogued from T0 + 300 on.
    arrival = new_item().model_copy(update={"category": "cat-i1"})
    engine.apply_catalog([catalog_record(arrival)], store)
    out = engine.process([ev("e1", "u1", "view", "i1", T0)], store)  # before it exists: not proposed
    assert [p.item_id for _, p in out.pushes] == []
    out = engine.process([ev("e2", "u1", "view", "i1", T0 + 400)], store)
    pushes = [p for _, p in out.pushes if p.trigger == "in_session"]
    assert [(p.item_id, p.reason) for p in pushes] == [(NEW, "New in cat-i1")]
    assert pushes[0].features["interest"] > 0.6


def test_new_items_are_proposed_newest_first_as_catalogued_then() -> None:
    from stream.catalog_view import CatalogView
    from stream.new_items import NewItems

    view, new = CatalogView(), NewItems()
    for item, ts, category in (("a", T0, "hats"), ("b", T0 + 10, "hats"), ("c", T0 + 5, "coats")):
        update = catalog_entry(item, updated_at=ts).model_copy(update={"category": category})
        view.put(update)
        new.add(update)
        new.add(update)  # filed once
    assert len(new) == 3
    assert new.in_categories(["hats", "coats"], view, T0 + 20, 10) == ["b", "a", "c"]
    assert new.in_categories(["coats", "hats"], view, T0 + 7, 10) == ["c", "a"]  # b not catalogued yet
    assert new.in_categories(["hats"], view, T0 + 20, 1) == ["b"]
    view.remove("b")
    moved = catalog_entry("a", updated_at=T0 + 15).model_copy(update={"category": "coats"})
    view.put(moved)
    assert new.in_categories(["hats"], view, T0 + 20, 10) == []  # b removed, a moved away since
    assert new.in_categories(["hats"], view, T0 + 12, 10) == ["a"]
    assert new.in_categories(["coats"], view, T0 + 20, 10) == ["c"]  # a is filed under hats alone...
    new.refile(moved)
    new.refile(moved)  # (filed once per category)
    # ... until its move is filed: then each category offers it while the catalog puts it there, at its
    # first filing's place (its newness is its first version's).
    assert new.in_categories(["coats", "hats"], view, T0 + 20, 10) == ["c", "a"]
    assert new.in_categories(["coats", "hats"], view, T0 + 12, 10) == ["c", "a"]
    new.refile(catalog_entry("zz", updated_at=T0).model_copy(update={"category": "hats"}))  # not filed
    assert len(new) == 3  # b left the view only
    new.forget("a")  # unfiled from both
    assert new.in_categories(["coats", "hats"], view, T0 + 12, 10) == ["c"] and len(new) == 2


def test_an_item_placed_from_content_and_moved_is_proposed_in_its_new_category() -> None:
    """The engine files a content-placed item under the category of a later version too."""
    scorer = ContentFakeScorer({}, spare=2)
    engine = Engine(make_settings(), scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    store = DictState()
    first = catalog_entry("n0", updated_at=T0 - 60).model_copy(update={"category": "hats"})
    engine.apply_catalog([catalog_record(first)], store, announce=False)
    later = catalog_entry("n0", updated_at=T0 - 30).model_copy(update={"category": "coats"})
    engine.apply_catalog([catalog_record(later)], store)
    view = engine.catalog
    assert engine.new_items.in_categories(["coats"], view, T0, 10) == ["n0"]
    assert engine.new_items.in_categories(["hats"], view, T0 - 45, 10) == ["n0"]


def test_a_large_unknown_catalog_is_placed_a_bounded_number_per_tick() -> None:
    scorer = ContentFakeScorer({}, spare=7)
    settings = make_settings()
    settings.model.content_items_per_tick = 2
    engine = Engine(settings, scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    store = DictState()
    news = [catalog_entry(f"n{k}", updated_at=T0 - 60) for k in range(7)]
    out = engine.apply_catalog([catalog_record(u) for u in news], store, announce=False)
    assert out.content_items_added == 2 and len(engine.unplaced) == 5
    assert engine.scorer.item_indices(["n1", "n2"]).tolist() == [6, -1]  # waits: unknown until placed
    # A tombstone drops a waiting item; every catalog batch and tick places the next few, in read order.
    out = engine.apply_catalog([Inbound("catalog", 0, 9, b"n3", None)], store)
    assert out.content_items_added == 2 and len(engine.unplaced) == 2
    assert [engine.tick(store).content_items_added for _ in range(2)] == [2, 0]
    assert [item for item, _ in scorer.added] == ["n0", "n1", "n2", "n4", "n5", "n6"]
    assert len(engine.unplaced) == 0
