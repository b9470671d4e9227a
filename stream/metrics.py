"""Kairos's Prometheus metrics: every metric object, and the bounded sets of values that label them.

This module is the one home of every metric's name, help text, labels, buckets and multi-process
mode; recording into them goes through :mod:`stream.metrics_record` (per-batch helpers, bounded label
values) and ``/metrics`` is rendered by :mod:`stream.metrics_exposition` (multi-process mode).

Naming: every name starts with ``kairos_``, uses base units (seconds, bytes, messages) and counters end
in ``_total``. Labels never carry user or item ids; every label value comes from a bounded set (the
contract's event types, triggers and dead-letter reasons, configured topic names, or short codes
checked by :func:`stream.metrics_record.bounded_label`).

Every gauge declares how its per-process values combine (``multiprocess_mode``) for the
multi-process mode that :mod:`stream.metrics_exposition` describes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Outcomes of one consumed event; "unknown_item" means processed but the model does not know the item.
EVENT_OUTCOMES: tuple[str, ...] = ("processed", "duplicate", "dead_letter", "unknown_item")
# Push feedback kinds (answers to a push seen on the events topic or reported by the shop).
FEEDBACK_KINDS: tuple[str, ...] = ("open", "click", "purchase", "dismiss")
# Why a model artifact was refused; bounded so that it can label a counter.
MODEL_FAILURE_REASONS: tuple[str, ...] = (
    "missing",
    "io",
    "checksum",
    "schema",
    "invalid_artifact",
    "smoke_check",
    "error",
)
# Where a batch found a user record (stream.warm_users).
USER_LOAD_SOURCES: tuple[str, ...] = ("warm", "store")
# Event type label for inputs that never parsed (dead letters).
UNKNOWN_TYPE = "unknown"


# --- consumption -------------------------------------------------------------------------------

EVENTS = Counter("kairos_events_total", "Events consumed, by event type and outcome.", ["type", "outcome"])
DEAD_LETTERS = Counter(
    "kairos_dead_letters_total",
    "Inputs refused to the dead-letter topic, by reason and source topic.",
    ["reason", "topic"],
)
EVENT_PROCESSING_SECONDS = Histogram(
    "kairos_event_processing_seconds",
    "Processing time per event (a batch's wall time divided by its size).",
    buckets=(
        1e-5,
        2.5e-5,
        5e-5,
        1e-4,
        2.5e-4,
        5e-4,
        1e-3,
        2.5e-3,
        5e-3,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
    ),
)
STAGE_SECONDS = Counter(
    "kairos_stage_seconds_total",
    "Time spent in each stage of the hot path (stream.outcome.STAGES); divided by "
    "kairos_events_total it is the time per event each stage costs.",
    ["stage"],
)
BATCH_SIZE = Histogram(
    "kairos_batch_events",
    "Events per processing batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
INTEREST_SCORE = Histogram(
    "kairos_interest_score",
    "Calibrated interest scores of the candidates the policy looked at (0..1).",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
CONSUMER_LAG = Gauge(
    "kairos_consumer_lag_messages",
    "Messages behind the high-watermark seen in fetch responses, per assigned partition.",
    ["topic", "partition"],
    multiprocess_mode="livemostrecent",
)
REBALANCES = Counter("kairos_rebalances_total", "Consumer group rebalances (partition assignments) seen.")
REBALANCE_PAUSE_SECONDS = Histogram(
    "kairos_rebalance_pause_seconds",
    "Time from a partition revocation (eager rebalance: all of them) to the next assignment.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0),
)

# --- pushes ------------------------------------------------------------------------------------

PUSHES = Counter("kairos_pushes_total", "Pushes emitted to the outbound topic, by trigger.", ["trigger"])
PUSH_SUPPRESSIONS = Counter(
    "kairos_push_suppressions_total",
    "Push candidates suppressed by the policy, by trigger and reason.",
    ["trigger", "reason"],
)
PUSH_LATENCY_SECONDS = Histogram(
    "kairos_push_latency_seconds",
    "Event time of the triggering event to the push being emitted.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
PUSH_FEEDBACK = Counter(
    "kairos_push_feedback_total",
    "Answers to pushes, by trigger and kind (open, click, purchase, dismiss).",
    ["trigger", "kind"],
)
PUSH_REVENUE = Counter(
    "kairos_push_revenue_total",
    "Revenue (shop currency) of purchases attributed to a push, by trigger.",
    ["trigger"],
)

# --- state -------------------------------------------------------------------------------------

STATE_KEYS = Gauge(
    "kairos_state_keys", "Keys in a local state store (estimate).", ["store"], multiprocess_mode="livesum"
)
STATE_BYTES = Gauge(
    "kairos_state_bytes",
    "Bytes used by a local state store (estimate).",
    ["store"],
    multiprocess_mode="livesum",
)
RECOVERY_REMAINING = Gauge(
    "kairos_recovery_remaining_messages",
    "Changelog messages left to replay before the state is recovered.",
    multiprocess_mode="livesum",
)
RECOVERY_IN_PROGRESS = Gauge(
    "kairos_recovery_in_progress",
    "1 while the worker replays changelogs into its local state.",
    multiprocess_mode="livemax",
)
RECOVERY_ERRORS = Counter(
    "kairos_recovery_errors_total",
    "Partition recoveries that failed (broker error, replay timeout, ...) and are retried with backoff.",
)
STATE_STORE_REBUILDS = Counter(
    "kairos_state_store_rebuilds_total",
    "Local partition databases found damaged when opened, moved aside and rebuilt from the changelog.",
)
RECOVERY_SECONDS = Histogram(
    "kairos_recovery_seconds",
    "Time from a partition assignment to its partitions serving (changelog replay, reconcile, load).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)
OWNED_PARTITIONS = Gauge(
    "kairos_owned_partitions",
    "User-keyed partitions this worker owns (recovering or serving).",
    multiprocess_mode="livesum",
)
RECOVERING_PARTITIONS = Gauge(
    "kairos_recovering_partitions",
    "Owned partitions whose state is still being recovered.",
    multiprocess_mode="livesum",
)

# --- model -------------------------------------------------------------------------------------

MODEL_INFO = Gauge(
    "kairos_model_info",
    "1 for the model version being served (0 for versions served before).",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_LOAD_SECONDS = Histogram(
    "kairos_model_load_seconds",
    "Time to load and smoke-check a model artifact.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
MODEL_LOAD_FAILURES = Counter(
    "kairos_model_load_failures_total", "Model artifacts refused, by reason.", ["reason"]
)
MODEL_RELOADS = Counter("kairos_model_reloads_total", "Model swaps to a new version while running.")

# --- process -----------------------------------------------------------------------------------

WORKER_UP = Gauge(
    "kairos_worker_up",
    "1 while a worker process runs its main loop (summed over processes).",
    multiprocess_mode="livesum",
)
EVENT_LOOP_LAG_SECONDS = Gauge(
    "kairos_event_loop_lag_seconds",
    "How late the event loop ran its last heartbeat (a busy or blocked loop shows here).",
    multiprocess_mode="livemax",
)
TICK_ERRORS = Counter(
    "kairos_tick_errors_total",
    "Errors in the periodic tick (it logs them and goes on), by stage.",
    ["stage"],
)
TICK_STAGES: tuple[str, ...] = ("model", "catalog", "timers", "commit", "gauges", "offsets", "content")
WEB_REFUSED = Counter(
    "kairos_web_connections_refused_total",
    "Metrics/health connections refused because the server was at its connection limit.",
)
LAST_EVENT_TIMESTAMP = Gauge(
    "kairos_last_event_timestamp_seconds",
    "Unix time at which the last event batch was processed.",
    multiprocess_mode="livemax",
)


# --- input accounting: every record read is applied, a duplicate, or dead-lettered ----------------

CONSENT_UPDATES = Counter(
    "kairos_consent_updates_total",
    "Consent records applied (an older update than the one in force is applied as a no-op).",
)
CATALOG_UPDATES = Counter("kairos_catalog_updates_total", "Catalog records applied to the catalog view.")
CATALOG_LATE = Counter(
    "kairos_catalog_late_total",
    "Catalog changes announced to a partition on arrival because its clock had already passed their "
    "updated_at (read late: where they land in the stream depends on timing), per partition reached.",
)
ARRIVAL_ASKS_CAPPED = Counter(
    "kairos_new_arrival_asks_capped_total",
    "Users not asked about a new item because they were already asked about "
    "new_arrival_asks_per_user_hour new items in the hour (a burst of new items).",
)
DISCOVERY_CATEGORIES_LEFT_OUT = Counter(
    "kairos_discovery_categories_left_out_total",
    "Categories a shopper's discovery pool left out because they hold more items than "
    "discovery_max_category_items (one per pool and category).",
)


CONTENT_ITEMS = Counter(
    "kairos_content_items_added_total",
    "Catalogued items without history that the model placed from their content (title, category, image).",
)


CONTENT_ITEMS_WAITING = Gauge(
    "kairos_content_items_waiting",
    "Catalogued items the model lacks that wait to be placed from their content (a few per tick).",
    multiprocess_mode="livemostrecent",
)


LATE_TIMERS = Counter(
    "kairos_late_timers_total",
    "Timers (a hold's release, a reminder that waits) that the partition's event-time clock passed between "
    "the decision's place in the stream and the decision: they fire an input late. Never expected (the "
    "engine decides before the clock can pass them); a non-zero value is a bug to report.",
)


# --- erasure, expiry and removed items -------------------------------------------------------------

USERS_ERASED = Counter(
    "kairos_users_erased_total",
    "Users erased on request (a consent tombstone): state, timers, index entries.",
)
USERS_EXPIRED = Counter(
    "kairos_users_expired_total", "Inactive users removed after worker.user_ttl_seconds (consent kept)."
)
USER_RECORD_LOADS = Counter(
    "kairos_user_record_loads_total",
    "User records loaded by batches and ticks, by source: warm (kept decoded since this worker wrote "
    "them, worker.warm_users_per_partition) or store (read from RocksDB and decoded).",
    ["source"],
)
CATALOG_REMOVALS = Counter(
    "kairos_catalog_removals_total", "Items removed from the catalog view (catalog tombstones)."
)
