"""Model hot reload: watch the model directory, load and smoke-check a new artifact, hand it over.

The worker calls :meth:`ModelWatcher.poll` between batches and swaps its scorer when ``poll`` returns
one, so every event is scored by exactly one model and none is lost or processed twice. A refused
artifact (checksum, schema, smoke check) leaves the old model serving, is logged once, counts in
``kairos_model_load_failures_total{reason}`` and is not tried again until the directory changes.

Publishing: :func:`install_model` copies an artifact beside the model directory under a fresh name,
then swaps a relative symlink onto the model directory's path in one ``rename`` (atomic on POSIX).
Readers therefore see either the old artifact or the new one, never a mix; relative links keep
working when the parent folder is bind-mounted into a container.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

from stream import metrics, metrics_record

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What the watcher needs of a model (``model.scorer.IncrementalScorer`` has it)."""

    version: str

    def smoke_check(self) -> None:
        """Raise if the model does not produce sane outputs."""
        ...


S = TypeVar("S", bound=Scorer)


@dataclass(frozen=True)
class Fingerprint:
    """Identity of what the model directory holds right now."""

    key: tuple[object, ...]  # resolved path, directory inode, (relative name, size, mtime) of every file
    newest_mtime: float  # most recent modification of any file (wall clock, seconds)


def artifact_fingerprint(model_dir: Path) -> Fingerprint | None:
    """Fingerprint of the artifact at ``model_dir`` (following a symlink), or None if it is absent."""
    try:
        real = model_dir.resolve(strict=True)
        top = real.stat()
        if not real.is_dir():
            return None
        files: list[tuple[str, int, int]] = []
        newest = top.st_mtime
        for root, dirs, names in os.walk(real):
            dirs.sort()
            for name in sorted(names):
                path = Path(root) / name
                st = path.stat()
                files.append((str(path.relative_to(real)), st.st_size, st.st_mtime_ns))
                newest = max(newest, st.st_mtime)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Fingerprint(key=(str(real), top.st_ino, tuple(files)), newest_mtime=newest)


