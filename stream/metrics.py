"""Kairos's Prometheus metrics: one module-level object per metric, plus hot-path helpers.

Naming: every name starts with ``kairos_``, uses base units (seconds, bytes, messages) and counters end
in ``_total``. Labels never carry user or item ids; every label value comes from a bounded set (the
contract's event types, triggers and dead-letter reasons, configured topic names, or short codes
checked by :func:`bounded_label`).

Multi-process mode: when several worker *processes* share one scrape port, start them with
``PROMETHEUS_MULTIPROC_DIR`` pointing at an empty directory (set before Python starts, because
prometheus-client picks its value store at import). Counters and histograms are then summed across
processes by ``stream.web``; every gauge here declares how its per-process values combine
(``multiprocess_mode``). With one process per container (docker-compose replicas), leave it unset and
let Prometheus scrape each container: ``docs/operations.md`` explains the choice.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from stream.contract import DEAD_LETTER_REASONS, EVENT_TYPES, TRIGGERS
from stream.outcome import STAGES

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
# The value used for anything outside a label's allowed set.
OTHER = "other"
# Event type label for inputs that never parsed (dead letters).
UNKNOWN_TYPE = "unknown"

_LABEL_RE = re.compile(r"^[a-z][a-z0-9_\-.]{0,63}$")
# Most distinct free-form values one label may take (e.g. suppression reasons, store names).
MAX_FREE_LABEL_VALUES = 64
_seen_free: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def multiprocess_enabled() -> bool:
    """Whether prometheus-client runs in multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def bounded_label(kind: str, value: str, allowed: Iterable[str] | None = None) -> str:
    """``value`` if it is a safe label value for ``kind``, else ``"other"``.

    With ``allowed``, the value must be one of them. Without, it must look like a short code
    (lowercase, digits, ``_-.``) and at most :data:`MAX_FREE_LABEL_VALUES` distinct values are accepted
    per kind, so a bug that passes ids here cannot explode the number of series.
    """
    if allowed is not None:
        return value if value in allowed else OTHER
    if not _LABEL_RE.match(value):
        return OTHER
    with _seen_lock:
        seen = _seen_free.setdefault(kind, set())
        if value in seen:
            return value
        if len(seen) >= MAX_FREE_LABEL_VALUES:
            return OTHER
        seen.add(value)
        return value


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
TICK_STAGES: tuple[str, ...] = ("model", "catalog", "timers", "commit", "gauges", "offsets")
WEB_REFUSED = Counter(
    "kairos_web_connections_refused_total",
    "Metrics/health connections refused because the server was at its connection limit.",
)
LAST_EVENT_TIMESTAMP = Gauge(
    "kairos_last_event_timestamp_seconds",
    "Unix time at which the last event batch was processed.",
    multiprocess_mode="livemax",
)


def init_labels(topics: Iterable[str] = ()) -> None:
    """Create the known label combinations at 0 so that ``rate()`` and alerts see them from the start.

    ``topics``: the input topic names (for dead letters by topic). Safe to call more than once.
    """
    for event_type in (*EVENT_TYPES, UNKNOWN_TYPE):
        for outcome in EVENT_OUTCOMES:
            EVENTS.labels(event_type, outcome)
    for trigger in TRIGGERS:
        PUSHES.labels(trigger)
        PUSH_REVENUE.labels(trigger)
        for kind in FEEDBACK_KINDS:
            PUSH_FEEDBACK.labels(trigger, kind)
    for topic in topics:
        for reason in DEAD_LETTER_REASONS:
            DEAD_LETTERS.labels(reason, bounded_label("topic", topic))
    for reason in MODEL_FAILURE_REASONS:
        MODEL_LOAD_FAILURES.labels(reason)
    for stage in TICK_STAGES:
        TICK_ERRORS.labels(stage)
    for stage in STAGES:
        STAGE_SECONDS.labels(stage)


def observe_many(histogram: Histogram, value: float, count: int) -> None:
    """Record ``count`` observations of ``value`` in one step (one bucket update, not ``count``).

    Equivalent to calling ``histogram.observe(value)`` ``count`` times; used on the hot path where a
    batch's per-event time is the same for every event in it.
    """
    if count <= 0:
        return
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:  # another prometheus-client layout
        for _ in range(count):
            histogram.observe(value)
        return
    total.inc(value * count)
    for i, bound in enumerate(bounds):
        if value <= bound:
            buckets[i].inc(count)
            break


