"""MMR with remembered redundancies picks exactly what comparing with the whole context each round picks."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from stream.policy import Candidate, _mmr
from tests.policy.conftest import candidate


def reference_mmr(
    pool: list[Candidate],
    history: list[Candidate],
    k: int,
    lam: float,
    similarity: Callable[[Candidate, Candidate], float],
    category_room: Callable[[Candidate, list[Candidate]], bool],
) -> list[Candidate]:
    """The textbook loop: every round, each candidate against the whole context."""
    chosen: list[Candidate] = []
    rest = list(pool)
    valued = [c.value for c in pool if c.value is not None]
    scale = max((abs(v) for v in valued), default=0.0)

    def relevance(c: Candidate) -> float:
        if c.value is None or not valued:
            return c.interest
        return c.value / scale if scale > 0 else 0.0

    while rest and len(chosen) < k:
        best_i, best_value = -1, -math.inf
        for i, c in enumerate(rest):
            if not category_room(c, chosen):
                continue
            redundancy = max((similarity(c, o) for o in history + chosen), default=0.0)
            value = lam * relevance(c) - (1.0 - lam) * redundancy
            if value > best_value + 1e-12:
                best_i, best_value = i, value
        if best_i < 0:
            break
        chosen.append(rest.pop(best_i))
    return chosen


@pytest.mark.parametrize("seed", range(200))
def test_remembered_redundancy_matches_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    cats = ["a", "b", "c"]
    pool = [
        candidate(
            f"i{n}",
            interest=rng.random(),
            category=rng.choice(cats),
            value=rng.choice([None, rng.uniform(-1, 1)]),
        )
        for n in range(rng.randint(0, 12))
    ]
    history = [candidate(f"h{n}", category=rng.choice(cats)) for n in range(rng.randint(0, 4))]
    table: dict[tuple[str, str], float] = {}

    def similarity(x: Candidate, y: Candidate) -> float:
        return table.setdefault((x.item_id, y.item_id), rng.uniform(-0.5, 1.0))

    limit = rng.choice([0, 1, 2])

    def room(c: Candidate, chosen: list[Candidate]) -> bool:
        return not limit or sum(o.category == c.category for o in chosen) < limit

    k, lam = rng.randint(1, 5), rng.choice([0.0, 0.3, 0.7, 1.0])
    # Fill the similarity table first, so both runs read the same numbers whatever order they ask in.
    for x in pool:
        for y in pool + history:
            similarity(x, y)
    got = [c.item_id for c in _mmr(pool, history, k, lam, similarity, room)]
    assert got == [c.item_id for c in reference_mmr(pool, history, k, lam, similarity, room)]
