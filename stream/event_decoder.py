"""The ``events`` topic's decoder: plain messages decoded by msgspec, the rest by the contract.

:func:`stream.contract.parse_event` is the contract's reference parser (pydantic: it gives every
refusal its reason, and :class:`~stream.contract.Event` generates the published JSON Schema). The
worker reads each event as a :class:`ValidEvent`, a msgspec struct with the same fields and the same
constraints, decoded straight from the JSON in a third of pydantic's time
(``benchmarks/event_parsing.py``); a message the struct does not accept goes to the reference parser,
which refuses it with its reason or accepts it (and its event becomes a :class:`ValidEvent`). For
every message the struct accepts, the reference parser accepts the same fields with the same types:
``tests/stream/test_event_decoder.py`` fuzzes the two against each other.

The struct lives in :mod:`stream.valid_event`, so that this module's per-event checks are compiled with
the native build (``stream.native``: a Struct cannot be).
"""

from __future__ import annotations

import re

import msgspec

from stream.contract import EventContext, parse_event
from stream.text import ID_FORBIDDEN_RAW_UTF8
from stream.valid_event import ValidContext, ValidEvent

__all__ = ["ValidContext", "ValidEvent", "decode_event", "plain_event"]

_DECODER = msgspec.json.Decoder(ValidEvent)
# The one "v" key with the literal 1, JSON whitespace allowed around it: most producers' serializers
# write `"v": 1, ` (Python's json.dumps by default), which would otherwise all go the slow way.
_VERSION_1 = re.compile(rb'"v"[ \t\n\r]*:[ \t\n\r]*1[ \t\n\r]*[,}]')
_KNOWN_ZONES: set[str] = set()
_BACKSLASH, _DEL, _C1_LEAD = 0x5C, 0x7F, 0xC2


def decode_event(raw: bytes | None, max_bytes: int = 16_384) -> ValidEvent:
    """One ``events`` message as the worker reads it; :class:`~stream.contract.ContractError` when it
    breaks the contract (the reference parser's reason)."""
    event = plain_event(raw, max_bytes)
    return event if event is not None else ValidEvent.of(parse_event(raw, max_bytes))


def plain_event(raw: bytes | None, max_bytes: int) -> ValidEvent | None:
    """The event decoded by msgspec when the message is plain; else None (the reference parser decides).

    Messages left to the reference parser: anything msgspec refuses; a ``v`` other than the literal
    ``1``, JSON whitespace around it allowed (a second ``v`` key would hide the first); DEL or a C1
    control character anywhere (the ids may hold none; other fields may, and are then read slowly); any
    backslash (escapes: the reference parser refuses lone surrogates, and without a backslash every
    quote delimits a string, so the ``v`` test reads keys only); and what
    :class:`~stream.contract.Event` checks beyond field constraints (an item on a search and none on
    anything else; a known time zone).
    """
    # The byte searches look for a byte value (an int): CPython finds one with memchr, ten times as fast
    # as the same byte as a one-byte bytes needle (about 25 against 250 ns on an event of 240 bytes).
    if raw is None or len(raw) > max_bytes or _BACKSLASH in raw:
        return None
    # The ids' control characters (stream.text.ID_FORBIDDEN): U+0000-U+001F cannot stand unescaped in
    # JSON (msgspec refuses them) and escapes go the slow way; DEL and U+0080-U+009F in any field send
    # the message to the reference parser. Two byte searches first (DEL, and 0xC2, which leads every
    # C1 control in UTF-8): most messages hold neither, and the pattern costs more.
    if (_DEL in raw or _C1_LEAD in raw) and ID_FORBIDDEN_RAW_UTF8.search(raw) is not None:
        return None
    # One "v" key at most (as raw.count: the second is looked for after the first's end), and it the
    # literal 1; the pattern is matched where that key is, not searched for.
    first = raw.find(b'"v"')
    if first >= 0 and (raw.find(b'"v"', first + 3) >= 0 or _VERSION_1.match(raw, first) is None):
        return None
    try:
        event = _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if (event.type == "search") != (event.item_id is None):  # Event._item_rules
        return None
    ctx = event.context
    if ctx is not None:
        zone = ctx.time_zone
        if zone is not None and zone not in _KNOWN_ZONES and not _known_zone(zone):
            return None
    return event


def _known_zone(name: str) -> bool:
    """Whether ``name`` is a time zone :class:`EventContext` accepts; remembers the first thousand."""
    try:
        EventContext._known_zone(name)
    except ValueError:
        return False
    if len(_KNOWN_ZONES) < 1_000:  # bounded: a hostile producer cannot grow it
        _KNOWN_ZONES.add(name)
    return True
