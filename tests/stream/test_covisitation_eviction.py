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
from pathlib import Path

import pytest

from stream import native
from stream.covisitation import _weakest

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
