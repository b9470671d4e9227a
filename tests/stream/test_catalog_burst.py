"""A burst of new items (a season's import, a broken producer): the same pools and asks as one item at a
time, in work that grows with the burst, not with its square; each user hears of a bounded number.

Measured on the shared 2-core machine (``benchmarks/catalog_burst.py``): 3,000 new items of one
category took 100 s of one ``apply_catalog`` before (a category scan per item and partition, the pool
cache cleared whole every 1,024 items, every user asked about every item), a few seconds now. The
figures are the benchmark's; these tests count work instead.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytest
import torch

from model.item_neighbours import ItemNeighboursMixin
from stream.catalog_view import CatalogView
from stream.content_items import arrival_pool, placed_from_content
from stream.contract import CatalogUpdate
from stream.engine import Engine, Outcome, Scorer
from stream.engine.catalog_asks import MAX_ARRIVAL_POOLS, CatalogAsks
from stream.interest_index import InterestIndex
from stream.partitioning import partition_for
from stream.policy_config import PolicyConfig
from tests.stream.fakes import PARTITIONS, T0, DictState, PartitionView, catalog_record, make_settings

DIM = 8
NOW = T0 + 1000.0  # every partition's clock: the burst, timed before it, is announced on arrival


class VectorScorer(ItemNeighboursMixin):
    """A content-mapping model stand-in: items are vectors near their category's centre; similar items
    found by the real scorer's own code (``model.item_neighbours``, trained items only)."""

    content_enabled = True
    image_width: int | None = None
    version = "vec-1"
    hidden_size = DIM

    def __init__(self, known: dict[str, str]) -> None:
        self._ids = list(known)
        self._lookup = {item: i for i, item in enumerate(self._ids)}
        self.n_artifact_items = len(self._ids)
        self._emb = np.stack([_vector(item, cat) for item, cat in known.items()])
        self._out = torch.from_numpy(self._emb)
        self._unit_out = None
        self._id_array = np.array(self._ids)
        self.calls: Counter[str] = Counter()

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        self.calls["item_indices_ids"] += len(item_ids)
        get = self._lookup.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def add_items(self, item_ids: Sequence[str], contents: Sequence[Any]) -> int:
        rows = []
        for item, content in zip(item_ids, contents, strict=True):
            if item not in self._lookup:
                self._lookup[item] = len(self._ids)
                self._ids.append(item)
                rows.append(_vector(item, content.category))
        if rows:
            self._emb = np.concatenate([self._emb, np.stack(rows)])
            self._out = torch.from_numpy(self._emb)
        return len(rows)

    def similar_items(self, item_id: str, k: int, among: Sequence[str] | None = None) -> list[str]:
        self.calls["similar_items"] += 1
        return super().similar_items(item_id, k, among)

    def similar_items_many(
        self, item_ids: Sequence[str], k: int, among: Sequence[str] | None = None
    ) -> list[list[str]]:
        self.calls["similar_items_many"] += 1
        return super().similar_items_many(item_ids, k, among)

    def stack_states(self, states: list[np.ndarray | None]) -> np.ndarray:
        return Scorer.stack_states(cast(Scorer, self), states)

    def initial_state(self, n: int) -> np.ndarray:
        return np.zeros((n, DIM), dtype=np.float32)

    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray:
        return states

    def _raw(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        emb = self._emb[np.clip(candidates, 0, None)]
        # Interest from the item alone (every state is zero): some new items pass, some do not.
        return np.einsum("bcd->bc", emb) / DIM + np.einsum("bd,bcd->bc", states, emb)

    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.where(candidates >= 0, self._raw(states, candidates), -np.inf).astype(np.float32)

    def interest(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-4.0 * self._raw(states, candidates)))
        return np.where(candidates >= 0, p, 0.0).astype(np.float32)

    def score_and_interest(
        self, states: np.ndarray, candidates: np.ndarray, lift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.score(states, candidates), self.interest(states, candidates)


def _vector(item: str, category: str) -> np.ndarray:
    centre = np.random.default_rng(zlib.crc32(category.encode())).normal(size=DIM)
    return centre + 0.8 * np.random.default_rng(zlib.crc32(item.encode())).normal(size=DIM)


def entry(item: str, category: str, at: float) -> CatalogUpdate:
    return CatalogUpdate(
        item_id=item, title=f"Item {item}", category=category, price=50.0, stock=3, updated_at=at
    )


KNOWN = {f"k{i:02d}": "ABC"[i % 3] for i in range(60)}  # the trained items: 20 per category


def shop(users: int, **policy: Any) -> tuple[Engine, DictState, VectorScorer]:
    """The trained items catalogued (bootstrap), some moving category later (the peers of an arrival
    depend on its time), ``users`` shoppers each interested in three trained items, clocks at NOW."""
    settings = make_settings(trigger_thresholds={"new_arrival": 0.6}, **policy)
    settings.model.content_items_per_tick = 100_000
    scorer = VectorScorer(KNOWN)
    engine = Engine(settings, scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    store = DictState()
    engine.apply_catalog([catalog_record(entry(i, c, T0 - 86_400)) for i, c in KNOWN.items()], store, False)
    moves = [entry("k00", "B", T0 + 100), entry("k04", "A", T0 + 50), entry("k07", "C", T0 + 120)]
    engine.apply_catalog([catalog_record(u) for u in moves], store)
    rng = np.random.default_rng(3)
    for u in range(users):
        user = f"u{u}"
        for k in rng.choice(len(KNOWN), size=3, replace=False):
            engine.part(partition_for(user, PARTITIONS)).interest.update(
                f"k{k:02d}", user, float(rng.uniform(0.3, 0.9)), T0
            )
    for p in range(PARTITIONS):
        engine.part(p).advance(NOW)
        engine.part(p).catalog_until = NOW
    return engine, store, scorer


def burst(n_a: int, n_b: int) -> list[CatalogUpdate]:
    """New items: ``n_a`` in category A and ``n_b`` in B, timed over 200 s before the clocks."""
    ups = [entry(f"n{k:05d}", "A", T0 + 200 * k / max(n_a, 1)) for k in range(n_a)]
    ups += [entry(f"m{k:05d}", "B", T0 + 200 * k / max(n_b, 1)) for k in range(n_b)]
    return ups


# -- the computation one item at a time, as before the burst work ---------------------------------


def one_by_one_pool(engine: Engine, update: CatalogUpdate) -> list[str]:
    """A category scan per item, every peer read at the arrival's time (the former arrival_pool)."""
    content = engine._content
    cfg = engine.cfg
    if cfg.new_arrival_max_users == 0 or not placed_from_content(content, update.item_id):
        return []
    catalog = engine.catalog
    peers = [
        item
        for item in catalog.in_category(update.category)
        if (then := catalog.at(item, update.updated_at)) is not None and then.category == update.category
    ]
    return arrival_pool(content, update.item_id, peers, cfg.new_arrival_similar_items)


def one_by_one_users(
    pool: Sequence[str], interest: InterestIndex, now: float, cfg: PolicyConfig
) -> list[str]:
    """Each similar item's users sorted, then merged (the former arrival_users)."""
    best: dict[str, float] = {}
    for similar in pool:
        for user, value, _ in interest.users_for(similar, now, cfg.interest_index_min_interest):
            if value > best.get(user, -1.0):
                best[user] = value
    ranked = sorted(best.items(), key=lambda row: (-row[1], row[0]))
    return [user for user, _ in ranked[: cfg.new_arrival_max_users]]


def _one_by_one(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    cache: dict[tuple[str, float], list[str]] = {}

    def pool(self: CatalogAsks, update: CatalogUpdate) -> list[str]:
        key = (update.item_id, update.updated_at)
        if key not in cache:
            cache[key] = one_by_one_pool(engine, update)
        return cache[key]

    def audience(
        pool: Sequence[str], interest: InterestIndex, now: float, cfg: PolicyConfig, asked: Any = None
    ) -> tuple[list[str], int]:
        assert cfg.new_arrival_asks_per_user_hour >= 1_000_000  # used with the bound out of the way
        return one_by_one_users(pool, interest, now, cfg), 0

    monkeypatch.setattr(CatalogAsks, "arrival_pool", pool)
    monkeypatch.setattr(CatalogAsks, "prepare_pools", lambda self, updates: None)
    monkeypatch.setattr("stream.engine.catalog_asks.arrival_audience", audience)


def asks_of(engine: Engine) -> list[tuple[int, str, str]]:
    """Record every catalog ask the engine decides: (partition, user, item), in order."""
    seen: list[tuple[int, str, str]] = []
    decide = engine._decide

    def spy(asks: list[Any], out: Outcome) -> None:
        seen.extend((a.user.partition, a.user.user_id, a.items[0]) for a in asks)
        decide(asks, out)

    engine._decide = spy  # type: ignore[method-assign]
    return seen


def pushes(out: Outcome) -> list[tuple[int, str, str, str]]:
    return [(p, push.push_id, push.user_id, push.item_id) for p, push in out.pushes]


# -- tests ----------------------------------------------------------------------------------------


def test_a_burst_of_thousands_gets_the_pools_and_users_of_one_item_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The burst's similar items from one matrix product, however few the trained items.
    monkeypatch.setattr("model.item_neighbours._PRODUCT_MIN_ROWS", 0)
    engine, store, scorer = shop(users=120)
    ups = burst(1000, 100)
    assert len(ups) > MAX_ARRIVAL_POOLS  # more than the pools kept at least: the LRU grows with the log
    engine.apply_catalog([catalog_record(u) for u in ups], store)
    assert scorer.calls["similar_items_many"] > 0 and scorer.calls["similar_items"] == 0
    cfg = engine.cfg
    reached = 0
    for fresh in (False, True):
        if fresh:
            engine.catalog_asks.forget_pools()  # computed again, now in another order
        for update in ups[::-7] if fresh else ups:
            pool = one_by_one_pool(engine, update)
            assert pool and engine.catalog_asks.arrival_pool(update) == pool, update.item_id
            for p in range(PARTITIONS):
                part = engine.part(p)
                users = one_by_one_users(pool, part.interest, NOW, cfg)
                assert engine.catalog_asks.arrival_users(part, update, NOW) == (users, 0)
                reached += len(users)
    assert reached > 0
    # The peers depend on the time: k04 is in A from T0 + 50 on, k00 in A until T0 + 100 and in B
    # from then on (the version in force at the arrival's time counts, not the newest one read).
    asks = engine.catalog_asks
    assert "k04" not in asks.category_peers("A", T0 + 10) and "k04" in asks.category_peers("A", T0 + 60)
    assert "k00" in asks.category_peers("A", T0 + 10) and "k00" not in asks.category_peers("B", T0 + 10)
    assert "k00" in asks.category_peers("B", T0 + 150) and "k00" not in asks.category_peers("A", T0 + 150)


def test_a_burst_asks_and_pushes_as_one_item_at_a_time_when_nobody_reaches_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ups = burst(400, 100)
    runs = []
    for one_by_one in (False, True):
        with monkeypatch.context() as m:
            engine, store, _ = shop(users=40, new_arrival_asks_per_user_hour=1_000_000)
            if one_by_one:
                _one_by_one(m, engine)
            seen = asks_of(engine)
            out = engine.apply_catalog([catalog_record(u) for u in ups], store)
            runs.append((seen, pushes(out), out.suppressions, out.arrival_asks_capped, store.data))
    assert runs[0][0] and runs[0][1]  # asks, and pushes
    assert runs[0] == runs[1]


def test_a_user_hears_of_the_first_new_items_of_the_hour_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ups = burst(400, 100)
    with monkeypatch.context() as m:
        engine, store, _ = shop(users=40, new_arrival_asks_per_user_hour=1_000_000)
        _one_by_one(m, engine)
        every = asks_of(engine)
        engine.apply_catalog([catalog_record(u) for u in ups], store)
    engine, store, _ = shop(users=40)  # the default bound: 10 new items per user and hour
    bound = engine.cfg.new_arrival_asks_per_user_hour
    assert bound == 10
    seen = asks_of(engine)
    out = engine.apply_catalog([catalog_record(u) for u in ups], store)
    # The asks one at a time, less each user's asks past the bound (in announcement order).
    counted: Counter[str] = Counter()
    kept = []
    for ask in every:
        counted[ask[1]] += 1
        if counted[ask[1]] <= bound:
            kept.append(ask)
    assert seen == kept and len(every) > len(kept) > 0
    assert out.arrival_asks_capped == len(every) - len(kept)
    # Within the hour, a user at the bound hears of no more; in the next hour, of new items again.
    capped = {u for u, n in counted.items() if n >= bound}
    seen.clear()
    engine.apply_catalog([catalog_record(entry("x0", "A", NOW - 10))], store)
    assert not {u for _, u, _ in seen} & capped
    for p in range(PARTITIONS):
        engine.part(p).advance(NOW + 3600)
    out = engine.apply_catalog([catalog_record(entry("x1", "A", NOW - 5))], store)
    assert {u for _, u, _ in seen} & capped and out.arrival_asks_capped == 0


def test_the_hours_count_moves_with_the_partition() -> None:
    """A partition re-read from its store in the hour (moved to another worker, restarted, re-read after a
    failure) asks its users about new items exactly as one that stayed: the hour's count is stored
    with it, not kept in memory only."""
    ups = burst(300, 60)
    first, second = ups[::2], ups[1::2]
    runs = []
    for moved in (False, True):
        engine, store, _ = shop(users=40)
        seen = asks_of(engine)
        out = engine.apply_catalog([catalog_record(u) for u in first], store)
        if moved:
            for p in range(PARTITIONS):
                engine.adopt(p, engine.load_partition(p, PartitionView(store, p)))
        out.extend(engine.apply_catalog([catalog_record(u) for u in second], store))
        runs.append((seen, pushes(out), out.arrival_asks_capped, store.data))
    assert runs[0][2] > 0  # some users reached the bound
    assert runs[1][:3] == runs[0][:3]
    assert runs[1][3] == runs[0][3]


@pytest.mark.parametrize("batched", [True, False], ids=["similar_items_many", "similar_items"])
def test_a_large_burst_costs_work_linear_in_its_size(monkeypatch: pytest.MonkeyPatch, batched: bool) -> None:
    engine, store, scorer = shop(users=200)
    if not batched:  # a model without similar_items_many: one new item at a time
        monkeypatch.setattr(scorer, "similar_items_many", None)
    n = 5000
    ups = burst(n, 0)
    calls: Counter[str] = Counter()
    catalog: CatalogView = engine.catalog
    for name in ("at_span", "in_category"):
        method = getattr(catalog, name)

        def counted(*args: Any, _name: str = name, _method: Any = method) -> Any:
            calls[_name] += 1
            return _method(*args)

        monkeypatch.setattr(catalog, name, counted)
    index_calls = Counter[str]()
    best_of = InterestIndex.best_of

    def counted_best_of(self: InterestIndex, *args: Any) -> dict[str, float]:
        index_calls["best_of"] += 1
        return best_of(self, *args)

    monkeypatch.setattr(InterestIndex, "best_of", counted_best_of)
    seen = asks_of(engine)
    scorer.calls.clear()
    out = engine.apply_catalog([catalog_record(u) for u in ups], store)
    assert out.content_items_added == n
    if batched:  # the model asked once for the burst's similar items, once per list of peers (3 spans)
        assert scorer.calls["similar_items_many"] == 1 + 3 and scorer.calls["similar_items"] == 0
    else:  # two nearest-neighbour searches per new item, not per item and partition
        assert scorer.calls["similar_items"] == 2 * n
    # The category is read once (the items the model was trained on), each of its 21 trained items
    # (k00 leaves for B at T0 + 100, k04 comes from B at T0 + 50) once per span of times with the same
    # peers (three spans), never per arrival.
    assert calls["in_category"] == 1
    assert calls["at_span"] == 21 * 3
    # Ids the model looks up: about each arrival's peers (20 trained items) and a few per partition,
    # the category once (a scan per arrival would be n * n / 2).
    assert scorer.calls["item_indices_ids"] <= 40 * n
    # Each arrival's users once per partition; each user asked about at most the bound.
    assert index_calls["best_of"] == n * PARTITIONS
    per_user = Counter(u for _, u, _ in seen)
    assert 0 < len(seen) <= 200 * engine.cfg.new_arrival_asks_per_user_hour
    assert max(per_user.values()) == engine.cfg.new_arrival_asks_per_user_hour
    assert out.arrival_asks_capped > 10 * len(seen)
