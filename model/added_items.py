"""Items added to a loaded model from their content (the scorer's ``add_items``), and the text encoder.

``IncrementalScorer.add_items`` appends rows for items the artifact does not know: an input embedding
(the GRU steps on it), an output embedding and an output bias (candidates are scored with them), all
mapped from the item's content by the artifact's :class:`model.content.ContentMapping`. An added
item's rows depend only on its own content and the artifact: each title is encoded alone and each row
mapped alone, so neither the order of additions nor the other items added change them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from model.artifact import ArtifactError
from model.content import ContentMapping, ItemContent
from model.text_embedding import TextEncoder, TextEncoderError

log = logging.getLogger(__name__)

ContentMode = Literal["require", "auto", "off"]
CONTENT_MODES = ("require", "auto", "off")


@functools.lru_cache(maxsize=1)
def shared_encoder() -> TextEncoder:
    """The bundled text encoder, loaded once per process (a model reload does not load it again)."""
    return TextEncoder()


def content_encoder(mapping: ContentMapping | None, mode: str, path: Path) -> TextEncoder | None:
    """The text encoder for an artifact's mapping, or None when content is off or unavailable.

    ``mode`` "require": a mapping whose encoder cannot load (or is not the one it was fitted with)
    raises :class:`ArtifactError`; "auto": logs a warning and returns None; "off": None.
    """
    if mode not in CONTENT_MODES:
        raise ValueError(f"content must be one of {CONTENT_MODES}, not {mode!r}")
    if mapping is None or mode == "off":
        return None
    try:
        encoder = shared_encoder()
        want, got = mapping.text_identity.get("weights_sha256"), encoder.identity["weights_sha256"]
        if want != got or encoder.dim != mapping.text_dim:
            raise TextEncoderError(
                f"the installed text model (sha256 {got[:12]}, dim {encoder.dim}) is not the one the "
                f"content mapping was fitted with (sha256 {str(want)[:12]}, dim {mapping.text_dim})"
            )
    except TextEncoderError as exc:
        if mode == "require":
            raise ArtifactError(
                f"{path}: the artifact has a content mapping but its text encoder cannot be used ({exc}); "
                "load with content='off' to serve without items added from content"
            ) from None
        log.warning("%s: serving without the content mapping: %s", path, exc)
        return None
    return encoder


def map_items(
    mapping: ContentMapping, encoder: TextEncoder, contents: Sequence[ItemContent]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input embeddings, output embeddings, biases) of items from their content, each row on its own."""
    mapping.check(contents)
    text = np.stack([encoder.encode_one(c.title) for c in contents])
    return mapping.predict(mapping.features(text, contents))


def new_items(
    item_ids: Sequence[str], contents: Sequence[ItemContent], known: dict[str, int]
) -> tuple[list[str], list[ItemContent]]:
    """The ids (first occurrence) and contents of ``item_ids`` that ``known`` lacks."""
    if len(item_ids) != len(contents):
        raise ValueError(
            f"add_items needs one content per id ({len(item_ids)} ids, {len(contents)} contents)"
        )
    ids: list[str] = []
    rows: list[ItemContent] = []
    seen: set[str] = set()
    for item, content in zip(item_ids, contents, strict=True):
        if item in known or item in seen:
            continue
        seen.add(item)
        ids.append(str(item))
        rows.append(content)
    return ids, rows


def nearest_known(
    unit_out: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, exclude: int | None
) -> list[str]:
    """The ``k`` rows of ``unit_out`` (L2-normalised, one per known item) most cosine-similar to ``query``.

    Ties are broken by item id; ``exclude`` (the query item's own row, if known) is left out.
    """
    if k <= 0:
        return []
    norm = float(np.linalg.norm(query))
    cos = np.einsum("nd,d->n", unit_out, query / norm if norm > 0 else query).astype(np.float64)
    if exclude is not None:
        cos[exclude] = -np.inf
    k = min(k, len(cos) - (exclude is not None))
    if k <= 0:
        return []
    # Everything at least as close as the k-th best, then sorted by (-cos, id): ties broken by id.
    kth = np.partition(cos, len(cos) - k)[len(cos) - k]
    pool = np.flatnonzero(cos >= kth)
    order = np.lexsort((ids[pool], -cos[pool]))[:k]
    return [str(ids[i]) for i in pool[order]]
