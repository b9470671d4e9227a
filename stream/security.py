"""Transport security for every Kafka client Kairos builds: TLS, mutual TLS and SASL.

One place turns :class:`~stream.settings.KafkaConfig` into what each client library wants:

- :func:`librdkafka_security`: the ``security.protocol`` / ``ssl.*`` / ``sasl.*`` keys for
  confluent-kafka (the worker's producer and readers, the simulator, the benchmarks, topic admin);
- :func:`ssl_context`: an :class:`ssl.SSLContext` (CA, client certificate, key password) for
  aiokafka, which faust uses to consume;
- :func:`faust_credentials`: the ``broker_credentials`` of the faust app.

Secrets (the SASL password, the key password) leave :class:`pydantic.SecretStr` only here, into
the client configuration; nothing in this module logs them. aiokafka, however, logs every request
at DEBUG, and a SASL/PLAIN request carries the password: :func:`redact_secrets_in_logs` (called by
:func:`faust_credentials`) masks the secrets in every log record of the process. See
``docs/security.md``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
from faust.types.auth import CredentialsT

if TYPE_CHECKING:
    from stream.settings import KafkaConfig


class SecurityConfigError(ValueError):
    """The security settings cannot produce a working client (a missing file, a bad key password)."""


def uses_tls(kafka: KafkaConfig) -> bool:
    """Whether the connection is encrypted (``SSL`` or ``SASL_SSL``)."""
    return kafka.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(kafka: KafkaConfig) -> bool:
    """Whether the client authenticates with SASL (``SASL_PLAINTEXT`` or ``SASL_SSL``)."""
    return kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _existing(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise SecurityConfigError(f"{what} {path} does not exist or is not a file")
    return str(path)


def librdkafka_security(kafka: KafkaConfig) -> dict[str, str]:
    """The librdkafka (confluent-kafka) security settings for ``kafka``.

    Holds the secrets in clear: pass it to a client, never log it.
    """
    conf: dict[str, str] = {"security.protocol": kafka.security_protocol}
    if uses_sasl(kafka):
        assert kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password  # validated in settings
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username
        conf["sasl.password"] = kafka.sasl_password.get_secret_value()
    if uses_tls(kafka):
        ca = _existing(kafka.ssl_cafile, "KAIROS_KAFKA__SSL_CAFILE")
        if ca:
            conf["ssl.ca.location"] = ca
        cert = _existing(kafka.ssl_certfile, "KAIROS_KAFKA__SSL_CERTFILE")
        key = _existing(kafka.ssl_keyfile, "KAIROS_KAFKA__SSL_KEYFILE")
        if cert and key:
            conf["ssl.certificate.location"] = cert
            conf["ssl.key.location"] = key
            if kafka.ssl_key_password is not None:
                conf["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
        # librdkafka verifies the broker's host name against its certificate by default ("https").
        conf["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else "none"
    return conf


def ssl_context(kafka: KafkaConfig) -> ssl.SSLContext | None:
    """The TLS context for aiokafka (None without TLS): CA, client certificate and key, host check."""
    if not uses_tls(kafka):
        return None
    context = ssl.create_default_context(cafile=_existing(kafka.ssl_cafile, "KAIROS_KAFKA__SSL_CAFILE"))
    context.check_hostname = kafka.ssl_check_hostname
    cert = _existing(kafka.ssl_certfile, "KAIROS_KAFKA__SSL_CERTFILE")
    key = _existing(kafka.ssl_keyfile, "KAIROS_KAFKA__SSL_KEYFILE")
    if cert and key:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
        try:
            context.load_cert_chain(cert, key, password)
        except ssl.SSLError as exc:
            # The message names the files, never the password.
            raise SecurityConfigError(
                f"cannot load the client certificate {cert} with key {key} "
                "(wrong KAIROS_KAFKA__SSL_KEY_PASSWORD, or the key does not match the certificate)"
            ) from exc
    return context


REDACTED = "**********"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def _redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_secrets_in_logs(kafka: KafkaConfig) -> None:
    """Mask the SASL and key passwords in every log record this process creates from now on.

    Why: aiokafka logs each request at DEBUG, and the SASL/PLAIN request is ``\\0user\\0password``.
    A log record factory sees every record whatever the handler (faust installs its own), and only
    records whose level is enabled, so INFO logging pays nothing for DEBUG lines.
    """
    found = [
        s.get_secret_value()
        for s in (kafka.sasl_password, kafka.ssl_key_password)
        if s is not None and len(s.get_secret_value()) >= 4  # masking "a" would mangle every line
    ]
    if not found:
        return
    # As written, and as repr() of str or bytes escapes it (aiokafka logs the bytes' repr).
    variants = {v for secret in found for v in (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1])}
    with _secrets_lock:
        first = not _secrets
        _secrets.update(variants)
        if not first:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: logging reports it at emit, as usual
                return record
            masked = _redact(message)
            if masked != message:
                record.msg, record.args = masked, None
            return record

        logging.setLogRecordFactory(factory)


def faust_credentials(kafka: KafkaConfig) -> CredentialsT | None:
    """``broker_credentials`` for the faust app (aiokafka driver); None for PLAINTEXT.

    Also masks the secrets in this process's logs (:func:`redact_secrets_in_logs`).
    """
    redact_secrets_in_logs(kafka)
    context = ssl_context(kafka)
    if uses_sasl(kafka):
        assert kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password  # validated in settings
        # With an SSL context faust selects SASL_SSL, without it SASL_PLAINTEXT.
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
