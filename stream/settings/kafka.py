"""The broker and the topics: ``KAIROS_KAFKA__*`` and ``KAIROS_TOPICS__*`` (part of
:class:`stream.settings.Settings`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

# Kafka's rule for topic names (kafka.common.internals.Topic): a broker refuses any other.
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
TOPIC_NAME_RULE = (
    "A Kafka topic name (letters, digits, '.', '_', '-'; at most 249), unlike every other topic's."
)
CHANGELOG_SUFFIX = "-user-state-changelog"  # the user-state changelog is <worker.app_id><this>
APP_ID_MAX_LENGTH = 249 - len(CHANGELOG_SUFFIX)  # so that the changelog's name is one Kafka accepts
TOPIC_FIELDS = ("events", "catalog", "consent", "pushes", "dead_letters", "decisions")  # TopicsConfig's names


def check_topic_name(name: str) -> None:
    """Raise ValueError unless a broker accepts ``name`` as a topic name."""
    if not TOPIC_NAME.match(name) or name in (".", ".."):
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
            # Kafka refuses a topic whose name differs from another's only by '.' and '_' (they
            # collide in its metrics' names): the second topic could never be created.
            same = topic.replace(".", "_")
            if same in seen:
                first = getattr(self, seen[same])
                both = f"are both {topic!r}"
                if first != topic:
                    both = f"({first!r}, {topic!r}) differ only by '.' and '_'"
                raise ValueError(
                    f"KAIROS_TOPICS__{seen[same].upper()} and KAIROS_TOPICS__{name.upper()} {both}: "
                    "every topic needs its own name"
                )
            seen[same] = name
        return self

    @field_validator("replication_factor")
    @classmethod
    def _replication(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"must be -1 (the broker's default) or at least 1, got {value}")
        return value
