"""The console's running aggregates: per-trigger push outcomes, the two sides of the holdout
comparison, and the HyperLogLog sketch that counts their distinct users without keeping an id."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field


class HyperLogLog:
    """Distinct-count sketch (Flajolet et al. 2007, with the small-range correction): ``2**p`` bytes.

    With ``p = 14`` (16,384 registers, 16 KiB) the standard error is about 0.8 %; below about 40,000
    distinct values the small-range (linear counting) estimate is used, nearly exact for small counts.
    The values themselves are never stored.
    """

    def __init__(self, p: int = 14) -> None:
        self.p = p
        self.m = 1 << p
        self.registers = bytearray(self.m)
        self._alpha = 0.7213 / (1.0 + 1.079 / self.m)

    def add(self, value: str) -> None:
        """Count ``value`` (a string; hashed with BLAKE2b-64)."""
        x = int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "big")
        index = x >> (64 - self.p)
        rest = x & ((1 << (64 - self.p)) - 1)
        rank = (64 - self.p) - rest.bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def count(self) -> int:
        """The estimated number of distinct values added."""
        zeros = self.registers.count(0)
        if zeros == self.m:
            return 0
        estimate = self._alpha * self.m * self.m / sum(2.0**-r for r in self.registers)
        if estimate <= 2.5 * self.m and zeros:
            estimate = self.m * math.log(self.m / zeros)
        return round(estimate)


@dataclass
class TriggerTotals:
    """Running outcomes of one trigger's pushes (as far as the console has seen them)."""

    pushes: int = 0
    opens: int = 0
    clicks: int = 0
    dismisses: int = 0
    purchases: int = 0
    revenue: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Counters plus rates per push: open rate, click rate (CTR) and conversion."""
        per = float(self.pushes) if self.pushes else 0.0
        return {
            "pushes": self.pushes,
            "opens": self.opens,
            "clicks": self.clicks,
            "dismisses": self.dismisses,
            "purchases": self.purchases,
            "revenue": round(self.revenue, 2),
            "open_rate": self.opens / per if per else 0.0,
            "click_rate": self.clicks / per if per else 0.0,
            "conversion": self.purchases / per if per else 0.0,
        }


@dataclass
class GroupTotals:
    """One side of the holdout comparison: users seen on the events topic and what they bought."""

    events: int = 0
    purchases: int = 0
    revenue: float = 0.0
    pushes: int = 0
    users: HyperLogLog = field(default_factory=HyperLogLog)
    purchasers: HyperLogLog = field(default_factory=HyperLogLog)

    def as_dict(self) -> dict[str, float]:
        """Counters, distinct-user estimates and per-user rates."""
        users = self.users.count()
        purchasers = self.purchasers.count()
        return {
            "users": users,
            "events": self.events,
            "purchases": self.purchases,
            "revenue": round(self.revenue, 2),
            "pushes": self.pushes,
            "purchasers": purchasers,
            "purchases_per_user": self.purchases / users if users else 0.0,
            "revenue_per_user": self.revenue / users if users else 0.0,
            "conversion": min(1.0, purchasers / users) if users else 0.0,
        }
