"""The versioned model artifact directory and its integrity check.

Layout (every file listed with its SHA-256 in ``MANIFEST.json``, verified at load)::

    weights.pt      state_dict of tensors (torch.load(weights_only=True))
    items.json      item ids, position = index
    config.json     the TrainConfig
    metrics.json    training history, validation, calibration reliability, timings
    meta.json       format, version, n_items, sizes, event types, data fingerprint, calibration
    content.json    optional (``kairos train --items``): the content mapping's text model identity,
    content.npz     image width, feature layout and arrays (model.content); absent: no mapping
    MANIFEST.json   {"version": ..., "files": {name: sha256}}

It is written to a temporary sibling directory and renamed into place, so a watcher never sees half
an artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.config import TrainConfig
from model.content import CONTENT_JSON, CONTENT_NPZ, ContentMapping
from model.net import SessionGRU
from model.session_votes import INDEX_BUFFERS, SessionIndex
from stream.contract import EVENT_TYPES

FORMAT = 1
REQUIRED = ("weights.pt", "items.json", "config.json", "metrics.json", "meta.json")


class ArtifactError(RuntimeError):
    """A model artifact that is missing, corrupt or incompatible."""


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_version(fingerprint: str, now: float | None = None) -> str:
    """``gru-<UTC timestamp>-<6 hex of the data fingerprint>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"gru-{stamp}-{fingerprint[:6]}"


@dataclass
class Artifact:
    """A loaded, verified artifact."""

    path: Path
    version: str
    model: SessionGRU
    config: TrainConfig
    item_ids: list[str]
    meta: dict[str, Any]
    metrics: dict[str, Any]
    content: ContentMapping | None = None  # the content → item-space map, when trained with --items


def save_artifact(
    out_dir: str | Path,
    model: SessionGRU,
    item_ids: list[str],
    config: TrainConfig,
    metrics: dict[str, Any],
    fingerprint: str,
    calibration: dict[str, Any],
    extra_files: dict[str, Path] | None = None,
    content: ContentMapping | None = None,
) -> str:
    """Write the artifact to ``out_dir`` (replacing it atomically) and return its version.

    ``content``, when given, is written as ``content.json`` + ``content.npz`` (covered by the manifest).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    version = make_version(fingerprint)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp / "weights.pt")
        (tmp / "items.json").write_text(json.dumps(item_ids), encoding="utf-8")
        (tmp / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
        meta = {
            "format": FORMAT,
            "version": version,
            "created_at": time.time(),
            "n_items": len(item_ids),
            "embedding_size": config.embedding_size,
            "hidden_size": config.hidden_size,
            "event_types": list(EVENT_TYPES),
            "fingerprint": fingerprint,
            "calibration": calibration,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        if content is not None:
            content.save(tmp)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"version": version, "files": files}
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check every file against ``MANIFEST.json``; return the manifest or raise :class:`ArtifactError`."""
    root = Path(path)
    manifest_path = root / "MANIFEST.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{root}: not a model artifact (no MANIFEST.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    for name in REQUIRED:
        if name not in files:
            raise ArtifactError(f"{root}: manifest lacks {name}")
    for name, expected in files.items():
        file = root / name
        if not file.is_file():
            raise ArtifactError(f"{root}: missing file {name}")
        if file_sha256(file) != expected:
            raise ArtifactError(f"{file}: checksum mismatch (corrupt or modified artifact)")
    return dict(manifest)


def load_artifact(path: str | Path) -> Artifact:
    """Verify and load an artifact; any problem raises :class:`ArtifactError`."""
    root = Path(path)
    manifest = verify_artifact(root)
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"{root}: artifact format {meta.get('format')} is not {FORMAT}")
        if list(meta.get("event_types", [])) != list(EVENT_TYPES):
            raise ArtifactError(f"{root}: artifact event types differ from the stream contract's")
        config = TrainConfig.model_validate_json((root / "config.json").read_text(encoding="utf-8"))
        item_ids = json.loads((root / "items.json").read_text(encoding="utf-8"))
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
        state = torch.load(root / "weights.pt", weights_only=True, map_location="cpu")
        model = SessionGRU(len(item_ids), len(EVENT_TYPES), config)
        # Artifacts written before session memory have no neighbour buffers; without a window they are
        # empty anyway, so the model's own (empty) ones stand in.
        for name in ("neighbour_idx", "neighbour_w", *INDEX_BUFFERS):
            if name not in state and getattr(model, name).numel() == 0:
                state[name] = getattr(model, name)
        if model.uses_votes:  # the session-kNN index's sizes come from the data: install it first
            model.set_session_index(SessionIndex(*(state[name] for name in INDEX_BUFFERS)))
        model.load_state_dict(state)
        files = dict(manifest["files"])
        content = _load_content(root, files, model) if CONTENT_JSON in files else None
    except ArtifactError:
        raise
    except Exception as exc:  # any decoding problem is an artifact problem for the caller
        raise ArtifactError(f"{root}: cannot load artifact ({type(exc).__name__}: {exc})") from None
    model.eval()
    return Artifact(root, str(manifest["version"]), model, config, list(item_ids), meta, metrics, content)


def _load_content(root: Path, files: dict[str, str], model: SessionGRU) -> ContentMapping:
    """The content mapping of an artifact, checked against the model's widths."""
    if CONTENT_NPZ not in files:
        raise ArtifactError(f"{root}: manifest lists {CONTENT_JSON} but not {CONTENT_NPZ}")
    try:
        mapping = ContentMapping.load(root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{root}: unreadable content mapping ({type(exc).__name__}: {exc})") from None
    out_dim = 0 if model.out_emb is None else model.out_emb.shape[1]
    if (mapping.in_dim, mapping.out_dim) != (model.item_emb.shape[1], out_dim):
        raise ArtifactError(
            f"{root}: content mapping widths ({mapping.in_dim}, {mapping.out_dim}) do not match the model's "
            f"({model.item_emb.shape[1]}, {out_dim})"
        )
    return mapping
