"""What the benchmarks write is strict JSON: an undefined figure (NaN, an infinity) is null, and a reader
turns that null back into the NaN the run held (``benchmarks/json_out.py``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import json_out


def _refuse(constant: str) -> float:
    raise ValueError(f"not strict JSON: {constant}")


def test_non_finite_floats_are_written_null_however_deep() -> None:
    value = {
        "lift": math.nan,
        "ci": [1.5, math.inf, (-math.inf, np.float64("nan"))],
        "per_seed": {"11": {"effect": 2.0, "ci95": float("nan")}},
        "n": 3,
        "label": "NaN",  # text is text
    }
    text = json_out.dumps(value, sort_keys=True)
    assert json.loads(text, parse_constant=_refuse) == {
        "ci": [1.5, None, [None, None]],
        "label": "NaN",
        "lift": None,
        "n": 3,
        "per_seed": {"11": {"ci95": None, "effect": 2.0}},
    }


def test_what_default_returns_is_made_strict_too() -> None:
    # model_quality and cold_items pass default=float for numpy scalars: a float32 NaN got through.
    text = json_out.dumps({"ece": np.float32("nan"), "r": np.float32(0.5), "path": Path("a")}, default=str)
    assert json.loads(text, parse_constant=_refuse) == {"ece": "nan", "r": "0.5", "path": "a"}
    text = json_out.dumps({"ece": np.float32("nan"), "r": np.float32(0.5)}, default=float)
    assert json.loads(text, parse_constant=_refuse) == {"ece": None, "r": 0.5}
    with pytest.raises(TypeError):  # no default: what json.dumps refuses is still refused
        json_out.dumps({"r": np.float32(0.5)})


def test_finite_results_are_written_exactly_as_json_dumps_writes_them() -> None:
    # The committed reports' JSON did not change: same keys, order, floats and layout.
    value = {"b": [0.1, 1e-05, 2, True, None], "a": {"x": np.float64(1 / 3), 3: "int key"}, "t": (1, 2)}
    for kwargs in ({}, {"indent": 1, "sort_keys": False}, {"indent": 2, "default": float}):
        assert json_out.dumps(value, **kwargs) == json.dumps(value, **kwargs)


def test_a_null_read_back_is_the_nan_the_run_held() -> None:
    assert math.isnan(json_out.nan_if_null(None))
    assert json_out.nan_if_null(0.0) == 0.0 and json_out.nan_if_null(7) == 7
    assert json_out.nan_if_null("n/a") == "n/a"
