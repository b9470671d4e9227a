"""Text that Kairos writes for people: one line of plain text, whatever its inputs held.

The contract lets catalog titles and categories (and dead-lettered input) carry any character: line
breaks, NUL, terminal escapes, bidirectional overrides. Where Kairos quotes them in a sentence of its
own (a push's ``reason``, a dead letter's ``error``, the demo's printed lines), :func:`plain_text`
keeps that sentence one line that reads as written: it is never markup either, so a consumer still
escapes it for its medium (HTML, a shell, a template).
"""

from __future__ import annotations

import re

# C0 and C1 controls with DEL (line breaks, NUL, ESC of terminal sequences), the Unicode line and
# paragraph separators, and the bidirectional controls (Unicode's Bidi_Control property: marks,
# embeddings, overrides and isolates, which can reorder the words around them on screen).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def plain_text(text: str) -> str:
    """``text`` with each run of control, line-separator and bidirectional-control characters made one
    space; anything else (emoji, accents, zero-width joiners, markup characters) is kept as is."""
    return _UNSAFE.sub(" ", text)
