"""The soak benchmark's workload: ``kairos demo``'s rate-paced shop (:class:`SoakShop`) on a world
whose shoppers come and go (:class:`ChurningWorld`), and the worker's inactive-user expiry setting,
when it has one (:func:`user_ttl_variable`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from benchmarks.soak_parts.config import TTL_HINTS
from stream.contract import ConsentUpdate
from stream.settings import Settings
from stream.sim_runner import ShopSimulator
from stream.simulator import DAY, SimConfig, World


class ChurningWorld(World):
    """The simulated shop with shoppers who come and go.

    Each of the ``n_users`` slots is taken by a new user id (``u000123-g4``) every ``lifetime`` simulated
    seconds, staggered over the slots so that arrivals are steady; the slot keeps its taste and habits
    (a similar shopper). A new user's first message is its consent (a fresh draw of the opt-out share).
    Pushes addressed to a user who has left count as the world's ``unknown_pushes``.
    """

    def __init__(self, config: SimConfig, lifetime: float) -> None:
        super().__init__(config)
        n = config.n_users
        self.lifetime = lifetime
        self.arrivals = n
        self._base = list(self.user_ids)
        self._phase = np.arange(n, dtype=np.float64) * (lifetime / n)
        self._generation = self._generation_at(self.now)
        self._consent_rng = random.Random(config.seed + 1)
        self._rename(range(n))

    def _generation_at(self, now: float) -> np.ndarray:
        return ((now - self.config.start_time + self._phase) // self.lifetime).astype(np.int64)

    def _rename(self, slots: Sequence[int] | range) -> None:
        # The world looks users up by id (pushes, ground truth): keep its index in step with the ids.
        index = self._user_index
        for u in slots:
            new = f"{self._base[u]}-g{int(self._generation[u])}"
            index.pop(self.user_ids[u], None)
            index[new] = u
            self.user_ids[u] = new

    def advance(self, until: float, max_events: int | None = None) -> list[Any]:
        """New users take over their slots (their consent first), then the world advances as usual."""
        generation = self._generation_at(self.now)
        moved = np.flatnonzero(generation != self._generation).tolist()
        out: list[Any] = []
        if moved:
            self._generation[moved] = generation[moved]
            self._rename(moved)
            self.arrivals += len(moved)
            share = self.config.opt_out_share
            for u in moved:
                self.opted_in[u] = self._consent_rng.random() >= share
                out.append(ConsentUpdate(user_id=self.user_ids[u], opted_in=self.opted_in[u], ts=self.now))
        out.extend(super().advance(until, max_events))
        return out


class SoakShop(ShopSimulator):
    """``kairos demo``'s simulated shop (rate-paced, answering pushes) on a :class:`ChurningWorld`."""

    def __init__(self, settings: Settings, config: SimConfig, rate: float, lifetime: float) -> None:
        super().__init__(settings, config, rate=rate, start_now=False, create_topics=False)
        self.world = ChurningWorld(self.config, lifetime)


def natural_rate(config: SimConfig) -> float:
    """Rough organic events per simulated second of a world (to place its start in the past)."""
    return config.n_users * config.sessions_per_day * config.mean_session_actions / DAY


def user_ttl_variable() -> str | None:
    """The environment variable of the worker's inactive-user expiry setting, when there is one."""
    for group, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name in model.model_fields:
            lowered = name.lower()
            # A push's own time to live (policy.push_ttl_seconds) is not about users.
            if any(hint in lowered for hint in TTL_HINTS) and "push" not in lowered:
                return f"KAIROS_{group.upper()}__{name.upper()}"
    return None
