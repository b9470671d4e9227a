"""compact_json writes JSON that reads back to exactly the value it was given."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from stream.encoding import compact_json

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


def _same(value: object) -> None:
    # json.dumps of what was read back equals json.dumps of the value: every float bit for bit
    # (repr round-trips), NaN and the infinities included, every string and key, ints of any size.
    written = compact_json(value)
    assert json.dumps(json.loads(written)) == json.dumps(value)


@given(_values)
def test_reads_back_to_the_same_value(value: object) -> None:
    _same(value)


def test_edge_floats_ints_and_text() -> None:
    for value in (
        0.0,
        -0.0,
        1e300,
        5e-324,
        1e-05,
        1e16,
        math.inf,
        -math.inf,
        math.nan,
        2**70,
        -1,
        True,
        False,
    ):
        _same(value)
        _same({"x": [value, value]})
    for text in ("é", "日本", 'a"b\\c', "\x00\u2028", "\ud800", "null"):
        _same(text)
        _same({text: [text, 1.5]})


def test_numbers_keep_the_standard_librarys_text() -> None:
    # Scalars (the trending and interest rows) are written as before, byte for byte.
    for value in (1.5, 0.001, 1e-05, 1e16, 3, -7, math.nan, math.inf):
        assert compact_json(value) == json.dumps(value, separators=(",", ":")).encode()
    assert compact_json({"a": [1, 2.5, "x"]}) == b'{"a":[1,2.5,"x"]}'
