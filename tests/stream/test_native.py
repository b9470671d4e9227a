"""The native build is loaded only while every compiled module's source is the one it was built from."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from stream import native


def write_build(lib: Path, manifest: dict[str, object], files: bool = True) -> None:
    """A fake build in ``lib``: the manifest, and empty files where the extensions would be."""
    lib.mkdir(parents=True, exist_ok=True)
    (lib / native.MANIFEST.name).write_text(json.dumps(manifest), encoding="utf-8")
    suffix = native.importlib.machinery.EXTENSION_SUFFIXES[0]
    if files:
        for name in [*native.MODULES, str(manifest.get("runtime", ""))]:
            path = lib.joinpath(*name.split("."))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(path.name + suffix).write_bytes(b"")


@pytest.fixture(autouse=True)
def native_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "1")


def test_a_current_build_is_loaded(tmp_path: Path) -> None:
    write_build(tmp_path, {**native.current_manifest(), "runtime": "abc__mypyc"})
    status, files = native.check(tmp_path)
    assert status.startswith("native:")
    assert set(files) == {*native.MODULES, "abc__mypyc"}


def test_an_edited_source_makes_the_whole_build_stale(tmp_path: Path) -> None:
    manifest = native.current_manifest()
    modules = dict(manifest["modules"])  # type: ignore[call-overload]
    modules["stream.timers"] = "0" * 64  # built from another version of the file
    write_build(tmp_path, {**manifest, "modules": modules, "runtime": "abc__mypyc"})
    assert native.check(tmp_path) == ("pure: sources changed since the native build (stream.timers)", {})


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"build": "cpython-312-linux"}, "pure: the native build is for cpython-312-linux"),
        ({"modules": {"stream.timers": "x"}}, "pure: the native build compiled another set of modules"),
    ],
)
def test_a_build_for_another_interpreter_or_module_set_is_not_loaded(
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
    """Two builds at once (two ``make`` targets after an edit) would delete and write each other's files,
    and one's manifest could name the other's half-written extensions: the second waits for the first
    and then compiles nothing."""
    from stream import native_build

    lib = tmp_path / ".native" / "lib"
    monkeypatch.setattr(native_build, "LIB", lib)
    monkeypatch.setattr(native_build, "MANIFEST", lib / native.MANIFEST.name)
    compiled: list[object] = []
    monkeypatch.setattr(native_build, "_compile", lambda *args: compiled.append(args))
    done: list[bool] = []
    with native_build.build_lock(lib):  # a build under way
        waiting = threading.Thread(target=lambda: done.append(native_build.build(quiet=True)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not done
        write_build(lib, {**native.current_manifest(), "runtime": "abc__mypyc"})  # it finishes
    waiting.join(10)
    assert done == [True] and compiled == []
