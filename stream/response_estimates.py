"""Learning from outcomes: per decision context, how much a push adds over not pushing.

One :class:`ResponseEstimates` per partition (its rows persist with the partition, like the candidate
indexes of :mod:`stream.partition_state`). For each **context** (:func:`context_key`: the trigger, how
engaged the user is with the item, whether it is discounted; 9 x 4 x 2 = 72 contexts, so memory is
bounded) it keeps forward-decayed counts of two arms:

* **push**: decisions that sent a push (:meth:`ResponseEstimates.record_push`) and the purchases
  attributed to them (:meth:`ResponseEstimates.record_conversion`);
* **no push** ("ghost"): for holdout users, the push the engine *would* have sent
  (:meth:`ResponseEstimates.record_ghost`) and the user's organic purchases of the same item in the
  same attribution window (:meth:`ResponseEstimates.record_ghost_conversion`). The holdout is a
  random share of users, so its ghosts estimate the baseline of the very decisions that were pushed.

Each arm's conversion rate has a Beta posterior: prior ``Beta(s * m, s * (1 - m))`` with ``s`` =
``response_prior_strength`` pseudo-decisions and ``m`` the prior rate of the context's engagement
family (``response_prior_rates``; the push arm adds ``response_prior_lift``), updated with the decayed
counts (conversions ``c``, decisions ``n``): ``Beta(s * m + c, s * (1 - m) + n - c)``. The uplift is
the difference of the two rates. :meth:`ResponseEstimates.score` ranks candidates by a Thompson
sample of the uplift (drawn from a generator seeded by the caller's ``seed``, so a replay draws the
same), :meth:`ResponseEstimates.explore` keeps a deterministic floor of uniform exploration.

Decay: counts use forward decay (as :class:`stream.covisitation.CoVisitationIndex`): an observation at
``t`` adds ``2 ** ((t - landmark) / half_life)``, read at ``now`` as ``stored * 2 ** (-(now - landmark)
/ half_life)``; old outcomes fade with ``response_half_life_seconds`` so the estimate follows a
drifting shop. A conversion is recorded at the time of the decision it answers (``decided_at``), so a
decision and its conversion carry the same weight and the decayed conversions never exceed the
decayed decisions.

Frozen (``learning_frozen``): records are ignored, the clock stops at the last recorded decision
(decay no longer moves the estimate), :meth:`~ResponseEstimates.score` is the posterior mean and
:meth:`~ResponseEstimates.explore` is always False. A frozen model's decisions therefore never drift.

Rows: ``\\x00r`` + context (UTF-8) -> ``[n_push, c_push, revenue_push, n_ghost, c_ghost,
revenue_ghost]`` (forward-decayed), and ``\\x00r`` alone -> ``{"landmark": .., "clock": ..}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

from stream.beta_draws import beta_ppf, beta_sample, unit_interval
from stream.contract import TRIGGERS
from stream.encoding import compact_json
from stream.policy_config import PolicyConfig

log = logging.getLogger(__name__)

RESPONSE_PREFIX = b"\x00r"  # one row per context, and the meta row (the prefix alone)
_META_KEY = RESPONSE_PREFIX

ENGAGEMENT_LEVELS: tuple[str, ...] = ("in_cart", "viewed_2plus", "viewed_once", "not_engaged")
OFFERS: tuple[str, ...] = ("discounted", "full_price")
# Every context, sorted: the only keys an estimate table may hold.
CONTEXTS: tuple[str, ...] = tuple(
    sorted(f"{t}/{e}/{o}" for t in TRIGGERS for e in ENGAGEMENT_LEVELS for o in OFFERS)
)
_CONTEXT_SET = frozenset(CONTEXTS)

# Rescale forward-decayed values when the landmark is this many half-lives behind (2**60 ~ 1e18).
_REBASE_HALF_LIVES = 60.0
# Counter slots of one context row.
_N_PUSH, _C_PUSH, _R_PUSH, _N_GHOST, _C_GHOST, _R_GHOST = range(6)
# Smallest Beta parameter: a prior rate of 0 or 1 must not make a degenerate posterior.
_MIN_PARAM = 1e-6


def context_key(trigger: str, in_cart: bool, views: int, discount: float) -> str:
    """The decision context: ``"<trigger>/<engagement>/<offer>"``.

    Engagement: ``in_cart`` (item in the cart; wins over views), ``viewed_2plus``, ``viewed_once``,
    ``not_engaged`` (e.g. a co-visited or trending candidate). Offer: ``discounted`` when
    ``discount > 0``, else ``full_price``. Raises ValueError for an unknown trigger.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    if in_cart:
        engagement = "in_cart"
    elif views >= 2:
        engagement = "viewed_2plus"
    elif views == 1:
        engagement = "viewed_once"
    else:
        engagement = "not_engaged"
    return f"{trigger}/{engagement}/{'discounted' if discount > 0 else 'full_price'}"


