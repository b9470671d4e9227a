"""Optional native build of the worker's hot modules (mypyc), and loading it only while it is current.

The engine's per-event work (bookkeeping, indexes, timers, policy rules, the decider) is plain typed
Python. mypyc compiles the same source files to C extensions: ~25 % less engine time per event on the
live-paced benchmark workload, with the same pushes and states bit for bit (``benchmarks/
stream_throughput.py`` reports which build it ran; ``tests/bench/test_push_outcomes_repro.py`` runs
one world pure and one native and compares every figure).

* ``python -m stream.native_build`` (``make install`` runs it) compiles :data:`MODULES` into
  ``.native/lib`` beside the source tree, with a manifest of the sources' SHA-256. Without a C
  compiler or mypyc it says so and leaves nothing: the worker then runs the pure Python source.
* :func:`install` (called by ``stream/__init__.py``, before any module below is imported) puts a
  finder in front of the import system that loads the compiled modules, but only when every source
  of the stream and model packages is still the one compiled: an edited source makes the whole
  build stale (the modules call each other natively and assume the types of what they import) and
  Python runs the sources until the next build.
  ``KAIROS_NATIVE=0`` turns it off (the test process does: its spies patch functions that compiled
  callers would not look up; the workers the integration tests start run the build).

The sources stay the one truth: nothing else changes with the build, no code path differs.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / ".native" / "lib"
MANIFEST = LIB / "kairos-native.json"
ENV = "KAIROS_NATIVE"

# The modules compiled, leaves of the engine's per-event path first. Left out, and why: the engine
# class and its mixins (mypyc supports no multiple inheritance of native classes), modules defining
# msgspec Structs or pydantic models (their metaclasses are not native), and the I/O edges.
MODULES: tuple[str, ...] = (
    "stream.forward_decay",
    "stream.covisitation",
    "stream.trending",
    "stream.timers",
    "stream.engagement",
    "stream.send_time",
    "stream.quiet_hours",
    "stream.admission",
    "stream.state",
    "stream.outcome",
    "stream.partitioning",
    "stream.throttle",
    "stream.user_facts",
    "stream.encoding",
    "stream.asks",
    "stream.beta_draws",
    "stream.policy_types",
    "stream.policy_state",
    "stream.rules",
    "stream.policy",
    "stream.policy_candidates",
    "stream.plan",
    "stream.decider",
    "stream.decider_apply",
    "stream.interest",
    "stream.interest_index",
    "stream.catalog_view",
    "stream.discovery",
    "stream.candidates",
    "stream.learning",
    "stream.response_estimates",
    "stream.scoring",
    "stream.engine.intake",
    "stream.engine.users",
    "stream.engine.rounds",
    "stream.engine.catalog_asks",
    "stream.partition_state",
    "stream.engine.batch_walk",
)

# What install() found: "native", or why the sources run instead (logged by the worker at start).
status = "pure: not installed yet"


def source_of(module: str) -> Path:
    """The source file of one of :data:`MODULES`."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_tag() -> str:
    return f"{sys.implementation.cache_tag}-{sys.platform}"


def _package_sources() -> dict[str, str]:
    """SHA-256 of every source of the ``stream`` and ``model`` packages, by path: the compiled modules'
    code assumes the types of what they import (a field's type, a function's signature; ``stream``
    imports ``model`` too), so a change anywhere makes the build stale, not only a change in a compiled
    file."""
    files = [p for package in ("stream", "model") for p in sorted((ROOT / package).rglob("*.py"))]
    return {str(p.relative_to(ROOT)): _sha256(p) for p in files}


def current_manifest() -> dict[str, object]:
    """The manifest a build of the present sources has: the interpreter, the compiled modules' source
    hashes and the whole package's."""
    return {
        "build": _build_tag(),
        "modules": {m: _sha256(source_of(m)) for m in MODULES},
        "package": _package_sources(),
    }


def _read_manifest(path: Path = MANIFEST) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class _NativeFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled extension of each compiled module (and of their shared runtime module)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _extension(base: Path) -> Path | None:
    """The extension file of a module whose path without suffix is ``base`` (this interpreter's)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def check(lib: Path = LIB) -> tuple[str, dict[str, Path]]:
    """Whether the build in ``lib`` can be loaded: (status, module name -> extension file); the files
    are empty unless the status starts with "native"."""
    if os.environ.get(ENV, "1").strip() == "0":
        return f"pure: {ENV}=0", {}
    manifest = _read_manifest(lib / MANIFEST.name)
    if manifest is None:
        return "pure: no native build (python -m stream.native_build)", {}
    if manifest.get("build") != _build_tag():
        return f"pure: the native build is for {manifest.get('build')}, not {_build_tag()}", {}
    compiled = manifest.get("modules")
    if not isinstance(compiled, dict) or set(compiled) != set(MODULES):
        return "pure: the native build compiled another set of modules (python -m stream.native_build)", {}
    changed = sorted(m for m in MODULES if compiled[m] != _sha256(source_of(m)))
    if changed:
        return f"pure: sources changed since the native build ({', '.join(changed[:3])})", {}
    built, now = manifest.get("package"), _package_sources()
    if built != now:
        old = built if isinstance(built, dict) else {}
        moved = sorted(set(old) ^ set(now) | {p for p in set(old) & set(now) if old[p] != now[p]})
        return f"pure: the sources changed since the native build ({', '.join(moved[:3])})", {}
    files: dict[str, Path] = {}
    for name in [*MODULES, str(manifest.get("runtime", ""))]:
        file = _extension(lib.joinpath(*name.split("."))) if name else None
        if file is None:
            return f"pure: the native build lacks {name or 'its runtime module'}", {}
        files[name] = file
    return f"native: {len(MODULES)} modules compiled with mypyc", files


def install() -> str:
    """Load the compiled modules from now on if the build is current; return (and set) :data:`status`."""
    global status
    if any(isinstance(f, _NativeFinder) for f in sys.meta_path):
        return status
    status, files = check()
    loaded = sorted(m for m in MODULES if m in sys.modules)
    if files and loaded:  # imported as source already: two copies of their classes would be worse
        status = f"pure: {loaded[0]} was imported before stream.native.install()"
    elif files:
        sys.meta_path.insert(0, _NativeFinder(files))
    return status
