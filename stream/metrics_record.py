"""Recording into the metrics of :mod:`stream.metrics`: per-batch helpers for the hot path, bounded labels.

Every helper takes the labels as plain strings and passes them through :func:`bounded_label`, so a bug
that passes ids cannot explode the number of series. :func:`init_labels` creates the known label
combinations at start.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client import Gauge, Histogram

from stream.contract import DEAD_LETTER_REASONS, EVENT_TYPES, TRIGGERS
from stream.metrics import (
    ARRIVAL_ASKS_CAPPED,
    BATCH_SIZE,
    CATALOG_LATE,
    CATALOG_REMOVALS,
    CATALOG_UPDATES,
    CONSENT_UPDATES,
    CONSUMER_LAG,
    CONTENT_ITEMS,
    DEAD_LETTERS,
    DISCOVERY_CATEGORIES_LEFT_OUT,
    EVENT_OUTCOMES,
    EVENT_PROCESSING_SECONDS,
    EVENTS,
    FEEDBACK_KINDS,
    INTEREST_SCORE,
    LAST_EVENT_TIMESTAMP,
    LATE_TIMERS,
    MODEL_FAILURE_REASONS,
    MODEL_INFO,
    MODEL_LOAD_FAILURES,
    PUSH_FEEDBACK,
    PUSH_LATENCY_SECONDS,
    PUSH_REVENUE,
    PUSH_SUPPRESSIONS,
    PUSHES,
    RECOVERY_IN_PROGRESS,
    RECOVERY_REMAINING,
    STAGE_SECONDS,
    STATE_BYTES,
    STATE_KEYS,
    TICK_ERRORS,
    TICK_STAGES,
    UNKNOWN_TYPE,
    USER_LOAD_SOURCES,
    USER_RECORD_LOADS,
    USERS_ERASED,
    USERS_EXPIRED,
)
from stream.metrics_exposition import multiprocess_enabled
from stream.outcome import STAGES

# The value used for anything outside a label's allowed set.
OTHER = "other"

_LABEL_RE = re.compile(r"^[a-z][a-z0-9_\-.]{0,63}$")
# Most distinct free-form values one label may take (e.g. suppression reasons, store names).
MAX_FREE_LABEL_VALUES = 64
_seen_free: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


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
    for source in USER_LOAD_SOURCES:
        USER_RECORD_LOADS.labels(source)


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


def observe_arrival_asks_capped(n: int) -> None:
    """Count users a burst of new items did not reach (``Outcome.arrival_asks_capped``)."""
    if n > 0:
        ARRIVAL_ASKS_CAPPED.inc(n)


def observe_discovery_left_out(n: int) -> None:
    """Count categories left out of discovery pools (``Outcome.discovery_categories_left_out``)."""
    if n > 0:
        DISCOVERY_CATEGORIES_LEFT_OUT.inc(n)


def observe_late_timers(n: int) -> None:
    """Count timers a batch scheduled after its partition's clock passed them (``Outcome.late_timers``)."""
    if n > 0:
        LATE_TIMERS.inc(n)


def observe_user_loads(warm: int, read: int) -> None:
    """Count the user records a batch or tick loaded warm and from the store."""
    if warm > 0:
        USER_RECORD_LOADS.labels("warm").inc(warm)
    if read > 0:
        USER_RECORD_LOADS.labels("store").inc(read)


def observe_removals(erased: int = 0, expired: int = 0, catalog: int = 0) -> None:
    """Count erasures, expiries and catalog removals of one batch or tick."""
    if erased > 0:
        USERS_ERASED.inc(erased)
    if expired > 0:
        USERS_EXPIRED.inc(expired)
    if catalog > 0:
        CATALOG_REMOVALS.inc(catalog)