def engagement_family(ctx: str) -> str:
    """The engagement level of a context (the family its prior rate comes from)."""
    return ctx.split("/")[1]


def _check(ctx: str) -> None:
    if ctx not in _CONTEXT_SET:
        raise ValueError(f"unknown context {ctx!r}")


# -- estimates ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateEstimate:
    """One arm's conversion rate: posterior mean, central credible interval and the decayed counts."""

    mean: float
    low: float
    high: float
    decisions: float  # decayed count of decisions (pushes or ghosts)
    conversions: float  # decayed count of attributed purchases
    revenue: float  # decayed sum of their revenue


@dataclass(frozen=True)
class Estimate:
    """What a push adds in one context, at one time."""

    context: str
    level: float  # of the credible intervals, e.g. 0.9
    push: RateEstimate  # P(conversion | push)
    no_push: RateEstimate  # P(conversion | no push), from holdout ghosts
    uplift: float  # posterior mean of push.rate - no_push.rate
    uplift_low: float
    uplift_high: float

    @property
    def revenue_per_conversion(self) -> float | None:
        """Decayed mean revenue of a conversion (both arms), None before any conversion."""
        conversions = self.push.conversions + self.no_push.conversions
        if conversions <= 0.0:
            return None
        return (self.push.revenue + self.no_push.revenue) / conversions


