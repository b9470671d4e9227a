"""Test support for secure transport: a throwaway PKI and a Kafka gateway with TLS and SASL.

Tansu 0.6.0 (the embedded broker) serves neither TLS nor SASL (see docs/security.md for what was
tried), so the tests put :class:`KafkaGateway` in front of it, with the broker advertising the
gateway's address so that every reconnection goes through the gateway too:

    client --TLS (+ client certificate) [+ SASL]--> KafkaGateway --plain TCP--> Tansu

The gateway terminates TLS (Python's :mod:`ssl`, optionally requiring a client certificate signed
by the test CA) and, when given users, authenticates each connection the way a Kafka broker does
before it forwards anything: it relays ``ApiVersions`` to the broker and answers
``SaslHandshake`` (v1) and ``SaslAuthenticate`` (v0/v1) itself, for PLAIN (RFC 4616) and
SCRAM-SHA-256/512 (RFC 5802/7677, verified against the password, with the server signature the
client checks). Any other request before authentication closes the connection, as Kafka does.
After that it only copies bytes.

Certificates are made with the ``openssl`` command line (the ``cryptography`` package is not in
the project's environment); :func:`openssl_available` lets tests skip without it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import ssl
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from stream.broker import free_port

# Kafka protocol numbers used by the gateway.
API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
_MAX_FRAME = 1 << 20  # before authentication nothing legitimate is bigger
SCRAM_ITERATIONS = 4096


def openssl_available() -> bool:
    """Whether the ``openssl`` command line is installed."""
    return shutil.which("openssl") is not None


@dataclass(frozen=True)
class Pki:
    """A test CA with a server certificate (127.0.0.1, localhost) and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with ``key_password`` when one was given
    key_password: str | None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _signed(cwd: Path, name: str, subject: str, extensions: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=cwd,
    )  # fmt: skip


def make_pki(directory: Path, key_password: str | None = None) -> Pki:
    """Create the CA, the server and the client certificates under ``directory`` (EC P-256, 2 days)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=kairos-test-ca", "-days", "2", "-sha256",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem",
        cwd=directory,
    )  # fmt: skip
    _signed(
        directory,
        "server",
        "/CN=localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _signed(directory, "client", "/CN=kairos-worker", "extendedKeyUsage=clientAuth\n")
    client_key = directory / "client.key"
    if key_password is not None:
        # PKCS#8, AES-256: what `openssl pkcs8 -topk8` or a CA's tooling hands out.
        _openssl(
            "pkcs8", "-topk8", "-in", "client.key", "-v2", "aes-256-cbc", "-passout", f"pass:{key_password}",
            "-out", "client-encrypted.key",
            cwd=directory,
        )  # fmt: skip
        client_key = directory / "client-encrypted.key"
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=client_key,
        key_password=key_password,
    )


def server_context(pki: Pki, require_client_cert: bool) -> ssl.SSLContext:
    """The gateway's TLS context; ``require_client_cert``: only clients with a certificate from the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return context


# -- SASL (server side) ----------------------------------------------------------------------------


class SaslFailure(Exception):
    """The client's credentials or messages were refused (the reason goes back to the client)."""


class _Plain:
    """PLAIN (RFC 4616): one message ``authzid NUL authcid NUL password``."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.user: str | None = None

    def step(self, data: bytes) -> tuple[bytes, bool]:
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise SaslFailure("malformed PLAIN message")
        user, password = parts[1].decode("utf-8", "replace"), parts[2]
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password):
            raise SaslFailure(f"authentication failed for user {user!r}")
        self.user = user
        return b"", True


def _attributes(message: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in message.split(",") if "=" in item)


class _Scram:
    """SCRAM-SHA-256/512 server (RFC 5802): client-first → server-first → client-final → server-final."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.digest = "sha256" if mechanism == "SCRAM-SHA-256" else "sha512"
        self.users = users
        self.user: str | None = None
        self._first: tuple[str, str, str, bytes, str] | None = (
            None  # gs2 header, bare, server-first, salt, pw
        )

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.digest).digest()

    def step(self, data: bytes) -> tuple[bytes, bool]:
        message = data.decode("utf-8", "replace")
        if self._first is None:
            cbind, authzid, bare = (message.split(",", 2) + ["", ""])[:3]
            if cbind not in ("n", "y"):
                raise SaslFailure("channel binding is not supported")
            attrs = _attributes(bare)
            user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
            password = self.users.get(user)
            if password is None or "r" not in attrs:
                raise SaslFailure(f"authentication failed for user {user!r}")
            self.user = user
            salt = os.urandom(16)
            nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
            server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={SCRAM_ITERATIONS}"
            self._first = (f"{cbind},{authzid},", bare, server_first, salt, password)
            return server_first.encode(), False
        gs2, bare, server_first, salt, password = self._first
        without_proof, sep, proof_b64 = message.rpartition(",p=")
        attrs = _attributes(without_proof)
        if not sep or attrs.get("r") != _attributes(server_first)["r"]:
            raise SaslFailure("SCRAM nonce mismatch")
        if base64.b64decode(attrs.get("c", "")) != gs2.encode():
            raise SaslFailure("SCRAM channel binding mismatch")
        salted = hashlib.pbkdf2_hmac(self.digest, password.encode(), salt, SCRAM_ITERATIONS)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.digest, client_key).digest()
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = base64.b64decode(proof_b64)
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if len(proof) != len(signature) or not hmac.compare_digest(
            hashlib.new(self.digest, recovered).digest(), stored_key
        ):
            raise SaslFailure(f"authentication failed for user {self.user!r}")
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature), True


