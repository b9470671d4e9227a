"""push_outcomes is reproducible push for push: the same seed and arguments give the same figures.

CI-sized: a small world (300 users, 200 items, half a day after a one-day warm-up), the Kairos arm
only (the real worker process on the embedded broker) and the marketer's rules, run twice: once with
every world in turn, once with the worlds in parallel processes (``--workers``), which must not
change a figure. The second run loads the native build of the hot modules (``stream.native``) when
there is one, the first the Python sources: the build must not change a figure either.
"""

from __future__ import annotations

import json
import os
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


def _run(workers: int, native: bool) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "push_outcomes.py"), *ARGS, "--workers", str(workers)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "KAIROS_NATIVE": "1" if native else "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without_wall_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_times(v) for k, v in value.items() if "wall" not in k}
    return value


@pytest.mark.integration
def test_the_same_seed_gives_the_same_figures() -> None:
    first, second = _run(workers=1, native=False), _run(workers=2, native=True)
    assert first["pushes"] > 0, "the small world should still get pushes"
    assert _without_wall_times(first) == _without_wall_times(second)


def test_the_native_build_is_loaded_when_current() -> None:
    """``make install`` builds it where a C compiler is (CI's Debian has gcc); the worker logs which ran."""
    done = subprocess.run(
        [sys.executable, "-m", "stream.native_build", "--status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "KAIROS_NATIVE": "1"},
    )
    assert done.returncode == 0, done.stderr
    if not done.stdout.startswith("native"):
        pytest.skip(f"no current native build here: {done.stdout.strip()}")
    assert "modules compiled with mypyc" in done.stdout
