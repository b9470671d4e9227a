"""The native build is loaded only while it is current (every source the one it was built from) and
whole (every file as built, every file loads), all of it or none; a new build never disturbs a process
running an older one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from stream import native, native_build

SUFFIX = native.importlib.machinery.EXTENSION_SUFFIXES[0]

# What a whole current build reports.
BUILT = f"native: {len(native.MODULES)} modules compiled with mypyc and {len(native.EXTENSIONS)} C extensions"


def write_build(
    home: Path, manifest: dict[str, object], files: bool = True, name: str = "b1", current: bool = True
) -> Path:
    """A fake build ``name`` in ``home``, made current unless told: empty files where the extensions
    would be, and the manifest (recording those files unless it names its own)."""
    build = home / native.BUILDS / name
    build.mkdir(parents=True, exist_ok=True)
    records: dict[str, object] = {}
    if files:
        for module in [*native.MODULES, *native.EXTENSIONS, str(manifest.get("runtime", ""))]:
            path = build.joinpath(*module.split("."))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(path.name + SUFFIX).write_bytes(b"")
            records[path.relative_to(build).as_posix() + SUFFIX] = native.file_record(
                path.with_name(path.name + SUFFIX)
            )
    (build / native.MANIFEST).write_text(json.dumps({"files": records, **manifest}), encoding="utf-8")
    if current:
        (home / native.POINTER).write_text(name + "\n", encoding="utf-8")
    return build


@pytest.fixture(autouse=True)
def native_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "1")


def test_a_current_build_is_loaded(tmp_path: Path) -> None:
    write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc"})
    status, files = native.check(tmp_path)
    assert status == f"{BUILT} (build b1)"
    assert set(files) == {*native.MODULES, *native.EXTENSIONS, "abc__mypyc"}


def test_an_edited_source_makes_the_whole_build_stale(tmp_path: Path) -> None:
    manifest = native.current_manifest()
    modules = dict(manifest["modules"])  # type: ignore[call-overload]
    modules["stream.timers"] = "0" * 64  # built from another version of the file
    write_build(tmp_path, {**manifest, "modules": modules, "runtime": "abc__mypyc"})
    assert native.check(tmp_path) == ("pure: sources changed since the native build (stream.timers)", {})


def test_an_edited_c_source_makes_the_whole_build_stale(tmp_path: Path) -> None:
    manifest = native.current_manifest()
    edited = {**cast(dict[str, str], manifest["extensions"]), "model._gru_step": "0" * 64}
    write_build(tmp_path, {**manifest, "extensions": edited, "runtime": "abc__mypyc"})
    assert native.check(tmp_path) == ("pure: C sources changed since the native build (model._gru_step)", {})
    write_build(tmp_path, {**manifest, "extensions": {}, "runtime": "abc__mypyc"})  # a build from before them
    assert native.check(tmp_path)[0].startswith("pure: the native build compiled another set of C extensions")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"build": "cpython-312-x86_64-linux-gnu"},
            "pure: the native build is for cpython-312-x86_64-linux-gnu",
        ),
        (
            {"build": "cpython-311-aarch64-linux-gnu"},
            "pure: the native build is for cpython-311-aarch64-linux-gnu",
        ),
        ({"modules": {"stream.timers": "x"}}, "pure: the native build compiled another set of modules"),
    ],
)
def test_a_build_for_another_interpreter_architecture_or_module_set_is_not_loaded(
    tmp_path: Path, change: dict[str, object], why: str
) -> None:
    write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc", **change})
    status, files = native.check(tmp_path)
    assert status.startswith(why) and files == {}


def test_no_build_a_partial_build_or_switched_off_runs_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert native.check(tmp_path)[0].startswith("pure: no native build")
    write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc"}, files=False)
    assert native.check(tmp_path)[0].startswith("pure: the native build lacks stream.")
    write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc"})
    monkeypatch.setenv(native.ENV, "0")
    assert native.check(tmp_path) == ("pure: KAIROS_NATIVE=0", {})


@pytest.mark.parametrize("name", ["", "..", ".hidden", "../../etc"])
def test_a_pointer_that_names_no_build_directory_is_no_build(tmp_path: Path, name: str) -> None:
    (tmp_path / native.POINTER).write_text(name, encoding="utf-8")
    assert native.current_build(tmp_path) is None
    assert native.check(tmp_path)[0].startswith("pure: no native build")


def test_a_truncated_altered_or_unrecorded_file_runs_the_sources(tmp_path: Path) -> None:
    """The manifest records each file's size and SHA-256: a file cut short or damaged since (a full disk,
    a copy gone wrong) is never loaded."""
    build = write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc"})
    timers = f"stream/timers{SUFFIX}"
    (build / timers).write_bytes(b"abc")
    assert native.check(tmp_path) == (f"pure: the native build's {timers} has 3 bytes, not the 0 built", {})
    manifest = json.loads((build / native.MANIFEST).read_text())
    manifest["files"][timers] = {"sha256": "0" * 64, "size": 3}
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    assert native.check(tmp_path) == (
        f"pure: the native build's {timers} is not the file built (its SHA-256 differs)",
        {},
    )
    del manifest["files"][timers]
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    assert native.check(tmp_path) == (f"pure: the native build's {timers} is not in its manifest", {})


def test_a_change_anywhere_in_the_package_makes_the_build_stale(tmp_path: Path) -> None:
    """Compiled code assumes the types of what it imports from modules that are not compiled."""
    assert "model/scorer.py" in native.current_manifest()["package"]  # type: ignore[operator]
    manifest = native.current_manifest()
    package = dict(manifest["package"])  # type: ignore[call-overload]
    package["stream/settings/worker.py"] = "0" * 64
    write_build(tmp_path, {**manifest, "package": package, "runtime": "abc__mypyc"})
    status, files = native.check(tmp_path)
    assert status == "pure: the sources changed since the native build (stream/settings/worker.py)"
    assert files == {}


def test_the_suite_runs_the_python_sources() -> None:
    """tests/conftest.py turns the native build off before anything imports the project."""
    assert native.status == "pure: KAIROS_NATIVE=0"
    assert not any(isinstance(f, native._NativeFinder) for f in native.sys.meta_path)


def test_a_build_waits_for_one_under_way_and_then_finds_it_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds at once (two ``make`` targets after an edit) would both compile, and one could remove
    the build the other just made current: the second waits for the first and then compiles nothing."""
    compiled: list[object] = []
    monkeypatch.setattr(native_build, "_compile", lambda *args: compiled.append(args))
    done: list[bool] = []
    with native_build.build_lock(tmp_path):  # a build under way
        waiting = threading.Thread(target=lambda: done.append(native_build.build(True, tmp_path)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not done
        write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc"})  # it finishes
    waiting.join(10)
    assert done == [True] and compiled == []


def test_a_failed_build_leaves_the_current_build_and_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = {
        **native.current_manifest(),
        "runtime": "abc__mypyc",
        "modules": {m: "0" for m in native.MODULES},
    }
    write_build(tmp_path, stale, name="old")

    def fail(quiet: bool, work: Path, target: Path) -> None:
        (target / "half-written.so").write_bytes(b"\x7fELF")
        raise SystemExit("error: command 'gcc' failed")

    monkeypatch.setattr(native_build, "_compile", fail)
    assert native_build.build(True, tmp_path) is False
    assert native.current_build(tmp_path) == tmp_path / native.BUILDS / "old"
    assert sorted(p.name for p in (tmp_path / native.BUILDS).iterdir()) == ["old"]
    assert "not built" in capsys.readouterr().err


def test_the_pointer_switches_in_one_step_and_old_builds_go_but_the_previous_and_those_in_use(
    tmp_path: Path,
) -> None:
    """A new build becomes current by one os.replace of the pointer; the one it replaces stays (a process
    may have read the pointer a moment before), and so does any build a running process loaded (it
    holds a shared lock on its manifest); the rest go, a build that never finished too."""
    manifest = {**native.current_manifest(), "runtime": "abc__mypyc"}
    builds = {name: write_build(tmp_path, manifest, name=name, current=False) for name in "abcd"}
    (tmp_path / native.POINTER).write_text("a\n", encoding="utf-8")
    (tmp_path / native.BUILDS / "killed").mkdir()  # a build killed halfway: no manifest
    (tmp_path / "lib").mkdir()  # the one build of the layout before builds/
    held = os.open(builds["b"] / native.MANIFEST, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)  # as install() does in a process that loaded "b"
        with native_build.build_lock(tmp_path):
            assert native_build.publish(tmp_path, builds["c"]) == ["d", "killed"]  # a: previous, b: in use
            assert native.check(tmp_path)[0].endswith("(build c)")
            write_build(tmp_path, manifest, name="d", current=False)
            assert native_build.publish(tmp_path, builds["d"]) == ["a"]  # b: in use, c: previous
    finally:
        os.close(held)
    assert native.check(tmp_path)[0].endswith("(build d)")
    assert sorted(p.name for p in (tmp_path / native.BUILDS).iterdir()) == ["b", "c", "d"]
    assert not (tmp_path / "lib").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged pointer left
    with native_build.build_lock(tmp_path):
        assert native_build.publish(tmp_path, builds["d"]) == ["b", "c"]  # b released, c no longer previous


# A real build: what happens when a process loads one, or fails to.


@pytest.fixture(scope="session")
def real_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a build of the present sources: the project's own when current (``make
    install``), else one compiled here once per session; skipped where nothing compiles."""
    own = native.current_build(native.home())
    if own is not None and native.verify(own)[1]:
        return own
    home = tmp_path_factory.mktemp("native")
    if not native_build.build(quiet=True, native_home=home):
        pytest.skip("no C compiler or mypyc here: no native build to load")
    built = native.current_build(home)
    assert built is not None
    return built


@pytest.fixture
def home(tmp_path: Path, real_build: Path) -> Path:
    """A builds' home of its own holding a copy of the real build, current: a test may damage it."""
    shutil.copytree(real_build, tmp_path / native.BUILDS / "x")
    (tmp_path / native.POINTER).write_text("x\n", encoding="utf-8")
    return tmp_path


# Prints the status and which compiled modules it imported came from a source file (none or all), then
# imports the module named on each line of its input late, as ``kairos erase`` does, and prints the
# file it came from.
CHILD = """
import importlib, sys
import stream.timers
from stream import native
print(native.status, flush=True)
print([m for m in native.MODULES if m in sys.modules and sys.modules[m].__file__.endswith('.py')], flush=True)
for line in sys.stdin:
    print(importlib.import_module(line.strip()).__file__, flush=True)
"""
NONE = "[]"
ALL_IMPORTED = "['stream.timers']"  # the one compiled module CHILD imports at start


@contextlib.contextmanager
def child(home: Path) -> Iterator[subprocess.Popen[str]]:
    """A process of this project (``import stream``, as every command's) with ``home`` as its builds' home."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=native.ROOT,
        env={**os.environ, native.ENV: "1", native.HOME_ENV: str(home)},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def run_child(home: Path, *late: str) -> list[str]:
    """Run :data:`CHILD` through: its status, the compiled modules it ran from source, ``late``'s files."""
    with child(home) as process:
        out, _ = process.communicate("".join(f"{m}\n" for m in late), timeout=60)
    assert process.returncode == 0
    return out.splitlines()


def extension(build: Path, module: str) -> Path:
    file = native._extension(build.joinpath(*module.split(".")))
    assert file is not None
    return file


def runtime_of(build: Path) -> str:
    return str(json.loads((build / native.MANIFEST).read_text())["runtime"])


def test_a_whole_current_build_loads_in_a_new_process(home: Path) -> None:
    status, from_source, late = run_child(home, "stream.engine.catalog_asks")
    assert status == f"{BUILT} (build x)"
    assert from_source == NONE
    assert late == str(extension(home / native.BUILDS / "x", "stream.engine.catalog_asks"))


def test_a_damaged_or_missing_extension_runs_the_sources(home: Path) -> None:
    build = home / native.BUILDS / "x"
    runtime = extension(build, runtime_of(build))
    data = bytearray(runtime.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern changed, the size the same
    runtime.write_bytes(bytes(data))
    status, from_source, late = run_child(home, "stream.engine.catalog_asks")
    assert status == f"pure: the native build's {runtime.name} is not the file built (its SHA-256 differs)"
    assert from_source == ALL_IMPORTED and late.endswith("stream/engine/catalog_asks.py")
    runtime.unlink()  # the shared library gone: every module's code is in it
    assert native.check(home) == (f"pure: the native build lacks {runtime_of(build)}", {})


@pytest.mark.parametrize("which", ["runtime", "stream.decider", "model._gru_step"])
def test_an_extension_that_does_not_load_runs_every_module_from_source(home: Path, which: str) -> None:
    """A file as built that does not load here (another machine's, one whose system library is missing;
    here not a shared library at all, its manifest record made to match): the process runs the
    sources, all of them, and says why. The loader loads the shared library and opens every module's
    extension before any is imported, so the decision is made before any compiled module runs."""
    build = home / native.BUILDS / "x"
    file = extension(build, runtime_of(build) if which == "runtime" else which)
    file.write_bytes(b"not a shared library\n")
    manifest = json.loads((build / native.MANIFEST).read_text())
    manifest["files"][file.relative_to(build).as_posix()] = native.file_record(file)
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    assert native.check(home)[0].startswith("native:")  # as built, as far as reading it tells
    status, from_source, late = run_child(home, "stream.decider")
    assert status.startswith("pure: the native build does not load (") and file.name in status
    assert from_source == ALL_IMPORTED and late.endswith("stream/decider.py")


def test_a_running_process_keeps_its_build_through_new_builds(home: Path, real_build: Path) -> None:
    """A rebuild while a worker runs: the new build goes to a directory of its own and becomes current
    for the processes that start next, the worker keeps importing from the build it started with
    (late imports too), and that build is not removed while the worker runs."""
    shutil.copytree(real_build, home / native.BUILDS / "y")
    with child(home) as process:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().rstrip().endswith("(build x)")
        assert process.stdout.readline().rstrip() == NONE
        with native_build.build_lock(home):
            assert native_build.publish(home, home / native.BUILDS / "y") == []  # x: the previous
            assert native_build.publish(home, home / native.BUILDS / "y") == []  # x: in use
        assert native.check(home)[0].endswith("(build y)")
        process.stdin.write("stream.engine.catalog_asks\n")
        process.stdin.flush()
        late = process.stdout.readline().rstrip()
        assert late == str(extension(home / native.BUILDS / "x", "stream.engine.catalog_asks"))
        process.stdin.close()
        assert process.wait(30) == 0
    with native_build.build_lock(home):
        assert native_build.publish(home, home / native.BUILDS / "y") == ["x"]  # no longer in use


def test_a_running_process_imports_late_even_after_its_build_is_deleted(home: Path) -> None:
    """install() opens every extension at start, so a late import does not read the build's files again
    (glibc's dlopen gives the handle already open for the same path): a build removed by hand (``rm
    -rf .native``, ``git clean -fdX``) does not break a running worker either."""
    with child(home) as process:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().rstrip().endswith("(build x)")
        process.stdout.readline()
        shutil.rmtree(home)
        process.stdin.write("stream.engine.catalog_asks\nstream.scoring\n")
        process.stdin.close()
        files = [process.stdout.readline().rstrip() for _ in range(2)]
        assert process.wait(30) == 0
    assert [Path(f).name for f in files] == [f"catalog_asks{SUFFIX}", f"scoring{SUFFIX}"]


def test_load_built_says_why_there_is_nothing_to_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.load_built("model._gru_step") == (None, "pure: KAIROS_NATIVE=0")
    monkeypatch.setenv(native.ENV, "1")
    monkeypatch.setenv(native.HOME_ENV, str(tmp_path))  # a builds' home with no build
    nothing = "pure: no native build (python -m stream.native_build)"
    assert native.load_built("model._gru_step") == (None, nothing)


def test_load_built_loads_the_current_builds_extension(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv(native.HOME_ENV, str(home))
    module, status = native.load_built("model._gru_step")
    assert module is not None and status.startswith("native:")
    assert module.MAX_UNITS >= 48 and str(module.__file__).startswith(str(home))


def test_installed_is_none_in_a_process_that_runs_the_sources() -> None:
    """The test process runs the sources: the scorer and the session memory then take their numpy."""
    assert all(native.installed(name) is None for name in native.EXTENSIONS)
    with pytest.raises(ValueError, match="not one of"):
        native.installed("model.scorer")


def _written_inits() -> list[type]:
    """The dataclasses of the compiled modules declared with ``init=False`` (an ``__init__`` written in the
    class, which mypyc compiles: stream/native.py)."""
    import dataclasses
    import importlib

    found: list[type] = []
    for name in native.MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            written = not getattr(getattr(value, "__dataclass_params__", None), "init", True)
            if isinstance(value, type) and value.__module__ == name and written:
                assert dataclasses.is_dataclass(value)
                found.append(value)
    return found


def test_each_written_dataclass_init_takes_the_fields_in_order_with_their_defaults() -> None:
    import dataclasses
    import inspect

    classes = _written_inits()
    assert {c.__name__ for c in classes} >= {"Timer", "UserState", "Candidate", "Step", "BatchUser"}
    for cls in classes:
        fields = [f for f in dataclasses.fields(cls) if f.init]
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # type: ignore[misc]
        assert [p.name for p in params] == [f.name for f in fields], cls
        for f, p in zip(fields, params, strict=True):
            if f.default is not dataclasses.MISSING:
                assert p.default == f.default, (cls, f.name)
            elif f.default_factory is not dataclasses.MISSING:  # None stands for "a new one"
                assert p.default is None, (cls, f.name)
            else:
                assert p.default is inspect.Parameter.empty, (cls, f.name)
