"""Strict JSON for everything the benchmarks write: their ``--json`` lines and ``benchmarks/reports/*.json``.

A figure that is undefined in a run (no holdout users, a single user, nothing bought to compare with)
is NaN in memory, and ``json.dumps`` writes it ``NaN`` (an infinity ``Infinity``) by default. That is
not JSON: ``jq``, JavaScript's ``JSON.parse`` and every strict parser refuse the whole file. So every
benchmark writes its JSON with :func:`dumps`, which writes such a figure as ``null``.

Reading back, ``json.loads`` gives ``None`` there. The reports and charts were written for the NaN a
run holds in memory (``n/a`` in a table, a bar left out), so a reader turns the ``None`` of a figure
back into NaN with :func:`nan_if_null` and shows it exactly as it shows the fresh run's. Files written
before this (with ``NaN`` in them) still read, as ``json.loads`` accepts ``NaN``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float in it, however deeply nested in dicts, lists and
    tuples, replaced by ``None``; everything else is kept as it is (keys included)."""
    if isinstance(value, float):  # numpy's float64 too (a float subclass)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)`` as strict JSON: each NaN or infinity written ``null``.

    ``default`` is ``json.dumps``'s (``float`` for numpy scalars, ``str`` for paths): what it returns
    goes through :func:`finite_or_none` too, so a numpy ``float32`` NaN is written ``null`` as well.
    ``allow_nan=False`` makes a non-finite float that still got through an error, not invalid JSON.
    """

    def strict_default(obj: Any) -> Any:
        assert default is not None  # only passed on when given
        return finite_or_none(default(obj))

    return json.dumps(
        finite_or_none(value),
        allow_nan=False,
        default=strict_default if default is not None else None,
        **kwargs,
    )


def nan_if_null(value: Any) -> Any:
    """A figure read back from a benchmark's JSON: ``None`` (an undefined figure, written ``null`` by
    :func:`dumps`) as the NaN the run held; any other value as it is."""
    return math.nan if value is None else value
