"""A simulated shop: the pure, seeded world model behind the demo, the benchmarks and the demo training data.

Everything here runs on a simulated clock (epoch seconds), so a day of shopping can be generated in
seconds. The world knows each shopper's TRUE interest (latent taste vectors, a current shopping "need",
price sensitivity); it never looks at anything Kairos computes. Pushes delivered to it are answered
from that ground truth, fatigue and the local time of day only (see ``docs/simulator.md`` for the
formulas), and it keeps ground-truth counters so a benchmark can compare a treatment group with a
holdout group.

No I/O and no wall clock here: :mod:`stream.sim_runner` is the Kafka edge.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, Field

from stream.contract import CatalogUpdate, ConsentUpdate, Event, EventContext, Promotion, Push, to_json_bytes

DAY = 86_400.0
HOUR = 3_600.0
# Bumped whenever a seed's world changes (caches of generated events and the models trained on them
# are keyed by it). 2: random streams split per user, session, push and stock-out.
WORLD_VERSION = 2

Message = Event | CatalogUpdate | ConsentUpdate

# (IANA zone, locale, share of users): a mix of European, American and Asian shoppers.
TIME_ZONES: tuple[tuple[str, str, float], ...] = (
    ("Europe/London", "en-GB", 0.10),
    ("Europe/Berlin", "de-DE", 0.12),
    ("Europe/Paris", "fr-FR", 0.08),
    ("Europe/Madrid", "es-ES", 0.05),
    ("Europe/Rome", "it-IT", 0.05),
    ("Europe/Warsaw", "pl-PL", 0.05),
    ("America/New_York", "en-US", 0.12),
    ("America/Chicago", "en-US", 0.07),
    ("America/Los_Angeles", "en-US", 0.08),
    ("America/Sao_Paulo", "pt-BR", 0.05),
    ("America/Mexico_City", "es-MX", 0.03),
    ("Asia/Tokyo", "ja-JP", 0.06),
    ("Asia/Singapore", "en-SG", 0.04),
    ("Asia/Kolkata", "en-IN", 0.06),
    ("Asia/Seoul", "ko-KR", 0.04),
)
DEVICES: tuple[tuple[str, float], ...] = (("ios", 0.4), ("android", 0.4), ("web", 0.2))

# Relative session-start intensity by LOCAL hour: quiet nights, a lunch bump, an evening peak.
DIURNAL: tuple[float, ...] = (
    0.25, 0.12, 0.06, 0.04, 0.04, 0.06, 0.15, 0.35, 0.55, 0.65, 0.70, 0.75,
    0.85, 0.85, 0.75, 0.70, 0.70, 0.80, 0.95, 1.00, 1.00, 0.95, 0.80, 0.50,
)  # fmt: skip

_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ve", "to", "sa", "ni", "po", "lu", "de", "fa", "go", "ri", "ba", "te",
    "zu", "mo", "na", "si", "el", "or", "an", "is", "ul", "ex", "vi", "co", "pe", "ta",
)  # fmt: skip


class SimConfig(BaseModel):
    """Parameters of the simulated shop. Defaults give a plausible mid-size shop."""

    seed: int = Field(7, description="Seed of every random draw; same seed, same world, same events.")
    n_users: int = Field(5_000, ge=1, description="Number of shoppers.")
    n_items: int = Field(3_000, ge=1, description="Number of catalog items.")
    n_categories: int = Field(24, ge=1, description="Number of item categories.")
    latent_dim: int = Field(8, ge=2, description="Dimension of the latent taste / item vectors.")
    start_time: float = Field(
        1_780_272_000.0, description="Simulated clock at the start (2026-06-01T00:00Z)."
    )
    speed: float = Field(60.0, gt=0, description="Simulated seconds per real second in real-time runs.")
    events_per_second: float | None = Field(
        None,
        gt=0,
        description="Target event rate in real-time runs; when set it paces the run instead of speed.",
    )
    id_prefix: str | None = Field(None, description="Prefix of event and session ids; default 's<seed>-'.")
    sessions_per_day: float = Field(
        0.6, gt=0, description="Mean sessions per user per day (activity varies)."
    )
    mean_session_actions: float = Field(7.0, ge=1, description="Mean number of actions in a session.")
    opt_out_share: float = Field(0.03, ge=0, le=1, description="Share of users opted out from the start.")
    promotion_rate: float = Field(0.01, ge=0, description="Promotions started per item per simulated day.")
    price_drop_rate: float = Field(0.005, ge=0, description="Price drops per item per simulated day.")
    restock_hours: float = Field(36.0, gt=0, description="Mean time until a sold-out item is restocked.")
    need_days: float = Field(3.0, gt=0, description="Mean lifetime of a user's current shopping need.")
    # Response model (docs/simulator.md): logistic coefficients.
    open_bias: float = Field(
        -3.6, description="theta0: logit of P(open) at neutral interest, day, no fatigue."
    )
    open_interest: float = Field(0.45, description="theta1: weight of the true utility in P(open).")
    open_out_of_stock: float = Field(1.0, description="theta_oos: logit penalty when the item is sold out.")
    open_fatigue_24h: float = Field(0.35, description="theta24: logit penalty per push in the previous 24 h.")
    open_fatigue_7d: float = Field(0.08, description="theta7: logit penalty per push in the previous 7 days.")
    open_night: float = Field(1.8, description="theta_night: logit penalty at full night (00-06 local).")
    click_bias: float = Field(-1.0, description="phi0: logit of P(click | open) at neutral interest.")
    click_interest: float = Field(0.3, description="phi1: weight of the true utility in P(click | open).")
    buy_bias: float = Field(-3.5, description="psi0: logit of P(purchase | click) at neutral interest.")
    buy_interest: float = Field(0.4, description="psi1: weight of the true utility in P(purchase | click).")
    dismiss_bias: float = Field(-1.2, description="omega0: logit of P(dismiss | not opened).")
    dismiss_night: float = Field(1.0, description="omega_night: extra dismiss logit at full night.")
    dismiss_fatigue_24h: float = Field(0.2, description="omega24: extra dismiss logit per push in 24 h.")
    opt_out_bias: float = Field(-7.0, description="eta0: logit of P(opt out) per push.")
    opt_out_fatigue_24h: float = Field(0.6, description="eta24: opt-out logit per push in the previous 24 h.")
    opt_out_fatigue_7d: float = Field(0.1, description="eta7: opt-out logit per push in the previous 7 days.")
    opt_out_night: float = Field(1.5, description="eta_night: opt-out logit at full night.")


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def night_weight(local_hour: float) -> float:
    """How much of "night" a local hour is: 1 from 00:00 to 06:00, 0.5 in 22-24 and 06-08, else 0."""
    if 0 <= local_hour < 6:
        return 1.0
    if local_hour >= 22 or 6 <= local_hour < 8:
        return 0.5
    return 0.0


def in_quiet_hours(local_hour: float) -> bool:
    """The quiet hours the ground-truth counters use: 22:00-08:00 local."""
    return local_hour >= 22 or local_hour < 8


def local_hour(ts: float, zone: ZoneInfo) -> float:
    """Hour of the day (fractional) at ``ts`` in ``zone``."""
    dt = datetime.fromtimestamp(ts, zone)
    return dt.hour + dt.minute / 60.0 + dt.second / 3600.0


@dataclass(frozen=True)
class ResponseProbabilities:
    """The probabilities the response model uses for one push (all in [0, 1])."""

    open: float
    click: float  # given open
    purchase: float  # given click
    dismiss: float  # given not opened
    opt_out: float
    utility: float
    pushes_24h: int
    pushes_7d: int
    night: float
    expired: bool
    in_stock: bool


@dataclass
class _Session:
    session_id: str
    steps_left: int
    category: int
    rng: random.Random  # the session's own draws, keyed by the user and the arrival
    key: str  # makes the session's event ids
    viewed: list[int] = field(default_factory=list)
    n_events: int = 0

    def next_event_key(self) -> str:
        """A key for the session's next event id, unique within the user."""
        self.n_events += 1
        return f"{self.key}-{self.n_events}"


