"""Model hot reload with a fake loader: refuses broken artifacts, switches to good ones, atomic install."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from stream.model_reload import ModelWatcher, artifact_fingerprint, failure_reason, install_model


class ArtifactError(Exception):
    """Stands in for model.artifact.ArtifactError (matched by name)."""


class FakeScorer:
    def __init__(self, version: str, smoke_ok: bool) -> None:
        self.version = version
        self.smoke_ok = smoke_ok

    def smoke_check(self) -> None:
        if not self.smoke_ok:
            raise ArtifactError("non-finite scores")


class FakeLoader:
    """Reads manifest.json {"version", "checksum_ok", "smoke_ok"}; counts calls."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> FakeScorer:
        self.calls.append(path)
        manifest = json.loads((path / "manifest.json").read_text())
        if not manifest.get("checksum_ok", True):
            raise ArtifactError(f"checksum mismatch in {path / 'weights.bin'}")
        return FakeScorer(manifest["version"], manifest.get("smoke_ok", True))


def make_artifact(
    root: Path, name: str, version: str, checksum_ok: bool = True, smoke_ok: bool = True
) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(
        json.dumps({"version": version, "checksum_ok": checksum_ok, "smoke_ok": smoke_ok})
    )
    (path / "weights.bin").write_bytes(os.urandom(64))
    return path


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("kairos_model_load_failures_total", {"reason": reason}) or 0.0


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def watcher_for(model_dir: Path, loader: FakeLoader) -> ModelWatcher[FakeScorer]:
    return ModelWatcher(model_dir, loader, interval_seconds=0, settle_seconds=0)


def test_loads_then_refuses_corrupt_then_switches(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "current"
    loader = FakeLoader()
    watcher = watcher_for(model_dir, loader)
    reloads = counter("kairos_model_reloads_total")
    load_count = counter("kairos_model_load_seconds_count")

    install_model(make_artifact(tmp_path / "src", "a", "v-a"), model_dir)
    first = watcher.poll()
    assert first is not None and first.version == "v-a"
    assert watcher.current is first and watcher.version == "v-a"
    assert counter("kairos_model_info", version="v-a") == 1
    assert counter("kairos_model_load_seconds_count") - load_count == 1
    assert watcher.poll() is None  # nothing changed
    assert len(loader.calls) == 1  # and nothing was loaded again

    # A corrupt artifact is refused once, the old model keeps serving, no retry loop.
    before = failures("checksum")
    install_model(make_artifact(tmp_path / "src", "b", "v-b", checksum_ok=False), model_dir)
    assert watcher.poll() is None
    assert failures("checksum") - before == 1
    assert watcher.version == "v-a"
    assert "checksum mismatch" in (watcher.last_error or "")
    for _ in range(3):
        assert watcher.poll() is None
    assert len(loader.calls) == 2
    assert failures("checksum") - before == 1

    # One that loads but fails its smoke check is refused too.
    before_smoke = failures("smoke_check")
    install_model(make_artifact(tmp_path / "src", "c", "v-c", smoke_ok=False), model_dir)
    assert watcher.poll() is None
    assert failures("smoke_check") - before_smoke == 1
    assert watcher.version == "v-a"

    # A good one is swapped in.
    good = watcher_poll_until(watcher, install_model(make_artifact(tmp_path / "src", "d", "v-d"), model_dir))
    assert good.version == "v-d" and watcher.current is good
    assert counter("kairos_model_reloads_total") - reloads == 1
    assert counter("kairos_model_info", version="v-a") == 0
    assert counter("kairos_model_info", version="v-d") == 1
    # The loader was given the resolved release directory, not the symlink.
    assert loader.calls[-1] == model_dir.resolve()


def watcher_poll_until(watcher: ModelWatcher[FakeScorer], release: Path) -> FakeScorer:
    scorer = watcher.poll()
    assert scorer is not None, f"{release} not picked up"
    return scorer


def test_same_version_republished_is_not_a_reload(tmp_path: Path) -> None:
    model_dir = tmp_path / "current"
    loader = FakeLoader()
    watcher = watcher_for(model_dir, loader)
    install_model(make_artifact(tmp_path / "src", "a", "v-1"), model_dir)
    assert watcher.poll() is not None
    install_model(make_artifact(tmp_path / "src", "b", "v-1"), model_dir)
    assert watcher.poll() is None
    assert len(loader.calls) == 2
    assert watcher.poll() is None
    assert len(loader.calls) == 2


def test_half_written_artifact_waits_until_settled(tmp_path: Path) -> None:
    model_dir = tmp_path / "current"
    now = [time.time()]
    loader = FakeLoader()
    watcher = ModelWatcher(
        model_dir, loader, interval_seconds=0, settle_seconds=2.0, wall_clock=lambda: now[0]
    )
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"partial")  # a writer copying in place, no manifest yet
    assert watcher.poll() is None
    assert loader.calls == []  # too fresh to touch
    (model_dir / "manifest.json").write_text(json.dumps({"version": "v-late"}))
    now[0] = time.time() + 5
    scorer = watcher.poll()
    assert scorer is not None and scorer.version == "v-late"


