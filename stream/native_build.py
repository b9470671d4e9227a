"""Compile the worker's hot modules with mypyc (``python -m stream.native_build``; see :mod:`stream.native`).

``make install`` runs it: a no-op while the build matches the sources; without a C compiler or mypyc
it says so, leaves nothing, and the worker runs the Python sources. ``KAIROS_NATIVE=0`` skips it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from stream.native import ENV, LIB, MANIFEST, MODULES, ROOT, _read_manifest, current_manifest, source_of


@contextlib.contextmanager
def build_lock(lib: Path) -> Iterator[None]:
    """Hold the lock of the builds into ``lib`` (a file beside it): two builds at once (two ``make``
    targets after an edit) would delete and write each other's files, and the manifest one of them
    writes last could name extensions the other is still writing."""
    lib.parent.mkdir(parents=True, exist_ok=True)
    with open(lib.parent / "build.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        yield


def build(quiet: bool = False) -> bool:
    """Compile :data:`MODULES` into :data:`LIB`; True when a current build is there afterwards.

    A failure (no compiler, no mypyc) removes any partial build and returns False: the sources run.
    One build at a time (:func:`build_lock`): one that waited finds the other's build current.
    """
    with build_lock(LIB):
        wanted = current_manifest()
        found = _read_manifest(MANIFEST)
        if found is not None and {k: found.get(k) for k in wanted} == wanted:
            return True
        try:
            from mypyc.build import mypycify  # noqa: F401 - only whether it is there
            from setuptools import Distribution  # noqa: F401
        except ImportError as exc:
            _not_built(exc)
            return False
        shutil.rmtree(LIB, ignore_errors=True)  # its manifest with it: a half-built lib is never current
        work = Path(tempfile.mkdtemp(prefix="kairos-native-"))
        try:
            _compile(quiet, work)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a compiler error is a SystemExit in setuptools
            shutil.rmtree(LIB, ignore_errors=True)
            _not_built(exc)
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)
        runtime = [p.name.split(".")[0] for p in LIB.iterdir() if p.name.split(".")[0].endswith("__mypyc")]
        manifest = {**wanted, "runtime": runtime[0] if runtime else ""}
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return True


def _not_built(why: BaseException) -> None:
    print(f"stream.native_build: not built ({why}); the worker runs the Python sources", file=sys.stderr)


def _compile(quiet: bool, work: Path) -> None:
    """Compile :data:`MODULES` into :data:`LIB`, the C sources and objects in ``work``."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    cwd = Path.cwd()
    try:
        os.chdir(ROOT)  # mypyc names modules by their paths from here
        extensions = mypycify(
            [str(source_of(m).relative_to(ROOT)) for m in MODULES],
            target_dir=str(work / "c"),
            multi_file=True,
            opt_level="3",
        )
        dist = Distribution({"name": "kairos-native", "ext_modules": extensions})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(LIB)  # type: ignore[attr-defined]
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
        from stream import native

        print(native.status)
        return 0
    if args:
        print("usage: python -m stream.native_build [--status]", file=sys.stderr)
        return 2
    if os.environ.get(ENV, "1").strip() == "0":
        print(f"stream.native_build: {ENV}=0, not built")
        return 0
    ok = build(quiet=True)
    print("stream.native_build: " + (f"current in {LIB.relative_to(ROOT)}" if ok else "no native build"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
