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

# C0 and C1 controls with DEL (line breaks, NUL, ESC of terminal sequences), the Unicode line and
# paragraph separators, the bidirectional controls (Unicode's Bidi_Control property: marks,
# embeddings, overrides and isolates, which can reorder the words around them on screen), and lone
# surrogates.
UNSAFE: tuple[int, ...] = (
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    0x061C,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    # Lone surrogates: the contract refuses them, but text that holds one cannot be encoded to UTF-8
    # (a log handler drops the whole line); written as an escape, it can.
    *range(0xD800, 0xE000),
)
_UNSAFE_RUN = re.compile("[" + "".join(re.escape(chr(c)) for c in UNSAFE) + "]+")
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
