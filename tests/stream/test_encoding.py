"""compact_json writes exactly what json.dumps with compact separators writes."""

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


@given(_values)
def test_same_bytes_as_json_dumps(value: object) -> None:
    assert compact_json(value) == json.dumps(value, separators=(",", ":")).encode("utf-8")


def test_edge_floats_and_ints() -> None:
    for value in (0.0, -0.0, 1e300, 5e-324, math.inf, -math.inf, math.nan, 2**70, -1, True, False):
        assert compact_json(value) == json.dumps(value, separators=(",", ":")).encode("utf-8")
