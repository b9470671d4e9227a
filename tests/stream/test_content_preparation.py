"""Titles of waiting items encoded ahead, in a thread: what the worker hands over and when."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from stream.contract import CatalogUpdate
from stream.engine import Engine
from stream.engine.content_placement import PREPARE_TITLES
from stream.worker_tick import TickMixin
from tests.stream.fakes import T0, DictState, FakeScorer, catalog_record
from tests.stream.test_new_arrival import ContentFakeScorer, shop


class PreparingScorer(ContentFakeScorer):
    """Records which titles it was asked to encode ahead, and in which thread."""

    def __init__(self) -> None:
        super().__init__({}, spare=8)
        self.prepared: list[str] = []
        self.threads: set[str] = set()

    def prepare_items(self, contents: Sequence[Any], limit: int) -> int:
        todo = [c.title for c in contents if c.title not in self.prepared][:limit]
        self.prepared += todo
        self.threads.add(threading.current_thread().name)
        return len(todo)


def arrival(k: int) -> CatalogUpdate:
    return CatalogUpdate(
        item_id=f"n{k}", title=f"title {k}", category="Jackets", price=120.0, stock=5, updated_at=T0 + 300
    )


def waiting_shop(scorer: FakeScorer, n: int, per_tick: int) -> Engine:
    """An engine whose model places ``per_tick`` items a tick, with ``n`` new items read: one placed by
    the catalog read, the rest waiting."""
    engine, store = shop(scorer)
    engine.settings.model.content_items_per_tick = per_tick
    engine.apply_catalog(
        [catalog_record(arrival(k)) for k in range(n)],
        store,
    )
    return engine


def test_the_next_two_ticks_worth_of_titles_are_prepared_a_few_at_a_time() -> None:
    scorer = PreparingScorer()
    engine = waiting_shop(scorer, n=40, per_tick=12)
    assert len(engine.unplaced) == 28  # 12 placed with the catalog read
    work = engine.content_preparation()
    assert work is not None and work() == PREPARE_TITLES
    assert scorer.prepared == [f"title {k}" for k in range(12, 12 + PREPARE_TITLES)]
    work = engine.content_preparation()
    assert work is not None and work() == 24 - PREPARE_TITLES  # two ticks' worth in all
    assert engine.content_preparation() is not None  # nothing new to encode: the work says 0
    assert engine.content_preparation()() == 0  # type: ignore[misc]


def test_nothing_to_prepare_without_a_content_model_or_waiting_items() -> None:
    assert waiting_shop(ContentFakeScorer({}, spare=8), n=3, per_tick=1).content_preparation() is None
    scorer = PreparingScorer()
    engine = waiting_shop(scorer, n=1, per_tick=5)  # placed at once
    assert len(engine.unplaced) == 0 and engine.content_preparation() is None
    assert shop(FakeScorer())[0].content_preparation() is None


def test_the_worker_encodes_ahead_in_a_thread_until_it_stops() -> None:
    scorer = PreparingScorer()
    engine = waiting_shop(scorer, n=30, per_tick=10)
    stop = threading.Event()
    errors: list[str] = []
    worker = SimpleNamespace(engine=engine, _stop=stop, _tick_error=errors.append)

    async def run() -> None:
        task = asyncio.ensure_future(TickMixin._prepare_content_loop(worker))  # type: ignore[arg-type]
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(scorer.prepared) == 20:
                break
        stop.set()
        await asyncio.wait_for(task, 5.0)  # it notices the stop within its idle wait

    asyncio.run(run())
    assert scorer.prepared == [f"title {k}" for k in range(10, 30)]
    assert threading.main_thread().name not in scorer.threads
    assert errors == []
    # What was prepared is placed as before: the placement itself is unchanged.
    placed = engine.tick(DictState())
    assert placed.content_items_added == 10
