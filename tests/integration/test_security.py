"""Secure transport end to end: TLS, mutual TLS and SASL with every Kafka client Kairos builds.

Tansu 0.6.0 serves neither TLS nor SASL (docs/security.md), so a :class:`KafkaGateway` stands in
front of the real broker: it terminates TLS (requiring a client certificate for mutual TLS) and
speaks Kafka's SaslHandshake/SaslAuthenticate (PLAIN, SCRAM-SHA-256/512) before forwarding; the
broker advertises the gateway's address, so every connection a client opens goes through it.
The clients are the real ones, built from ``KAIROS_KAFKA__*`` settings through
``stream.security``: librdkafka (producers, readers, topic admin, the simulator) and aiokafka
(faust's consumer in the worker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from stream.broker import EmbeddedBroker, free_port
from stream.contract import CatalogUpdate, Event, Push, to_json_bytes
from stream.security import REDACTED, SecurityConfigError, faust_credentials, ssl_context
from stream.settings import KafkaConfig, Settings
from stream.simulator import SimConfig, World
from stream.topics import ensure_topics
from tests.support.tls import KafkaGateway, Pki, make_pki, openssl_available, server_context
from tests.support.worker import ROOT, WorkerProcess, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not openssl_available(), reason="the openssl command line is needed for test certificates"
    ),
]

KEY_PASSWORD = "k3y-Pa55-never-logged"
SASL_PASSWORD = "sasl-Pa55-never-logged"
USERS = {"kairos": SASL_PASSWORD}
T0 = 1_780_315_200.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate with an encrypted key."""
    return make_pki(tmp_path_factory.mktemp("pki"), key_password=KEY_PASSWORD)


@contextmanager
def secure_broker(
    pki: Pki | None, *, mutual: bool = False, users: dict[str, str] | None = None
) -> Iterator[KafkaGateway]:
    """Tansu behind a gateway (TLS when ``pki``, SASL when ``users``); yields the running gateway."""
    port = free_port()
    with EmbeddedBroker(advertised=f"127.0.0.1:{port}") as broker:
        tls = server_context(pki, require_client_cert=mutual) if pki else None
        with KafkaGateway(("127.0.0.1", broker.port), port=port, tls=tls, users=users) as gateway:
            yield gateway


def kafka_env(
    bootstrap: str,
    protocol: str,
    pki: Pki | None = None,
    *,
    client_cert: bool = True,
    mechanism: str | None = None,
    password: str = SASL_PASSWORD,
) -> dict[str, str]:
    """The ``KAIROS_KAFKA__*`` variables an operator would set for this connection."""
    env = {"KAIROS_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "KAIROS_KAFKA__SECURITY_PROTOCOL": protocol}
    if pki is not None:
        env["KAIROS_KAFKA__SSL_CAFILE"] = str(pki.ca)
        if client_cert:
            env["KAIROS_KAFKA__SSL_CERTFILE"] = str(pki.client_cert)
            env["KAIROS_KAFKA__SSL_KEYFILE"] = str(pki.client_key)
            env["KAIROS_KAFKA__SSL_KEY_PASSWORD"] = KEY_PASSWORD
    if mechanism is not None:
        env["KAIROS_KAFKA__SASL_MECHANISM"] = mechanism
        env["KAIROS_KAFKA__SASL_USERNAME"] = "kairos"
        env["KAIROS_KAFKA__SASL_PASSWORD"] = password
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from the environment exactly as the CLI reads them."""
    for key in [k for k in os.environ if k.startswith("KAIROS_KAFKA__")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def round_trip(settings: Settings, topic: str, n: int = 20) -> list[bytes]:
    """Produce ``n`` records with librdkafka and read the topic back, both built from the settings."""
    producer = Producer(
        {**settings.kafka.confluent_config(), "partitioner": "murmur2_random", "linger.ms": 2}
    )
    for i in range(n):
        producer.produce(topic, key=f"u{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(15) == 0, "not every record was delivered"
    return read_all(settings, topic)


def read_all(settings: Settings, topic: str) -> list[bytes]:
    """Every value on ``topic`` (to each partition's end), read over the configured security."""
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"sec-read-{time.monotonic_ns()}",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        parts = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        values: list[bytes] = []
        eof: set[int | None] = set()
        deadline = time.monotonic() + 15
        while len(eof) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                err = msg.error()
                if err is None:
                    values.append(msg.value() or b"")
                elif err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
        return values
    finally:
        consumer.close()


def aiokafka_round_trip(settings: Settings, topic: str) -> list[bytes]:
    """Produce and consume with aiokafka (faust's client) using the worker's credentials."""
    kafka = settings.kafka
    # Exactly what faust's aiokafka driver hands to its consumer and producer in the worker.
    auth = credentials_to_aiokafka_auth(faust_credentials(kafka))

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, **auth)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"from-aiokafka", key=b"k", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest", **auth
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=5000)
            return [m.value for msgs in batches.values() for m in msgs]
        finally:
            await consumer.stop()

    return asyncio.run(asyncio.wait_for(run(), 30))