@dataclass
class _PushChain:
    """A push's sampled response, played out over later ``advance`` calls."""

    push_id: str
    user: int
    item: int
    at: float
    opened: bool
    clicked: bool
    buys: bool
    dismissed: bool
    opts_out: bool
    key: str  # makes the chain's event and session ids
    draw_key: str  # keys its random draws (shopper, item, n-th push of the item to them)


def _derived_rng(seed: int, *parts: object) -> random.Random:
    """A random stream of its own for ``parts`` under ``seed`` (stable across runs and processes)."""
    key = "\x1f".join(str(p) for p in (seed, *parts)).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


# Heap entry kinds.
(
    _SESSION_START,
    _SESSION_STEP,
    _CART,
    _CHECKOUT,
    _PROMO_ARRIVAL,
    _PROMO_END,
    _PRICE_DROP,
    _PRICE_RESTORE,
    _RESTOCK,
    _PUSH,
) = range(10)

# The organic funnel (docs/simulator.md): browsing softmax sharpness, then logistic cart and checkout
# probabilities of the true utility, tuned to RetailRocket-like ratios (~6 % of views carted, ~30 % of
# carted items bought).
BROWSE_SHARPNESS = 1.2
CART_BIAS = -6.6
CHECKOUT_BIAS = -4.2
CHECKOUT_INTEREST = 0.6

