"""The soak benchmark's analysis: each series' slopes over the first and last thirds of the run and
its verdict (levels off, falls, capped, bounded, still grows; a counter's steady rate; :func:`trend`),
the compaction findings (:func:`analyse`) and the one-line JSON summary (:func:`summary_json`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.soak_parts.config import (
    LEVEL_FLAT_SHARE,
    LEVEL_GROWTH_SHARE,
    LEVEL_SLOPE_SHARE,
    SAWTOOTH_DROP,
    SAWTOOTH_PEAK_GROWTH,
)
from benchmarks.soak_parts.runner import Run

# Series that should level off (a level), and counters that should grow at a steady rate.
LEVELS: dict[str, str] = {
    "worker_rss_bytes": "worker RSS",
    "broker_rss_bytes": "broker RSS (holds every topic: memory storage)",
    "rocksdb_disk_bytes": "RocksDB on disk",
    "state_keys": "state keys (kairos_state_keys)",
    "state_bytes": "state bytes (kairos_state_bytes)",
    "changelog_records_read": "changelog records",
    "changelog_bytes_read": "changelog bytes",
    "changelog_live_keys": "changelog live keys",
    "changelog_live_bytes": "changelog live bytes",
    "changelog_live_users": "changelog live user records (all)",
    "changelog_live_active_users": "changelog live user records, opt-out-only ones apart",
    "changelog_live_item_rows": "changelog live item rows (co-visitation and trending)",
    "changelog_live_interest_rows": "changelog live interest-index rows",
    "consumer_lag": "consumer lag",
}
COUNTERS: dict[str, str] = {
    "events_produced": "events produced",
    "events_processed": "events processed",
    "pushes": "pushes",
    "dead_letters": "dead letters",
    "users_arrived": "user ids arrived",
    "changelog_live_optouts": "opt-out-only user records (kept for good, one per user who opted out)",
}


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or max(xs) - min(xs) <= 0:
        return float("nan")
    return float(np.polyfit(np.array(xs), np.array(ys), 1)[0])


def _noisy_level(xs: list[float], ys: list[float]) -> bool:
    """A level that only fluctuates: the last third's mean within LEVEL_GROWTH_SHARE of the middle third's
    (a slope fitted to a third of a noisy flat series can be anything)."""
    total = xs[-1] - xs[0]
    mid = [y for x, y in zip(xs, ys, strict=True) if xs[0] + total / 3 < x < xs[-1] - total / 3]
    last = [y for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3]
    if not mid or not last or sum(mid) <= 0:
        return False
    return abs(sum(last) / len(last) / (sum(mid) / len(mid)) - 1.0) <= LEVEL_GROWTH_SHARE


def _sawtooth_bounded(xs: list[float], ys: list[float]) -> bool:
    """A series that keeps falling back (RocksDB between compactions): at least two drops of a third or
    more, and the last third's peak within 10 % of the first two thirds' peak."""
    drops = sum(1 for a, b in zip(ys, ys[1:], strict=False) if a > 0 and b < SAWTOOTH_DROP * a)
    total = xs[-1] - xs[0]
    early = [y for x, y in zip(xs, ys, strict=True) if x < xs[-1] - total / 3]
    late = [y for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3]
    return drops >= 2 and bool(early) and bool(late) and max(late) <= SAWTOOTH_PEAK_GROWTH * max(early)


def trend(samples: list[dict[str, float]], key: str, level: bool, cap: float | None = None) -> dict[str, Any]:
    """Slopes (per minute) of the first and last thirds of the run, and a verdict.

    A level series "levels off" when its last third adds at most LEVEL_FLAT_SHARE of its final value, or
    at most LEVEL_GROWTH_SHARE with a slope there of at most LEVEL_SLOPE_SHARE of the first third's; it
    "falls" when the last third removes more than LEVEL_GROWTH_SHARE. A counter has a "steady rate" when
    its last-third rate is within 20 % of the first third's. A level with a ``cap`` in the code that
    still grows, stays under the cap and slows to at most LEVEL_SLOPE_SHARE of its first-third slope is
    "capped at N % of its bound": it cannot pass the cap, but it has not levelled off below it either.
    """
    xs = [s["minute"] for s in samples]
    ys = [s.get(key, 0.0) for s in samples]
    if len(xs) < 2:
        return {"verdict": "too short"}
    if not any(key in s for s in samples):
        return {"verdict": "not measured in this run"}
    total = xs[-1] - xs[0]
    first = [(x, y) for x, y in zip(xs, ys, strict=True) if x <= xs[0] + total / 3]
    last = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3]
    s1 = _slope([x for x, _ in first], [y for _, y in first])
    s3 = _slope([x for x, _ in last], [y for _, y in last])
    out: dict[str, Any] = {"start": ys[0], "end": ys[-1], "slope_first": s1, "slope_last": s3}
    if np.isnan(s1) or np.isnan(s3):
        out["verdict"] = "too short"
        return out
    if level:
        growth = s3 * total / 3 / max(abs(ys[-1]), 1e-9)
        out["last_third_growth_share"] = growth
        if s3 < 0 and growth < -LEVEL_GROWTH_SHARE:
            out["verdict"] = "falls"
        elif growth <= LEVEL_FLAT_SHARE or (
            growth <= LEVEL_GROWTH_SHARE and s1 > 0 and s3 <= LEVEL_SLOPE_SHARE * s1
        ):
            out["verdict"] = "levels off"
        elif cap is not None and ys[-1] <= cap and s1 > 0 and s3 <= LEVEL_SLOPE_SHARE * s1:
            out["verdict"] = f"capped: {ys[-1] / cap:.0%} of its bound {cap:,.0f}"
        elif _sawtooth_bounded(xs, ys):
            early = max(y for x, y in zip(xs, ys, strict=True) if x < xs[-1] - total / 3)
            late = max(y for x, y in zip(xs, ys, strict=True) if x >= xs[-1] - total / 3)
            out["verdict"] = (
                f"bounded: falls back at compactions, last third's peak {late / early:.2f}x the earlier"
            )
        elif _noisy_level(xs, ys):
            out["verdict"] = "levels off (noisy: last third's mean within 5 % of the middle third's)"
        else:
            out["verdict"] = "still grows"
        if cap is not None:
            out["cap"] = cap
    else:
        steady = s1 > 0 and abs(s3 - s1) <= 0.2 * s1
        out["verdict"] = "steady rate" if steady else ("zero" if s1 == 0 and s3 == 0 else "rate changed")
    return out


def analyse(run: Run) -> dict[str, Any]:
    """Trends of every series, compaction findings and the headline figures."""
    samples = run.samples
    caps = run.setup.get("caps", {})
    trends = {k: trend(samples, k, True, caps.get(k)) for k in LEVELS}
    trends.update({k: trend(samples, k, False) for k in COUNTERS})
    final = run.end.get("final", samples[-1] if samples else {})
    scan = run.end.get("scan", {})
    removed = int(scan.get("records_removed", 0))
    head_missing = max((s.get("head_missing_offsets", 0.0) for s in samples), default=0.0)
    compacted = removed > 0 or head_missing > 0 or final.get("changelog_gaps_seen", 0) > 0
    minutes = samples[-1]["minute"] - samples[0]["minute"] if len(samples) > 1 else 0.0
    processed = samples[-1]["events_processed"] - samples[0]["events_processed"] if samples else 0.0
    return {
        "trends": trends,
        "compaction_observed": compacted,
        "changelog_records_removed": removed,
        "changelog_head_missing_offsets_max": head_missing,
        "minutes": minutes,
        "events_per_s": processed / (minutes * 60.0) if minutes else None,
    }


def summary_json(run: Run, analysis: dict[str, Any]) -> dict[str, Any]:
    """The one-line JSON summary."""
    final = run.end.get("final", {})
    scan = run.end.get("scan", {})
    return {
        "minutes": round(analysis["minutes"], 2),
        "rate": run.setup.get("rate"),
        "events_per_s": analysis["events_per_s"],
        "ttl_variable": run.setup.get("ttl_variable"),
        "user_ttl_seconds": run.setup.get("user_ttl_seconds"),
        "sim_days": final.get("sim_days"),
        "users_arrived": final.get("users_arrived"),
        "worker_rss_mib": final.get("worker_rss_bytes", 0) / 2**20,
        "worker_peak_rss_mib": final.get("worker_peak_rss_bytes", 0) / 2**20,
        "broker_rss_mib": final.get("broker_rss_bytes", 0) / 2**20,
        "rocksdb_disk_mib": final.get("rocksdb_disk_bytes", 0) / 2**20,
        "state_keys": final.get("state_keys"),
        "changelog_records": final.get("changelog_records_read"),
        "changelog_mib": final.get("changelog_bytes_read", 0) / 2**20,
        "changelog_live_keys": final.get("changelog_live_keys"),
        "changelog_live_users": final.get("changelog_live_users"),
        "changelog_live_partition_rows": final.get("changelog_live_partition_rows"),
        "changelog_live_item_rows": final.get("changelog_live_item_rows"),
        "changelog_live_interest_rows": final.get("changelog_live_interest_rows"),
        "changelog_live_optouts": final.get("changelog_live_optouts"),
        "changelog_live_active_users": final.get("changelog_live_active_users"),
        "index_caps": run.setup.get("caps"),
        "changelog_live_mib": final.get("changelog_live_bytes", 0) / 2**20,
        "changelog_records_removed": scan.get("records_removed"),
        "compaction_observed": analysis["compaction_observed"],
        "events_produced": final.get("events_produced"),
        "events_processed": final.get("events_processed"),
        "pushes": final.get("pushes"),
        "dead_letters": final.get("dead_letters"),
        "max_consumer_lag": max((s.get("consumer_lag", 0.0) for s in run.samples), default=None),
        "drained": run.end.get("drained"),
        "worker_exit": run.end.get("worker_exit"),
        "verdicts": {k: v["verdict"] for k, v in analysis["trends"].items()},
    }
