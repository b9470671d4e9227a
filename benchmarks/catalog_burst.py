"""A burst of catalog changes through the engine: what one ``apply_catalog`` of thousands of records costs.

    .venv/bin/python benchmarks/catalog_burst.py [--scenario NAME ...] [--known N] [--users N]
                                                 [--interests N] [--sliced] [--one-at-a-time]
                                                 [--profile] [--json]

The engine alone, in-process, no broker: a shop of ``--known`` items the model was trained on (in
``--categories`` categories), ``--users`` shoppers over four partitions, each interested (the
partitions' interest indexes) in a few known items, then one catalog batch of:

* ``new-one-category-3000`` / ``new-one-category-10000``: new items, all in one category, placed from
  their content (every one at once: ``model.content_items_per_tick`` is raised to the burst, the worst
  case of the announcement path),
* ``new-100-categories-10000``: 10,000 new items over 100 categories,
* ``price-10000``: a price drop of 10,000 known items with interested shoppers,
* ``flap-3000``: 3,000 new items, then each moved to another category and back (3 versions each),
* ``readd-3000``: 3,000 new items, then a tombstone for each, then each published again.

The changes are timed before the partitions' clocks, so ``apply_catalog`` announces them at once (as
the worker's wall clock always does). Prints, per scenario, the seconds of the batch, the pushes it
made and a SHA-256 of them, and the asks the hourly bound of new items per user left out
(``new_arrival_asks_per_user_hour``); ``--sliced`` applies the records in slices as the worker's tick
does (``stream.worker_tick``) and reports the longest; ``--one-at-a-time`` takes ``similar_items_many``
from the model; ``--profile`` adds the top of a cProfile. A measurement, never a test assertion:
``tests/stream/test_catalog_burst.py`` counts the work instead.

The model is a stand-in (``BurstScorer``): items in a small vector space grouped by category, the
real scorer's own neighbour queries (``model.item_neighbours.ItemNeighboursMixin``) for
similar items.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.item_neighbours import ItemNeighboursMixin  # noqa: E402
from stream.contract import CatalogUpdate, to_json_bytes  # noqa: E402
from stream.engine import Engine, Inbound, Outcome, Scorer  # noqa: E402
from stream.partitioning import partition_for  # noqa: E402
from stream.policy_config import PolicyConfig  # noqa: E402
from stream.settings import Settings, TopicsConfig, WorkerConfig  # noqa: E402
from stream.worker_tick import CATALOG_SLICE_FIRST, next_slice_size  # noqa: E402

PARTITIONS = 4
T0 = 1_717_236_000.0
DIM = 16


class BurstScorer(ItemNeighboursMixin):
    """A content-mapping model stand-in: each item a vector near its category's centre; similar items
    found by the real scorer's own code (``model.item_neighbours``)."""

    content_enabled = True
    image_width: int | None = None
    version = "burst-1"

    def __init__(self, known: dict[str, str], seed: int = 0) -> None:
        self._seed = seed
        self._ids = list(known)
        self._lookup = {item: i for i, item in enumerate(self._ids)}
        self.n_artifact_items = len(self._ids)
        self.hidden_size = DIM
        self._emb = np.stack([self._vector(item, cat) for item, cat in known.items()]).astype(np.float32)
        self._out = torch.from_numpy(self._emb)
        self._unit_out = None
        self._id_array = np.array(self._ids)
        self.added = 0

    def _vector(self, item: str, category: str) -> np.ndarray:
        centre = np.random.default_rng(zlib.crc32(category.encode()) + self._seed).normal(size=DIM)
        noise = np.random.default_rng(zlib.crc32(item.encode()) + self._seed).normal(size=DIM)
        return centre + 0.7 * noise

    # -- ContentScorer ---------------------------------------------------------------------------

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        get = self._lookup.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def add_items(self, item_ids: Sequence[str], contents: Sequence[Any]) -> int:
        rows = []
        for item, content in zip(item_ids, contents, strict=True):
            if item not in self._lookup:
                self._lookup[item] = len(self._ids)
                self._ids.append(item)
                rows.append(self._vector(item, content.category))
        if rows:
            self._emb = np.concatenate([self._emb, np.stack(rows).astype(np.float32)])
            self._out = torch.from_numpy(self._emb)
        self.added += len(rows)
        return len(rows)

    # -- Scorer ----------------------------------------------------------------------------------

    def stack_states(self, states: list[np.ndarray | None]) -> np.ndarray:
        return Scorer.stack_states(cast(Scorer, self), states)

    def initial_state(self, n: int) -> np.ndarray:
        return np.zeros((n, DIM), dtype=np.float32)

    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray:
        known = items >= 0
        moved = 0.5 * states + self._emb[np.where(known, items, 0)]
        return np.where(known[:, None], moved, states).astype(np.float32)

    def _raw(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        emb = self._emb[np.clip(candidates, 0, None)]
        return np.einsum("bd,bcd->bc", states, emb) / DIM

    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.where(candidates >= 0, self._raw(states, candidates), -np.inf).astype(np.float32)

    def interest(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self._raw(states, candidates)))
        return np.where(candidates >= 0, p, 0.0).astype(np.float32)

    def score_and_interest(
        self, states: np.ndarray, candidates: np.ndarray, lift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.score(states, candidates), self.interest(states, candidates)


def settings(burst: int) -> Settings:
    policy = PolicyConfig.model_validate(
        {
            "holdout_share": 0.0,
            "quiet_hours_start": "00:00",
            "quiet_hours_end": "00:00",
            "active_window_seconds": 0.0,
            "session_end_seconds": 0.0,
            "reminder_seconds": 0.0,
        }
    )
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        topics=TopicsConfig.model_validate({"partitions": PARTITIONS}),
        worker=WorkerConfig.model_validate({"clock": "event"}),
        policy=policy,
    )
    s.model.content_items_per_tick = max(burst, 1)
    return s