def test_broken_then_fixed_in_place_is_retried(tmp_path: Path) -> None:
    model_dir = tmp_path / "current"
    loader = FakeLoader()
    watcher = watcher_for(model_dir, loader)
    model_dir.mkdir()
    (model_dir / "manifest.json").write_text("{not json")
    before = failures("error")
    assert watcher.poll() is None
    assert failures("error") - before == 1
    assert watcher.poll() is None and len(loader.calls) == 1
    (model_dir / "manifest.json").write_text(json.dumps({"version": "v-fixed", "pad": "x" * 10}))
    scorer = watcher.poll()
    assert scorer is not None and scorer.version == "v-fixed"


def test_missing_directory_is_reported_once(tmp_path: Path) -> None:
    model_dir = tmp_path / "nothing-here"
    watcher = watcher_for(model_dir, FakeLoader())
    before = failures("missing")
    for _ in range(5):
        assert watcher.poll() is None
    assert failures("missing") - before == 1
    assert watcher.current is None


def test_interval_limits_disk_checks(tmp_path: Path) -> None:
    model_dir = tmp_path / "current"
    clock = [100.0]
    loader = FakeLoader()
    watcher = ModelWatcher(model_dir, loader, interval_seconds=5, settle_seconds=0, clock=lambda: clock[0])
    assert watcher.poll() is None  # first look: nothing there
    install_model(make_artifact(tmp_path / "src", "a", "v-1"), model_dir)
    clock[0] += 1
    assert watcher.poll() is None and loader.calls == []  # within the interval: no disk access
    assert watcher.poll(force=True) is not None


def test_install_model_is_a_relative_symlink_swap_and_prunes(tmp_path: Path) -> None:
    models = tmp_path / "models"
    current = models / "current"
    # A plain directory from an older install is moved aside, not deleted.
    current.mkdir(parents=True)
    (current / "old.txt").write_text("old")
    releases = [
        install_model(make_artifact(tmp_path / "src", f"r{i}", f"v{i}"), current, keep=2) for i in range(5)
    ]
    assert current.is_symlink()
    assert not os.path.isabs(os.readlink(current))  # survives bind mounts
    assert current.resolve() == releases[-1].resolve()
    assert json.loads((current / "manifest.json").read_text())["version"] == "v4"
    left = sorted(p.name for p in models.iterdir() if p.name != "current")
    # The newest release plus `keep` older ones; no temporary leftovers.
    assert len(left) == 3 and not any(name.startswith(".") for name in left)
    assert releases[-1].name in left and releases[-2].name in left
    with pytest.raises(FileNotFoundError):
        install_model(tmp_path / "absent", current)


def test_fingerprint_changes_with_swap(tmp_path: Path) -> None:
    current = tmp_path / "current"
    assert artifact_fingerprint(current) is None
    install_model(make_artifact(tmp_path / "src", "a", "v1"), current)
    first = artifact_fingerprint(current)
    install_model(make_artifact(tmp_path / "src", "b", "v2"), current)
    second = artifact_fingerprint(current)
    assert first is not None and second is not None and first.key != second.key


def test_failure_reasons_are_bounded() -> None:
    class WithReason(Exception):
        reason = "schema"

    assert failure_reason(ArtifactError("Checksum mismatch")) == "checksum"
    assert failure_reason(ArtifactError("schema version 9 unsupported")) == "schema"
    assert failure_reason(ArtifactError("artifact format 1 is not 2")) == "schema"
    assert failure_reason(ArtifactError("not a model artifact (no MANIFEST.json)")) == "invalid_artifact"
    assert failure_reason(WithReason()) == "schema"
    assert failure_reason(FileNotFoundError()) == "missing"
    assert failure_reason(PermissionError()) == "io"
    assert failure_reason(RuntimeError("user 123")) == "error"
