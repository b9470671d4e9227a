"""Items added to a loaded model from their content (the scorer's ``add_items``), and the text encoder.

``IncrementalScorer.add_items`` appends rows for items the artifact does not know: an input embedding
(the GRU steps on it), an output embedding and an output bias (candidates are scored with them), all
mapped from the item's content by the artifact's :class:`model.content.ContentMapping`. An added
item's rows depend only on its own content and the artifact: each title is encoded alone and each row
mapped alone, so neither the order of additions nor the other items added change them.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class AddedRowBounds:
    """The extremes of the artifact's own item rows, which rows added from content must stay within.

    A linear map from content is only trustworthy near the content it was fitted on: an image vector of
    1e5 where the catalog's are of order 1 maps to an embedding of that order, whose score is then the
    top one for nearly every shopper (the item would be pushed to everyone browsing its category). So
    an added row's input and output embeddings are scaled down to the longest learned ones (direction
    kept) and its bias clipped to the learned range. Content like the training catalog's maps within
    these bounds and is left exactly as mapped.
    """

    max_in_norm: float
    max_out_norm: float
    min_bias: float
    max_bias: float

    def hold(
        self, in_emb: np.ndarray, out_emb: np.ndarray, bias: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(in_emb, out_emb, bias)`` of added rows, each row held within the bounds (new arrays)."""
        tied = out_emb is in_emb
        in_held = _within_norm(in_emb, self.max_in_norm)
        out_held = in_held if tied else _within_norm(out_emb, self.max_out_norm)
        return in_held, out_held, np.clip(_finite(bias), self.min_bias, self.max_bias).astype(bias.dtype)


_F32_MAX = float(np.finfo(np.float32).max)


def _finite(values: np.ndarray) -> np.ndarray:
    """float64 copy with NaN as 0 and infinities as float32's extremes (content mapped past float32)."""
    return np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=_F32_MAX, neginf=-_F32_MAX)


def _within_norm(rows: np.ndarray, limit: float) -> np.ndarray:
    wide = _finite(rows)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    scale = np.where(norms > limit, limit / np.where(norms > 0, norms, 1.0), 1.0)
    return np.ascontiguousarray((wide * scale).astype(rows.dtype))


def added_row_bounds(in_emb: np.ndarray, out_emb: np.ndarray, bias: np.ndarray) -> AddedRowBounds:
    """The bounds of :class:`AddedRowBounds` from the artifact's rows (input, output embeddings, bias)."""
    return AddedRowBounds(
        max_in_norm=float(np.linalg.norm(in_emb.astype(np.float64), axis=1).max(initial=0.0)),
        max_out_norm=float(np.linalg.norm(out_emb.astype(np.float64), axis=1).max(initial=0.0)),
        min_bias=float(bias.min()),
        max_bias=float(bias.max()),
    )


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


class FreeRows:
    """Rows of items added from content and forgotten since (``IncrementalScorer.reuse_rows``), for the
    next additions to take, lowest first: the model holds at most as many added rows as items it
    placed and still knows, plus those freed and not yet reused."""

    def __init__(self) -> None:
        self._heap: list[int] = []

    def __len__(self) -> int:
        return len(self._heap)

    def release(self, rows: Iterable[int]) -> None:
        """Make ``rows`` available (each at most once: the scorer frees a row when it forgets its item)."""
        for row in rows:
            heapq.heappush(self._heap, int(row))

    def take(self, n: int) -> list[int]:
        """Up to ``n`` free rows, lowest first (the same rows for the same history of calls)."""
        return [heapq.heappop(self._heap) for _ in range(min(n, len(self._heap)))]
