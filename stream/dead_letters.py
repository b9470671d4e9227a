"""Dead letters: a refused input wrapped for the ``dead-letters`` topic, with its reason, a bounded copy of
the original (exact up to a size, else a prefix with the whole value's size and SHA-256) and where it came
from, so it can be inspected and replayed. A dead letter always fits a broker's message size, whatever it
wraps (:func:`dead_letter_size_bound`). Part of the wire contract (``docs/contract.md``); the reasons are
:data:`stream.contract.DEAD_LETTER_REASONS`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Literal

import pydantic_core
from pydantic import Field

from stream.contract import ContractError, DeadLetterReason, _Strict
from stream.text import plain_text

# Dead-letter bounds. The original value is kept up to ``max_original_bytes`` (a setting,
# ``worker.dead_letter_max_original_bytes``); past it, a prefix plus its size and SHA-256. The default
# is above ``worker.max_event_bytes``, so every record not refused for its size is kept whole.
DEFAULT_DEAD_LETTER_ORIGINAL_BYTES = 65_536
MAX_DEAD_LETTER_ORIGINAL_BYTES = 262_144  # the setting's upper limit: keeps dead letters far below 1 MB
DEAD_LETTER_KEY_BYTES = 256  # keys longer than this keep their first bytes plus size and SHA-256
DEAD_LETTER_ERROR_CHARS = 1_024  # the error text is cut here
# Everything but the original, the key and the error (ids, topic, offsets, hashes, field names) fits
# in this, with room: topic names are at most 249 characters in Kafka.
_DEAD_LETTER_FIXED_BYTES = 2_048


def dead_letter_size_bound(max_original_bytes: int = DEFAULT_DEAD_LETTER_ORIGINAL_BYTES) -> int:
    """Most bytes a dead letter takes on the wire: its JSON value plus its Kafka key, all included.

    The kept original escapes to at most twice its size (text is kept only while its JSON escaping
    stays within that, else it is base64, 4/3); the key (at most :data:`DEAD_LETTER_KEY_BYTES`
    bytes, kept as text with undecodable bytes as ``\\xNN``) at most 6 bytes a byte in JSON plus
    4 as the Kafka key; the error at most 6 bytes a character.
    """
    return (
        2 * max_original_bytes
        + 10 * DEAD_LETTER_KEY_BYTES
        + 6 * DEAD_LETTER_ERROR_CHARS
        + _DEAD_LETTER_FIXED_BYTES
    )


class DeadLetter(_Strict):
    """A refused input on the ``dead-letters`` topic, with what is needed to inspect and replay it.

    ``original`` holds the refused value whole when it is at most the configured size
    (``worker.dead_letter_max_original_bytes``), else its first bytes with ``original_truncated``
    set; ``original_size`` and ``original_sha256`` always describe the whole value. The key is kept
    the same way (``original_key``, at most :data:`DEAD_LETTER_KEY_BYTES` of it). So a dead letter
    never exceeds :func:`dead_letter_size_bound`, whatever it wraps.
    """

    v: Literal[1] = 1
    original: str
    original_encoding: Literal["utf-8", "base64"]
    original_size: int = Field(0, description="Bytes of the whole original value.")
    original_sha256: str | None = Field(None, description="SHA-256 (hex) of the whole original value.")
    original_truncated: bool = Field(False, description="Only the first bytes of the original are kept.")
    original_key: str | None = Field(
        None, description="The record's key as text (undecodable bytes as \\xNN); its first bytes if long."
    )
    original_key_size: int | None = Field(None, description="Bytes of the whole key (when it had one).")
    original_key_sha256: str | None = Field(
        None, description="SHA-256 (hex) of the whole key, when the key was cut."
    )
    source_topic: str
    partition: int
    offset: int
    reason: DeadLetterReason
    error: str
    received_at: float

    def original_bytes(self) -> bytes:
        """The refused value's bytes as kept: exactly as it arrived unless ``original_truncated``.

        When truncated this is the value's first bytes; check ``original_size`` and
        ``original_sha256`` before replaying (:meth:`is_complete`).
        """
        if self.original_encoding == "base64":
            return base64.b64decode(self.original)
        return self.original.encode("utf-8")

    def is_complete(self) -> bool:
        """Whether :meth:`original_bytes` is the whole original value (safe to replay as is)."""
        return not self.original_truncated


def _as_text(kept: bytes, cut: bool) -> tuple[str, bytes] | None:
    """``kept`` decoded as UTF-8 (and the bytes that text is), or None when it is not UTF-8.

    When ``kept`` was cut from a longer value the cut may split a character: the split character's
    first bytes are then left out.
    """
    try:
        return kept.decode("utf-8"), kept
    except UnicodeDecodeError as exc:
        if not (cut and exc.reason == "unexpected end of data" and exc.end == len(kept)):
            return None
        whole = kept[: exc.start]  # everything before the split character decoded fine
        return whole.decode("utf-8"), whole


def _keep(data: bytes, limit: int) -> tuple[str, Literal["utf-8", "base64"], bool]:
    """``data`` cut to ``limit`` bytes, as it goes into a dead letter: (text, encoding, cut?).

    UTF-8 text stays readable while its JSON escaping at most doubles it (quotes and backslashes
    double, control characters take six bytes each); otherwise base64 (4/3, whatever the bytes).
    """
    cut = len(data) > limit
    kept = data[:limit]
    decoded = _as_text(kept, cut)
    if decoded is not None:
        text, text_bytes = decoded
        if len(pydantic_core.to_json(text)) - 2 <= 2 * len(text_bytes):
            return text, "utf-8", cut
    return base64.b64encode(kept).decode("ascii"), "base64", cut


def dead_letter(
    raw: bytes | None,
    key: bytes | None,
    error: ContractError,
    source_topic: str,
    partition: int,
    offset: int,
    received_at: float | None = None,
    max_original_bytes: int = DEFAULT_DEAD_LETTER_ORIGINAL_BYTES,
) -> DeadLetter:
    """Wrap refused input so it can be inspected and replayed, within :func:`dead_letter_size_bound`.

    The value is kept exactly up to ``max_original_bytes`` (as UTF-8 text, or base64 when it is not
    UTF-8 or its JSON escaping would more than double it); past that only its first bytes are kept,
    and ``original_size`` / ``original_sha256`` describe the whole. A key longer than
    :data:`DEAD_LETTER_KEY_BYTES` keeps its first bytes plus its size and SHA-256. The error text is
    cut at :data:`DEAD_LETTER_ERROR_CHARS` and is one line of plain text (:func:`stream.text.plain_text`).
    """
    data = raw or b""
    limit = max(0, min(max_original_bytes, MAX_DEAD_LETTER_ORIGINAL_BYTES))
    original, encoding, truncated = _keep(data, limit)
    key_text = key_size = key_sha = None
    if key is not None:
        key_size = len(key)
        key_text = key[:DEAD_LETTER_KEY_BYTES].decode("utf-8", errors="backslashreplace")
        if len(key) > DEAD_LETTER_KEY_BYTES:
            key_sha = hashlib.sha256(key).hexdigest()
    detail = error.detail
    if len(detail) > DEAD_LETTER_ERROR_CHARS:
        detail = detail[: DEAD_LETTER_ERROR_CHARS - 3] + "..."
    # A detail is prose, but may quote input (an unknown field's name): never let a lone surrogate into
    # the output, and keep it one line of plain text.
    detail = detail.encode("utf-8", errors="backslashreplace").decode("utf-8")[:DEAD_LETTER_ERROR_CHARS]
    detail = plain_text(detail)
    return DeadLetter(
        original=original,
        original_encoding=encoding,
        original_size=len(data),
        original_sha256=hashlib.sha256(data).hexdigest(),
        original_truncated=truncated,
        original_key=key_text,
        original_key_size=key_size,
        original_key_sha256=key_sha,
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        reason=error.reason,
        error=detail,
        received_at=time.time() if received_at is None else received_at,
    )
