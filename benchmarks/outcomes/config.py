"""The push-outcomes benchmark's setup: one run's configuration (:class:`BenchConfig`: the world,
the evaluated days and their lock steps, the holdout), the per-user counters it reads from the
simulator, the paths and the training config.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stream.demo import DEMO_TRAINING
from stream.policy import in_holdout
from stream.policy_config import PolicyConfig
from stream.simulator import DAY, SimConfig

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH_DIR = ROOT / ".kairos" / "bench"
REPORT = ROOT / "benchmarks" / "reports" / "push_outcomes.md"
CLOCK_USER = "bench-clock"
# Steps end this much before the quarter hour, so no step straddles a quiet-hours boundary.
STEP_EPSILON = 1e-3
# Model training: the demo model's shape (small and quick on 2 cores).
TRAINING: dict[str, float | int] = {**DEMO_TRAINING, "threads": 2}
COUNTERS = (
    "pushes",
    "opens",
    "clicks",
    "dismisses",
    "push_purchases",
    "push_revenue",
    "purchases",
    "revenue",
    "opt_outs",
    "opt_out_risk",
    "quiet_pushes",
    "expired_pushes",
    "pushes_after_opt_out",
)


@dataclass
class BenchConfig:
    """One benchmark run's setup."""

    seed: int = 11
    users: int = 3000
    items: int = 1000
    days: float = 3.0
    warmup_days: float = 4.0
    step_minutes: float = 15.0
    holdout_share: float = 0.5
    holdout_salt: str = PolicyConfig.model_validate({}).holdout_salt
    kairos_env: dict[str, str] = field(default_factory=dict)

    def sim_config(self) -> SimConfig:
        """The simulated shop (defaults otherwise)."""
        return SimConfig(seed=self.seed, n_users=self.users, n_items=self.items)

    def start(self) -> float:
        """Simulated time where the evaluated period starts (end of the warm-up)."""
        return self.sim_config().start_time + self.warmup_days * DAY - STEP_EPSILON

    def step_ends(self) -> list[float]:
        """End of every lock step (just before each quarter hour)."""
        step = self.step_minutes * 60.0
        n = int(round(self.days * DAY / step))
        return [self.start() + (k + 1) * step for k in range(n)]

    def holdout(self) -> Callable[[str], bool]:
        """Kairos's holdout rule with this run's share and salt."""
        share, salt = self.holdout_share, self.holdout_salt
        return lambda user_id: in_holdout(user_id, share, salt)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def lock_step_days_error(days: float, step_minutes: float) -> str | None:
    """Why ``days`` cannot be run in lock steps of ``step_minutes`` (not positive, or not a whole number
    of steps: the last step would be cut, and per-day rates divided by days that never ran), or None."""
    steps = days * DAY / (step_minutes * 60.0)
    if days <= 0 or abs(steps - round(steps)) > 1e-6:
        return (
            f"--days must be a positive whole number of {step_minutes:g}-minute lock steps "
            f"({days:g} days is {steps:g} steps)"
        )
    return None
