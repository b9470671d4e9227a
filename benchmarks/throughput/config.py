"""The stream worker benchmark's fixed settings: paths, the simulated shop and training config, the
worker environments of the throughput and latency phases, and their timings. ``LATENCY_ENV`` is one
shared dict: ``benchmarks/stream_throughput.py``'s ``main`` adds the input reader to it before the
latency phases run, and the report prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stream.demo import DEMO_TRAINING
from stream.simulator import SimConfig
from tests.support.worker import PRODUCTION_DECISIONS

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / ".kairos" / "bench"
REPORT = ROOT / "benchmarks" / "reports" / "stream_throughput.md"
SIM_CONFIG = SimConfig.model_validate({"seed": 11})
SIM_TRAIN_EVENTS = 60_000
TRAINING: dict[str, float | int] = {**DEMO_TRAINING, "threads": 2}

# Phase A: production defaults, except the event-time clock (the dataset's timestamps are from 2015,
# so under the wall clock every event would be "stale" and never scored) and TEST_ENV's changes undone.
THROUGHPUT_ENV: dict[str, str] = {
    **PRODUCTION_DECISIONS,  # TEST_ENV switches the active rule and session ends off: undo it
    "KAIROS_WORKER__CLOCK": "event",
    "KAIROS_WORKER__TICK_SECONDS": "1.0",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.005",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.05",
    "KAIROS_LOG__LEVEL": "WARNING",
}
# Phase B: every decision may emit (no threshold, gap, caps, quiet hours or holdout), so each user's
# first browsing event (and every add-to-cart) gives a push: hundreds of latency samples a second.
# The decision interval stays at its default (60 s of event time per user): with 0, every event is a
# decision and the worker (about 1,100 events/s then) is overloaded at 2,000/s; see the report.
LATENCY_ENV: dict[str, str] = {
    "KAIROS_WORKER__CLOCK": "wall",
    "KAIROS_WORKER__TICK_SECONDS": "1.0",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.005",
    "KAIROS_POLICY__THRESHOLD": "0.0",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__TRIGGER_THRESHOLDS": "{}",
    "KAIROS_POLICY__MIN_GAP_SECONDS": "0",
    "KAIROS_POLICY__ITEM_REPEAT_WINDOW_SECONDS": "0",
    "KAIROS_POLICY__MAX_PUSHES_PER_24H": "1000000",
    "KAIROS_POLICY__MAX_PUSHES_PER_7D": "1000000",
    "KAIROS_POLICY__MAX_PUSHES_PER_LOCAL_DAY": "1000000",
    "KAIROS_POLICY__MAX_PER_CATEGORY_PER_LOCAL_DAY": "0",
    "KAIROS_POLICY__QUIET_HOURS_START": "00:00",
    "KAIROS_POLICY__QUIET_HOURS_END": "00:00",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.0",
    # In-session pushes measure event -> push; by default the active rule holds every push until the
    # shopper has left (30 min), and send time may delay it: both off for this phase.
    "KAIROS_POLICY__ACTIVE_WINDOW_SECONDS": "0",
    "KAIROS_POLICY__SEND_TIME_ENABLED": "false",
    "KAIROS_LOG__LEVEL": "WARNING",
}
FETCH_WAIT_MS = 10
FLOOR_TOPIC = "bench-floor"  # same partition count as events, on the latency phase's broker
WARMUP_SECONDS = 1.0
POLL_SECONDS = 0.5  # /metrics polls in the throughput phase (see benchmarks/stream_throughput.py's docstring)
LATENCY_WINDOW_SECONDS = 2.0  # the latency runs' percentiles are also reported per window this long


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
