"""Beta distributions and seeded draws for the outcome estimates (``stream.response_estimates``),
without SciPy in the worker: the incomplete beta function and its quantiles, Gamma and Beta draws
from a ``random.Random`` (only ``random()``, whose sequence Python guarantees across versions, so a
replay on another Python draws the same), and uniform numbers and picks from BLAKE2b of a seed.
"""

from __future__ import annotations

import hashlib
import math
import random


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """P(X <= x) for X ~ Beta(a, b) (the regularised incomplete beta function)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b), by bisection on :func:`beta_cdf` (to ~1e-15)."""
    lo, hi = 0.0, 1.0
    for _ in range(52):
        mid = (lo + hi) / 2.0
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _normal(rng: random.Random) -> float:
    # Box-Muller on rng.random(), whose sequence Python guarantees across versions (gauss() and
    # betavariate() are not guaranteed), so a replay on another Python draws the same.
    u1 = 1.0 - rng.random()  # in (0, 1]
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * rng.random())


def _gamma(rng: random.Random, shape: float) -> float:
    """One Gamma(shape, 1) draw (Marsaglia and Tsang 2000; shape < 1 boosted by u ** (1 / shape))."""
    if shape < 1.0:
        return _gamma(rng, shape + 1.0) * (1.0 - rng.random()) ** (1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = _normal(rng)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - rng.random()
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


def beta_sample(rng: random.Random, a: float, b: float) -> float:
    """One Beta(a, b) draw: X / (X + Y) of two Gamma draws (the mean when both come out 0)."""
    x = _gamma(rng, a)
    y = _gamma(rng, b)
    return x / (x + y) if x + y > 0.0 else a / (a + b)


def unit_interval(*parts: bytes) -> float:
    """A uniform number in [0, 1) from BLAKE2b of the parts (stable across processes and versions)."""
    digest = hashlib.blake2b(b"\x1f".join(parts), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_uniform(seed: bytes, n: int) -> int:
    """The index in ``range(n)`` an exploring decision picks: uniform over seeds, deterministic.

    Hash bits independent of ``ResponseEstimates.explore``'s, so which seeds explore and what they
    pick are not correlated. The caller sorts its eligible candidates (e.g. by item id) first.
    """
    if n <= 0:
        raise ValueError("nothing to pick from")
    return min(int(unit_interval(b"pick", seed) * n), n - 1)
