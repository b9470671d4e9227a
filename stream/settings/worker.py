"""The worker process, the model it serves and its logs: ``KAIROS_WORKER__*``, ``KAIROS_MODEL__*``,
``KAIROS_LOG__*`` (part of :class:`stream.settings.Settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from stream.settings.kafka import APP_ID_MAX_LENGTH, CHANGELOG_SUFFIX, check_topic_name
from stream.settings.paths import PROJECT_ROOT


class ModelConfig(BaseModel):
    """Which model the worker serves."""

    model_config = ConfigDict(allow_inf_nan=False)  # see Settings

    dir: Path = Field(
        PROJECT_ROOT / ".kairos" / "models" / "current",
        description="Model artifact directory the worker loads and watches for hot reload.",
    )
    reload_check_seconds: float = Field(
        5.0, description="How often the model directory is checked for a new artifact."
    )
    content_items_per_tick: int = Field(
        100,
        ge=1,
        description=(
            "Most items without history placed from content per catalog batch or tick (about 30 ms "
            "each): a large catalog the model lacks is placed over several ticks, never stalling the loop."
        ),
    )
    content: Literal["auto", "require", "off"] = Field(
        "auto",
        description=(
            "Items without history placed from their catalog content when the model has a content "
            "mapping: 'auto' = when the text model loads (else a warning), 'require' = refuse a model "
            "whose text model cannot load, 'off' = never (unknown items stay unknown)."
        ),
    )


class WorkerConfig(BaseModel):
    """The stream worker process."""

    model_config = ConfigDict(allow_inf_nan=False)  # see Settings

    app_id: str = Field(
        "kairos",
        description="Consumer group / application id; also prefixes changelog topics and names the state "
        f"folder: 1 to {APP_ID_MAX_LENGTH} letters, digits, '.', '_' or '-' (not '.' or '..').",
    )
    state_dir: Path = Field(
        PROJECT_ROOT / ".kairos" / "state",
        description="Where the worker keeps its local RocksDB state: a folder, made when missing (not a "
        "file).",
    )
    web_port: int = Field(
        8000,
        ge=0,
        le=65535,
        description="Port for /metrics, /healthz and /readyz (0-65535; 0 picks a free one).",
    )
    web_host: str = Field(
        "127.0.0.1",
        description="Address of the metrics and health server; containers set 0.0.0.0 (Dockerfile, compose). "
        "Empty, like 0.0.0.0, means every interface.",
    )
    web_max_connections: int = Field(
        16, description="Most requests the metrics and health server serves at once; more are refused."
    )
    web_socket_timeout_seconds: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="A metrics/health client idle this long is disconnected (no thread held); more than 0, "
        "at most 3600.",
    )
    loop_stall_seconds: float = Field(
        15.0,
        gt=0.0,
        description="/healthz fails when the event loop has not run its heartbeat task for this long (more "
        "than 0).",
    )
    consume_stall_seconds: float = Field(
        60.0,
        gt=0.0,
        description="/healthz fails when recovered partitions have lag but no batch completed for this long "
        "(more than 0).",
    )
    broker_probe_seconds: float = Field(
        5.0,
        gt=0.0,
        le=86_400.0,
        description="How often a metadata request checks the broker (readiness works when idle); more than "
        "0, at most 86400.",
    )
    broker_timeout_seconds: float = Field(
        30.0,
        gt=0.0,
        description="/readyz fails when the broker has not answered for this long (more than "
        "broker_probe_seconds, or an idle worker turns unready between probes).",
    )
    recovery_retry_seconds: float = Field(
        1.0,
        gt=0.0,
        description="First wait before retrying a failed partition recovery (doubles per failure; more "
        "than 0).",
    )
    recovery_retry_max_seconds: float = Field(
        30.0,
        description="Longest wait between retries of a failed partition recovery (at least "
        "recovery_retry_seconds).",
    )
    max_event_bytes: int = Field(
        16_384,
        ge=1024,
        description="Larger inputs are refused to the dead-letter topic (at least 1024: a well-formed event "
        "or catalog update can take more than 1 KiB).",
    )
    max_catalog_items: int = Field(
        1_000_000,
        ge=1,
        description="Most catalog items a worker holds (each costs about 1.6 KB, and every worker holds the "
        "whole catalog): an update for a new item beyond it is dead-lettered (catalog_full) until items are "
        "removed, so a producer publishing endless new ids cannot exhaust every worker's memory.",
    )
    batch_size: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Most events processed together in one scoring batch (1 to 1,000,000, the most "
        "librdkafka hands over in one call).",
    )
    input_reader: Literal["bulk", "faust"] = Field(
        "bulk",
        description=(
            "How events and consent are read: 'bulk' = librdkafka batches on faust's assignment "
            "(stream/bulk_input.py), 'faust' = faust's own per-record stream (slower, kept to compare)."
        ),
    )
    commit_overlap: bool = Field(
        True,
        description="With bulk input, commit batches in stages (pushes, then changelog, then RocksDB) as the "
        "broker acknowledges them, while the next batches are processed; false commits each batch whole, "
        "waiting for the broker, before the next (stream/commit_pipeline.py). Same pushes and state "
        "either way.",
    )
    commit_overlap_min_batch: int = Field(
        128,
        ge=1,
        description="With commit_overlap, the smallest batch (records) committed in stages: a smaller one, "
        "read while the worker keeps up with its input, is committed whole at once (staging pays under a "
        "backlog; at 2,000 events/s, batches of about 20, it raised event->push p50 by 3-12 ms: "
        "benchmarks/README.md, 'Staged commits').",
    )
    gc_young_threshold: int = Field(
        50_000,
        ge=0,
        le=2**31 - 1,
        description=(
            "Allocations between two young garbage collections in the worker (0: Python's 700; at most "
            "2147483647, gc.set_threshold's C int). The engine makes short-lived objects per event; "
            "reference counting frees them, cycles still go."
        ),
    )
    gc_freeze: bool = Field(
        True,
        description="Move the start-up objects (model, libraries, catalog) out of the collector's scans.",
    )
    batch_wait_seconds: float = Field(
        0.005,
        gt=0.0,
        description="Longest wait to fill a batch (faust input; bulk input takes what is fetched); more "
        "than 0.",
    )
    dedupe_event_ids: int = Field(
        64, ge=1, description="Recent event ids remembered per user to drop redeliveries (at least 1)."
    )
    recent_items: int = Field(20, description="Recent items (with their event types) kept per user.")
    user_record_version: int = Field(
        3,
        ge=2,
        le=3,
        description="The encoding user records are written in: 3 (K3, typed rows: faster to read and write) "
        "or 2 (K2, what workers before 2026-12-07 read). Every worker reads both; write 2 while a rolling "
        "deploy may hand a partition back to an older worker (docs/operations.md).",
    )
    warm_users_per_partition: int = Field(
        256,
        ge=0,
        description="Decoded records of the users written last kept in memory per partition, so their "
        "next batch skips the store read and the decode (about 5 KB each; more keeps more objects for "
        "the garbage collector to scan, docs/architecture.md); 0 turns it off.",
    )
    session_gap_seconds: float = Field(
        1800.0,
        gt=0.0,
        description="Inactivity after which a user's next event starts a new session (fresh GRU state); more "
        "than 0.",
    )
    clock: Literal["wall", "event"] = Field(
        "wall",
        description="Decision clock: 'wall' = max(event time, wall time); 'event' = event time (replays).",
    )
    max_event_lag_seconds: float = Field(
        600.0,
        ge=0.0,
        description="An event older than this when decided on (behind the wall clock, or with the event "
        "clock behind its partition's latest event) gets no in-session push (too late); at least 0.",
    )
    decision_interval_seconds: float = Field(
        60.0, description="In-session decisions per user at most this often (event time); add_to_cart always."
    )
    audit_decisions: bool = Field(False, description="Write every push decision to the decisions topic.")
    tick_seconds: float = Field(
        1.0,
        gt=0.0,
        description="How often due timers (cart abandonment, ...) are checked (more than 0); the tick also "
        "applies catalog updates, so a worker is ready only after its first tick.",
    )
    user_ttl_seconds: float = Field(
        30 * 86400.0,
        gt=0,
        description="A user inactive this long is forgotten (state and changelog tombstoned; opt-outs kept).",
    )
    dead_letter_max_original_bytes: int = Field(
        65_536,
        ge=0,
        le=262_144,
        description="Dead letters keep the refused value up to this size; past it: prefix, size, SHA-256.",
    )
    max_future_skew_seconds: float = Field(
        300.0,
        ge=0.0,
        description="Inputs whose time is further ahead of the wall clock than this are dead-lettered.",
    )

    @model_validator(mode="after")
    def _retry_waits_ordered(self) -> WorkerConfig:
        if self.recovery_retry_max_seconds < self.recovery_retry_seconds:
            raise ValueError(
                f"KAIROS_WORKER__RECOVERY_RETRY_MAX_SECONDS ({self.recovery_retry_max_seconds:g}) must be at "
                f"least KAIROS_WORKER__RECOVERY_RETRY_SECONDS ({self.recovery_retry_seconds:g})"
            )
        return self

    @model_validator(mode="after")
    def _probe_within_timeout(self) -> WorkerConfig:
        if self.broker_probe_seconds >= self.broker_timeout_seconds:
            raise ValueError(
                f"KAIROS_WORKER__BROKER_PROBE_SECONDS ({self.broker_probe_seconds:g}) must be less than "
                f"KAIROS_WORKER__BROKER_TIMEOUT_SECONDS ({self.broker_timeout_seconds:g}): an idle worker "
                "hears from the broker only through the probe and would turn unready between probes"
            )
        return self

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(
                f"{value} is a file, not a folder: the worker keeps its state in folders under it"
            )
        return value

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        # The group id (librdkafka aborts the process on an empty one), the changelog topic's prefix
        # and a folder under state_dir ('..' would be state_dir's parent).
        try:
            if value in ("", ".", ".."):  # a folder's own names; nothing
                raise ValueError(value)
            check_topic_name(value + CHANGELOG_SUFFIX)  # holds Kafka's rule, and so the length
        except ValueError:
            raise ValueError(
                f"{value!r} cannot name the group, the changelog topic and the state folder: 1 to "
                f"{APP_ID_MAX_LENGTH} letters, digits, '.', '_' or '-' (not '.' or '..')"
            ) from None
        return value


class LogConfig(BaseModel):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_format: bool = Field(False, description="Write logs as JSON lines (one object per record).")
