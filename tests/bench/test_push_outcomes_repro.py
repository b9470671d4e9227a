"""push_outcomes is reproducible push for push: the same seed and arguments give the same figures.

CI-sized: a small world (300 users, 200 items, half a day after a one-day warm-up), the Kairos arm
only (the real worker process on the embedded broker) and the marketer's rules, run twice: once with
every world in turn, once with the worlds in parallel processes (``--workers``), which must not
change a figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--days", "0.5", "--users", "300", "--items", "200", "--warmup-days", "1", "--seed", "5",
    "--arms", "kairos", "marketer_rules", "--no-report", "--json",
]  # fmt: skip


def _run(workers: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "push_outcomes.py"), *ARGS, "--workers", str(workers)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without_wall_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_times(v) for k, v in value.items() if "wall" not in k}
    return value


@pytest.mark.integration
def test_the_same_seed_gives_the_same_figures() -> None:
    first, second = _run(workers=1), _run(workers=2)
    assert first["pushes"] > 0, "the small world should still get pushes"
    assert _without_wall_times(first) == _without_wall_times(second)