def record(update: CatalogUpdate, offset: int = 0) -> Inbound:
    return Inbound("catalog", 0, offset, update.item_id.encode(), to_json_bytes(update))


def item(item_id: str, category: str, updated_at: float, price: float = 100.0) -> CatalogUpdate:
    return CatalogUpdate(
        item_id=item_id,
        title=f"Item {item_id}",
        category=category,
        price=price,
        stock=10,
        updated_at=updated_at,
    )


class DictState:
    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get((partition, key))

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop((partition, key), None)
        else:
            self.data[(partition, key)] = value


def shop(args: argparse.Namespace, burst: int, n_known: int) -> tuple[Engine, DictState, list[str]]:
    """The engine, its store and the known items: bootstrapped catalog, users with interests."""
    categories = [f"cat{c}" for c in range(args.categories)]
    known = {f"k{i}": categories[i % len(categories)] for i in range(n_known)}
    scorer = BurstScorer(known)
    if args.one_at_a_time:
        scorer.similar_items_many = None  # type: ignore[assignment,method-assign]
    engine = Engine(settings(burst), scorer, clock=lambda: 0.0)
    engine.owned = set(range(PARTITIONS))
    store = DictState()
    engine.apply_catalog([record(item(i, c, T0 - 86_400)) for i, c in known.items()], store, announce=False)
    rng = np.random.default_rng(1)
    ids = list(known)
    for u in range(args.users):
        user = f"u{u}"
        part = engine.part(partition_for(user, PARTITIONS))
        for i in rng.choice(len(ids), size=args.interests, replace=False):
            part.interest.update(ids[i], user, float(rng.uniform(0.3, 0.9)), T0 - 600)
    for p in range(PARTITIONS):
        engine.part(p).advance(T0)
        engine._catalog_until(p)
    return engine, store, ids


