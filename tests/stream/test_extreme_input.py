"""Valid input, extreme in volume or pattern: what a broken or hostile producer may send within the
contract, and what it may cost the worker (the event loop held, memory kept)."""

from __future__ import annotations

from typing import Any

import pytest

from stream.catalog_view import CatalogView
from stream.engine import Engine, Inbound
from tests.stream.fakes import T0, DictState, catalog_entry, catalog_record, ev
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
