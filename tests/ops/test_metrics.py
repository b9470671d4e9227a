"""Metrics: hot-path helpers, bounded labels, lag bookkeeping, exposition lint, multi-process mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream import metrics, metrics_exposition, metrics_record
from stream.batch_commit import observe
from stream.contract import DEAD_LETTER_REASONS, EVENT_TYPES
from stream.lag import LagTracker
from tests.stream.fakes import T0, DictState, make_engine, record

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_observe_many_equals_repeated_observe() -> None:
    registry = CollectorRegistry()
    buckets = metrics.EVENT_PROCESSING_SECONDS._upper_bounds[:-1]
    one_by_one = Histogram("a_seconds", "a", buckets=buckets, registry=registry)
    at_once = Histogram("b_seconds", "b", buckets=buckets, registry=registry)
    for value, count in [(3e-5, 7), (0.002, 500), (2.0, 3), (1e-6, 1)]:
        for _ in range(count):
            one_by_one.observe(value)
        metrics_record.observe_many(at_once, value, count)
    metrics_record.observe_many(at_once, 0.5, 0)
    text = generate_latest(registry).decode()

    def histogram(prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name.removeprefix(prefix), tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            if f.name == f"{prefix}seconds"
            for s in f.samples
            if not s.name.endswith("_created")
        }

    a, b = histogram("a_"), histogram("b_")
    assert a == pytest.approx(b)
    assert a[("seconds_count", ())] == 511


def test_observe_events_counts_by_type_and_outcome() -> None:
    before_view = sample("kairos_events_total", type="view", outcome="processed")
    before_dup = sample("kairos_events_total", type="purchase", outcome="duplicate")
    before_other = sample("kairos_events_total", type="other", outcome="other")
    before_count = sample("kairos_event_processing_seconds_count")
    before_le = sample("kairos_event_processing_seconds_bucket", le="0.0005")
    metrics_record.observe_events(
        {
            ("view", "processed"): 40,
            ("purchase", "duplicate"): 2,
            ("user-123", "weird"): 1,
            ("view", "dead_letter"): 0,
        },
        0.0004,
    )
    assert sample("kairos_events_total", type="view", outcome="processed") - before_view == 40
    assert sample("kairos_events_total", type="purchase", outcome="duplicate") - before_dup == 2
    # An id or unknown outcome never becomes a label value.
    assert sample("kairos_events_total", type="other", outcome="other") - before_other == 1
    assert REGISTRY.get_sample_value("kairos_events_total", {"type": "user-123", "outcome": "weird"}) is None
    assert sample("kairos_event_processing_seconds_count") - before_count == 43
    assert sample("kairos_event_processing_seconds_bucket", le="0.0005") - before_le == 43
    assert abs(sample("kairos_last_event_timestamp_seconds") - time.time()) < 60


def test_bounded_label_refuses_ids_and_caps_distinct_values() -> None:
    assert metrics_record.bounded_label("trigger", "price_drop", ("price_drop",)) == "price_drop"
    assert metrics_record.bounded_label("trigger", "nope", ("price_drop",)) == "other"
    assert metrics_record.bounded_label("test_reason", "User 42 <x>") == "other"
    cap = metrics_record.MAX_FREE_LABEL_VALUES
    kept = [metrics_record.bounded_label("test_cap", f"reason_{i}") for i in range(cap + 10)]
    assert kept[:cap] == [f"reason_{i}" for i in range(cap)]
    assert set(kept[cap:]) == {"other"}
    # A value seen before the cap stays accepted.
    assert metrics_record.bounded_label("test_cap", "reason_3") == "reason_3"


def test_push_helpers() -> None:
    before = sample("kairos_pushes_total", trigger="price_drop")
    before_lat = sample("kairos_push_latency_seconds_count")
    metrics_record.observe_push("price_drop", 0.12)
    metrics_record.observe_push("price_drop", None)
    assert sample("kairos_pushes_total", trigger="price_drop") - before == 2
    assert sample("kairos_push_latency_seconds_count") - before_lat == 1

    before_sup = sample("kairos_push_suppressions_total", trigger="in_session", reason="quiet_hours")
    metrics_record.observe_suppression("in_session", "quiet_hours")
    after_sup = sample("kairos_push_suppressions_total", trigger="in_session", reason="quiet_hours")
    assert after_sup - before_sup == 1

    before_rev = sample("kairos_push_revenue_total", trigger="promotion_start")
    before_fb = sample("kairos_push_feedback_total", trigger="promotion_start", kind="purchase")
    metrics_record.observe_feedback("promotion_start", "purchase", revenue=19.5)
    assert sample("kairos_push_feedback_total", trigger="promotion_start", kind="purchase") - before_fb == 1
    assert sample("kairos_push_revenue_total", trigger="promotion_start") - before_rev == pytest.approx(19.5)


def test_lag_tracker_uses_fetch_high_watermark_and_forgets_revoked() -> None:
    tracker = LagTracker()
    rebalances = sample("kairos_rebalances_total")
    tracker.on_assigned([("lagtest", 0), ("lagtest", 1)])
    assert sample("kairos_rebalances_total") - rebalances == 1
    assert tracker.lag("lagtest", 0) == 0
    tracker.on_high_watermark("lagtest", 0, 100)
    tracker.on_processed("lagtest", 0, 49)  # offsets 0..49 done: 50 left of 100
    tracker.on_processed("lagtest", 1, 9)  # processed past the last high-watermark we saw
    tracker.on_high_watermark("lagtest", 0, 90)  # an older response never lowers the watermark
    assert tracker.lag("lagtest", 0) == 50
    assert tracker.lag("lagtest", 1) == 0
    assert tracker.lag("lagtest", 7) is None
    tracker.publish()
    assert sample("kairos_consumer_lag_messages", topic="lagtest", partition="0") == 50
    tracker.on_revoked([("lagtest", 0)])
    gone = REGISTRY.get_sample_value("kairos_consumer_lag_messages", {"topic": "lagtest", "partition": "0"})
    assert gone is None
    assert tracker.lags() == {("lagtest", 1): 0}


def test_a_batch_moves_the_lag_as_its_records_one_by_one_would() -> None:
    one_by_one, batched = LagTracker(), LagTracker()
    records = [("lagtest", 0, 7), ("lagtest", 1, 3), ("lagtest", 0, 9), ("lagtest", 0, 8), ("other", 0, 50)]
    for tracker in (one_by_one, batched):
        tracker.on_assigned([("lagtest", 0), ("lagtest", 1)])
        tracker.on_high_watermark("lagtest", 0, 20)
    for processed in records:
        one_by_one.on_processed(*processed)
    batched.on_processed_batch(records)
    assert batched.lags() == one_by_one.lags() == {("lagtest", 0): 10, ("lagtest", 1): 0}


def test_lag_is_reported_only_for_owned_partitions_after_rebalances() -> None:
    # Observed: after rebalances the gauge kept partitions the worker no longer owned (summed lag
    # ~84k while the group's real lag was 0): records in flight re-created them, and an assignment
    # that moved partitions away without a matching revoke left their series behind.
    def series() -> dict[str, float]:
        out = {}
        for p in range(4):
            value = REGISTRY.get_sample_value(
                "kairos_consumer_lag_messages", {"topic": "lagmove", "partition": str(p)}
            )
            if value is not None:
                out[str(p)] = value
        return out

    tracker = LagTracker()
    tracker.on_assigned([("lagmove", 0), ("lagmove", 1), ("lagmove", 2)])
    tracker.on_high_watermark("lagmove", 2, 84_000)
    tracker.publish()
    assert series() == {"0": 0, "1": 0, "2": 84_000}
    tracker.on_assigned([("lagmove", 0), ("lagmove", 3)])  # 1 and 2 moved to a new member
    tracker.on_processed("lagmove", 2, 10)  # a record of partition 2 still in flight
    tracker.on_high_watermark("lagmove", 1, 500)  # a stale fetch response for partition 1
    tracker.publish()
    assert series() == {"0": 0, "3": 0}
    assert tracker.lag("lagmove", 2) is None
    # Partition 2 comes back later: its lag starts from what this worker sees then, not from old data.
    tracker.set_assignment([("lagmove", 0), ("lagmove", 2), ("lagmove", 3)])
    tracker.on_position("lagmove", 2, 84_000)
    tracker.on_high_watermark("lagmove", 2, 84_005)
    tracker.publish()
    assert series() == {"0": 0, "2": 5, "3": 0}


def test_model_version_gauge_switches() -> None:
    metrics_record.set_model_version("test-v1")
    assert sample("kairos_model_info", version="test-v1") == 1
    metrics_record.set_model_version("test-v2")
    assert sample("kairos_model_info", version="test-v1") == 0
    assert sample("kairos_model_info", version="test-v2") == 1
    assert metrics_record.current_model_version() == "test-v2"
    metrics_record.set_model_version(None)
    assert sample("kairos_model_info", version="test-v2") == 0
    assert metrics_record.current_model_version() is None


def test_state_and_recovery_gauges() -> None:
    metrics_record.set_state_size("users", 1200, 345_678)
    assert sample("kairos_state_keys", store="users") == 1200
    assert sample("kairos_state_bytes", store="users") == 345_678
    metrics_record.set_recovery(True, 500)
    assert sample("kairos_recovery_in_progress") == 1
    assert sample("kairos_recovery_remaining_messages") == 500
    metrics_record.set_recovery(False, 17)
    assert sample("kairos_recovery_in_progress") == 0
    assert sample("kairos_recovery_remaining_messages") == 0


def test_exposition_passes_promtool_lint() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (deploy/install-test-deps.sh installs Debian's prometheus)")
    metrics_record.init_labels(["events"])
    body, _ = metrics_exposition.render_latest()
    kairos_only = "\n".join(line for line in body.decode().splitlines() if "kairos_" in line) + "\n"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=kairos_only.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


MULTIPROCESS_CHILD = textwrap.dedent(
    """
    import sys
    from stream import metrics_exposition, metrics_record
    metrics_exposition.worker_started()
    metrics_record.observe_events({("view", "processed"): int(sys.argv[1])}, 0.001)
    metrics_record.set_state_size("users", int(sys.argv[1]), 10)
    metrics_record.set_model_version("mp-v1")
    if sys.argv[2] == "exit":
        metrics_exposition.worker_stopped()
    """
)

MULTIPROCESS_READER = textwrap.dedent(
    """
    import sys
    from stream import metrics_exposition
    sys.stdout.write(metrics_exposition.render_latest()[0].decode())
    """
)


def test_multiprocess_mode_merges_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for count, mode in [(5, "stay"), (7, "exit")]:
        subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_CHILD, str(count), mode],
            env=env,
            check=True,
            timeout=60,
            cwd=ROOT,
        )
    out = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_READER],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    ).stdout.decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    # Counters and histograms sum over every process, finished ones included.
    assert values[("kairos_events_total", (("outcome", "processed"), ("type", "view")))] == 12
    assert values[("kairos_event_processing_seconds_count", ())] == 12
    # livesum gauges keep only processes not marked dead: the second one called worker_stopped().
    assert values[("kairos_worker_up", ())] == 1
    assert values[("kairos_state_keys", (("store", "users"),))] == 5
    assert values[("kairos_model_info", (("version", "mp-v1"),))] == 1


def test_hostile_input_adds_no_label_value_and_refused_events_count_as_unknown() -> None:
    """Every label comes from a closed set, whatever the input: a flood of refused records with ids,
    event types, field names and keys of their own, through the engine and the worker's accounting."""
    engine, store = make_engine(), DictState()
    records = []
    for i in range(300):
        user = f"hostile-{i}\u202e"
        bad = [
            {"event_id": f"e{i}", "user_id": user, "type": f"type_{i}", "item_id": "i1", "ts": T0},
            {"event_id": f"e{i}", "user_id": user, "type": "view", "item_id": "i1", "ts": T0, f"f_{i}": 1},
            {"event_id": f"e{i}\n", "user_id": user, "type": "view", "item_id": f"item_{i}", "ts": T0},
        ]
        records += [record(json.dumps(b).encode(), user) for b in bad]
        records.append(record(b"\xff" * i, user))
        good = {"event_id": f"e{i}", "user_id": user, "type": "view", "item_id": "i1", "ts": T0}
        records.append(record(json.dumps(good).encode(), user, key=f"hostile-key-{i}".encode()))
    before = sample("kairos_events_total", type="unknown", outcome="dead_letter")
    out = engine.process(records, store)
    observe(out)
    metrics_record.observe_events(out.events, 1e-5)
    assert len(out.dead_letters) == len(records)
    # The documented label: "unknown" (never parsed), not folded into "other".
    assert sample("kairos_events_total", type="unknown", outcome="dead_letter") - before == len(records)
    values = {
        (name, value)
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        if family.name.startswith("kairos_")
        for s in family.samples
        for name, value in s.labels.items()
    }
    marks = ("hostile", "type_", "f_", "item_", "\u202e")
    assert not [v for v in values if any(mark in v[1] for mark in marks)]
    assert {v for n, v in values if n == "type"} <= {*EVENT_TYPES, metrics.UNKNOWN_TYPE, metrics_record.OTHER}
    assert {v for n, v in values if n == "reason" and v in DEAD_LETTER_REASONS} >= {
        "invalid_field",
        "key_mismatch",
        "not_utf8",
    }
