"""The stream warm-up in the worker: content-placed candidates lifted by their partition's event counts."""

from __future__ import annotations

from typing import Any

import numpy as np

from model.warmup import count_feature
from stream.asks import Ask
from stream.engine import Engine
from stream.partitioning import partition_for
from tests.stream.fakes import PARTITIONS, T0, DictState, catalog_entry, catalog_record, ev, make_settings
from tests.stream.test_new_arrival import ContentFakeScorer, new_item, same_partition_as


class WarmScorer(ContentFakeScorer):
    """:class:`ContentFakeScorer` whose raw scores take the warm-up lift (interest ``h / (1 + h)``)."""

    def __init__(self, gamma: float, offset: float = 0.0) -> None:
        super().__init__({})
        self.warmup_gamma = gamma
        self.warmup_offset = offset

    def score_and_interest(
        self, states: np.ndarray, candidates: np.ndarray, lift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        h = self._coordinates(states, candidates) + (0.0 if lift is None else lift)
        raw = np.where(candidates >= 0, h, -np.inf).astype(np.float32)
        h = np.maximum(h, 0.0)
        return raw, np.where(candidates >= 0, h / (1.0 + h), 0.0).astype(np.float32)


def warm_shop(gamma: float, offset: float = 0.0) -> tuple[Engine, DictState, list[tuple[list[Ask], Any]]]:
    """Two placed jackets and a known one; every lift the scoring computes is recorded."""
    engine = Engine(make_settings(), WarmScorer(gamma, offset), clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    known = catalog_entry("i1").model_copy(update={"category": "Jackets"})
    new = [new_item(T0 - 60).model_copy(update={"item_id": item}) for item in ("n-a", "n-b")]
    new.append(new_item(T0 - 60).model_copy(update={"item_id": "n-c", "category": "Shoes"}))
    engine.apply_catalog([catalog_record(u) for u in [known, *new]], DictState(), announce=False)
    seen: list[tuple[list[Ask], Any]] = []
    original = engine.scoring.lift

    def spy(asks: list[Ask], width: int) -> Any:
        lift = original(asks, width)
        seen.append((list(asks), lift))
        return lift

    engine.scoring.lift = spy  # type: ignore[method-assign]
    return engine, DictState(), seen


def test_a_placed_item_its_partition_browses_is_lifted_by_its_own_events() -> None:
    engine, store, seen = warm_shop(gamma=0.5)
    shopper = "u1"
    others = same_partition_as(shopper, 4)[1:]
    views = [ev(f"o{k}", user, "view", "n-b", T0 + 10 * k) for k, user in enumerate(others)]
    engine.process(views, store)
    seen.clear()
    engine.process([ev("e1", shopper, "view", "i1", T0 + 100)], store)
    asks = [(ask, lift) for batch, lift in seen for ask in batch if ask.user.user_id == shopper]
    ask, lift = asks[-1][0], seen[-1][1]
    assert {"n-a", "n-b"} <= set(ask.items)
    assert ask.placed_counts is not None and set(ask.placed_counts) == {"n-a", "n-b"}
    count = ask.placed_counts["n-b"]
    assert count == engine.part(partition_for(shopper, PARTITIONS)).trending.score("n-b", T0 + 100) > 0
    row = [a for a, _ in asks].index(ask)
    by_item = dict(zip(ask.items, lift[row], strict=False))
    expected = 0.5 * count_feature(np.array([count * PARTITIONS]), 6 * 3600.0)[0]
    assert by_item["n-b"] == np.float32(expected) and by_item["n-a"] == 0.0
    assert all(by_item[i] == 0.0 for i in ask.items if i not in ("n-a", "n-b"))  # known items: no lift


def test_only_placed_items_of_the_shoppers_recent_categories_are_lifted() -> None:
    engine, store, seen = warm_shop(gamma=0.5)
    shopper = "u1"
    other = same_partition_as(shopper, 2)[1]
    # The other shopper views i1 then the placed shoe n-c: co-visited, n-c reaches u1's candidates.
    engine.process([ev("o1", other, "view", "i1", T0), ev("o2", other, "view", "n-c", T0 + 5)], store)
    seen.clear()
    engine.process([ev("e1", shopper, "view", "i1", T0 + 100)], store)
    ask = next(a for batch, _ in seen for a in batch if a.user.user_id == shopper)
    assert "n-c" in ask.items
    assert ask.placed_counts is not None and set(ask.placed_counts) == {"n-a", "n-b"}  # Jackets only


def test_counts_are_those_of_the_moment_of_the_ask_whatever_the_batch_holds_after_it() -> None:
    results = []
    for batched in (False, True):
        engine, store, seen = warm_shop(gamma=0.5)
        shopper = "u1"
        other = same_partition_as(shopper, 2)[1]
        first = [ev("e1", shopper, "view", "i1", T0 + 100)]
        later = [ev(f"o{k}", other, "view", "n-b", T0 + 101 + k) for k in range(3)]
        if batched:
            engine.process(first + later, store)
        else:
            engine.process(first, store)
            engine.process(later, store)
        ask = next(a for batch, _ in seen for a in batch if a.user.user_id == shopper)
        results.append(ask.placed_counts)
    assert results[0] == results[1] == {"n-a": 0.0, "n-b": 0.0}


def test_without_a_warmup_nothing_is_captured_or_lifted() -> None:
    engine, store, seen = warm_shop(gamma=0.0)
    others = same_partition_as("u1", 3)[1:]
    engine.process([ev(f"o{k}", u, "view", "n-b", T0 + k) for k, u in enumerate(others)], store)
    engine.process([ev("e1", "u1", "view", "i1", T0 + 100)], store)
    assert seen and all(lift is None for _, lift in seen)
    assert all(a.placed_counts is None for batch, _ in seen for a in batch)


def test_the_offset_lifts_every_placed_item_of_the_shoppers_categories_events_or_not() -> None:
    engine, store, seen = warm_shop(gamma=0.5, offset=0.3)
    shopper = "u1"
    others = same_partition_as(shopper, 4)[1:]
    engine.process([ev(f"o{k}", u, "view", "n-b", T0 + 10 * k) for k, u in enumerate(others)], store)
    seen.clear()
    engine.process([ev("e1", shopper, "view", "i1", T0 + 100)], store)
    asks = [(ask, lift) for batch, lift in seen for ask in batch if ask.user.user_id == shopper]
    ask, lift = asks[-1][0], seen[-1][1]
    assert ask.placed_counts is not None
    row = [a for a, _ in asks].index(ask)
    by_item = dict(zip(ask.items, lift[row], strict=False))
    count = ask.placed_counts["n-b"]
    expected = 0.3 + 0.5 * count_feature(np.array([count * PARTITIONS]), 6 * 3600.0)[0]
    assert by_item["n-b"] == np.float32(expected) and by_item["n-a"] == np.float32(0.3)
    assert all(by_item[i] == 0.0 for i in ask.items if i not in ("n-a", "n-b"))  # known items: no lift


def test_an_offset_alone_is_a_warmup() -> None:
    engine, store, seen = warm_shop(gamma=0.0, offset=0.2)
    engine.process([ev("e1", "u1", "view", "i1", T0 + 100)], store)
    ask, lift = next((a, lift) for batch, lift in seen for a in batch if a.user.user_id == "u1")
    assert ask.placed_counts == {"n-a": 0.0, "n-b": 0.0}
    by_item = dict(zip(ask.items, lift[0], strict=False))
    assert by_item["n-a"] == by_item["n-b"] == np.float32(0.2)