_COUNTERS = (
    "pushes", "opens", "clicks", "dismisses", "push_purchases", "push_revenue", "purchases", "revenue",
    "opt_outs", "opt_out_risk", "quiet_pushes", "expired_pushes", "pushes_after_opt_out",
)  # fmt: skip


class World:
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

    def _build_catalog(self, rng: np.random.Generator) -> None:
        cfg = self.config
        d, k = cfg.latent_dim, cfg.n_categories
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
        n, d, k = cfg.n_users, cfg.latent_dim, cfg.n_categories
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
        """True utility of ``items`` for user ``u`` now (taste, need, owned, price, promotion)."""
        util = self.item_vectors[items] @ self.taste[u] + self.item_bias[items]
        util = util + 1.5 * (self.item_category[items] == self.need[u])
        owned = self._owned[u]
        if owned:
            util = util - 3.0 * np.fromiter(
                (i in owned for i in items.tolist()), dtype=float, count=len(items)
            )
        ref = self.category_ref_price[self.item_category[items]]
        util = util - self.price_sensitivity[u] * np.log(
            self.price[items] * (1.0 - self.discount[items]) / ref
        )
        return util + 3.0 * self.discount[items]

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

    def deliver_push(self, push: Push, at: float) -> None:
        """Deliver a push at simulated time ``at``; the user's response comes out of later ``advance`` calls.

        Responses never happen before the world's clock, so events stay in time order.
        """
        u = self._user_index.get(push.user_id)
        i = self._item_index.get(push.item_id)
        if u is None or i is None:
            self.unknown_pushes += 1
            return
        if push.push_id in self._seen_pushes:
            self.duplicate_pushes += 1
            return
        self._seen_pushes.add(push.push_id)
        # The response draws are keyed by what the push is (this shopper, this item, the n-th push of
        # it to them), not by its id: two pushers that send the same shopper the same item draw the
        # same numbers, so their difference is what they did differently, not the luck of the draw.
        nth = self._pushes_of.get((u, i), 0) + 1
        self._pushes_of[(u, i)] = nth
        draw_key = f"{u}:{i}:{nth}"
        at = max(at, self.now)
        probs = self.response_probabilities(push, at)
        c = self.user_counters
        c["pushes"][u] += 1
        zone = self._zones[int(self.user_zone[u])]
        if in_quiet_hours(local_hour(at, zone)):
            c["quiet_pushes"][u] += 1
        if probs.expired:
            c["expired_pushes"][u] += 1
        if not self.opted_in[u]:
            c["pushes_after_opt_out"][u] += 1
        else:
            # The expected opt-outs: realised ones are a handful per world, too few to compare arms by.
            c["opt_out_risk"][u] += probs.opt_out
        self._push_times[u].append(at)
        # A private RNG per push: the response does not disturb the organic stream's random draws.
        rng = _derived_rng(self.config.seed, "push", draw_key)
        # Every outcome has its own draw, taken whether or not it is needed, so one outcome's draw
        # never depends on another's result.
        u_open, u_click, u_buy, u_dismiss, u_opt_out = (rng.random() for _ in range(5))
        opened = u_open < probs.open
        clicked = opened and u_click < probs.click
        buys = clicked and u_buy < probs.purchase
        dismissed = (not opened) and u_dismiss < probs.dismiss
        opts_out = self.opted_in[u] and u_opt_out < probs.opt_out
        key = "p" + hashlib.blake2b(push.push_id.encode(), digest_size=6).hexdigest()
        chain = _PushChain(push.push_id, u, i, at, opened, clicked, buys, dismissed, opts_out, key, draw_key)
        if opened:
            t_open = at + rng.expovariate(1 / (15 * 60.0))
            self._schedule(t_open, _PUSH, (chain, "open"))
            if clicked:
                t_click = t_open + rng.uniform(2.0, 30.0)
                self._schedule(t_click, _PUSH, (chain, "click"))
                if buys:
                    t_cart = t_click + rng.uniform(20.0, 300.0)
                    self._schedule(t_cart, _PUSH, (chain, "cart"))
                    self._schedule(t_cart + rng.uniform(30.0, 900.0), _PUSH, (chain, "purchase"))
        elif dismissed:
            self._schedule(at + rng.expovariate(1 / 600.0), _PUSH, (chain, "dismiss"))
        if opts_out:
            self._schedule(at + rng.uniform(30.0, 3600.0), _PUSH, (chain, "opt_out"))

    def response_probabilities(self, push: Push, at: float) -> ResponseProbabilities:
        """The response model's probabilities for ``push`` delivered at ``at`` (see docs/simulator.md)."""
        cfg = self.config
        u, i = self._user_index[push.user_id], self._item_index[push.item_id]
        util = float(self._utilities(u, np.array([i]))[0])
        times = self._push_times[u]
        n24 = sum(1 for t in times if at - DAY < t <= at)
        n7 = sum(1 for t in times if at - 7 * DAY < t <= at)
        night = night_weight(local_hour(at, self._zones[int(self.user_zone[u])]))
        in_stock = bool(self.stock[i] > 0)
        expired = push.expires_at < at
        if expired or not self.opted_in[u]:
            p_open = 0.0
        else:
            z = (
                cfg.open_bias
                + cfg.open_interest * util
                - cfg.open_out_of_stock * (not in_stock)
                - cfg.open_fatigue_24h * n24
                - cfg.open_fatigue_7d * n7
                - cfg.open_night * night
            )
            p_open = _sigmoid(z)
        p_click = _sigmoid(cfg.click_bias + cfg.click_interest * util)
        p_buy = _sigmoid(cfg.buy_bias + cfg.buy_interest * util) if in_stock else 0.0
        p_dismiss = _sigmoid(cfg.dismiss_bias + cfg.dismiss_night * night + cfg.dismiss_fatigue_24h * n24)
        p_opt_out = _sigmoid(
            cfg.opt_out_bias
            + cfg.opt_out_fatigue_24h * n24
            + cfg.opt_out_fatigue_7d * n7
            + cfg.opt_out_night * night
        )
        return ResponseProbabilities(
            open=p_open, click=p_click, purchase=p_buy, dismiss=p_dismiss, opt_out=p_opt_out, utility=util,
            pushes_24h=n24, pushes_7d=n7, night=night, expired=expired, in_stock=in_stock,
        )  # fmt: skip

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

    # ------------------------------------------------------------------------------ the processes
    def _handle(self, kind: int, data: Any, t: float, out: list[Message]) -> None:
        if kind == _SESSION_START:
            self._start_session(data, t, out)
        elif kind == _SESSION_STEP:
            self._session_step(data, t, out)
        elif kind == _CART:
            self._add_to_cart(data[0], data[1], data[2], t, out)
        elif kind == _CHECKOUT:
            self._checkout(data, t, out)
        elif kind == _PUSH:
            self._push_step(data[0], data[1], t, out)
        elif kind == _PROMO_ARRIVAL:
            self._start_promotion(t, out)
            self._schedule(t + self._exp(self._promo_rate_per_s()), _PROMO_ARRIVAL, None)
        elif kind == _PROMO_END:
            item, promo_id = data
            promo = self.promotions[item]
            if promo is not None and promo.promotion_id == promo_id:
                self.promotions[item] = None
                self.discount[item] = 0.0
                out.append(self.catalog_update(item, t))
        elif kind == _PRICE_DROP:
            self._price_drop(t, out)
            self._schedule(t + self._exp(self._drop_rate_per_s()), _PRICE_DROP, None)
        elif kind == _PRICE_RESTORE:
            self.price[data] = self.list_price[data]
            self._price_dropped[data] = False
            out.append(self.catalog_update(data, t))
        elif kind == _RESTOCK:
            item, quantity = data
            self.stock[item] = quantity
            self._sold_out_pending[item] = False
            self.counts["restocks"] = self.counts.get("restocks", 0) + 1
            out.append(self.catalog_update(item, t))

    def _choose_category(self, u: int, rng: random.Random) -> int:
        logits = 1.5 * self.category_affinity[u].copy()
        logits[self.need[u]] += 2.5
        return self._pick(logits, rng)

    def _start_session(self, u: int, t: float, out: list[Message]) -> None:
        self._schedule(self._next_session_time(u, t), _SESSION_START, u)
        self._arrivals[u] += 1
        arrival = self._arrivals[u]
        if t >= self._need_until[u]:
            need_rng = self._need_rng[u]
            self.need[u] = self._pick(1.5 * self.category_affinity[u], need_rng)
            self._need_until[u] = t + need_rng.expovariate(1 / (self.config.need_days * DAY))
        if u in self._sessions:  # still browsing: no overlapping sessions
            return
        # The n-th arrival of a user draws from its own stream, in every world.
        rng = _derived_rng(self.config.seed, "session", u, arrival)
        n_actions = 1 + int(rng.expovariate(1 / max(self.config.mean_session_actions - 1, 1e-6)))
        key = f"s{arrival}"
        session = _Session(
            f"{self._prefix}s{u:06d}-{arrival}", min(n_actions, 60), self._choose_category(u, rng), rng, key
        )
        self._sessions[u] = session
        if rng.random() < 0.25:
            words = self.titles[int(rng.choice(self.category_items[session.category]))].split()
            query = " ".join(words[1:]) if rng.random() < 0.5 else words[-1]
            out.append(
                self._event(
                    u, "search", t, None, session.next_event_key(), session_id=session.session_id, query=query
                )
            )
            t += self._gap(rng)
        self._schedule(t, _SESSION_STEP, u)

    @staticmethod
    def _gap(rng: random.Random) -> float:
        return min(rng.lognormvariate(math.log(40.0), 0.8), 1800.0)

    def _session_step(self, u: int, t: float, out: list[Message]) -> None:
        s = self._sessions[u]
        rng = s.rng
        cart = self._cart[u]
        recent = self._recent[u]
        next_t = t + self._gap(rng)
        roll = rng.random()
        if cart and roll < 0.03:
            item = cart.pop(rng.randrange(len(cart)))
            out.append(
                self._event(
                    u, "remove_from_cart", t, item, s.next_event_key(), session_id=s.session_id, quantity=1
                )
            )
        else:
            if recent and roll < 0.25:
                # Revisit: the jacket viewed three times (more likely the better it fits).
                cands = np.fromiter(recent, dtype=np.int64)
                item = int(cands[self._pick(self._utilities(u, cands), rng)])
            else:
                if rng.random() > 0.7:
                    s.category = self._choose_category(u, rng)
                items = self.category_items[s.category]
                item = int(items[self._pick(BROWSE_SHARPNESS * self._utilities(u, items), rng)])
            out.append(self._event(u, "view", t, item, s.next_event_key(), session_id=s.session_id))
            s.viewed.append(item)
            if item in recent:
                recent.remove(item)
            recent.append(item)
            util = float(self._utilities(u, np.array([item]))[0])
            if self.stock[item] > 0 and item not in cart and rng.random() < _sigmoid(CART_BIAS + util):
                t_cart = t + 0.5 * self._gap(rng)
                self._schedule(t_cart, _CART, (u, item, s.session_id))
                next_t = t_cart + self._gap(rng)
        s.steps_left -= 1
        self._schedule(next_t, _SESSION_STEP if s.steps_left > 0 else _CHECKOUT, u)

    def _add_to_cart(self, u: int, item: int, session_id: str, t: float, out: list[Message]) -> None:
        cart = self._cart[u]
        if self.stock[item] <= 0 or item in cart:
            return
        # The session is still open: its checkout is scheduled after its last cart event.
        key = self._sessions[u].next_event_key()
        out.append(self._event(u, "add_to_cart", t, item, key, session_id=session_id, quantity=1))
        cart.append(item)
        del cart[:-10]  # a bounded cart: the oldest items are forgotten

    def _checkout(self, u: int, t: float, out: list[Message]) -> None:
        # Each cart item is bought with a probability rising with its utility; the rest stays in the cart.
        s = self._sessions.pop(u)
        cart = self._cart[u]
        for item in list(cart):
            util = float(self._utilities(u, np.array([item]))[0])
            if self.stock[item] > 0 and s.rng.random() < _sigmoid(CHECKOUT_BIAS + CHECKOUT_INTEREST * util):
                self._purchase(u, item, t, s.session_id, None, out, s.rng, s.next_event_key())
                cart.remove(item)

    def _purchase(
        self,
        u: int,
        item: int,
        t: float,
        session_id: str | None,
        chain: _PushChain | None,
        out: list[Message],
        rng: random.Random,
        key: str,
    ) -> None:
        quantity = 2 if rng.random() < 0.08 else 1
        quantity = min(quantity, int(self.stock[item]))
        ev = self._event(u, "purchase", t, item, key, session_id=session_id, quantity=quantity)
        out.append(ev)
        revenue = (ev.price or 0.0) * quantity
        c = self.user_counters
        c["purchases"][u] += 1
        c["revenue"][u] += revenue
        if chain is not None:
            c["push_purchases"][u] += 1
            c["push_revenue"][u] += revenue
        self._owned[u].add(item)
        if self.item_category[item] == self.need[u] and rng.random() < 0.5:
            self._need_until[u] = t  # need satisfied; a new one is drawn at the next session
        self.stock[item] -= quantity
        if self.stock[item] <= 0 and not self._sold_out_pending[item]:
            self.stock[item] = 0
            self._sold_out_pending[item] = True
            self.counts["stockouts"] = self.counts.get("stockouts", 0) + 1
            out.append(self.catalog_update(item, t))
            # The n-th stock-out of an item draws its restock from its own stream.
            self._stockouts[item] += 1
            restock = _derived_rng(self.config.seed, "restock", item, self._stockouts[item])
            delay = restock.expovariate(1 / (self.config.restock_hours * HOUR))
            self._schedule(t + delay, _RESTOCK, (item, restock.randint(5, 40)))

    def _push_step(self, chain: _PushChain, step: str, t: float, out: list[Message]) -> None:
        u, i = chain.user, chain.item
        c = self.user_counters
        key = chain.key
        if step == "open":
            c["opens"][u] += 1
            out.append(self._event(u, "push_open", t, i, f"{key}-open", push_id=chain.push_id))
        elif step == "click":
            c["clicks"][u] += 1
            out.append(self._event(u, "push_click", t, i, f"{key}-click", push_id=chain.push_id))
            # The deep link lands on the product page, in a new session.
            session_id = f"{self._prefix}s{u:06d}-{key}"
            self._push_sessions[chain.push_id] = session_id
            out.append(self._event(u, "view", t, i, f"{key}-view", session_id=session_id))
        elif step == "cart":
            if self.stock[i] > 0 and i not in self._cart[u]:
                cart_session = self._push_sessions.get(chain.push_id)
                out.append(
                    self._event(u, "add_to_cart", t, i, f"{key}-cart", session_id=cart_session, quantity=1)
                )
                self._cart[u].append(i)
        elif step == "purchase":
            buy_session = self._push_sessions.pop(chain.push_id, None)
            if self.stock[i] <= 0:
                return  # sold out meanwhile: the shopper leaves empty-handed
            if i in self._cart[u]:
                self._cart[u].remove(i)
            rng = _derived_rng(self.config.seed, "push-purchase", chain.draw_key)
            self._purchase(u, i, t, buy_session, chain, out, rng, f"{key}-buy")
        elif step == "dismiss":
            c["dismisses"][u] += 1
            out.append(self._event(u, "push_dismiss", t, i, f"{key}-dismiss", push_id=chain.push_id))
        elif step == "opt_out" and self.opted_in[u]:
            self.opted_in[u] = False
            c["opt_outs"][u] += 1
            self.counts["opt_outs"] = self.counts.get("opt_outs", 0) + 1
            out.append(ConsentUpdate(user_id=self.user_ids[u], opted_in=False, ts=t))

    def _start_promotion(self, t: float, out: list[Message]) -> None:
        rng = self._rng
        item = rng.randrange(self.config.n_items)
        if self.promotions[item] is not None:
            return
        self._promo_seq += 1
        discount = rng.choice((0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5))
        duration = rng.choice((6.0, 12.0, 24.0, 48.0, 72.0)) * HOUR
        promo_id = f"{self._prefix}p{self._promo_seq:06d}"
        promo = Promotion(promotion_id=promo_id, discount=discount, starts_at=t, ends_at=t + duration)
        self.promotions[item] = promo
        self.discount[item] = discount
        self.counts["promotions"] = self.counts.get("promotions", 0) + 1
        out.append(self.catalog_update(item, t))
        self._schedule(promo.ends_at, _PROMO_END, (item, promo.promotion_id))

    def _price_drop(self, t: float, out: list[Message]) -> None:
        rng = self._rng
        item = rng.randrange(self.config.n_items)
        if self._price_dropped[item]:
            return
        self._price_dropped[item] = True
        self.price[item] = max(0.5, round(float(self.list_price[item]) * (1.0 - rng.uniform(0.05, 0.3)), 2))
        self.counts["price_drops"] = self.counts.get("price_drops", 0) + 1
        out.append(self.catalog_update(item, t))
        self._schedule(t + rng.expovariate(1 / (5 * DAY)), _PRICE_RESTORE, item)


def generate_events(config: SimConfig, n_events: int) -> Iterator[Event]:
    """The first ``n_events`` behaviour events of a world with ``config`` (no pushes), in time order."""
    world = World(config)
    produced = 0
    while produced < n_events:
        for msg in world.advance(world.now + HOUR):
            if isinstance(msg, Event):
                yield msg
                produced += 1
                if produced >= n_events:
                    return


def write_jsonl(path: str | Path, n_events: int, config: SimConfig) -> int:
    """Write the first ``n_events`` events of a simulated shop as JSON lines (the model's ``events`` format).

    Returns the number of lines written.
    """
    written = 0
    with open(path, "wb") as f:
        for event in generate_events(config, n_events):
            f.write(to_json_bytes(event) + b"\n")
            written += 1
    return written


def summary_json(summary: dict[str, float]) -> str:
    """A summary as one sorted JSON line (what the CLI prints)."""
    return json.dumps({k: round(v, 6) for k, v in summary.items()}, sort_keys=True)