def refused(settings: Settings) -> bool:
    """True when a librdkafka client built from ``settings`` cannot get metadata."""
    admin = AdminClient({**settings.kafka.confluent_config(), "socket.timeout.ms": 2000})
    try:
        admin.list_topics(timeout=3)
    except KafkaException:
        return True
    return False


# -- settings and credentials ----------------------------------------------------------------------


def test_sasl_ssl_builds_faust_credentials_with_the_client_certificate(pki: Pki) -> None:
    """Before stream.security this raised AttributeError (``faust.ssl``) and dropped the client cert."""
    kafka = KafkaConfig(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="kairos",
        sasl_password=SASL_PASSWORD,  # type: ignore[arg-type]
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
        ssl_key_password=KEY_PASSWORD,  # type: ignore[arg-type]
    )
    creds = faust_credentials(kafka)
    assert creds is not None and creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None  # type: ignore[attr-defined]
    assert SASL_PASSWORD not in repr(creds)
    conf = kafka.confluent_config()
    assert conf["ssl.certificate.location"] == str(pki.client_cert)
    assert conf["ssl.key.password"] == KEY_PASSWORD
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    # A wrong key password is refused with a message that names the files, not the password.
    wrong = kafka.model_copy(update={"ssl_key_password": SecretStr("not-it")})
    with pytest.raises(SecurityConfigError) as err:
        ssl_context(wrong)
    assert "not-it" not in str(err.value) and str(pki.client_key) in str(err.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"security_protocol": "SASL_SSL", "sasl_password": SASL_PASSWORD},  # no mechanism, no user
        {"security_protocol": "PLAINTEXT", "sasl_password": SASL_PASSWORD},  # SASL ignored silently
        {"security_protocol": "PLAINTEXT", "ssl_cafile": "/etc/ssl/ca.pem"},  # TLS ignored silently
        {"security_protocol": "SSL", "ssl_certfile": "/c.pem"},  # certificate without its key
    ],
)
def test_incomplete_security_is_refused_without_echoing_secrets(
    fields: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {f"KAIROS_KAFKA__{k.upper()}": v for k, v in fields.items()}
    with pytest.raises(ValidationError) as err:
        settings_from(env, monkeypatch)
    assert SASL_PASSWORD not in str(err.value)


def test_log_records_mask_the_passwords_as_written_and_as_repr_escapes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = 'pä$$"w\\0rd'  # non-ASCII, a quote and a backslash: repr() escapes each differently
    kafka = KafkaConfig(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="kairos",
        sasl_password=password,  # type: ignore[arg-type]
    )
    faust_credentials(kafka)  # the worker's path: installs the masking
    log = logging.getLogger("aiokafka.conn")
    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        # What aiokafka logs for a SASL/PLAIN request.
        log.debug(
            "Request: SaslAuthenticateRequest_v1(sasl_auth_bytes=%r)", b"\x00kairos\x00" + password.encode()
        )
        log.debug("as text %s and repr %r", password, password)
    text = caplog.text
    assert "kairos" in text and REDACTED in text
    for form in (password, repr(password)[1:-1], repr(password.encode())[2:-1]):
        assert form not in text


# -- TLS and mutual TLS ----------------------------------------------------------------------------


def test_tls_end_to_end_with_librdkafka_and_aiokafka(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    with secure_broker(pki) as gateway:
        address = gateway.address
        settings = settings_from(kafka_env(address, "SSL", pki, client_cert=False), monkeypatch)
        ensure_topics(settings)  # the admin client over TLS
        assert sorted(round_trip(settings, settings.topics.events)) == sorted(
            f"v{i}".encode() for i in range(20)
        )
        assert aiokafka_round_trip(settings, "tls-aiokafka") == [b"from-aiokafka"]
        # A plaintext client gets nothing from a TLS listener.
        plain = settings_from({"KAIROS_KAFKA__BOOTSTRAP_SERVERS": address}, monkeypatch)
        assert refused(plain)


def test_mutual_tls_requires_the_client_certificate(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    with secure_broker(pki, mutual=True) as gateway:
        address = gateway.address
        settings = settings_from(kafka_env(address, "SSL", pki), monkeypatch)  # encrypted key + password
        ensure_topics(settings)
        assert len(round_trip(settings, settings.topics.events)) == 20
        assert aiokafka_round_trip(settings, "mtls-aiokafka") == [b"from-aiokafka"]
        without_cert = settings_from(kafka_env(address, "SSL", pki, client_cert=False), monkeypatch)
        assert refused(without_cert)


# -- SASL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "PLAIN"),
    ],
)
def test_sasl_end_to_end_with_librdkafka_and_aiokafka(
    pki: Pki, protocol: str, mechanism: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = protocol == "SASL_SSL"
    with secure_broker(pki if tls else None, users=USERS) as gateway:
        address = gateway.address
        env = kafka_env(address, protocol, pki if tls else None, client_cert=False, mechanism=mechanism)
        settings = settings_from(env, monkeypatch)
        ensure_topics(settings)
        assert len(round_trip(settings, settings.topics.events)) == 20
        assert aiokafka_round_trip(settings, "sasl-aiokafka") == [b"from-aiokafka"]
        assert (mechanism, "kairos") in gateway.stats.authenticated
        assert not gateway.stats.refused
        wrong = settings_from({**env, "KAIROS_KAFKA__SASL_PASSWORD": "wrong"}, monkeypatch)
        assert refused(wrong)
        assert "authentication failed for user 'kairos'" in gateway.stats.refused


# -- the worker and the simulator ------------------------------------------------------------------


def _secure_produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**settings.kafka.confluent_config(), "partitioner": "murmur2_random"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(15) == 0


def test_worker_and_simulator_over_mutual_tls_and_sasl_leak_no_secret(
    pki: Pki, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ``kairos worker`` and ``kairos simulate`` on SASL_SSL with mutual TLS.

    PLAIN, because it is the mechanism whose bytes carry the password: aiokafka logs them at DEBUG.
    """
    with secure_broker(pki, mutual=True, users=USERS) as gateway:
        address = gateway.address
        env = kafka_env(address, "SASL_SSL", pki, mechanism="PLAIN")
        settings = settings_from(env, monkeypatch)
        ensure_topics(settings)
        world = World(SimConfig(seed=7, n_users=1500, n_items=600))
        catalog = world.initial_catalog()
        _secure_produce(
            settings, settings.topics.catalog, [(c.item_id.encode(), to_json_bytes(c)) for c in catalog]
        )
        item = next(c.item_id for c in catalog if isinstance(c, CatalogUpdate) and c.stock > 0)

        worker = WorkerProcess(
            address,
            tmp_path / "state",
            model_dir,
            {
                **env,
                "KAIROS_POLICY__THRESHOLD": "0.0",
                "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
                "KAIROS_POLICY__QUIET_HOURS_START": "00:00",
                "KAIROS_POLICY__QUIET_HOURS_END": "00:00",
                "KAIROS_LOG__LEVEL": "DEBUG",  # the most the log can say: still no secret
            },
        ).start()
        try:
            worker.wait_ready(60)
            event = Event(event_id="e-1", user_id="u-tls", type="view", item_id=item, ts=T0, session_id="s")
            _secure_produce(settings, settings.topics.events, [(b"u-tls", to_json_bytes(event))])

            def pushes() -> list[Push]:
                values = read_all(settings, settings.topics.pushes)
                return [Push.model_validate_json(v, strict=False) for v in values]

            wait_for(lambda: any(p.user_id == "u-tls" for p in pushes()), 30, what="a push over TLS")

            sim = subprocess.run(
                [sys.executable, "-m", "stream.cli", "simulate", "--seconds", "4", "--rate", "50",
                 "--users", "50", "--items", "600", "--no-create-topics"],
                env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert sim.returncode == 0, sim.stderr[-2000:]
            summary = json.loads(sim.stdout.strip().splitlines()[-1])
            assert summary["produced.events"] > 0 and summary["produced.delivery_errors"] == 0
            shown = subprocess.run(
                [sys.executable, "-m", "stream.cli", "settings"],
                env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert "kairos" in shown.stdout and str(pki.client_key) in shown.stdout
        finally:
            worker.stop()
        log = worker.log_path.read_text(errors="replace")
        assert "Authenticated as kairos via PLAIN" in log  # the worker's own clients went through SASL
        for output in (log, sim.stdout + sim.stderr, shown.stdout + shown.stderr):
            assert SASL_PASSWORD not in output
            assert KEY_PASSWORD not in output
