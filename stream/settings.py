"""One typed settings object for the whole of Kairos.

Every option has a default, an environment variable and a line of documentation. Nested groups
are read with a double underscore: ``KAIROS_KAFKA__BOOTSTRAP_SERVERS``, ``KAIROS_POLICY__MIN_GAP_SECONDS``.
``kairos settings`` prints the effective values (secrets masked) and ``docs/settings.md`` lists them all.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.policy_config import PolicyConfig

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Kafka's rule for topic names (kafka.common.internals.Topic): a broker refuses any other.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
TOPIC_NAME_RULE = (
    "A Kafka topic name (letters, digits, '.', '_', '-'; at most 249), unlike every other topic's."
)
CHANGELOG_SUFFIX = "-user-state-changelog"  # the user-state changelog is <worker.app_id><this>
TOPIC_FIELDS = ("events", "catalog", "consent", "pushes", "dead_letters", "decisions")  # TopicsConfig's names


def check_topic_name(name: str) -> None:
    """Raise ValueError unless a broker accepts ``name`` as a topic name."""
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"{name!r} is not a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-' (not '.' or '..')"
        )


class KafkaConfig(BaseModel):
    """How to reach the broker. With no bootstrap address the embedded Tansu broker is started."""

    # A validation error must not echo the input: it holds the SASL and key passwords.
    model_config = ConfigDict(hide_input_in_errors=True, allow_inf_nan=False)

    bootstrap_servers: str | None = Field(
        None,
        description="Kafka bootstrap servers (host:port,...). Unset or empty: start the embedded Tansu "
        "broker; blank is refused.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism; required when the protocol is SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_username: str | None = Field(None, description="SASL user name; required (not blank) with SASL.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (secret); required (not empty) with SASL."
    )
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) to verify the brokers' certificates; unset: the system CAs."
    )
    ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS; set together with ssl_keyfile."
    )
    ssl_keyfile: Path | None = Field(
        None, description="Client private key (PEM) for mutual TLS; set together with ssl_certfile."
    )
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted client private key (secret)."
    )
    ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to."
    )
    session_timeout_seconds: float = Field(
        10.0,
        ge=0.001,
        le=3600.0,
        description="Consumer group session timeout; short because the first join takes about half of it "
        "(0.001 to 3600; a broker may ask for more, Kafka's default minimum is 6).",
    )
    heartbeat_interval_seconds: float = Field(
        1.0,
        ge=0.001,
        description="Consumer group heartbeat interval (at least 0.001, less than session_timeout_seconds).",
    )
    fetch_max_wait_ms: int = Field(
        25,
        ge=10,
        le=300_000,
        description=(
            "Longest a fetch waits for data (a real Kafka answers as soon as data is there). The embedded "
            "broker stalls a consumer for seconds once serving a fetch takes about this long, which it "
            "does as its topics grow: 10 ms stalled the worker at 2,000 events/s within 10 s, 25 ms did "
            "not. 10 to 300000 (librdkafka's most)."
        ),
    )
    input_prefetch_messages: int = Field(
        1,
        ge=1,
        le=10_000_000,
        description=(
            "Records per input partition the bulk reader keeps fetched ahead (librdkafka "
            "queued.min.messages, 1 to 10000000): a partition with this many waiting is not fetched again "
            "until the worker takes them. Fewer, fuller fetches: about 40 % less event->push latency at "
            "2,000/s on the embedded broker, whose fetches cost CPU in proportion to the topic's size."
        ),
    )
    input_fetch_backoff_ms: int = Field(
        5,
        ge=0,
        le=300_000,
        description=(
            "How long the bulk reader postpones the next fetch of a partition that still has "
            "input_prefetch_messages waiting (librdkafka fetch.queue.backoff.ms, 0 to 300000; its default "
            "of 1 s would stall a worker that keeps up)."
        ),
    )
    embedded_port: int = Field(
        0, ge=0, le=65535, description="Port of the embedded broker (0-65535); 0 picks a free one."
    )
    embedded_host: str = Field("127.0.0.1", description="Loopback address the embedded broker listens on.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str | None) -> str | None:
        # Empty means unset (the embedded broker); a value with no host in it (blanks, commas) was taken
        # as a broker list and failed only after the clients' 15 s metadata timeout at start.
        if value and not value.replace(",", " ").strip():
            raise ValueError(
                f"{value!r} names no broker: host:port entries separated by commas (unset or empty starts "
                "the embedded broker)"
            )
        return value

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> KafkaConfig:
        if self.heartbeat_interval_seconds >= self.session_timeout_seconds:
            raise ValueError(
                f"KAIROS_KAFKA__HEARTBEAT_INTERVAL_SECONDS ({self.heartbeat_interval_seconds:g}) must be "
                f"less than KAIROS_KAFKA__SESSION_TIMEOUT_SECONDS ({self.session_timeout_seconds:g}): the "
                "group drops a member whose session ends before its next heartbeat"
            )
        return self

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaConfig:
        """Refuse at start a security setup that would silently connect differently than asked."""
        sasl = self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if sasl:
            # Empty counts as missing: the clients were then built with an empty user or password
            # (librdkafka_security asserts both are there).
            given = {
                "sasl_mechanism": self.sasl_mechanism is not None,
                "sasl_username": bool(self.sasl_username and self.sasl_username.strip()),
                "sasl_password": bool(self.sasl_password and self.sasl_password.get_secret_value()),
            }
            missing = [f"KAIROS_KAFKA__{name.upper()}" for name, ok in given.items() if not ok]
            if missing:
                raise ValueError(f"security_protocol={self.security_protocol} needs {', '.join(missing)}")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise ValueError(
                f"SASL settings are given but security_protocol={self.security_protocol}: "
                "use SASL_PLAINTEXT or SASL_SSL, or remove them"
            )
        ssl_given = [
            name
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
            if getattr(self, name) is not None
        ]
        if ssl_given and not tls:
            raise ValueError(
                f"{', '.join(ssl_given)} given but security_protocol={self.security_protocol} "
                "does not use TLS: use SSL or SASL_SSL, or remove them"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both KAIROS_KAFKA__SSL_CERTFILE and KAIROS_KAFKA__SSL_KEYFILE")
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ValueError("KAIROS_KAFKA__SSL_KEY_PASSWORD given without KAIROS_KAFKA__SSL_KEYFILE")
        return self

    def confluent_config(self) -> dict[str, str | int | float]:
        """The librdkafka settings for this broker, security included (holds secrets: never log it)."""
        from stream.security import librdkafka_security

        if not self.bootstrap_servers:
            raise ValueError("no bootstrap servers: start the embedded broker first")
        return {"bootstrap.servers": self.bootstrap_servers, **librdkafka_security(self)}


class TopicsConfig(BaseModel):
    """Topic names and partition counts. Events, consent and pushes are keyed by user."""

    events: str = Field("events", description=f"Behaviour events, keyed by user. {TOPIC_NAME_RULE}")
    catalog: str = Field(
        "catalog", description=f"Catalog and promotion updates, keyed by item (compacted). {TOPIC_NAME_RULE}"
    )
    consent: str = Field(
        "consent", description=f"Consent / opt-out updates, keyed by user (compacted). {TOPIC_NAME_RULE}"
    )
    pushes: str = Field(
        "pushes", description=f"Outbound pushes for marketing, keyed by user. {TOPIC_NAME_RULE}"
    )
    dead_letters: str = Field(
        "dead-letters", description=f"Malformed input with its reason and original bytes. {TOPIC_NAME_RULE}"
    )
    decisions: str = Field(
        "push-decisions", description=f"Audit trail of push decisions (when enabled). {TOPIC_NAME_RULE}"
    )
    partitions: int = Field(
        4,
        ge=1,
        description="Partitions of the user-keyed topics (events, consent, pushes); at least 1, and what "
        "they have on the broker (the worker refuses to start otherwise).",
    )
    replication_factor: int = Field(
        1,
        description=(
            "Replication factor for topics Kairos creates (-1: the broker's default; else at least 1)."
        ),
    )

    @field_validator(*TOPIC_FIELDS)
    @classmethod
    def _topic_name(cls, value: str) -> str:
        check_topic_name(value)
        return value

    @model_validator(mode="after")
    def _distinct(self) -> TopicsConfig:
        """One topic for two purposes loops or loses input: dead letters read back as events and
        dead-lettered again, consent read as events (opt-outs never applied), pushes as events."""
        seen: dict[str, str] = {}
        for name in TOPIC_FIELDS:
            topic = getattr(self, name)
            if topic in seen:
                raise ValueError(
                    f"KAIROS_TOPICS__{seen[topic].upper()} and KAIROS_TOPICS__{name.upper()} are both "
                    f"{topic!r}: every topic needs its own name"
                )
            seen[topic] = name
        return self

    @field_validator("replication_factor")
    @classmethod
    def _replication(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"must be -1 (the broker's default) or at least 1, got {value}")
        return value


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
        "folder: 1 to 228 letters, digits, '.', '_' or '-' (not '.' or '..').",
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
        description="An event older than this when decided on gets no in-session push (too late); at least "
        "0.",
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
        longest = 249 - len(CHANGELOG_SUFFIX)
        if not _TOPIC_NAME.match(value) or value in (".", "..") or len(value) > longest:
            raise ValueError(
                f"{value!r} cannot name the group, the changelog topic and the state folder: 1 to "
                f"{longest} letters, digits, '.', '_' or '-' (not '.' or '..')"
            )
        return value


class LogConfig(BaseModel):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_format: bool = Field(False, description="Write logs as JSON lines (one object per record).")


class ConsoleConfig(BaseModel):
    """The live page for marketing (``kairos console``; docs/console.md)."""

    model_config = ConfigDict(allow_inf_nan=False)  # see Settings

    host: str = Field(
        "127.0.0.1",
        description="Address the console page is served on (loopback by default; empty: every interface).",
    )
    port: int = Field(8010, ge=0, le=65535, description="Port of the console page (0 picks a free one).")
    start: Literal["latest", "earliest"] = Field(
        "latest", description="Where the console starts reading the topics: 'latest' (now on) or 'earliest'."
    )
    window: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Recent pushes, decisions and dead letters kept and shown (the only user data held).",
    )
    attribution_pushes: int = Field(
        20_000, ge=1, description="Recent pushes remembered (digests) to attribute opens, clicks, purchases."
    )
    update_seconds: float = Field(
        0.5, gt=0.0, le=3600.0, description="How often an open page is sent what changed (at most 3600)."
    )
    max_clients: int = Field(8, ge=1, description="Most pages open at once; more are refused (503).")
    dead_letters: bool = Field(True, description="Also read the dead-letter topic and show refused inputs.")


class Settings(BaseSettings):
    """All of Kairos's configuration. Read from ``KAIROS_*`` environment variables and ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="KAIROS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # errors must not echo secrets (SASL and key passwords)
        # No setting means anything as NaN or an infinity: NaN made every comparison false (a rule or
        # health check silently off), an infinity crashed a push's validation or a timer.
        allow_inf_nan=False,
    )

    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data",
        description="Folder with the public session datasets (never committed to the project).",
    )
    demo_seconds: float | None = Field(None, description="Stop `kairos demo` after this many seconds.")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @model_validator(mode="after")
    def _changelog_is_its_own_topic(self) -> Settings:
        changelog = self.worker.app_id + CHANGELOG_SUFFIX
        for name in TOPIC_FIELDS:
            if getattr(self.topics, name) == changelog:
                raise ValueError(
                    f"KAIROS_TOPICS__{name.upper()} is {changelog!r}, the user-state changelog of "
                    "KAIROS_WORKER__APP_ID: every topic needs its own name"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


# KAIROS_* variables of the project's own files that are not options: docker-compose's host folder of
# the models, the tests' artifact folder.
NOT_SETTINGS = frozenset({"KAIROS_MODELS_HOST_DIR", "KAIROS_TEST_ARTIFACTS"})


def setting_variables() -> list[str]:
    """Every environment variable that sets an option: ``KAIROS_<OPTION>`` for the top-level ones,
    ``KAIROS_<GROUP>__<OPTION>`` for the options of a group."""
    names = []
    for name, info in Settings.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names += [f"KAIROS_{name.upper()}__{option.upper()}" for option in group.model_fields]
        else:
            names.append(f"KAIROS_{name.upper()}")
    return names


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``KAIROS_*`` variables in ``environ`` that set nothing, each with the option it most likely
    meant: the settings ignore unknown names (an option removed since a deployment was written must not
    stop it), so a misspelt one (``KAIROS_POLICY__THRESHHOLD``) would otherwise go unnoticed."""
    known = setting_variables()
    known_upper = set(known)
    lines = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith("KAIROS_") or name in NOT_SETTINGS:
            continue
        # A dict option may be set one key at a time (KAIROS_POLICY__TRIGGER_THRESHOLDS__PRICE_DROP).
        if name in known_upper or (name.count("__") > 1 and "__".join(name.split("__")[:2]) in known_upper):
            continue
        lines.append(variable + _did_you_mean(name, known))
    return lines


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log a warning naming each ``KAIROS_*`` variable that sets nothing (:func:`unknown_variables`);
    returns them. Called once a command has set up its logging, so the warning is in its format."""
    unknown = unknown_variables(os.environ if environ is None else environ)
    for line in unknown:
        log.warning("ignoring %s: no such setting (docs/settings.md lists them)", line)
    return unknown


def _did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean KAIROS_X__Y?)`` for the known variable ``name`` most likely misspells, or ``""``.

    Within a known group only the option's part is compared: every name of a group shares its long
    prefix, which would make any two of them look alike."""
    group, _, option = name.rpartition("__")
    in_group = {
        known_name.rpartition("__")[2]: known_name
        for known_name in known
        if known_name.startswith(group + "__")
    }
    if group and in_group:
        close = difflib.get_close_matches(option, list(in_group), n=1, cutoff=0.75)
        return f" (did you mean {in_group[close[0]]}?)" if close else ""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
    return f" (did you mean {close[0]}?)" if close else ""


def settings_errors(error: ValidationError) -> list[str]:
    """One line per refused setting of ``Settings()``, named by its environment variable.

    ``policy.max_pushes_per_24h`` is ``KAIROS_POLICY__MAX_PUSHES_PER_24H``; a rule over several options
    of a group (``min_threshold`` above ``max_threshold``) is named by the group, ``KAIROS_POLICY__*``.
    Inputs are never shown (they may be secrets).
    """
    groups = {
        name
        for name, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 2:
            name = f"KAIROS_{loc[0].upper()}__{loc[1].upper()}" + "".join(f"[{part}]" for part in loc[2:])
        elif loc:
            name = f"KAIROS_{loc[0].upper()}" + ("__*" if loc[0] in groups else "")
        else:
            name = "KAIROS_*"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return lines


def settings_markdown() -> str:
    """Every setting as a markdown table: environment variable, default, description (docs/settings.md)."""
    lines = [
        "# Settings",
        "",
        "Generated by `kairos settings --markdown` from `stream/settings.py`; a test keeps it current.",
        "Every option is read from its environment variable (or `.env`); nested groups use `__`.",
        "Numbers must be finite (NaN and infinities are refused). A value out of range stops every",
        "`kairos` command at start (exit code 78) with one line per refused variable. A `KAIROS_*`",
        "variable that sets nothing (misspelt, or an option since removed) is ignored with a warning",
        "that names the option it most likely meant.",
        "",
    ]

    def table(title: str, model: type[BaseModel], prefix: str) -> None:
        lines.extend([f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"])
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                continue
            factory = info.default_factory
            default = factory() if factory is not None else info.default  # type: ignore[call-arg]
            shown = "(secret)" if "Secret" in str(annotation) else f"`{default}`"
            if isinstance(default, Path):
                # Relative to the checkout, so the document is the same wherever the project lives.
                shown = f"`{os.path.relpath(default, PROJECT_ROOT)}`"
            text = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name.upper()}` | {shown} | {text} |")
        lines.append("")

    table("General", Settings, "KAIROS_")
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            table(
                f"{name} — {(annotation.__doc__ or '').strip().splitlines()[0]}",
                annotation,
                f"KAIROS_{name.upper()}__",
            )
    return "\n".join(lines)