# -- Kafka framing ---------------------------------------------------------------------------------


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 < size <= _MAX_FRAME:
        raise ValueError(f"bad frame size {size}")
    return await reader.readexactly(size)


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _response(correlation_id: int, body: bytes) -> bytes:
    frame = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(frame)) + frame


@dataclass
class GatewayStats:
    """What the gateway saw (read by tests)."""

    connections: int = 0
    authenticated: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, user)
    refused: list[str] = field(default_factory=list)  # reasons


class KafkaGateway:
    """TLS and/or SASL in front of a plain Kafka broker, on a thread of its own (a context manager).

    ``tls``: the server context (see :func:`server_context`), or None for plain TCP.
    ``users``: SASL user → password; None forwards without authentication.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        tls: ssl.SSLContext | None,
        users: dict[str, str] | None = None,
        mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.tls = tls
        self.users = users
        self.mechanisms = mechanisms
        self.host = host
        self.port = port or free_port(host)
        self.stats = GatewayStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        """``host:port`` for clients (and for the broker to advertise)."""
        return f"{self.host}:{self.port}"

    def start(self) -> KafkaGateway:
        """Start listening (returns once the socket is bound)."""
        self._thread = threading.Thread(target=self._run, name="kafka-gateway", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise RuntimeError("gateway did not start") from self._error
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> KafkaGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        # TLS handshakes refused by design (no client certificate) are not errors of the gateway.
        self._loop.set_exception_handler(lambda _loop, _ctx: None)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._serve(reader, writer)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(
            on_client, self.host, self.port, ssl=self.tls, ssl_handshake_timeout=10 if self.tls else None
        )
        self._started.set()
        async with server:
            await self._stopped.wait()
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            if self.users is not None and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            pipes = [
                asyncio.ensure_future(_pipe(reader, up_writer)),
                asyncio.ensure_future(_pipe(up_reader, writer)),
            ]
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Speak SaslHandshake/SaslAuthenticate until the client is authenticated (True) or refused."""
        assert self.users is not None
        session: _Plain | _Scram | None = None
        mechanism = ""
        while True:
            frame = await _read_frame(reader)
            api_key, api_version, correlation_id, client_id_len = struct.unpack(">hhih", frame[:10])
            if api_key == API_VERSIONS:  # the broker says which versions it speaks
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                answer = await _read_frame(up_reader)
                writer.write(struct.pack(">i", len(answer)) + answer)
                await writer.drain()
                continue
            body = frame[10 + max(client_id_len, 0) :]
            if api_key == SASL_HANDSHAKE and api_version == 1:
                (n,) = struct.unpack(">h", body[:2])
                mechanism = body[2 : 2 + n].decode()
                listed = struct.pack(">i", len(self.mechanisms)) + b"".join(
                    _string(m) for m in self.mechanisms
                )
                if mechanism not in self.mechanisms:
                    self.stats.refused.append(f"mechanism {mechanism}")
                    writer.write(
                        _response(correlation_id, struct.pack(">h", UNSUPPORTED_SASL_MECHANISM) + listed)
                    )
                    await writer.drain()
                    return False
                session = _Plain(self.users) if mechanism == "PLAIN" else _Scram(mechanism, self.users)
                writer.write(_response(correlation_id, struct.pack(">h", 0) + listed))
                await writer.drain()
                continue
            if api_key == SASL_AUTHENTICATE and api_version in (0, 1) and session is not None:
                (n,) = struct.unpack(">i", body[:4])
                lifetime = struct.pack(">q", 0) if api_version >= 1 else b""
                try:
                    reply, done = session.step(body[4 : 4 + n])
                except SaslFailure as exc:
                    self.stats.refused.append(str(exc))
                    error = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + _string(str(exc))
                    writer.write(_response(correlation_id, error + struct.pack(">i", 0) + lifetime))
                    await writer.drain()
                    return False
                ok = struct.pack(">h", 0) + _string(None) + struct.pack(">i", len(reply)) + reply + lifetime
                writer.write(_response(correlation_id, ok))
                await writer.drain()
                if done:
                    self.stats.authenticated.append((mechanism, session.user or ""))
                    return True
                continue
            # Anything else before authentication (or an unsupported version): close, as Kafka does.
            self.stats.refused.append(f"request {api_key} v{api_version} before authentication")
            return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
