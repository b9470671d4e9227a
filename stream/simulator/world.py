"""The simulated shop's world: its catalog and shoppers built from the seed, its event queue, and the
public API the demo and the benchmarks use (advance the clock, deliver a push, read the ground truth).

The shoppers' behaviour is :mod:`stream.simulator.shopping`, the response to a push
:mod:`stream.simulator.push_response`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from stream.contract import CatalogUpdate, ConsentUpdate, Event, EventContext, Promotion
from stream.simulator.config import DAY, DEVICES, DIURNAL, HOUR, TIME_ZONES, Message, SimConfig
from stream.simulator.push_response import PushResponseMixin
from stream.simulator.shared import (
    _COUNTERS,
    _PRICE_DROP,
    _PROMO_ARRIVAL,
    _SESSION_START,
    _derived_rng,
    _Session,
    local_hour,
)
from stream.simulator.shopping import ShoppingMixin

_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ve", "to", "sa", "ni", "po", "lu", "de", "fa", "go", "ri", "ba", "te",
    "zu", "mo", "na", "si", "el", "or", "an", "is", "ul", "ex", "vi", "co", "pe", "ta",
)  # fmt: skip


class World(ShoppingMixin, PushResponseMixin):
    """The simulated shop. Pure and seeded: the same config and the same pushes give the same events."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.now = float(config.start_time)
        self._prefix = config.id_prefix if config.id_prefix is not None else f"s{config.seed}-"
        # Random streams are split by what draws from them (common random numbers): the catalog's
        # processes, each user's session arrivals and needs, each session, each push's response and
        # each stock-out. Whatever a push changes (a purchase, a click's session) then draws from its
        # own streams, and every other shopper's behaviour is the same draw for draw as in a world
        # without that push: an arm's paired difference to the no-push world measures the pushes,
        # not a reshuffled world.
        self._rng = _derived_rng(config.seed, "catalog")
        np_rng = np.random.default_rng(config.seed)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._promo_seq = 0
        self.counts: dict[str, int] = {}
        self._build_catalog(np_rng)
        self._build_users(np_rng)
        self._seen_pushes: set[str] = set()
        self._pushes_of: dict[tuple[int, int], int] = {}
        self.unknown_pushes = 0
        self.duplicate_pushes = 0
        # Global catalog processes: one Poisson stream each for promotions and price drops.
        self._schedule(self.now + self._exp(self._promo_rate_per_s()), _PROMO_ARRIVAL, None)
        self._schedule(self.now + self._exp(self._drop_rate_per_s()), _PRICE_DROP, None)

    # ----------------------------------------------------------------------------------- building
    def _word(self, rng: np.random.Generator, syllables: int) -> str:
        return "".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), syllables))

    def _n_categories(self) -> int:
        """The world's categories: ``n_categories``, but no more than items (none is left empty)."""
        return min(self.config.n_categories, self.config.n_items)

    def _build_catalog(self, rng: np.random.Generator) -> None:
        cfg = self.config
        d, k = cfg.latent_dim, self._n_categories()
        self.centroids = rng.normal(0.0, 1.0, (k, d))
        self.category_names = []
        self._category_words: list[list[str]] = []
        used: set[str] = set()
        for _ in range(k):
            name = self._word(rng, 3)
            while name in used:
                name = self._word(rng, 3)
            used.add(name)
            self.category_names.append(name)
            # One adjective per latent direction and sign: the title carries the item's latent offset.
            self._category_words.append([self._word(rng, 2) for _ in range(2 * d)])
        brands = [self._word(rng, 2).capitalize() for _ in range(max(8, k * 2))]
        # Long-tailed category sizes.
        shares = rng.dirichlet(np.full(k, 2.0))
        cats = rng.choice(k, size=cfg.n_items, p=shares)
        cats[:k] = np.arange(min(k, cfg.n_items))  # every category has at least one item
        self.item_category = cats.astype(np.int64)
        offsets = rng.normal(0.0, 0.6, (cfg.n_items, d))
        self.item_vectors = self.centroids[cats] + offsets
        self.item_bias = rng.normal(0.0, 0.6, cfg.n_items)  # popularity: long tail after the softmax
        self.category_ref_price = np.exp(rng.uniform(math.log(8.0), math.log(300.0), k))
        self.list_price = np.round(
            self.category_ref_price[cats] * np.exp(rng.normal(0.0, 0.4, cfg.n_items)), 2
        )
        self.list_price = np.maximum(self.list_price, 0.99)
        self.price = self.list_price.copy()
        self.discount = np.zeros(cfg.n_items)
        self.stock = np.maximum(0, np.round(np.exp(rng.normal(2.3, 0.9, cfg.n_items)))).astype(np.int64)
        self.stock[rng.random(cfg.n_items) < 0.02] = 0  # a few start sold out
        self.promotions: list[Promotion | None] = [None] * cfg.n_items
        self._price_dropped = np.zeros(cfg.n_items, dtype=bool)
        self.item_ids = [f"i{i:05d}" for i in range(cfg.n_items)]
        self._item_index = {iid: i for i, iid in enumerate(self.item_ids)}
        self.titles = []
        for i in range(cfg.n_items):
            c = int(cats[i])
            top = int(np.argmax(np.abs(offsets[i])))
            adj = self._category_words[c][2 * top + (0 if offsets[i, top] > 0 else 1)]
            brand = brands[int(rng.integers(0, len(brands)))]
            self.titles.append(f"{brand} {adj} {self.category_names[c]}")
        self.category_items = [np.flatnonzero(cats == c) for c in range(k)]
        self._sold_out_pending = np.zeros(cfg.n_items, dtype=bool)

    def _build_users(self, rng: np.random.Generator) -> None:
        cfg = self.config
        n, d, k = cfg.n_users, cfg.latent_dim, self._n_categories()
        # Taste: a blend of two category centroids plus personal noise.
        first = rng.integers(0, k, n)
        second = rng.integers(0, k, n)
        mix = rng.uniform(0.5, 1.0, (n, 1))
        self.taste = (
            mix * self.centroids[first] + (1 - mix) * self.centroids[second] + rng.normal(0, 0.5, (n, d))
        )
        self.taste /= np.linalg.norm(self.taste, axis=1, keepdims=True) / 1.2
        self.category_affinity = self.taste @ self.centroids.T  # (n, k)
        self.price_sensitivity = rng.uniform(0.3, 1.5, n)
        self.activity = np.clip(rng.lognormal(math.log(cfg.sessions_per_day) - 0.5, 1.0, n), 0.03, 12.0)
        zones = [z for z, _, _ in TIME_ZONES]
        zone_p = np.array([w for _, _, w in TIME_ZONES])
        self.user_zone = rng.choice(len(zones), size=n, p=zone_p / zone_p.sum())
        self._zones = [ZoneInfo(z) for z in zones]
        dev_p = np.array([w for _, w in DEVICES])
        user_dev = rng.choice(len(DEVICES), size=n, p=dev_p / dev_p.sum())
        self._contexts = [
            EventContext(
                device=DEVICES[int(user_dev[u])][0],
                locale=TIME_ZONES[int(z)][1],
                time_zone=TIME_ZONES[int(z)][0],
            )
            for u, z in enumerate(self.user_zone)
        ]
        self.user_ids = [f"u{u:06d}" for u in range(n)]
        self._user_index = {uid: u for u, uid in enumerate(self.user_ids)}
        self.opted_in = (rng.random(n) >= cfg.opt_out_share).tolist()
        self.need = rng.integers(0, k, n).tolist()
        self._need_until = (self.now + rng.exponential(cfg.need_days * DAY, n)).tolist()
        self._arrival_rng = [_derived_rng(cfg.seed, "arrivals", u) for u in range(n)]
        self._need_rng = [_derived_rng(cfg.seed, "needs", u) for u in range(n)]
        self._arrivals = [0] * n  # session arrivals so far, per user (keys each session's stream)
        self._stockouts = [0] * cfg.n_items
        self._cart: list[list[int]] = [[] for _ in range(n)]
        self._owned: list[set[int]] = [set() for _ in range(n)]
        self._recent: list[deque[int]] = [deque(maxlen=6) for _ in range(n)]
        self._push_times: list[deque[float]] = [deque(maxlen=64) for _ in range(n)]
        self._sessions: dict[int, _Session] = {}
        self._push_sessions: dict[str, str] = {}  # push id -> the session its click opened
        self.user_counters = {name: np.zeros(n) for name in _COUNTERS}
        for u in range(n):
            self._schedule(self._next_session_time(u, self.now), _SESSION_START, u)

    # ------------------------------------------------------------------------------------ helpers
    def _schedule(self, t: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, data))

    def _exp(self, rate: float) -> float:
        return self._rng.expovariate(rate) if rate > 0 else 1e18

    def _promo_rate_per_s(self) -> float:
        return self.config.promotion_rate * self.config.n_items / DAY

    def _drop_rate_per_s(self) -> float:
        return self.config.price_drop_rate * self.config.n_items / DAY

    def _next_session_time(self, u: int, after: float) -> float:
        # Non-homogeneous Poisson process by thinning: the rate follows DIURNAL in the user's local time.
        mean_w = sum(DIURNAL) / 24.0
        max_rate = self.activity[u] / DAY * max(DIURNAL) / mean_w
        zone = self._zones[int(self.user_zone[u])]
        rng = self._arrival_rng[u]
        t = after
        for _ in range(1000):
            t += rng.expovariate(max_rate)
            if rng.random() * max(DIURNAL) < DIURNAL[int(local_hour(t, zone))]:
                return t
        return t

    def _utilities(self, u: int, items: np.ndarray) -> np.ndarray:
        """True utility of ``items`` for user ``u`` now: the sum of :meth:`_utility_parts`."""
        taste, appeal, need, owned, price, discount = self._utility_parts(u, items)
        util = taste + appeal + need
        if owned is not None:
            util = util + owned
        return util + price + discount

    def _utility_parts(
        self, u: int, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """The terms of the true utility: taste, the item's appeal, need, owned (None when nothing is),
        price as the user weighs it, promotion. Added in this order they give :meth:`_utilities`."""
        taste = self.item_vectors[items] @ self.taste[u]
        need = 1.5 * (self.item_category[items] == self.need[u])
        owned_set = self._owned[u]
        owned = None
        if owned_set:
            owned = -3.0 * np.fromiter(
                (i in owned_set for i in items.tolist()), dtype=float, count=len(items)
            )
        ref = self.category_ref_price[self.item_category[items]]
        price = -(self.price_sensitivity[u] * np.log(self.price[items] * (1.0 - self.discount[items]) / ref))
        return taste, self.item_bias[items], need, owned, price, 3.0 * self.discount[items]

    @staticmethod
    def _pick(weights_logits: np.ndarray, rng: random.Random) -> int:
        w = np.exp(weights_logits - weights_logits.max())
        c = np.cumsum(w)
        return int(np.searchsorted(c, rng.random() * c[-1], side="right").clip(0, len(c) - 1))

    def _event(self, u: int, etype: str, t: float, item: int | None, key: str, **extra: Any) -> Event:
        """An event of user ``u``; ``key`` (unique within the user) makes its id, so ids do not shift
        when a push adds events elsewhere."""
        self.counts[etype] = self.counts.get(etype, 0) + 1
        price = None
        if item is not None:
            price = round(float(self.price[item] * (1.0 - self.discount[item])), 2)
        return Event(
            event_id=f"{self._prefix}e{u:06d}-{key}",
            user_id=self.user_ids[u],
            type=etype,  # type: ignore[arg-type]
            item_id=None if item is None else self.item_ids[item],
            ts=t,
            price=price,
            context=self._contexts[u],
            **extra,
        )

    def catalog_update(self, item: int, t: float) -> CatalogUpdate:
        """The current state of catalog item number ``item`` as a contract message."""
        self.counts["catalog_updates"] = self.counts.get("catalog_updates", 0) + 1
        return CatalogUpdate(
            item_id=self.item_ids[item],
            title=self.titles[item],
            category=self.category_names[int(self.item_category[item])],
            price=float(self.price[item]),
            stock=int(self.stock[item]),
            promotion=self.promotions[item],
            updated_at=t,
        )

    # ----------------------------------------------------------------------------------- public API
    def initial_catalog(self) -> list[CatalogUpdate]:
        """Every item's state at the start, to publish before the first event."""
        return [self.catalog_update(i, self.now) for i in range(self.config.n_items)]

    def initial_consent(self) -> list[ConsentUpdate]:
        """Every user's consent at the start (a few % opted out)."""
        return [
            ConsentUpdate(user_id=uid, opted_in=bool(self.opted_in[u]), ts=self.now)
            for u, uid in enumerate(self.user_ids)
        ]

    def user_time_zone(self, user_id: str) -> str:
        """The IANA time zone of a user."""
        return TIME_ZONES[int(self.user_zone[self._user_index[user_id]])][0]

    def true_interest(self, user_id: str, item_id: str) -> float:
        """Ground-truth utility of an item for a user now (tests and oracle baselines only, never Kairos)."""
        return float(self.true_interests(user_id, [item_id])[0])

    def true_interests(self, user_id: str, item_ids: Sequence[str] | None = None) -> np.ndarray:
        """Ground-truth utilities of many items (default: the whole catalog, in ``item_ids`` order)."""
        u = self._user_index[user_id]
        if item_ids is None:
            return self._utilities(u, np.arange(self.config.n_items))
        return self._utilities(u, self.item_positions(item_ids))

    def utility_parts(self, user_id: str, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The parts of the ground-truth utilities of ``item_ids`` (oracle baselines only): ``taste``,
        ``appeal``, ``need``, ``owned``, ``price``, ``discount``; they add up to :meth:`true_interests`."""
        u = self._user_index[user_id]
        taste, appeal, need, owned, price, discount = self._utility_parts(u, self.item_positions(item_ids))
        return {
            "taste": taste,
            "appeal": appeal,
            "need": need,
            "owned": np.zeros(len(item_ids)) if owned is None else owned,
            "price": price,
            "discount": discount,
        }

    def owned_items(self, user_id: str) -> set[str]:
        """The items a user owns (bought and not forgotten by the world; oracle baselines only)."""
        return {self.item_ids[i] for i in self._owned[self._user_index[user_id]]}

    def item_positions(self, item_ids: Sequence[str]) -> np.ndarray:
        """The rows of ``item_ids`` in the world's item arrays (``item_vectors``, ``item_category``...)."""
        return np.array([self._item_index[i] for i in item_ids], dtype=np.int64)

    def advance(self, until: float, max_events: int | None = None) -> list[Message]:
        """Everything that happens up to simulated time ``until``, in time order.

        With ``max_events`` it stops after that many messages and the clock stays at the last one's time,
        so a runner can pace output by rate.
        """
        out: list[Message] = []
        heap = self._heap
        while heap and heap[0][0] <= until:
            if max_events is not None and len(out) >= max_events:
                return out
            t, _, kind, data = heapq.heappop(heap)
            self.now = max(self.now, t)
            self._handle(kind, data, t, out)
        self.now = max(self.now, until)
        return out

    def summary(self, holdout: Callable[[str], bool] | None = None) -> dict[str, float]:
        """Ground-truth counters and rates; with ``holdout`` also per group and the incremental effect.

        ``holdout(user_id)`` says whether a user is in the holdout group (whatever rule the caller uses).
        """
        out: dict[str, float] = {
            "sim_time": self.now,
            "sim_hours": (self.now - self.config.start_time) / HOUR,
            "n_users": float(self.config.n_users),
            "n_items": float(self.config.n_items),
            "events": float(sum(v for k, v in self.counts.items() if k != "catalog_updates")),
            "unknown_pushes": float(self.unknown_pushes),
            "duplicate_pushes": float(self.duplicate_pushes),
        }
        for name, value in sorted(self.counts.items()):
            out[f"count.{name}"] = float(value)
        out.update(self._group_summary(np.ones(self.config.n_users, dtype=bool), ""))
        if holdout is not None:
            mask = np.array([bool(holdout(uid)) for uid in self.user_ids])
            treat = self._group_summary(~mask, "treatment.")
            hold = self._group_summary(mask, "holdout.")
            out.update(treat)
            out.update(hold)
            n_t = treat["treatment.users"]
            if n_t and hold["holdout.users"]:
                ppu_t, ppu_h = treat["treatment.purchases_per_user"], hold["holdout.purchases_per_user"]
                out["incremental_purchases"] = (ppu_t - ppu_h) * n_t
                out["incremental_revenue"] = (
                    treat["treatment.revenue_per_user"] - hold["holdout.revenue_per_user"]
                ) * n_t
                out["purchase_lift"] = ppu_t / ppu_h - 1.0 if ppu_h > 0 else 0.0
                cr_t, cr_h = treat["treatment.conversion_rate"], hold["holdout.conversion_rate"]
                out["incremental_converters"] = (cr_t - cr_h) * n_t
        return out

    def _group_summary(self, mask: np.ndarray, prefix: str) -> dict[str, float]:
        c = {k: float(v[mask].sum()) for k, v in self.user_counters.items()}
        users = float(mask.sum())
        purchasers = float((self.user_counters["purchases"][mask] > 0).sum())
        pushes = c["pushes"]
        res = {
            "users": users,
            "purchasers": purchasers,
            "conversion_rate": purchasers / users if users else 0.0,
            "purchases_per_user": c["purchases"] / users if users else 0.0,
            "revenue_per_user": c["revenue"] / users if users else 0.0,
            "purchases_with_push": c["push_purchases"],
            "purchases_without_push": c["purchases"] - c["push_purchases"],
            "open_rate": c["opens"] / pushes if pushes else 0.0,
            "click_rate": c["clicks"] / pushes if pushes else 0.0,
            "push_conversion_rate": c["push_purchases"] / pushes if pushes else 0.0,
            "pushes_per_user": pushes / users if users else 0.0,
            "quiet_push_share": c["quiet_pushes"] / pushes if pushes else 0.0,
            "opted_out_users": float(sum(1 for u in np.flatnonzero(mask) if not self.opted_in[u])),
        }
        res.update(c)
        return {prefix + k: v for k, v in res.items()}
