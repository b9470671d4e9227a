"""Items without history: content features and the learned map from content to the model's item space.

A new item (absent from the training catalog) has no learned embedding. Its content — title, category
and optionally a precomputed image vector — is turned into a feature vector::

    [ text (384, the title's all-MiniLM-L6-v2 vector, model.text_embedding)
    | category part
    | image (image_width) | has_image (1) ]               (image part only when the mapping has one)

with the category part either ``"mean"``: the mean target vector of the training items of the same
category, a known-category indicator and log(1 + items in the category) / 10; or ``"hashed"``: a one-hot
of the category into ``n_buckets`` buckets (BLAKE2b of the name, the same in every process). A linear map
(ridge regression, fitted at training time by :mod:`model.content_fit`) takes the features to the item's
*target* vector ``[input embedding (D) | output embedding (D', untied models only) | output bias (1)]``,
so the GRU can step on the item and the scorer ranks it like any other.

This module is serving code (numpy only): the features, the map and its files in the artifact
(``content.npz`` with the arrays, ``content.json`` with the text model's identity, the image width and the
feature layout). Fitting lives in :mod:`model.content_fit`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONTENT_JSON = "content.json"
CONTENT_NPZ = "content.npz"
CONTENT_FORMAT = 1
CATEGORY_MODES = ("mean", "hashed")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, eq=False)
class ItemContent:
    """What the catalog says about an item: title, category, optional image vector (1-D floats)."""

    title: str
    category: str
    image: np.ndarray | None = None


def category_bucket(category: str, n_buckets: int) -> int:
    """The hashed bucket of a category name: stable across processes (unlike ``hash``)."""
    digest = hashlib.blake2b(category.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_buckets


def check_image(image: object, width: int | None, item: str = "item") -> np.ndarray | None:
    """The image vector as float32 (``width``,), or None; ValueError on a wrong width or non-finite value.

    Without an image part in the mapping (``width`` None) an image is ignored.
    """
    if image is None or width is None:
        return None
    try:
        vec = np.asarray(image, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{item}: image must be a list of numbers") from None
    if vec.ndim != 1 or len(vec) != width:
        raise ValueError(f"{item}: image vector has shape {vec.shape}, expected ({width},)")
    if not np.isfinite(vec).all():
        raise ValueError(f"{item}: image vector has non-finite values (NaN or infinity)")
    if len(vec) and float(np.abs(vec).max()) > _FLOAT32_MAX:  # infinite once read as float32
        raise ValueError(f"{item}: image vector has a value past float32's range ({_FLOAT32_MAX:.3g})")
    return vec.astype(np.float32)


@dataclass
class ContentMapping:
    """Content features → target vector ``[in_emb | out_emb (untied) | bias]``, plus what it needs.

    ``weights`` (F, Y), ``x_mean`` (F,) and ``y_mean`` (Y,): ``target = (features - x_mean) @ weights +
    y_mean``. ``categories`` / ``category_table`` (n_cat, Y) / ``category_items`` (n_cat,) are the
    per-category mean targets of the ``"mean"`` mode (empty for ``"hashed"``).
    """

    text_identity: dict[str, Any]
    text_dim: int
    in_dim: int
    out_dim: int  # 0 for tied models (the input embedding is the output embedding)
    image_width: int | None
    category_mode: str
    n_buckets: int
    weights: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    categories: list[str] = field(default_factory=list)
    category_table: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    category_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._category_row = {c: i for i, c in enumerate(self.categories)}

    @property
    def target_width(self) -> int:
        """Y = in_dim + out_dim + 1."""
        return self.in_dim + self.out_dim + 1

    @property
    def category_width(self) -> int:
        """Width of the category part of the features."""
        return self.target_width + 2 if self.category_mode == "mean" else self.n_buckets

    @property
    def feature_width(self) -> int:
        """F: text + category + image (+ has_image)."""
        image = 0 if self.image_width is None else self.image_width + 1
        return self.text_dim + self.category_width + image

    def layout(self) -> dict[str, list[int]]:
        """Column ranges ``[start, stop)`` of each feature part."""
        text_end = self.text_dim
        cat_end = text_end + self.category_width
        out = {"text": [0, text_end], "category": [text_end, cat_end]}
        if self.image_width is not None:
            out["image"] = [cat_end, cat_end + self.image_width + 1]
        return out

    def category_features(self, categories: Sequence[str], exclude: np.ndarray | None = None) -> np.ndarray:
        """The category part (N, category_width) float64.

        ``exclude`` (N, Y), training only: each row's own target is taken out of its category's mean
        (leave-one-out), so the fit sees category means the way a new item does — without itself.
        """
        n = len(categories)
        out = np.zeros((n, self.category_width), dtype=np.float64)
        if self.category_mode == "hashed":
            for row, cat in enumerate(categories):
                out[row, category_bucket(cat, self.n_buckets)] = 1.0
            return out
        y = self.target_width
        for row, cat in enumerate(categories):
            c = self._category_row.get(cat)
            if c is None:
                continue
            count = int(self.category_items[c])
            total = self.category_table[c].astype(np.float64) * count
            if exclude is not None:
                total, count = total - exclude[row], count - 1
            if count <= 0:
                continue
            out[row, :y] = total / count
            out[row, y] = 1.0
            out[row, y + 1] = math.log1p(count) / 10.0
        return out

    def features(
        self, text_vectors: np.ndarray, contents: Sequence[ItemContent], exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """Feature rows (N, F) float64 from the titles' vectors (N, text_dim) and the items' content."""
        if text_vectors.shape != (len(contents), self.text_dim):
            raise ValueError(f"text vectors must be ({len(contents)}, {self.text_dim})")
        parts = [
            text_vectors.astype(np.float64),
            self.category_features([c.category for c in contents], exclude),
        ]
        if self.image_width is not None:
            image = np.zeros((len(contents), self.image_width + 1), dtype=np.float64)
            for row, item in enumerate(contents):
                vec = check_image(item.image, self.image_width)
                if vec is not None:
                    image[row, :-1] = vec
                    image[row, -1] = 1.0
            parts.append(image)
        return np.concatenate(parts, axis=1)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input embeddings (N, D), output embeddings (N, D'), biases (N,)), float32.

        For tied models the output embedding is the input embedding. Row by row (einsum, not a BLAS
        product) so an item's vector does not depend on which other items are mapped with it.
        """
        target = np.einsum("nf,fy->ny", features - self.x_mean, self.weights) + self.y_mean
        target = target.astype(np.float32)
        d, e = self.in_dim, self.out_dim
        in_emb = np.ascontiguousarray(target[:, :d])
        out_emb = np.ascontiguousarray(target[:, d : d + e]) if e else in_emb
        return in_emb, out_emb, np.ascontiguousarray(target[:, d + e])

    def check(self, validate: Sequence[ItemContent]) -> None:
        """Validate items before anything is changed: types, image width and finiteness (ValueError)."""
        for item in validate:
            if not isinstance(item, ItemContent):
                raise ValueError(f"expected ItemContent, got {type(item).__name__}")
            if not isinstance(item.title, str) or not isinstance(item.category, str):
                raise ValueError("ItemContent title and category must be strings")
            check_image(item.image, self.image_width, item=repr(item.title[:40]))

    # ------------------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> list[Path]:
        """Write ``content.json`` and ``content.npz`` into ``directory``; return their paths."""
        meta = {
            "format": CONTENT_FORMAT,
            "text_model": self.text_identity,
            "text_dim": self.text_dim,
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "image_width": self.image_width,
            "category_mode": self.category_mode,
            "n_buckets": self.n_buckets,
            "categories": self.categories,
            "layout": self.layout(),
            "report": self.report,
        }
        js, npz = directory / CONTENT_JSON, directory / CONTENT_NPZ
        js.write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")
        with npz.open("wb") as handle:
            np.savez(
                handle,
                weights=self.weights.astype(np.float32),
                x_mean=self.x_mean.astype(np.float32),
                y_mean=self.y_mean.astype(np.float32),
                category_table=self.category_table.astype(np.float32),
                category_items=self.category_items.astype(np.int64),
            )
        return [js, npz]

    @classmethod
    def load(cls, directory: Path) -> ContentMapping:
        """Read the mapping back; ValueError/KeyError/OSError on anything malformed."""
        meta = json.loads((directory / CONTENT_JSON).read_text(encoding="utf-8"))
        if meta.get("format") != CONTENT_FORMAT:
            raise ValueError(f"content mapping format {meta.get('format')} is not {CONTENT_FORMAT}")
        if meta["category_mode"] not in CATEGORY_MODES:
            raise ValueError(f"unknown category mode {meta['category_mode']!r}")
        with np.load(directory / CONTENT_NPZ, allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
        width = meta["image_width"]
        mapping = cls(
            text_identity=dict(meta["text_model"]),
            text_dim=int(meta["text_dim"]),
            in_dim=int(meta["in_dim"]),
            out_dim=int(meta["out_dim"]),
            image_width=None if width is None else int(width),
            category_mode=str(meta["category_mode"]),
            n_buckets=int(meta["n_buckets"]),
            weights=loaded["weights"].astype(np.float64),
            x_mean=loaded["x_mean"].astype(np.float64),
            y_mean=loaded["y_mean"].astype(np.float64),
            categories=[str(c) for c in meta["categories"]],
            category_table=loaded["category_table"],
            category_items=loaded["category_items"],
            report=dict(meta.get("report", {})),
        )
        want = (mapping.feature_width, mapping.target_width)
        if (
            mapping.weights.shape != want
            or mapping.x_mean.shape != want[:1]
            or mapping.y_mean.shape != want[1:]
        ):
            raise ValueError(
                f"content arrays do not match the layout (weights {mapping.weights.shape}, want {want})"
            )
        if mapping.category_mode == "mean" and (
            mapping.category_table.shape != (len(mapping.categories), mapping.target_width)
            or mapping.category_items.shape != (len(mapping.categories),)
        ):
            raise ValueError("content category table does not match the categories")
        finite = all(np.isfinite(a).all() for a in (mapping.weights, mapping.x_mean, mapping.y_mean))
        if not finite or not np.isfinite(mapping.category_table).all():
            raise ValueError("content mapping has non-finite values")
        return mapping