def observe_stages(seconds: Mapping[str, float]) -> None:
    """Add a batch's time per stage (``Outcome.stage_seconds``) to ``kairos_stage_seconds_total``."""
    for stage, value in seconds.items():
        if value > 0:
            STAGE_SECONDS.labels(bounded_label("stage", stage, STAGES)).inc(value)


def observe_events(type_outcome_counts: Mapping[tuple[str, str], int], seconds_per_event: float) -> None:
    """Account for one processed batch.

    ``type_outcome_counts``: ``{(event_type, outcome): n}`` for the batch; ``seconds_per_event``: the
    batch's processing wall time divided by its number of events. One counter update per distinct
    (type, outcome) and one histogram update per batch, whatever the batch size. Also records the batch
    size and the time of this batch (``kairos_last_event_timestamp_seconds``).
    """
    n = 0
    for (event_type, outcome), count in type_outcome_counts.items():
        if count <= 0:
            continue
        n += count
        EVENTS.labels(
            bounded_label("type", event_type, (*EVENT_TYPES, UNKNOWN_TYPE)),
            bounded_label("outcome", outcome, EVENT_OUTCOMES),
        ).inc(count)
    if n:
        observe_many(EVENT_PROCESSING_SECONDS, seconds_per_event, n)
        BATCH_SIZE.observe(n)
        LAST_EVENT_TIMESTAMP.set(time.time())


def observe_dead_letter(reason: str, topic: str) -> None:
    """Count one refused input (``reason``: a contract dead-letter reason; ``topic``: its source topic)."""
    DEAD_LETTERS.labels(
        bounded_label("reason", reason, DEAD_LETTER_REASONS), bounded_label("topic", topic)
    ).inc()


def observe_push(trigger: str, latency_seconds: float | None) -> None:
    """Count one emitted push; ``latency_seconds``: now minus the triggering event's time (None: unknown)."""
    PUSHES.labels(bounded_label("trigger", trigger, TRIGGERS)).inc()
    if latency_seconds is not None and latency_seconds >= 0:
        PUSH_LATENCY_SECONDS.observe(latency_seconds)


def observe_suppression(trigger: str, reason: str, count: int = 1) -> None:
    """Count ``count`` suppressed push candidates (``reason``: the policy's short reason code)."""
    PUSH_SUPPRESSIONS.labels(
        bounded_label("trigger", trigger, TRIGGERS), bounded_label("suppression_reason", reason)
    ).inc(count)


def observe_feedback(trigger: str, kind: str, revenue: float = 0.0) -> None:
    """Count one answer to a push (``kind`` in open/click/purchase/dismiss) and its attributed revenue."""
    label = bounded_label("trigger", trigger, TRIGGERS)
    PUSH_FEEDBACK.labels(label, bounded_label("kind", kind, FEEDBACK_KINDS)).inc()
    if revenue > 0:
        PUSH_REVENUE.labels(label).inc(revenue)


def observe_interest(scores: Iterable[float]) -> None:
    """Record interest scores (0..1) the policy looked at; pass a sample if there are very many."""
    for score in scores:
        INTEREST_SCORE.observe(float(score))


def set_consumer_lag(topic: str, partition: int, lag: int) -> None:
    """Publish one partition's lag (negative values, from a stale high-watermark, count as 0)."""
    CONSUMER_LAG.labels(bounded_label("topic", topic), str(int(partition))).set(max(0, int(lag)))


def forget_partitions(topic_partitions: Iterable[tuple[str, int]]) -> None:
    """Stop reporting lag for partitions this process no longer owns (call on revoke)."""
    for topic, partition in topic_partitions:
        labels = (bounded_label("topic", topic), str(int(partition)))
        if multiprocess_enabled():
            # Removal is not supported across processes: a 0 written now wins "most recent".
            CONSUMER_LAG.labels(*labels).set(0)
        elif labels in _label_tuples(CONSUMER_LAG):
            CONSUMER_LAG.remove(*labels)