def scenario_records(name: str, args: argparse.Namespace, known: list[str]) -> list[Inbound]:
    kind, _, size = name.rpartition("-")
    n = int(size)
    at = T0 - 300
    if kind == "new-one-category":
        ups = [item(f"n{k:05d}", "cat0", at + k * 0.001) for k in range(n)]
    elif kind == "new-100-categories":
        ups = [item(f"n{k:05d}", f"cat{k % 100}", at + k * 0.001) for k in range(n)]
    elif kind == "price":
        ups = [item(known[k], f"cat{k % args.categories}", at + k * 0.001, 80.0) for k in range(n)]
    elif kind == "flap":
        ups = []
        for k in range(n):
            ups.append(item(f"n{k:05d}", "cat0", at + k * 0.001))
        for k in range(n):
            ups.append(item(f"n{k:05d}", "cat1", at + 100 + k * 0.001))
        for k in range(n):
            ups.append(item(f"n{k:05d}", "cat0", at + 200 + k * 0.001))
    elif kind == "readd":
        # New items, all removed (tombstones), then published again: each a new arrival twice.
        ups = [item(f"n{k:05d}", "cat0", at + k * 0.001) for k in range(n)]
        records = [record(u, offset) for offset, u in enumerate(ups)]
        records += [Inbound("catalog", 0, n + k, f"n{k:05d}".encode(), None) for k in range(n)]
        again = [item(f"n{k:05d}", "cat0", at + 100 + k * 0.001) for k in range(n)]
        return records + [record(u, 2 * n + offset) for offset, u in enumerate(again)]
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    return [record(u, offset) for offset, u in enumerate(ups)]


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    kind, _, size = name.rpartition("-")
    n = int(size)
    # Price changes go to distinct known items, each with its interested shoppers.
    engine, store, known = shop(args, n, max(args.known, n) if kind == "price" else args.known)
    records = scenario_records(name, args, known)
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    slices: list[float] = []
    if args.sliced:  # as the worker's tick: slices of about CATALOG_SLICE_SECONDS (stream.worker_tick)
        out = Outcome()
        slice_size, rest = CATALOG_SLICE_FIRST, list(records)
        while rest:
            part, rest = rest[:slice_size], rest[slice_size:]
            t = time.perf_counter()
            out.extend(engine.apply_catalog(part, store))
            slices.append(time.perf_counter() - t)
            slice_size = next_slice_size(slice_size, slices[-1])
    else:
        out = engine.apply_catalog(records, store)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    pushes = sorted((p.push_id, p.user_id, p.item_id, p.trigger) for _, p in out.pushes)
    result = {
        "scenario": name,
        "records": len(records),
        "seconds": round(seconds, 3),
        "pushes": len(pushes),
        "pushes_sha256": hashlib.sha256(json.dumps(pushes).encode()).hexdigest(),
        "placed": out.content_items_added,
        "asks_over_the_hourly_bound": out.arrival_asks_capped,
    }
    if slices:
        result["slices"] = len(slices)
        result["longest_slice_seconds"] = round(max(slices), 3)
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.top)
        result["profile"] = text.getvalue()
    return result


SCENARIOS = (
    "new-one-category-3000",
    "new-one-category-10000",
    "new-100-categories-10000",
    "price-10000",
    "flap-3000",
    "readd-3000",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", nargs="*", default=list(SCENARIOS))
    p.add_argument("--known", type=int, default=2000, help="items the model was trained on")
    p.add_argument("--categories", type=int, default=20)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--interests", type=int, default=5, help="known items each user is interested in")
    p.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="the model without similar_items_many: similar items one new item at a time",
    )
    p.add_argument(
        "--sliced",
        action="store_true",
        help="apply the records in slices, as the worker's tick does (reports the longest slice)",
    )
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    for name in args.scenario:
        result = run(name, args)
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "profile"}), flush=True)
        else:
            sliced = ""
            if "slices" in result:
                sliced = f" ({result['slices']} slices, the longest {result['longest_slice_seconds']} s)"
            print(
                f"{name}: {result['records']} records in {result['seconds']} s{sliced}, "
                f"{result['pushes']} pushes ({result['pushes_sha256'][:12]}), {result['placed']} placed, "
                f"{result['asks_over_the_hourly_bound']} asks over the hourly bound",
                flush=True,
            )
        if "profile" in result:
            print(result["profile"], flush=True)


if __name__ == "__main__":
    main()