class ResponseEstimates:
    """Per-context Beta posteriors of conversion with and without a push (one per partition).

    See the module docstring for the model. Every method is a function of its arguments and the
    recorded history: time is always passed in, random draws come from the caller's seed.
    """

    def __init__(
        self,
        *,
        half_life_seconds: float,
        prior_strength: float,
        prior_rates: dict[str, float],
        prior_lift: float = 0.0,
        exploration_share: float = 0.0,
        frozen: bool = False,
    ) -> None:
        missing = [level for level in ENGAGEMENT_LEVELS if level not in prior_rates]
        if missing:
            raise ValueError(f"prior rates missing for {missing}")
        self.half_life_seconds = half_life_seconds
        self.prior_strength = prior_strength
        self.prior_rates = dict(prior_rates)
        self.prior_lift = prior_lift
        self.exploration_share = exploration_share
        self.frozen = frozen
        self._landmark: float | None = None
        self._clock: float | None = None  # latest recorded decision time (a frozen model reads here)
        self._counts: dict[str, list[float]] = {}
        self._dirty: set[str] = set()
        self._meta_dirty = False
        self._rng = random.Random()  # re-seeded for every Thompson sample (score)

    @classmethod
    def from_config(cls, config: PolicyConfig) -> ResponseEstimates:
        """An empty table with the policy's settings."""
        return cls(
            half_life_seconds=config.response_half_life_seconds,
            prior_strength=config.response_prior_strength,
            prior_rates=config.response_prior_rates,
            prior_lift=config.response_prior_lift,
            exploration_share=config.exploration_share,
            frozen=config.learning_frozen,
        )

    @classmethod
    def empty(cls, config: PolicyConfig) -> ResponseEstimates:
        """Same as :meth:`from_config` (the name :class:`PartitionState` uses)."""
        return cls.from_config(config)

    def __len__(self) -> int:
        return len(self._counts)

    # -- updates ------------------------------------------------------------------------------------

    def _weight(self, ts: float) -> float:
        if self._landmark is None:
            self._landmark = ts
            self._meta_dirty = True
        exponent = (ts - self._landmark) / self.half_life_seconds
        if exponent > _REBASE_HALF_LIVES:
            # Move the landmark to ts and rescale every stored value once (at most 56 rows).
            scale = math.exp2(-exponent)
            for ctx, row in self._counts.items():
                self._counts[ctx] = [v * scale for v in row]
                self._dirty.add(ctx)
            self._landmark = ts
            self._meta_dirty = True
            exponent = 0.0
        return math.exp2(exponent)

    def _add(self, ctx: str, ts: float, slot: int, revenue_slot: int | None, revenue: float) -> None:
        _check(ctx)
        if self.frozen:
            return  # frozen stops updates too, so a frozen model's decisions cannot drift
        w = self._weight(ts)
        row = self._counts.setdefault(ctx, [0.0] * 6)
        row[slot] += w
        if revenue_slot is not None:
            row[revenue_slot] += w * revenue
        self._dirty.add(ctx)
        if self._clock is None or ts > self._clock:
            self._clock = ts
            self._meta_dirty = True

    def record_push(self, ctx: str, at: float) -> None:
        """A push was sent in ``ctx`` at ``at`` (ignored when frozen)."""
        self._add(ctx, at, _N_PUSH, None, 0.0)

    def record_conversion(self, ctx: str, decided_at: float, revenue: float) -> None:
        """A purchase was attributed to the push sent in ``ctx`` at ``decided_at`` (the push's time, not the
        purchase's: the conversion weighs what its push weighs)."""
        self._add(ctx, decided_at, _C_PUSH, _R_PUSH, revenue)

    def record_ghost(self, ctx: str, at: float) -> None:
        """A holdout user would have been pushed in ``ctx`` at ``at`` (ignored when frozen)."""
        self._add(ctx, at, _N_GHOST, None, 0.0)

    def record_ghost_conversion(self, ctx: str, decided_at: float, revenue: float) -> None:
        """A holdout user bought the ghost's item within the attribution window of the ghost decided
        at ``decided_at`` in ``ctx``."""
        self._add(ctx, decided_at, _C_GHOST, _R_GHOST, revenue)

    # -- reads --------------------------------------------------------------------------------------

    def _decayed(self, ctx: str, now: float) -> list[float]:
        row = self._counts.get(ctx)
        if row is None or self._landmark is None:
            return [0.0] * 6
        if self.frozen and self._clock is not None:
            now = self._clock  # frozen: decay stops with learning
        # A time before the landmark reads as the landmark: decayed values never grow backwards.
        factor = math.exp2(-max(now - self._landmark, 0.0) / self.half_life_seconds)
        return [v * factor for v in row]

    def prior_rate(self, ctx: str, push: bool) -> float:
        """The prior mean conversion rate of one arm in ``ctx``."""
        _check(ctx)
        rate = self.prior_rates[engagement_family(ctx)] + (self.prior_lift if push else 0.0)
        return min(max(rate, 0.0), 1.0)

    def posterior(self, ctx: str, now: float, push: bool) -> tuple[float, float]:
        """Beta parameters ``(a, b)`` of one arm's conversion rate in ``ctx`` at ``now``."""
        return self._posterior(ctx, self._decayed(ctx, now), push)

    def _posterior(self, ctx: str, row: list[float], push: bool) -> tuple[float, float]:
        n, c = (row[_N_PUSH], row[_C_PUSH]) if push else (row[_N_GHOST], row[_C_GHOST])
        c = min(c, n)  # a conversion recorded before its decision (out of order) cannot exceed it
        m = self.prior_rate(ctx, push)
        s = self.prior_strength
        return max(s * m + c, _MIN_PARAM), max(s * (1.0 - m) + n - c, _MIN_PARAM)

    def estimate(self, ctx: str, now: float, level: float = 0.9) -> Estimate:
        """Posterior means and central ``level`` credible intervals of both rates and of the uplift.

        The rates' intervals are exact Beta quantiles; the uplift's is the normal approximation of the
        difference of two independent Betas (mean difference +- z * sqrt(sum of the variances)),
        clipped to [-1, 1].
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        row = self._decayed(ctx, now)
        tail = (1.0 - level) / 2.0
        arms: list[RateEstimate] = []
        moments: list[tuple[float, float]] = []
        for push, n_i, c_i, r_i in ((True, _N_PUSH, _C_PUSH, _R_PUSH), (False, _N_GHOST, _C_GHOST, _R_GHOST)):
            a, b = self.posterior(ctx, now, push)
            mean = a / (a + b)
            var = a * b / ((a + b) ** 2 * (a + b + 1.0))
            moments.append((mean, var))
            arms.append(
                RateEstimate(
                    mean, beta_ppf(tail, a, b), beta_ppf(1.0 - tail, a, b), row[n_i], row[c_i], row[r_i]
                )
            )
        uplift = moments[0][0] - moments[1][0]
        half = _z(level) * math.sqrt(moments[0][1] + moments[1][1])
        return Estimate(
            ctx, level, arms[0], arms[1], uplift, max(uplift - half, -1.0), min(uplift + half, 1.0)
        )

    def estimates(self, now: float, level: float = 0.9) -> list[Estimate]:
        """Estimates of every context with recorded outcomes, sorted by context."""
        return [self.estimate(ctx, now, level) for ctx in sorted(self._counts)]

    def score(self, ctx: str, now: float, seed: bytes) -> float:
        """The value that ranks candidates: a Thompson sample of the uplift in ``ctx``.

        Both rates are drawn from their posteriors with a generator seeded by BLAKE2b of ``seed`` and
        ``ctx``: the same seed and history give the same sample (a replay decides the same), another
        seed or context draws independently. Frozen: the posterior mean uplift (no randomness).
        """
        row = self._decayed(ctx, now)
        a1, b1 = self._posterior(ctx, row, True)
        a0, b0 = self._posterior(ctx, row, False)
        if self.frozen:
            return a1 / (a1 + b1) - a0 / (a0 + b0)
        digest = hashlib.blake2b(b"thompson\x1f" + seed + b"\x1f" + ctx.encode("utf-8"), digest_size=16)
        # Re-seeding one generator draws what a new one with that seed would (Random.__init__ seeds).
        rng = self._rng
        rng.seed(int.from_bytes(digest.digest(), "big"))
        return beta_sample(rng, a1, b1) - beta_sample(rng, a0, b0)

    def explore(self, seed: bytes) -> bool:
        """Whether this decision explores (the engine then picks with :func:`pick_uniform`).

        True for a deterministic ``exploration_share`` of seeds (BLAKE2b of the seed below the share);
        always False when frozen.
        """
        if self.frozen or self.exploration_share <= 0.0:
            return False
        return unit_interval(b"explore", seed) < self.exploration_share

    # -- persistence ----------------------------------------------------------------------------------

    def drain(self) -> dict[bytes, bytes | None]:
        """Rows changed since the last drain, as store writes; forgets them."""
        writes: dict[bytes, bytes | None] = {}
        for ctx in sorted(self._dirty):
            writes[RESPONSE_PREFIX + ctx.encode("utf-8")] = compact_json(self._counts[ctx])
        if self._meta_dirty:
            writes[_META_KEY] = compact_json({"landmark": self._landmark, "clock": self._clock})
        self._dirty.clear()
        self._meta_dirty = False
        return writes

    def load(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """Restore from stored rows (rows of other prefixes and of unknown contexts are skipped)."""
        self._counts = {}
        self._landmark = self._clock = None
        for key, raw in rows:
            if key == _META_KEY:
                meta = json.loads(raw)
                self._landmark = None if meta.get("landmark") is None else float(meta["landmark"])
                self._clock = None if meta.get("clock") is None else float(meta["clock"])
            elif key.startswith(RESPONSE_PREFIX):
                try:
                    ctx = key[len(RESPONSE_PREFIX) :].decode("utf-8")
                    values = json.loads(raw)
                    if ctx in _CONTEXT_SET and len(values) == 6:  # a context a newer version dropped
                        self._counts[ctx] = [float(v) for v in values]
                except (ValueError, TypeError) as exc:
                    # One damaged context starts over alone: raising here reset every context of the
                    # partition at each load, since the row stays stored. (The meta row above has no
                    # such way out: without its landmark no count can be read, so it raises.)
                    log.warning("response row %r does not decode, skipped: %s", key[:80], exc)
        self._dirty.clear()
        self._meta_dirty = False


def _z(level: float) -> float:
    """The standard normal quantile of ``(1 + level) / 2``."""
    return NormalDist().inv_cdf((1.0 + level) / 2.0)
