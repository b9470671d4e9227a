"""What the tests of the native build's C extensions share: each is held to the bits of the numpy it
stands in for, and is loaded from the current build (the test process runs the sources)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from stream import native


def built_extension(name: str) -> ModuleType:
    """The C extension ``name`` of the current native build; the test skips where there is none (no C
    compiler: the worker then runs the numpy, which is the only path)."""
    module, status = native.load_built(name)
    if module is None:
        pytest.skip(f"no native build of {name} here ({status}); `make install` builds it")
    return module


def bits(a: np.ndarray) -> np.ndarray:
    """float32 values as their bit patterns, to compare to the last bit (-0.0 and NaNs included)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
