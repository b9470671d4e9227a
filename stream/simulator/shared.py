"""What the simulated world's parts share: local time, random streams, the event queue's kinds, the
per-user counters, and the records of a session in progress and of a push's response."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo


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

_COUNTERS = (
    "pushes", "opens", "clicks", "dismisses", "push_purchases", "push_revenue", "purchases", "revenue",
    "opt_outs", "opt_out_risk", "quiet_pushes", "expired_pushes", "pushes_after_opt_out",
)  # fmt: skip
