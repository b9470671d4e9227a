"""A full co-visitation row evicts the entry it always did: ``covisitation._weakest`` is the minimum of
the row's ``(value, id)`` tuples, walked without building them; the native build (mypyc compares the
values as C doubles) gives the same answer."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from stream import native
from stream.covisitation import CoVisitationIndex, _weakest

ROOT = Path(__file__).resolve().parents[2]

# Ties, signed zeros, infinities, the smallest and largest floats. Not NaN: the decay never makes one,
# and the tuples compare one NaN object as equal to itself (the same float sits under several ids).
SPECIAL = [0.0, -0.0, 1.0, 1.0, 2.5, math.inf, -math.inf, 5e-324, 1e308]


def tuple_minimum(bucket: dict[str, float]) -> str:
    """The rule as first written: ``min`` of the ``(value, id)`` tuples."""
    return min(zip(bucket.values(), bucket.keys(), strict=True))[1]


def random_buckets(seed: int, n: int) -> list[dict[str, float]]:
    """Rows of 1-40 entries: random values, many tied, with the special values mixed in."""
    rng = random.Random(seed)
    buckets = []
    for _ in range(n):
        size = rng.randint(1, 40)
        keys = rng.sample([f"i{k}" for k in range(60)], size)
        pool = [rng.choice(SPECIAL) for _ in range(3)] + [float(rng.randint(0, 4)) for _ in range(3)]
        buckets.append({k: rng.choice(pool) if rng.random() < 0.5 else rng.random() for k in keys})
    return buckets


def test_the_weakest_entry_is_the_tuple_minimum() -> None:
    for bucket in random_buckets(seed=1, n=3000):
        assert _weakest(bucket) == tuple_minimum(bucket), bucket


def test_ties_go_to_the_lowest_id_and_signed_zeros_tie() -> None:
    assert _weakest({"b": 1.0, "a": 1.0, "c": 2.0}) == "a"
    assert _weakest({"b": 0.0, "a": -0.0}) == "a"
    assert _weakest({"a": 0.0, "b": -0.0}) == "a"
    assert _weakest({"z": 3.0, "y": 0.5}) == "y"


CHILD = """
import json, sys
import stream.covisitation as covisitation
from tests.stream.test_covisitation_eviction import random_buckets, tuple_minimum
native = covisitation.__file__.endswith(".so")
bad = [b for b in random_buckets(seed=2, n=3000) if covisitation._weakest(b) != tuple_minimum(b)]
print(json.dumps({"native": native, "bad": repr(bad[:3])}))
"""


def test_the_native_build_evicts_the_same_entry() -> None:
    status, _ = native.check()
    if not status.startswith("native:"):
        pytest.skip(f"no current native build here ({status}); `make install` builds it")
    env = {**os.environ, native.ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["native"]:
        pytest.skip("the native build was not loaded in the child (sources changed since it was built)")
    assert result["bad"] == "[]"


class OnePairAtATime(CoVisitationIndex):
    """The index as it counted until 2026-12-07: every pair one after another, both directions."""

    def observe(self, item_id: str, previous: Sequence[str], ts: float) -> None:
        weight, rescale = self._decay.weight(ts)
        if rescale is not None:
            for item, bucket in self._items.items():
                for key in bucket:
                    bucket[key] *= rescale
                self._dirty_items.add(item)
        items, touched, dirty = self._items, self._touched, self._dirty_items
        for other in previous:
            if other == item_id:
                continue
            for item, neighbour in ((item_id, other), (other, item_id)):
                row = items.get(item)
                if row is None:
                    row = items[item] = {}
                    if len(items) > self.max_items:
                        self._evict_oldest()
                else:
                    items.move_to_end(item)
                self._seq += 1
                touched[item] = self._seq
                dirty.add(item)
                if neighbour in row:
                    row[neighbour] += weight
                    continue
                if len(row) >= self._slots:
                    del row[tuple_minimum(row)]
                row[neighbour] = weight


def everything(index: CoVisitationIndex) -> tuple[object, ...]:
    """All the index holds, in order: rows (recency order, each row's insertion order and counts), touch
    numbers (in insertion order), the changed items (in iteration order), the counter."""
    return (
        [(item, list(row.items())) for item, row in index._items.items()],
        list(index._touched.items()),
        list(index._dirty_items),
        index._seq,
    )


@pytest.mark.parametrize("seed", range(6))
def test_counting_a_view_changes_the_index_as_counting_its_pairs_one_by_one_did(seed: int) -> None:
    """Both paths of observe (item_id's row looked up once per call; once per pair where a new row may
    evict one), with rows filling up, items evicted, repeated items and self pairs, drains in between
    and a decay rebase, against the rule as it was."""
    rng = random.Random(seed)
    top_n, max_items = rng.choice([(1, 8), (2, 12), (3, 40), (20, 1000)])
    new = CoVisitationIndex(top_n=top_n, max_items=max_items, half_life_seconds=60.0)
    old = OnePairAtATime(top_n=top_n, max_items=max_items, half_life_seconds=60.0)
    universe = [f"i{k}" for k in range(rng.choice([6, 30, 200]))]
    ts = 1_700_000_000.0
    for step in range(3000):
        ts += rng.choice([0.0, 0.5, 3.0, 40.0]) if step != 1500 else 60.0 * 80  # a rebase midway
        item = rng.choice(universe)
        previous = [rng.choice(universe) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            previous = list(dict.fromkeys(previous))  # distinct, as the worker's engaged items are
        new.observe(item, previous, ts)
        old.observe(item, previous, ts)
        assert everything(new) == everything(old), step
        if rng.random() < 0.05:
            assert new.drain_changes() == old.drain_changes()
    assert new.to_dict() == old.to_dict()
