"""Items placed from content and removed from the catalog: the model forgets them and reuses their rows.

Without it, a catalog producer that creates and deletes items without end grew the model by a row per
item (input gates, embeddings, bias: about a kilobyte each with the demo's sizes) until the next model
swap, and every placement copied the whole table to append one more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.scorer import IncrementalScorer
from stream.content_items import forget_placed, restore_forgotten, reuse_forgotten
from stream.contract import CatalogUpdate
from stream.engagement import Engagement
from stream.engine import Inbound
from stream.engine.catalog_flow import CatalogFailure
from tests.model.content_support import cold, content_shop
from tests.stream.fakes import T0, catalog_record


def _scores(scorer: IncrementalScorer, item: str) -> tuple[np.ndarray, np.ndarray]:
    states = scorer.step(scorer.initial_state(2), np.array([3, 30]), np.zeros(2, dtype=np.int64))
    index = scorer.item_indices([item])[0]
    cands = np.array([[index, 0], [1, index]])
    return scorer.score(states, cands), scorer.interest(states, cands)


def test_a_forgotten_item_is_unknown_and_its_row_goes_to_the_next_item(content_artifact: Path) -> None:
    scorer = IncrementalScorer.load(content_artifact)
    n = scorer.n_artifact_items
    scorer.add_items(["a", "b", "c"], [cold("yoga mat", 1), cold("desk lamp", 2), cold("phone case", 3)])
    assert scorer.item_indices(["a", "b", "c"]).tolist() == [n, n + 1, n + 2]
    own = scorer.item_id(0)
    forgotten = scorer.remove_items(["c", "a", own, "nobody"])  # a trained item stays: it is the model's
    assert forgotten == [("c", n + 2), ("a", n)]
    assert scorer.item_indices(["a", "b", "c", own]).tolist() == [-1, n + 1, -1, 0]
    scorer.reuse_rows([row for _, row in forgotten])
    with pytest.raises(IndexError, match="free row"):
        scorer.item_id(n)
    top, scores = scorer.topk(scorer.initial_state(1), scorer.n_items)
    assert set(top[0, -2:].tolist()) == {n, n + 2} and np.isneginf(scores[0, -2:]).all()  # never ranked
    # The next additions take the free rows, lowest first, then grow the table.
    scorer.add_items(["x", "y", "z"], [cold("garden hose", 5), cold("coffee beans", 6), cold("yoga mat", 7)])
    assert scorer.item_indices(["x", "y", "z"]).tolist() == [n, n + 2, n + 3]
    assert scorer.n_items == n + 4 and scorer.item_id(n + 2) == "y"
    # A reused row scores exactly as the same item placed on a fresh row of a fresh model.
    fresh = IncrementalScorer.load(content_artifact)
    fresh.add_items(["y"], [cold("coffee beans", 6)])
    for got, want in zip(_scores(scorer, "y"), _scores(fresh, "y"), strict=True):
        np.testing.assert_array_equal(got, want)
    states = scorer.step(scorer.initial_state(1), scorer.item_indices(["y"]), np.zeros(1, dtype=np.int64))
    again = fresh.step(fresh.initial_state(1), fresh.item_indices(["y"]), np.zeros(1, dtype=np.int64))
    np.testing.assert_array_equal(states, again)  # the GRU steps on the reused row's input gates


def test_restoring_undoes_a_removal_and_frees_a_row_placed_between(content_artifact: Path) -> None:
    scorer = IncrementalScorer.load(content_artifact)
    n = scorer.n_artifact_items
    scorer.add_items(["a"], [cold("yoga mat", 1)])
    before = _scores(scorer, "a")
    forgotten = forget_placed(scorer, "a")
    scorer.add_items(["a"], [cold("desk lamp", 4)])  # catalogued again in the same slice: a new row
    forgotten += forget_placed(scorer, "a")
    assert forgotten == [("a", n), ("a", n + 1)]
    restore_forgotten(scorer, forgotten)  # the slice failed
    assert scorer.item_indices(["a"]).tolist() == [n]
    for got, want in zip(_scores(scorer, "a"), before, strict=True):
        np.testing.assert_array_equal(got, want)
    scorer.add_items(["b"], [cold("phone case", 2)])
    assert scorer.item_indices(["b"]).tolist() == [n + 1]  # the row placed between was freed
    # Held: the rows go to later placements.
    reuse_forgotten(scorer, forget_placed(scorer, "a"))
    scorer.add_items(["c"], [cold("garden hose", 3)])
    assert scorer.item_indices(["a", "c"]).tolist() == [-1, n]


def _viewed(item: str) -> Engagement:
    engagement = Engagement(20)
    engagement.observe("view", item, T0)
    return engagement


def _update(item: str, at: float, category: str = "yoga mat") -> Inbound:
    title = f"{category} model {item}"
    return catalog_record(
        CatalogUpdate(item_id=item, title=title, category=category, price=30.0, stock=5, updated_at=at)
    )


def _tombstone(item: str) -> Inbound:
    return Inbound("catalog", 0, 0, item.encode(), None)


def test_a_producer_creating_and_deleting_items_does_not_grow_the_model(content_artifact: Path) -> None:
    engine, scorer, store = content_shop(content_artifact)
    n = scorer.n_artifact_items
    for round_ in range(30):
        batch = [f"churn-{round_}-{k}" for k in range(8)]
        engine.apply_catalog([_update(item, T0 + round_) for item in batch], store)
        assert all(i >= n for i in scorer.item_indices(batch).tolist())  # placed
        engine.apply_catalog([_tombstone(item) for item in batch], store)
        assert (scorer.item_indices(batch) == -1).all() and len(engine.new_items) == 0
    assert scorer.n_items == n + 8  # 240 items placed and removed, on the same 8 rows
    # Catalogued again after its removal: placed again, from its content as it is now.
    engine.apply_catalog([_update("churn-0-0", T0 + 100, "desk lamp")], store)
    assert scorer.item_indices(["churn-0-0"])[0] >= n and len(engine.new_items) == 1
    other, fresh, other_store = content_shop(content_artifact)  # the same item, never removed, on a new row
    other.apply_catalog([_update("churn-0-0", T0 + 100, "desk lamp")], other_store)
    states = scorer.initial_state(1)
    got = scorer.score(states, scorer.item_indices(["churn-0-0"])[None, :])
    want = fresh.score(states, fresh.item_indices(["churn-0-0"])[None, :])
    np.testing.assert_array_equal(got, want)


def test_a_failed_catalog_slice_gives_the_removed_item_back_to_the_model(
    content_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, scorer, store = content_shop(content_artifact)
    engine.apply_catalog([_update("kept", T0)], store)
    row = int(scorer.item_indices(["kept"])[0])
    assert row >= scorer.n_artifact_items and len(engine.new_items) == 1

    def broken(*args: object) -> None:
        raise RuntimeError("a bug half-way through the slice")

    monkeypatch.setattr(engine, "_place_waiting", broken)  # after the tombstone, before the slice holds
    with pytest.raises(CatalogFailure):
        engine.apply_catalog([_tombstone("kept"), _update("other", T0 + 1)], store)
    monkeypatch.undo()
    assert "kept" in engine.catalog and scorer.item_indices(["kept"]).tolist() == [row]
    assert engine.intake.new_items_for(_viewed("kept"), T0 + 5) == ["kept"]  # filed again
    engine.apply_catalog([_update("other", T0 + 1)], store)  # the retry: a new row, "kept"'s is not free
    assert scorer.item_indices(["other"])[0] not in (-1, row)