def failure_reason(exc: BaseException) -> str:
    """A bounded reason code for a failed load (label of ``kairos_model_load_failures_total``)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason in metrics.MODEL_FAILURE_REASONS:
        return reason
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, OSError):
        return "io"
    # Matched by name so that this module does not import torch through model.artifact.
    if type(exc).__name__ == "ArtifactError":
        text = str(exc).lower()
        if "checksum" in text:
            return "checksum"
        if any(word in text for word in ("schema", "format", "manifest lacks", "event types")):
            return "schema"
        return "invalid_artifact"
    return "error"


def load_scorer(path: Path, content: Literal["auto", "require", "off"] = "auto") -> Scorer:
    """Load an artifact with :class:`model.scorer.IncrementalScorer` (``content``: ``model.content``)."""
    from model.scorer import IncrementalScorer  # imported late: torch is heavy and tests use fakes

    scorer: Scorer = IncrementalScorer.load(path, content=content)
    return scorer


def _default_loader(path: Path) -> Scorer:
    return load_scorer(path)


class ModelWatcher(Generic[S]):
    """Watches ``model_dir`` and loads new artifacts with ``loader`` (default ``IncrementalScorer.load``).

    - ``interval_seconds``: :meth:`poll` looks at the disk at most this often (it is called per batch).
    - ``settle_seconds``: an artifact whose files changed less than this long ago is being written;
      it is left until the next poll.

    Type it for the checker as ``ModelWatcher[IncrementalScorer]``.
    """

    def __init__(
        self,
        model_dir: Path,
        loader: Callable[[Path], S] | None = None,
        interval_seconds: float = 5.0,
        settle_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.model_dir = Path(model_dir)
        self._loader: Callable[[Path], S] = loader if loader is not None else _default_loader  # type: ignore[assignment]
        self.interval_seconds = interval_seconds
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._last_check: float | None = None
        self._current: S | None = None
        self._loaded_key: tuple[object, ...] | None = None
        self._failed_key: tuple[object, ...] | None = None
        self._missing_reported = False
        self.last_error: str | None = None

    @property
    def current(self) -> S | None:
        """The scorer returned by the last successful :meth:`poll` (None before the first)."""
        return self._current

    @property
    def version(self) -> str | None:
        """Version of :attr:`current`."""
        return self._current.version if self._current is not None else None

    def poll(self, force: bool = False) -> S | None:
        """A freshly loaded, smoke-checked scorer if the directory holds a new artifact, else None.

        Cheap when nothing changed (returns at once within ``interval_seconds`` of the last look;
        otherwise a directory listing). ``force`` looks at the disk regardless of the interval.
        """
        now = self._clock()
        if not force and self._last_check is not None and now - self._last_check < self.interval_seconds:
            return None
        self._last_check = now
        fingerprint = artifact_fingerprint(self.model_dir)
        if fingerprint is None:
            if not self._missing_reported:
                self._missing_reported = True
                self._fail("missing", f"no model artifact at {self.model_dir}")
            return None
        self._missing_reported = False
        if fingerprint.key in (self._loaded_key, self._failed_key):
            return None
        if self._wall_clock() - fingerprint.newest_mtime < self.settle_seconds:
            log.info("model artifact at %s is still being written; looking again later", self.model_dir)
            return None
        return self._load(fingerprint)

    def _load(self, fingerprint: Fingerprint) -> S | None:
        # Load from the resolved directory: a symlink swap during the load cannot mix two artifacts.
        path = Path(str(fingerprint.key[0]))
        started = time.perf_counter()
        try:
            scorer = self._loader(path)
        except Exception as exc:  # noqa: BLE001 - any failure must keep the old model serving
            self._failed_key = fingerprint.key
            self._fail(failure_reason(exc), f"cannot load model at {path}: {exc}")
            return None
        try:
            scorer.smoke_check()
        except Exception as exc:  # noqa: BLE001 - same: refuse, keep serving the old one
            self._failed_key = fingerprint.key
            version = getattr(scorer, "version", "?")
            self._fail("smoke_check", f"model {version} at {path} failed its smoke check: {exc}")
            return None
        elapsed = time.perf_counter() - started
        after = artifact_fingerprint(self.model_dir)
        if after is None or after.key != fingerprint.key:
            # Files changed under us (a non-atomic writer): try again once they settle.
            log.info("model artifact at %s changed while loading; looking again later", self.model_dir)
            return None
        self._loaded_key = fingerprint.key
        self._failed_key = None
        self.last_error = None
        previous = self._current
        if previous is not None and previous.version == scorer.version:
            log.info("model artifact re-published with the same version %s; keeping it", scorer.version)
            return None
        metrics.MODEL_LOAD_SECONDS.observe(elapsed)
        metrics_record.set_model_version(scorer.version)
        if previous is not None:
            metrics.MODEL_RELOADS.inc()
        self._current = scorer
        log.info(
            "model %s loaded in %.3fs%s",
            scorer.version,
            elapsed,
            f" (replaces {previous.version})" if previous is not None else "",
            extra={"model_version": scorer.version, "load_seconds": round(elapsed, 4)},
        )
        return scorer

    def _fail(self, reason: str, message: str) -> None:
        self.last_error = message
        metrics.MODEL_LOAD_FAILURES.labels(reason).inc()
        serving = self.version
        log.error(
            "%s; %s",
            message,
            f"still serving model {serving}" if serving else "no model is served",
            extra={"reason": reason},
        )


def install_model(src_dir: Path, model_dir: Path, keep: int = 3) -> Path:
    """Publish the artifact in ``src_dir`` at ``model_dir`` atomically; return the new release directory.

    The artifact is copied to a temporary directory beside ``model_dir``, renamed to
    ``<name>.<UTC stamp>-<random>`` once complete, and ``model_dir`` becomes a relative symlink to it
    through one atomic rename. If ``model_dir`` is a plain directory from before, it is first moved
    aside (a moment without a model, which a watcher rides out by keeping the old one). Older
    releases beyond ``keep`` (besides the new one) are deleted.
    """
    src = Path(src_dir).resolve(strict=True)
    if not src.is_dir():
        raise NotADirectoryError(f"model artifact {src} is not a directory")
    target = Path(os.path.abspath(model_dir))
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    release = parent / f"{target.name}.{stamp}"
    staging = parent / f".{target.name}.{stamp}.tmp"
    link = parent / f".{target.name}.{stamp}.link"
    shutil.copytree(src, staging)
    os.rename(staging, release)
    os.symlink(release.name, link)
    if target.exists() and not target.is_symlink():
        os.rename(target, parent / f"{target.name}.{stamp}.previous")
    os.replace(link, target)
    _prune_releases(target, release, keep)
    log.info("installed model from %s at %s -> %s", src, target, release.name)
    return release


def _prune_releases(target: Path, newest: Path, keep: int) -> None:
    prefix = target.name + "."
    releases = [
        p
        for p in target.parent.iterdir()
        if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink() and p != newest
    ]
    releases.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    for old in releases[max(0, keep) :]:
        shutil.rmtree(old, ignore_errors=True)
