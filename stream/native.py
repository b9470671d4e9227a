"""Optional native build of the worker's hot modules (mypyc), loaded only while it is current and sound.

The engine's per-event work (bookkeeping, indexes, timers, policy rules, the decider) is plain typed
Python. mypyc compiles the same source files to C extensions: ~25 % less engine time per event on the
live-paced benchmark workload, with the same pushes and states bit for bit (``benchmarks/
stream_throughput.py`` reports which build it ran; ``tests/bench/test_push_outcomes_repro.py`` runs
one world pure and one native and compares every figure).

* ``python -m stream.native_build`` (``make install`` runs it) compiles :data:`MODULES` into a new
  directory ``.native/builds/<id>/`` beside the source tree (``KAIROS_NATIVE_DIR`` puts ``.native``
  elsewhere), with a manifest of the sources' SHA-256 and of every file built (SHA-256 and size), then
  switches the pointer ``.native/current`` to it in one step (``os.replace``). A build never changes
  files a process may be loading: a running worker keeps importing from the directory it started
  with, even late (``kairos erase`` imports a compiled module on demand). The builder removes older
  builds, but never the previous one nor one that a running process loaded (each holds a shared lock
  on its build's manifest for its life). Without a C compiler or mypyc it says so and builds nothing:
  the worker runs the pure Python source.
* :func:`install` (called by ``stream/__init__.py``, before any module below is imported) decides once,
  for all of :data:`MODULES` together: compiled modules assume the native classes of the compiled
  modules they import, so a mix of compiled and source modules is never loaded. It uses the build
  only when every source of the stream and model packages is still the one compiled (an edited source
  makes the whole build stale: Python runs the sources until the next build), every file built is
  there with the size and SHA-256 the manifest records (a truncated or damaged file), and the build's
  shared library and every module's extension load (another architecture, a missing system library).
  It loads them then, before any module is imported; anything else means the sources run, with the
  reason in :data:`status` (the worker logs it at start), never an exception. (The hashes come first
  for a reason: loading a truncated extension can kill the process with SIGBUS rather than raise.)
  Every extension opened at start, a late import reads no file again (glibc's ``dlopen`` returns the
  handle already open for the same path), and the build's lock keeps its files there anyway.
  ``KAIROS_NATIVE=0`` turns it off (the test process does: its spies patch functions that compiled
  callers would not look up; the workers the integration tests start run the build).

The sources stay the one truth: nothing else changes with the build, no code path differs.

Two things mypyc does not compile, which the hot path therefore avoids in these modules:

* The ``__init__`` that ``@dataclass`` generates: the dataclasses module writes it as Python source
  at import, so a compiled module still runs it as bytecode, about 0.3-0.6 µs a construction against
  0.05 for an ``__init__`` written in the class (measured, scratch). The dataclasses built per event,
  per user or per candidate (``Timer``, ``UserState``, ``UserPolicyState``, ``BatchUser``, ``Op``,
  ``SeenAt``, ``Candidate``, ``Step``, ``Plan``, ``Assessment``, ``ItemFacts``, ``PushHistory``,
  ``Verdict``, ``Scored``, ``CandidateSource``, and ``Inbound``, one per record read) are declared
  ``@dataclass(init=False)`` with a written ``__init__`` (the same parameters, a ``default_factory``
  field's default None): they keep the dataclass's fields, ``==``, ``repr`` and ``replace``.
  ``tests/stream/test_native.py`` checks that each such ``__init__`` takes the fields in order with
  their defaults. (A frozen dataclass cannot assign in its own ``__init__``: ``Verdict``,
  ``Scored`` and ``Inbound`` were unfrozen for it and are read only by convention; the few still
  frozen, such as ``Ask``, keep the generated one.)
* A ``msgspec.Struct`` subclass: mypyc compiles it as its own class and drops the Struct's options
  (``stream/record_rows.py``, which stays out of :data:`MODULES`).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".native"  # the builds' home, unless KAIROS_NATIVE_DIR names another
ENV = "KAIROS_NATIVE"
HOME_ENV = "KAIROS_NATIVE_DIR"
BUILDS = "builds"  # one directory per build in the home
POINTER = "current"  # a file in the home naming the current build's directory
MANIFEST = "kairos-native.json"  # in each build's directory

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
    "stream.event_decoder",
    "stream.admission",
    "stream.state",
    "stream.warm_users",
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
    "stream.partition_rows",
    "stream.partition_state",
    "stream.new_items",
    "stream.engine.batch_walk",
)

# C extension modules built beside them, by module name: their C source. ``model._gru_step`` is the
# serving GRU step (model.gru_kernel, whose numpy twin gives the same bits when it is not built);
# ``model._neighbour_lookup`` the session memory's neighbour lookup (model.session_memory, whose numpy
# lookups give the same values).
EXTENSIONS: dict[str, str] = {
    "model._gru_step": "model/gru_step.c",
    "model._neighbour_lookup": "model/neighbour_lookup.c",
}

# What install() found: "native", or why the sources run instead (logged by the worker at start).
status = "pure: not installed yet"

# Kept open for the life of the process once install() loads a build: the descriptor of its manifest
# (its shared lock keeps the builder from removing the build) and the modules' extensions it opened.
_held: list[object] = []


def home() -> Path:
    """The builds' home: ``KAIROS_NATIVE_DIR`` when set, else ``.native`` beside the source tree."""
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).resolve() if value else HOME


