"""Compile the worker's hot modules with mypyc (``python -m stream.native_build``; see :mod:`stream.native`).

``make install`` runs it: a no-op while the current build matches the sources and is whole. Each build
goes into a new directory under ``.native/builds/`` and becomes current when the pointer
``.native/current`` names it (one ``os.replace``); older builds are removed then, but the previous one
and those a running process loaded. Without a C compiler or mypyc it says so and builds nothing: the
worker runs the Python sources. ``KAIROS_NATIVE=0`` skips it; ``KAIROS_NATIVE_DIR`` puts the builds'
home elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from stream import native
from stream.native import (
    BUILDS,
    ENV,
    EXTENSIONS,
    MANIFEST,
    MODULES,
    POINTER,
    ROOT,
    current_build,
    file_record,
    source_of,
)


@contextlib.contextmanager
def build_lock(native_home: Path) -> Iterator[None]:
    """Hold the lock of the builds into ``native_home`` (a file in it): two builds at once (two ``make``
    targets after an edit) would both compile, and one could remove the build the other just made
    current. The pointer's staging file and the removal of old builds are the lock holder's too."""
    native_home.mkdir(parents=True, exist_ok=True)
    with open(native_home / "build.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        yield


def build(quiet: bool = False, native_home: Path | None = None) -> bool:
    """Compile :data:`MODULES` into a new build in ``native_home`` (:func:`stream.native.home` by
    default) and make it current; True when a current, whole build is there afterwards.

    A failure (no compiler, no mypyc) removes its partial directory, leaves the current build as it
    was (stale, so the sources run) and returns False. One build at a time (:func:`build_lock`): one
    that waited finds the other's build current.
    """
    home = native.home() if native_home is None else native_home
    with build_lock(home):
        found = current_build(home)
        if found is not None and native.verify(found)[1]:
            return True
        try:
            from mypyc.build import mypycify  # noqa: F401 - only whether it is there
            from setuptools import Distribution  # noqa: F401
        except ImportError as exc:
            _not_built(exc)
            return False
        wanted = native.current_manifest()
        (home / BUILDS).mkdir(exist_ok=True)
        # A new directory, never files a running process may load: it starts with the build it found.
        target = Path(tempfile.mkdtemp(prefix=f"{_build_id(wanted)}-", dir=home / BUILDS))
        target.chmod(0o755)  # not mkdtemp's 0o700: the image builds as root, its worker runs as a user
        work = Path(tempfile.mkdtemp(prefix="kairos-native-"))
        try:
            _compile(quiet, work, target)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a compiler error is a SystemExit in setuptools
            shutil.rmtree(target, ignore_errors=True)
            _not_built(exc)
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _write_manifest(target, wanted)
        publish(home, target)
        return True


def _build_id(manifest: dict[str, object]) -> str:
    """The start of a build directory's name: the same for builds of the same sources."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]


def _write_manifest(build: Path, wanted: dict[str, object]) -> None:
    """The manifest of the build in ``build``: ``wanted`` (the sources'), its runtime module's name and
    every file built with its SHA-256 and size (:func:`stream.native.verify` checks them at each start)."""
    files = {p.relative_to(build).as_posix(): file_record(p) for p in sorted(build.rglob("*")) if p.is_file()}
    runtime = [p.name.split(".")[0] for p in build.iterdir() if p.name.split(".")[0].endswith("__mypyc")]
    manifest = {**wanted, "runtime": runtime[0] if runtime else "", "files": files}
    (build / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def publish(native_home: Path, build: Path) -> list[str]:
    """Make ``build`` (a directory in ``native_home``'s builds) the current build in one step, then
    remove the builds neither current, previous nor in use (:func:`prune`); return the names removed.
    Only under :func:`build_lock`."""
    previous = current_build(native_home)
    staged = native_home / f".{POINTER}.new"
    with open(staged, "w", encoding="utf-8") as pointer:
        pointer.write(build.name + "\n")
        pointer.flush()
        os.fsync(pointer.fileno())
    os.replace(staged, native_home / POINTER)  # a reader finds the old name or the new, never a part
    return prune(native_home, keep={build.name, previous.name if previous is not None else ""})


def prune(native_home: Path, keep: set[str]) -> list[str]:
    """Remove the builds in ``native_home`` but those named in ``keep`` and those a running process
    loaded (it holds a shared lock on their manifest: :func:`stream.native.install`); return the names
    removed. Only under :func:`build_lock`."""
    shutil.rmtree(native_home / "lib", ignore_errors=True)  # the one build of the layout before builds/
    builds = native_home / BUILDS
    removed: list[str] = []
    for build in sorted(builds.iterdir()) if builds.is_dir() else []:
        if build.name in keep:
            continue
        try:
            descriptor: int | None = os.open(build / MANIFEST, os.O_RDONLY)
        except FileNotFoundError:
            descriptor = None  # a build that never finished (killed): no process loaded it
        except OSError:
            continue
        try:
            if descriptor is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a process loaded it (BlockingIOError), or no telling: kept
            continue
        else:
            shutil.rmtree(build, ignore_errors=True)
            removed.append(build.name)
        finally:
            if descriptor is not None:
                os.close(descriptor)
    return removed


def _not_built(why: BaseException) -> None:
    print(f"stream.native_build: not built ({why}); the worker runs the Python sources", file=sys.stderr)


def _compile(quiet: bool, work: Path, target: Path) -> None:
    """Compile :data:`MODULES` into ``target``, the C sources and objects in ``work``."""
    from mypyc.build import mypycify
    from setuptools import Distribution, Extension

    cwd = Path.cwd()
    try:
        os.chdir(ROOT)  # mypyc names modules by their paths from here
        extensions = mypycify(
            [str(source_of(m).relative_to(ROOT)) for m in MODULES],
            target_dir=str(work / "c"),
            multi_file=True,
            opt_level="3",
        )
        # The C extensions' arithmetic must be numpy's to the bit (model.gru_kernel): no fused
        # multiply-add, no fast-math reordering; -fno-trapping-math only lets selects be vectorised.
        flags = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math"]
        extensions += [Extension(name, [c], extra_compile_args=flags) for name, c in EXTENSIONS.items()]
        dist = Distribution({"name": "kairos-native", "ext_modules": extensions})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(target)  # type: ignore[attr-defined]
        cmd.build_temp = str(work / "o")  # type: ignore[attr-defined]
        cmd.parallel = os.cpu_count() or 1  # type: ignore[attr-defined]
        if quiet:
            dist.verbose = False
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (no arguments), or ``--status``: what this process loaded (:data:`stream.native.status`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--status"]:
        print(native.status)
        return 0
    if args:
        print("usage: python -m stream.native_build [--status]", file=sys.stderr)
        return 2
    if os.environ.get(ENV, "1").strip() == "0":
        print(f"stream.native_build: {ENV}=0, not built")
        return 0
    if build(quiet=True):
        print(f"stream.native_build: current in {current_build(native.home())}")
    else:
        print("stream.native_build: no native build")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
