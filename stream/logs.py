"""Logging setup: plain text for people, JSON lines for log shippers.

JSON records carry ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message`` and every
field passed through ``extra=`` (``log.info("push emitted", extra={"user_id": u, "trigger": t})``),
plus ``exc`` with the traceback when there is one. Each line is one line to any reader: control,
line-separator and bidirectional-control characters (:data:`stream.text.UNSAFE`) are written as JSON
``\\u`` escapes, whatever the message or a field quotes.

Personal data: log ids only (pseudonymous user, item, event and push ids) and never event payloads,
search queries, titles or credentials. As a safety net, extra fields whose names are in
:data:`REDACTED_FIELDS` are written as ``"[redacted]"``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from stream.text import escaped, json_escaped

# Extra-field names never written in clear (free text typed by shoppers, or secrets).
REDACTED_FIELDS = frozenset(
    {"query", "email", "phone", "name", "address", "password", "sasl_password", "token"}
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call passed with ``extra=``, redacted where needed."""
    extras: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        extras[key] = "[redacted]" if key in REDACTED_FIELDS else _jsonable(value)
    return extras


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_extras(record).items():
            payload.setdefault(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        # Non-ASCII text stays readable, but no control, line-separator or bidirectional-control
        # character stands raw in the line (json.dumps escapes C0 controls only).
        return json_escaped(json.dumps(payload, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """Human-readable lines; extras are appended as ``key=value``.

    The message and the extras are one line whatever they quote: control, line-separator and
    bidirectional characters are written as visible escapes (:func:`stream.text.escaped`), so a
    request line or an id cannot forge a log line or send escapes to a terminal. A traceback keeps its
    lines.
    """

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - the base class's name
        """The first line (time, level, logger, message), escaped."""
        return escaped(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as text, extras last."""
        line = super().format(record)
        extras = record_extras(record)
        if extras:
            line += " " + escaped(" ".join(f"{k}={v}" for k, v in extras.items()))
        return line


class _KairosHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so a second call replaces it instead of doubling lines."""


def configure_logging(level: str = "INFO", json_format: bool = False, stream: TextIO | None = None) -> None:
    """Set up the root logger: ``level`` (DEBUG/INFO/WARNING/ERROR), JSON lines or text, to stderr.

    Idempotent: calling it again replaces the handler it installed before. Noisy libraries (kafka
    clients, faust internals) are held at WARNING unless ``level`` is DEBUG.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _KairosHandler):
            root.removeHandler(handler)
    handler = _KairosHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("aiokafka", "kafka", "faust", "mode", "urllib3"):
        logging.getLogger(name).setLevel(quiet)


class LogBudget:
    """At most ``per_window`` log lines of one kind per ``window_seconds``; the rest are counted.

    A record that breaks the engine logs its traceback; a flood of them (a bug that a producer's
    records keep hitting) must not flood the logs at the input's rate. What is held back is still
    dead-lettered and counted in the metrics; the next line that goes out says how many were held.
    """

    def __init__(
        self, per_window: int = 10, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_window = per_window
        self.window_seconds = window_seconds
        self._clock = clock
        self._window_start = -math.inf
        self._used = 0
        self._held = 0

    def take(self) -> int | None:
        """None when this line must be held back; else how many were held back since the last line
        that went out (to say so in this one)."""
        now = self._clock()
        if now - self._window_start >= self.window_seconds:
            self._window_start, self._used = now, 0
        if self._used >= self.per_window:
            self._held += 1
            return None
        self._used += 1
        held, self._held = self._held, 0
        return held