def set_state_size(store: str, keys: int, size_bytes: int) -> None:
    """Publish a state store's key count and size (estimates are fine)."""
    label = bounded_label("store", store)
    STATE_KEYS.labels(label).set(keys)
    STATE_BYTES.labels(label).set(size_bytes)


def set_recovery(in_progress: bool, remaining_messages: int = 0) -> None:
    """Publish recovery progress (``remaining_messages``: changelog messages still to replay)."""
    RECOVERY_IN_PROGRESS.set(1 if in_progress else 0)
    RECOVERY_REMAINING.set(max(0, remaining_messages) if in_progress else 0)


_model_lock = threading.Lock()
_current_model: list[str] = []


def set_model_version(version: str | None) -> None:
    """Mark ``version`` as the model being served (None: no model); the previous one drops to 0."""
    with _model_lock:
        for old in _current_model:
            if old != version:
                MODEL_INFO.labels(old).set(0)
        _current_model.clear()
        if version is not None:
            MODEL_INFO.labels(version).set(1)
            _current_model.append(version)


def current_model_version() -> str | None:
    """The version last passed to :func:`set_model_version` in this process."""
    with _model_lock:
        return _current_model[0] if _current_model else None


def _label_tuples(metric: Gauge) -> set[tuple[str, ...]]:
    # prometheus-client keeps children in `_metrics`; read-only use to avoid a KeyError on remove.
    return set(getattr(metric, "_metrics", {}).keys())


def render_latest() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` and its content type.

    In multi-process mode it merges the per-process files of ``PROMETHEUS_MULTIPROC_DIR``; otherwise it
    renders this process's default registry.
    """
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


def worker_started() -> None:
    """Mark this process as up (``kairos_worker_up``)."""
    WORKER_UP.set(1)


def worker_stopped() -> None:
    """Mark this process as down; in multi-process mode also drop its live gauges."""
    WORKER_UP.set(0)
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())


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


CONTENT_ITEMS = Counter(
    "kairos_content_items_added_total",
    "Catalogued items without history that the model placed from their content (title, category, image).",
)


CONTENT_ITEMS_WAITING = Gauge(
    "kairos_content_items_waiting",
    "Catalogued items the model lacks that wait to be placed from their content (a few per tick).",
    multiprocess_mode="livemostrecent",
)


def observe_input_updates(
    consent: int = 0, catalog: int = 0, catalog_late: int = 0, content_items: int = 0
) -> None:
    """Count consent and catalog records applied (dead letters are counted by :func:`observe_dead_letter`)."""
    if content_items > 0:
        CONTENT_ITEMS.inc(content_items)
    if consent > 0:
        CONSENT_UPDATES.inc(consent)
    if catalog > 0:
        CATALOG_UPDATES.inc(catalog)
    if catalog_late > 0:
        CATALOG_LATE.inc(catalog_late)


LATE_TIMERS = Counter(
    "kairos_late_timers_total",
    "Timers (a hold's release, a reminder that waits) that the partition's event-time clock passed between "
    "the decision's place in the stream and the decision: they fire an input late. Never expected (the "
    "engine decides before the clock can pass them); a non-zero value is a bug to report.",
)


def observe_late_timers(n: int) -> None:
    """Count timers a batch scheduled after its partition's clock passed them (``Outcome.late_timers``)."""
    if n > 0:
        LATE_TIMERS.inc(n)


# --- erasure, expiry and removed items -------------------------------------------------------------

USERS_ERASED = Counter(
    "kairos_users_erased_total",
    "Users erased on request (a consent tombstone): state, timers, index entries.",
)
USERS_EXPIRED = Counter(
    "kairos_users_expired_total", "Inactive users removed after worker.user_ttl_seconds (consent kept)."
)
CATALOG_REMOVALS = Counter(
    "kairos_catalog_removals_total", "Items removed from the catalog view (catalog tombstones)."
)


def observe_removals(erased: int = 0, expired: int = 0, catalog: int = 0) -> None:
    """Count erasures, expiries and catalog removals of one batch or tick."""
    if erased > 0:
        USERS_ERASED.inc(erased)
    if expired > 0:
        USERS_EXPIRED.inc(expired)
    if catalog > 0:
        CATALOG_REMOVALS.inc(catalog)
