"""The soak benchmark's settings: paths, the worker's environment, the thresholds of the trend
verdicts, and the caps of the partitions' two big indexes as that environment sets them
(:func:`index_caps`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stream.settings import Settings
from tests.support.worker import PRODUCTION_DECISIONS

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / ".kairos" / "bench"
MODEL_DIR = CACHE / "soak-model"
REPORTS = ROOT / "benchmarks" / "reports"
APP_ID = "kairos-soak"
# Production defaults, except the event-time clock (see benchmarks/soak.py's docstring) and quieter logs.
SOAK_ENV: dict[str, str] = {
    **PRODUCTION_DECISIONS,  # TEST_ENV switches the active rule and session ends off: undo it
    "KAIROS_WORKER__CLOCK": "event",
    "KAIROS_WORKER__TICK_SECONDS": "1.0",
    "KAIROS_WORKER__BATCH_WAIT_SECONDS": "0.005",
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.05",
    "KAIROS_LOG__LEVEL": "WARNING",
}
TTL_HINTS = ("ttl", "expir", "inactiv")
HEAD_PROBE_RECORDS = 500  # records per partition read again from offset 0 at every sample
# A series "levels off" when its last third adds at most LEVEL_FLAT_SHARE of its final value, or at most
# LEVEL_GROWTH_SHARE while its slope there is at most LEVEL_SLOPE_SHARE of the first third's (a warm-up
# ramp that flattens). The slope test alone would pass any series with a steep start, e.g. the first
# users' state appearing at once, whatever follows.
LEVEL_FLAT_SHARE = 0.02
LEVEL_GROWTH_SHARE = 0.05
LEVEL_SLOPE_SHARE = 0.25
# A level that falls back again and again (RocksDB's files between compactions) is "bounded" when its
# last third peaks at most SAWTOOTH_PEAK_GROWTH times the earlier peak; a fall is a drop below
# SAWTOOTH_DROP of the previous sample.
SAWTOOTH_DROP = 0.67
SAWTOOTH_PEAK_GROWTH = 1.10
# A series with a cap in the code (an index that evicts beyond a configured size) is "capped" when it
# still grows but stays under its cap and its growth slows to at most LEVEL_SLOPE_SHARE of the first
# third's: it cannot pass the cap, and the report says how near it is.


def index_caps(env: dict[str, str], items: int, partitions: int) -> dict[str, int]:
    """The configured caps of the partitions' two big indexes, as the worker's environment sets them.

    Co-visitation keeps, per partition, at most ``covisit_max_items`` items (never more than the shop
    has), one row each (its touch order and up to ``2 * covisit_top_n`` neighbours); the interest index keeps
    at most ``interest_index_per_item`` users per item and ``interest_index_max_entries`` in all.
    """
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        policy = Settings().policy
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # One row per item either item index holds (stream.partition_rows), each index with its own cap.
    item_rows = min(items, policy.covisit_max_items + policy.trending_max_items)
    return {
        "changelog_live_item_rows": partitions * item_rows,
        "changelog_live_interest_rows": partitions
        * min(policy.interest_index_max_entries, items * policy.interest_index_per_item),
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
