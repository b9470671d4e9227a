"""The policy lab's oracles: pushers that read the simulated world's ground truth (``world``).

They are not policies Kairos could run; they bound what one could achieve. Each pushes at the same
moments as :class:`benchmarks.lab_pushers.SessionEndPusher` (an hour after the session, once a local
day, quiet hours held) and differs only in what it knows when it ranks:

* :class:`OracleItemPusher`: the shopper's abandoned items ranked by their true push conversion
  probability (the simulator's response model): how much a perfect item choice at those moments adds.
* :class:`OracleDiscoveryPusher`: every item the shopper has *not* engaged with, ranked by true
  utility: what recommending could add if the shopper's taste, need and price sensitivity were known.
* :class:`PoolOracleDiscoveryPusher`: the true utility, but only over the candidates an observable
  ranker has (:class:`benchmarks.lab_pushers.PopularDiscoveryPusher`'s: the popular unengaged items of
  the recent categories): the ceiling of *ranking* those candidates.
* :class:`VectorOracleDiscoveryPusher`: the same candidates ranked by the observable value
  (:class:`benchmarks.lab_pushers.ValueDiscoveryPusher`) plus a taste term from the world's true item
  vectors and a taste *estimated* from the shopper's own engaged items: what perfect item factors (the
  best a collaborative-filtering or content model could learn) add when the taste must be inferred.
* :class:`UtilityPartsOraclePusher` and its arms: the same candidates ranked by chosen *parts* of the
  true utility (taste, item appeal, need, price as the shopper weighs it, discount), to see which part
  the observable value misses (``benchmarks/README.md``, "Policy lab").
* :class:`OwnedOraclePusher`: :class:`benchmarks.lab_pushers.ValueDiscoveryPusher` without the items
  the shopper truly owns (bought before the pusher started reading, or forgotten): what a perfect
  memory of purchases adds.

The lab sets ``world`` before the run (``benchmarks/policy_lab.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.baselines import baseline_push
from benchmarks.lab_pushers import (
    DISCOVERY_TRIGGER,
    LabCandidate,
    PopularDiscoveryPusher,
    SessionEndPusher,
    ValueDiscoveryPusher,
)
from stream.contract import Event
from stream.simulator import World


class OracleItemPusher(SessionEndPusher):
    """Abandoned items ranked by their true push conversion probability (open x click x buy)."""

    world: World | None = None

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        assert self.world is not None
        out = []
        for c in super().candidates(user_id, now):
            probe = baseline_push(
                user_id, self.catalog[c.item_id], "cart_abandonment", "probe", now, 3600.0, ""
            )
            p = self.world.response_probabilities(probe, now)
            out.append(LabCandidate(c.item_id, c.trigger, p.open * p.click * p.purchase))
        return out


class OracleDiscoveryPusher(SessionEndPusher):
    """The items the shopper has not engaged with that have the highest true utility for them."""

    world: World | None = None
    shortlist = 10

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        assert self.world is not None
        utility = self.world.true_interests(user_id)
        engaged = self.engaged.get(user_id, set())
        out: list[LabCandidate] = []
        for k in np.argsort(-utility, kind="stable"):
            item_id = self.world.item_ids[int(k)]
            if item_id not in engaged:
                out.append(LabCandidate(item_id, DISCOVERY_TRIGGER, float(utility[k])))
                if len(out) == self.shortlist:
                    break
        return out


class PoolOracleDiscoveryPusher(PopularDiscoveryPusher):
    """:class:`PopularDiscoveryPusher`'s candidates ranked by their true utility for the shopper."""

    world: World | None = None

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        assert self.world is not None
        pool = super().candidates(user_id, now)
        if not pool:
            return pool
        utility = self.world.true_interests(user_id, [c.item_id for c in pool])
        return [LabCandidate(c.item_id, c.trigger, float(u)) for c, u in zip(pool, utility, strict=True)]


class VectorOracleDiscoveryPusher(ValueDiscoveryPusher):
    """The observable value plus ``taste_weight`` x (true item vector . estimated taste).

    The taste estimate is the mean of the true vectors of the items the shopper engaged with, weighted
    by ``log1p`` of their engagement (a view 1, a cart or purchase 3): the profile a perfect item
    model would give, from the history the pusher has seen.
    """

    world: World | None = None
    taste_weight = 2.0

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.history: dict[str, dict[str, float]] = {}

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        if event.type in ("view", "add_to_cart", "purchase") and event.item_id is not None:
            history = self.history.setdefault(event.user_id, {})
            weight = 1.0 if event.type == "view" else 3.0
            history[event.item_id] = history.get(event.item_id, 0.0) + weight

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        assert self.world is not None
        pool = super().candidates(user_id, now)
        history = self.history.get(user_id)
        if not pool or not history:
            return pool
        world = self.world
        vectors = world.item_vectors[world.item_positions(list(history))]
        weights = np.log1p(np.fromiter(history.values(), dtype=float, count=len(history)))
        taste = weights @ vectors / weights.sum()
        fit = world.item_vectors[world.item_positions([c.item_id for c in pool])] @ taste
        return [
            LabCandidate(c.item_id, c.trigger, c.value + self.taste_weight * float(f))
            for c, f in zip(pool, fit, strict=True)
        ]


class OwnedOraclePusher(ValueDiscoveryPusher):
    """:class:`ValueDiscoveryPusher`'s candidates without the items the shopper owns (the world's truth)."""

    world: World | None = None

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        assert self.world is not None
        owned = self.world.owned_items(user_id)
        return [c for c in super().candidates(user_id, now) if c.item_id not in owned]


UTILITY_PARTS = ("taste", "appeal", "need", "price", "discount")


class UtilityPartsOraclePusher(ValueDiscoveryPusher):
    """:class:`ValueDiscoveryPusher`'s candidates ranked by ``parts`` of the shopper's true utility.

    The simulator's utility (``docs/simulator.md``) is the sum of: ``taste`` (item vector . the
    shopper's taste), ``appeal`` (the item's own bias), ``need`` (+1.5 in the category the shopper
    needs now), ``price`` (-their price sensitivity x log of the price over the category's reference)
    and ``discount`` (+3 x discount); owned items lose 3 (not here: :class:`OwnedOraclePusher`).
    With ``with_value`` the chosen parts are added to the observable value instead of replacing it.
    """

    world: World | None = None
    parts: tuple[str, ...] = UTILITY_PARTS
    with_value = False

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        assert self.world is not None
        pool = super().candidates(user_id, now)
        if not pool:
            return pool
        terms = self.world.utility_parts(user_id, [c.item_id for c in pool])
        total = sum((terms[p] for p in self.parts), np.zeros(len(pool)))
        base = np.array([c.value if self.with_value else 0.0 for c in pool])
        return [LabCandidate(c.item_id, c.trigger, float(v)) for c, v in zip(pool, base + total, strict=True)]


def parts_oracle(parts: tuple[str, ...], with_value: bool) -> type[UtilityPartsOraclePusher]:
    """A :class:`UtilityPartsOraclePusher` arm of these parts."""
    name = "UtilityParts_" + "_".join(parts) + ("_plus_value" if with_value else "")
    return type(name, (UtilityPartsOraclePusher,), {"parts": parts, "with_value": with_value})
