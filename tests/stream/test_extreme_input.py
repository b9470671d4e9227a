"""Valid input, extreme in volume or pattern: what a broken or hostile producer may send within the
contract, and what it may cost the worker (the event loop held, memory kept)."""

from __future__ import annotations

from typing import Any

import pytest

from stream.catalog_view import CatalogView
from stream.contract import CatalogUpdate
from stream.engagement import Engagement
from stream.engine import Engine, Inbound
from tests.stream.fakes import T0, DictState, catalog_entry, catalog_record, ev
from tests.stream.test_new_arrival import ContentFakeScorer, shop
from tests.stream.test_session_end import clock, engine, neighbour

DAY = 86_400.0


def _jackets(n: int) -> list[Inbound]:
    jacket = {"category": "Jackets"}
    return [
        catalog_record(catalog_entry(f"j{k}").model_copy(update={**jacket, "title": f"Jacket {k}"}))
        for k in range(1, n + 1)
    ]


def _reminder_moment(e: Engine, store: DictState) -> Any:
    """u1 views j1 once, a crowd makes j2 popular, and u1 stays away a day: the reminder moment's outcome."""
    crowd = [ev(f"c{k}", neighbour("u1", k % 3), "view", "j2", T0 + k) for k in range(40)]
    e.process([*crowd, ev("d1", "u1", "view", "j1", T0 + 10)], store)
    return e.process([clock("u1", T0 + 10 + DAY, 4)], store)


def test_a_category_past_the_bound_is_left_out_of_discovery_unscanned_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At the bound: the discovery push of the popular jacket, as without one.
    e, store = engine(reminder_seconds=DAY, discovery_max_category_items=3), DictState()
    e.apply_catalog(_jackets(3), DictState(), announce=False)
    out = _reminder_moment(e, store)
    assert [(p.trigger, p.item_id) for _, p in out.pushes if p.user_id == "u1"] == [("discovery", "j2")]
    assert out.discovery_categories_left_out == 0

    # One item more (a producer that files the whole shop under one category): the category is not
    # valued, so not scanned (valuing a category of 200,000 items held the loop for about 2 s, again
    # after each change to any of its items), and the moment says so.
    e, store = engine(reminder_seconds=DAY, discovery_max_category_items=3), DictState()
    e.apply_catalog(_jackets(4), DictState(), announce=False)

    def no_scan(self: CatalogView, category: str) -> list[str]:
        raise AssertionError(f"category {category!r} scanned")

    monkeypatch.setattr(CatalogView, "in_category", no_scan)
    out = _reminder_moment(e, store)
    assert [p for _, p in out.pushes if p.user_id == "u1" and p.trigger == "discovery"] == []
    assert out.discovery_categories_left_out == 1


def _jacket(item: str, updated_at: float) -> CatalogUpdate:
    return CatalogUpdate(
        item_id=item, title=f"Jacket {item}", category="Jackets", price=50.0, stock=3, updated_at=updated_at
    )


def _tombstone(item: str) -> Inbound:
    return Inbound("catalog", 0, 0, item.encode(), None)


def test_items_placed_from_content_and_removed_leave_no_trace_in_the_new_items() -> None:
    # A producer creating and deleting item ids (each placed from its content): the new items kept
    # every one of them, by category, and every in-session ask of a shopper of the category walked
    # past all of them (20,000 placed and removed: 512 asks took 1.8 s, 1.6 s of it there).
    e, store = shop(ContentFakeScorer({}))
    e.apply_catalog([catalog_record(_jacket("i1", T0 - 3000))], store, announce=False)
    churn = [f"x{k}" for k in range(50)]
    e.apply_catalog([catalog_record(_jacket(item, T0 - 2000)) for item in churn], store, announce=False)
    assert len(e.new_items) == 50
    e.apply_catalog([_tombstone(item) for item in churn[:49]], store, announce=False)
    assert len(e.new_items) == 1
    assert e.intake.new_items_for(_viewed("i1"), T0) == ["x49"]  # what is left is proposed as before
    # Catalogued again after its removal: the model still knows it, so it is filed again at once.
    e.apply_catalog([catalog_record(_jacket("x3", T0 - 1000))], store, announce=False)
    assert len(e.new_items) == 2
    assert e.intake.new_items_for(_viewed("i1"), T0) == ["x3", "x49"]  # newest first
    e.apply_catalog([_tombstone("x3"), _tombstone("x3"), _tombstone("never-there")], store, announce=False)
    assert e.intake.new_items_for(_viewed("i1"), T0) == ["x49"]


def _viewed(item: str) -> Engagement:
    engagement = Engagement(20)
    engagement.observe("view", item, T0 - 10)
    return engagement