def current_build(native_home: Path) -> Path | None:
    """The directory of the build the pointer in ``native_home`` names; None without one."""
    try:
        name = (native_home / POINTER).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not name or name.startswith(".") or "/" in name:  # only a directory name of BUILDS
        return None
    return native_home / BUILDS / name


def source_of(module: str) -> Path:
    """The source file of one of :data:`MODULES`."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_record(path: Path) -> dict[str, object]:
    """What the manifest records of a file built: its SHA-256 and size."""
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _build_tag() -> str:
    """The ABI the extensions are built for: interpreter, version, architecture and C library."""
    return str(sysconfig.get_config_var("SOABI") or f"{sys.implementation.cache_tag}-{sys.platform}")


def _package_sources() -> dict[str, str]:
    """SHA-256 of every source of the ``stream`` and ``model`` packages, by path: the compiled modules'
    code assumes the types of what they import (a field's type, a function's signature; ``stream``
    imports ``model`` too), so a change anywhere makes the build stale, not only a change in a compiled
    file."""
    files = [p for package in ("stream", "model") for p in sorted((ROOT / package).rglob("*.py"))]
    return {str(p.relative_to(ROOT)): _sha256(p) for p in files}


def current_manifest() -> dict[str, object]:
    """The manifest a build of the present sources has, but the files built: the interpreter, the
    compiled modules' source hashes and the whole package's."""
    return {
        "build": _build_tag(),
        "modules": {m: _sha256(source_of(m)) for m in MODULES},
        "extensions": {m: _sha256(ROOT / c) for m, c in EXTENSIONS.items()},
        "package": _package_sources(),
    }


def _read_manifest(path: Path) -> dict[str, object] | None:
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
        return None if file is None else importlib.util.spec_from_loader(fullname, _loader(fullname, file))


def _loader(name: str, file: Path) -> importlib.machinery.ExtensionFileLoader:
    """The loader of module ``name`` from the extension ``file``."""
    return importlib.machinery.ExtensionFileLoader(name, str(file))


def _load_file(name: str, file: Path) -> ModuleType:
    """Module ``name`` from the extension ``file``, loaded (its init run), not put in ``sys.modules``."""
    loader = _loader(name, file)
    spec = importlib.util.spec_from_loader(name, loader)  # with the file as its origin (__file__)
    assert spec is not None
    known = name in sys.modules
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    if not known:  # a single-phase extension's init registers itself in sys.modules: undone
        sys.modules.pop(name, None)
    return module


def _extension(base: Path) -> Path | None:
    """The extension file of a module whose path without suffix is ``base`` (this interpreter's)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _altered(file: Path, record: object) -> str | None:
    """Why ``file`` is not the file the manifest's ``record`` describes; None when it is."""
    if not isinstance(record, dict):
        return "is not in its manifest"
    try:
        found = file_record(file)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if found["size"] != record.get("size"):
        return f"has {found['size']} bytes, not the {record.get('size')} built"
    if found["sha256"] != record.get("sha256"):
        return "is not the file built (its SHA-256 differs)"
    return None


def verify(build: Path) -> tuple[str, dict[str, Path]]:
    """Whether the build in directory ``build`` is current and whole: (status, module name -> extension
    file, the shared runtime module's too); the files are empty unless the status starts with
    "native". It reads and hashes, loads nothing."""
    manifest = _read_manifest(build / MANIFEST)
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
    extensions = manifest.get("extensions")
    if not isinstance(extensions, dict) or set(extensions) != set(EXTENSIONS):
        other = "pure: the native build compiled another set of C extensions (python -m stream.native_build)"
        return other, {}
    altered = sorted(m for m, c in EXTENSIONS.items() if extensions[m] != _sha256(ROOT / c))
    if altered:
        return f"pure: C sources changed since the native build ({', '.join(altered)})", {}
    built, now = manifest.get("package"), _package_sources()
    if built != now:
        old = built if isinstance(built, dict) else {}
        moved = sorted(set(old) ^ set(now) | {p for p in set(old) & set(now) if old[p] != now[p]})
        return f"pure: the sources changed since the native build ({', '.join(moved[:3])})", {}
    recorded, runtime = manifest.get("files"), manifest.get("runtime")
    if not isinstance(recorded, dict) or not isinstance(runtime, str) or not runtime:
        return "pure: the native build's manifest lists no files (python -m stream.native_build)", {}
    files: dict[str, Path] = {}
    for name in [*MODULES, *EXTENSIONS, runtime]:
        file = _extension(build.joinpath(*name.split(".")))
        if file is None:
            return f"pure: the native build lacks {name}", {}
        relative = file.relative_to(build).as_posix()
        why = _altered(file, recorded.get(relative))
        if why is not None:
            return f"pure: the native build's {relative} {why}", {}
        files[name] = file
    compiled_c = f"{len(EXTENSIONS)} C extension{'' if len(EXTENSIONS) == 1 else 's'}"
    return f"native: {len(MODULES)} modules compiled with mypyc and {compiled_c} (build {build.name})", files


def check(native_home: Path | None = None) -> tuple[str, dict[str, Path]]:
    """Whether the current build in ``native_home`` (:func:`home` by default) can be used: as
    :func:`verify`, and "pure" when ``KAIROS_NATIVE=0`` or there is no build."""
    if os.environ.get(ENV, "1").strip() == "0":
        return f"pure: {ENV}=0", {}
    build = current_build(home() if native_home is None else native_home)
    if build is None:
        return "pure: no native build (python -m stream.native_build)", {}
    return verify(build)


def _runtime(files: dict[str, Path]) -> str:
    """The name of the build's shared runtime module among :func:`verify`'s files."""
    (runtime,) = [name for name in files if name not in MODULES and name not in EXTENSIONS]
    return runtime


def _hold(build: Path) -> int | None:
    """A shared lock on the build's manifest (its open descriptor), to keep for the life of this process:
    the builder removes no build a process holds (its extensions may still be imported late). None
    without it (a file system without ``flock``): then the builder's keeping of the previous build
    protects this one."""
    try:
        descriptor = os.open(build / MANIFEST, os.O_RDONLY)
    except OSError:
        return None  # removed since verify(): loading its files fails next, with the reason
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits while a builder holds it to remove the build
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def _load(files: dict[str, Path]) -> str | None:
    """Load the build's shared runtime library (all the compiled code) as a module, and open every
    compiled module's extension, before any compiled module is imported: None when all load, else why
    not (nothing is imported then; what was opened stays unused). Opening an extension runs none of
    its module's code (that runs at its import); it shows the file loads here."""
    import ctypes  # only here: most processes load no build

    runtime = _runtime(files)
    try:
        module = _load_file(runtime, files[runtime])  # dlopen() and its init: no module code runs
        _held.extend(ctypes.CDLL(str(files[name])) for name in [*MODULES, *EXTENSIONS])
    except Exception as exc:  # noqa: BLE001 - any failure to load means the sources run, never a crash
        return f"pure: the native build does not load ({type(exc).__name__}: {exc})"
    sys.modules[runtime] = module  # what each compiled module's extension imports first
    return None


def installed(name: str) -> ModuleType | None:
    """One of :data:`EXTENSIONS` when this process runs the native build (:func:`install`), else None:
    the caller then runs its numpy twin, which gives the same bits."""
    if name not in EXTENSIONS:
        raise ValueError(f"{name} is not one of the native build's C extensions")
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def load_built(name: str) -> tuple[ModuleType | None, str]:
    """One of :data:`EXTENSIONS` loaded from the current build's file, without installing the build
    (for a process that runs the sources, as the tests do, to compare the compiled code with them);
    None and why not when there is no current build."""
    status, files = check()
    if name not in files:
        return None, status
    return _load_file(name, files[name]), status


def install(native_home: Path | None = None) -> str:
    """Load the compiled modules from now on if the current build in ``native_home`` (:func:`home` by
    default) is current, whole and loads; return (and set) :data:`status`. Never raises for a build."""
    global status
    if any(isinstance(f, _NativeFinder) for f in sys.meta_path):
        return status
    try:
        status, files = check(native_home)
    except Exception as exc:  # noqa: BLE001 - e.g. a source removed while hashing: the sources run
        status, files = f"pure: the native build could not be checked ({type(exc).__name__}: {exc})", {}
    loaded = sorted(m for m in [*MODULES, *EXTENSIONS] if m in sys.modules)
    if files and loaded:  # imported as source already: two copies of their classes would be worse
        status = f"pure: {loaded[0]} was imported before stream.native.install()"
    elif files:
        lock = _hold(files[_runtime(files)].parent)  # the runtime's extension lies at the top of its build
        why = _load(files)
        if why is not None:
            status = why
            if lock is not None:
                os.close(lock)
        else:
            if lock is not None:
                _held.append(lock)
            sys.meta_path.insert(0, _NativeFinder(files))
    return status
