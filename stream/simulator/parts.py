"""The simulated world's shared attributes, declared once for the mixins that make up
:class:`stream.simulator.world.World` (``shopping``: organic behaviour; ``push_response``: the answer to
a push). ``World.__init__`` and its building methods set every attribute; the methods are defined by
``world``, ``shopping`` or ``push_response``."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from stream.contract import CatalogUpdate, Event, Promotion
from stream.simulator.config import Message, SimConfig
from stream.simulator.shared import _PushChain, _Session


class WorldParts:
    """The attributes and methods the world's parts share (set and defined by :class:`World`)."""

    config: SimConfig
    counts: dict[str, int]
    opted_in: list[bool]
    need: list[int]
    user_ids: list[str]
    user_counters: dict[str, np.ndarray]
    category_affinity: np.ndarray
    category_items: list[np.ndarray]
    item_category: np.ndarray
    list_price: np.ndarray
    price: np.ndarray
    discount: np.ndarray
    stock: np.ndarray
    promotions: list[Promotion | None]
    titles: list[str]
    _rng: random.Random
    _prefix: str
    _promo_seq: int
    _arrivals: list[int]
    _need_rng: list[random.Random]
    _need_until: list[float]
    _cart: list[list[int]]
    _owned: list[set[int]]
    _recent: list[deque[int]]
    _sessions: dict[int, _Session]
    _push_sessions: dict[str, str]
    _price_dropped: np.ndarray
    _sold_out_pending: np.ndarray
    _stockouts: list[int]
    _schedule: Callable[[float, int, Any], None]
    _exp: Callable[[float], float]
    _promo_rate_per_s: Callable[[], float]
    _drop_rate_per_s: Callable[[], float]
    _next_session_time: Callable[[int, float], float]
    _utilities: Callable[[int, np.ndarray], np.ndarray]
    _pick: Callable[[np.ndarray, random.Random], int]
    _event: Callable[..., Event]
    catalog_update: Callable[[int, float], CatalogUpdate]
    _push_step: Callable[[_PushChain, str, float, list[Message]], None]
    now: float
    unknown_pushes: int
    duplicate_pushes: int
    user_zone: np.ndarray
    _user_index: dict[str, int]
    _item_index: dict[str, int]
    _seen_pushes: set[str]
    _pushes_of: dict[tuple[int, int], int]
    _zones: list[ZoneInfo]
    _push_times: list[deque[float]]
    _purchase: Callable[..., None]
