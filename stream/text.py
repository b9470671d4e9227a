"""Text that Kairos writes for people: one line, read as written, whatever its inputs held.

The contract lets catalog titles and categories (and dead-lettered input) carry any character: line
breaks, NUL, terminal escapes, bidirectional overrides; an HTTP client can put terminal escapes in a
request line. Where Kairos quotes such text in a line of its own, one of three functions keeps that
line whole, over the same set of characters (:data:`UNSAFE`):

- :func:`plain_text` for text meant to be read (a push's ``reason``, a dead letter's ``error``, the
  demo's printed lines): each run of them becomes one space;
- :func:`escaped` for logs, where what was sent matters: each becomes a visible escape (``\\x1b``);
- :func:`json_escaped` for JSON text (the JSON log lines): each becomes JSON's own ``\\u`` escape, so
  the document still decodes to the same strings.

None makes text markup-safe: a consumer still escapes it for its medium (HTML, a shell, a template).
"""

from __future__ import annotations

import re

# Every set of characters Kairos treats apart is defined here, once, with a name. Text for people
# leaves out all of UNSAFE; other uses take the part they need, and say why below.

# C0 controls, DEL and C1 controls: line breaks, NUL, ESC and CSI of terminal sequences, NEL.
CONTROLS: tuple[int, ...] = (*range(0x00, 0x20), *range(0x7F, 0xA0))
# The Unicode line and paragraph separators.
LINE_SEPARATORS: tuple[int, ...] = (0x2028, 0x2029)
# Unicode's Bidi_Control property: marks, embeddings, overrides and isolates, which can reorder the
# words around them on screen.
BIDI_CONTROLS: tuple[int, ...] = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
# Lone surrogates: the contract refuses them, but text that holds one cannot be encoded to UTF-8 (a
# log handler drops the whole line); written as an escape, it can.
LONE_SURROGATES: tuple[int, ...] = tuple(range(0xD800, 0xE000))

# What text for people never shows raw (plain_text, escaped, json_escaped): all of the above.
UNSAFE: tuple[int, ...] = (*CONTROLS, *LINE_SEPARATORS, *BIDI_CONTROLS, *LONE_SURROGATES)

# What an id may not hold (stream.contract.Id): CONTROLS only, narrower than UNSAFE on purpose. Ids
# are opaque keys that producers choose and the contract is published: refusing line separators or
# bidi marks now would dead-letter input that is valid today (right-to-left ids may carry marks).
# Ids are never shown raw anyway: logs escape them, the console isolates them, a collapse key
# holding one is digested. Refusing CONTROLS also keeps ids apart from the state store's bookkeeping
# keys, which start with NUL (stream.store.META_KEY), and from the \x1f separator of composite keys.
# Lone surrogates are refused for the whole message (stream.contract.has_lone_surrogate).
ID_FORBIDDEN: tuple[int, ...] = CONTROLS


def _character_class(codes: tuple[int, ...]) -> str:
    return "[" + "".join(re.escape(chr(c)) for c in codes) + "]"


def _utf8_pattern(codes: tuple[int, ...]) -> re.Pattern[bytes]:
    """A pattern that finds any of ``codes`` in UTF-8 bytes: per leading bytes, one class of last bytes."""
    last_bytes: dict[bytes, list[int]] = {}
    for c in codes:
        encoded = chr(c).encode("utf-8")
        last_bytes.setdefault(encoded[:-1], []).append(encoded[-1])
    return re.compile(
        b"|".join(
            re.escape(lead) + b"[" + b"".join(re.escape(bytes([b])) for b in sorted(ends)) + b"]"
            for lead, ends in sorted(last_bytes.items())
        )
    )


ID_FORBIDDEN_CHARACTER = re.compile(_character_class(ID_FORBIDDEN))
# ID_FORBIDDEN's characters that may stand unescaped in a JSON string (DEL and C1; JSON requires C0
# escaped), found in a raw UTF-8 message: the event decoder's fast path (stream.event_decoder).
ID_FORBIDDEN_RAW_UTF8 = _utf8_pattern(tuple(c for c in ID_FORBIDDEN if c >= 0x20))

# Visible ASCII, "!" to "~": what a collapse key must be made of to go as is into an HTTP/2 header
# (stream.push_records.collapse_key). An allow-list, not a subset of UNSAFE's complement on purpose:
# a header must not hold spaces or any non-ASCII character either.
VISIBLE_ASCII: tuple[int, ...] = tuple(range(0x21, 0x7F))
VISIBLE_ASCII_CLASS = _character_class(VISIBLE_ASCII)

_UNSAFE_RUN = re.compile(_character_class(UNSAFE) + "+")
_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in UNSAFE}
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in UNSAFE}  # all in the Basic Multilingual Plane: one escape each


def plain_text(text: str) -> str:
    """``text`` with each run of control, line-separator and bidirectional-control characters made one
    space; anything else (emoji, accents, zero-width joiners, markup characters) is kept as is."""
    return _UNSAFE_RUN.sub(" ", text)


def escaped(text: str) -> str:
    """``text`` with each control, line-separator and bidirectional-control character written as a
    visible escape (``\\n``'s character as ``\\x0a``, U+202E as ``\\u202e``): one line, nothing hidden."""
    return text.translate(_ESCAPES)


def json_escaped(document: str) -> str:
    """``document``, JSON text, with each control, line-separator and bidirectional-control character
    that stands raw in it written as JSON's escape (U+2028 as ``\\u2028``).

    For JSON written by :func:`json.dumps`: outside strings it has only ASCII punctuation, digits,
    literals and whitespace, so these characters stand in strings only, where the escape decodes to the
    same character. ``json.dumps(..., ensure_ascii=False)`` escapes C0 controls itself but keeps DEL,
    C1 controls, U+2028/U+2029 and bidirectional controls raw: a log shipper or terminal showing them
    is fooled (U+2028 ends a line for some JavaScript consumers; an override reorders what is read).
    """
    return document.translate(_JSON_ESCAPES)
