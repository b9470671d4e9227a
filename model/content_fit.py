"""Training side of the content mapping: the item catalog file and the ridge fit (see :mod:`model.content`).

Catalog file (``kairos train --items FILE``), one item per line, either

* JSON lines (``.jsonl`` / ``.json``): ``{"item_id": "42", "title": "...", "category": "...",
  "image": [0.1, ...]}`` (``image`` optional; ``title`` and ``category`` may be empty strings), or
* TSV with a header naming ``item_id``, ``title``, ``category`` and optionally ``image`` (the vector as
  comma-separated numbers, empty for none).

All image vectors of a file must have one width (it becomes the mapping's ``image_width``).

The fit: the training items present in the catalog (the *warm* items) give pairs (content features,
target vector ``[input embedding | output embedding (untied) | bias]``). A weighted ridge regression
(closed form, weights = the item's training support normalised to mean 1, unpenalised intercept by
centring) maps one to the other. The ridge strength and the category mode are chosen on a seeded
hold-out of 20 % of the warm items (support-weighted mean squared error of the target), then the map is
refitted on all warm items.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.content import CATEGORY_MODES, ContentMapping, ItemContent, check_image
from model.net import SessionGRU
from model.text_embedding import TextEncoder

LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Scale of the text columns relative to the others before the ridge: one ridge strength over groups of
# very different scales over-fits the smaller (the 384 text columns are unit-norm rows) or over-shrinks
# the larger (category means), so the hold-out also chooses how loud the text is.
TEXT_SCALES = (0.3, 1.0, 3.0, 10.0)
N_BUCKETS = 512
MIN_ITEMS = 10


def load_item_catalog(path: str | Path) -> tuple[dict[str, ItemContent], int | None]:
    """Read a catalog file (format in the module doc): ``({item_id: content}, image_width)``."""
    p = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    if p.suffix in (".jsonl", ".json"):
        with p.open("r", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append((line_no, dict(json.loads(line))))
                    except (ValueError, TypeError) as exc:
                        raise ValueError(f"{p}:{line_no}: not a JSON object ({exc})") from None
    else:
        with p.open("r", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = {"item_id", "title", "category"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{p}:1: missing column(s) {sorted(missing)}")
            for line_no, row in enumerate(reader, start=2):
                image = (row.get("image") or "").strip()
                rows.append(
                    (line_no, {**row, "image": [float(x) for x in image.split(",")] if image else None})
                )
    items: dict[str, ItemContent] = {}
    width: int | None = None
    for line_no, row in rows:
        item = str(row.get("item_id") or "")
        if not item:
            raise ValueError(f"{p}:{line_no}: empty item_id")
        image = row.get("image")
        if image is not None:
            width = len(image) if width is None else width
            try:
                image = check_image(image, width, item=f"{p}:{line_no}")
            except ValueError as exc:
                raise ValueError(f"{exc} (the first image of the file has width {width})") from None
        items[item] = ItemContent(str(row.get("title") or ""), str(row.get("category") or ""), image)
    if not items:
        raise ValueError(f"{p}: no items")
    return items, width


def ridge(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted ridge with an unpenalised intercept: ``(weights (F, Y), x_mean, y_mean)``.

    ``lam`` is relative: the penalty is ``lam * trace(X'WX) / F``, so one grid fits any feature scale.
    ``scale`` (F,): columns are multiplied by it before the fit (a per-column penalty); the weights
    returned apply to the unscaled features.
    """
    w = w / w.sum()
    x_mean, y_mean = w @ x, w @ y
    xc, yc = x - x_mean, y - y_mean
    if scale is not None:
        xc = xc * scale
    gram = xc.T @ (xc * w[:, None])
    penalty = lam * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    coef = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), xc.T @ (yc * w[:, None]))
    if scale is not None:
        coef = coef * scale[:, None]
    return coef, x_mean, y_mean


def _column_scale(mapping: ContentMapping, text_scale: float) -> np.ndarray:
    """Per-column scale: ``text_scale`` on the text columns, 1 elsewhere."""
    scale = np.ones(mapping.feature_width)
    start, stop = mapping.layout()["text"]
    scale[start:stop] = text_scale
    return scale


def _mapping(
    base: dict[str, Any], mode: str, categories: Sequence[str], targets: np.ndarray
) -> ContentMapping:
    """A mapping without weights yet, whose category table is the mean target of ``categories``' items."""
    names = sorted(set(categories))
    row = {c: i for i, c in enumerate(names)}
    table = np.zeros((len(names), targets.shape[1]), dtype=np.float64)
    counts = np.zeros(len(names), dtype=np.int64)
    for cat, target in zip(categories, targets, strict=True):
        table[row[cat]] += target
        counts[row[cat]] += 1
    table /= np.maximum(counts, 1)[:, None]
    empty = np.zeros(0)
    if mode == "hashed":
        names, table, counts = [], np.zeros((0, targets.shape[1])), np.zeros(0, np.int64)
    return ContentMapping(
        **base,
        category_mode=mode,
        weights=empty,
        x_mean=empty,
        y_mean=empty,
        categories=names,
        category_table=table,
        category_items=counts,
    )


def fit_content_mapping(
    targets: np.ndarray,
    support: np.ndarray,
    contents: Sequence[ItemContent],
    in_dim: int,
    out_dim: int,
    image_width: int | None,
    encoder: TextEncoder,
    seed: int = 0,
    modes: Sequence[str] = CATEGORY_MODES,
    lambdas: Sequence[float] = LAMBDAS,
    text_scales: Sequence[float] = TEXT_SCALES,
) -> ContentMapping:
    """Fit the map from ``contents`` to ``targets`` (N, Y) of the warm items, weighted by ``support`` (N,).

    Chooses the category mode, the text columns' scale and the ridge strength on a seeded 20 %
    hold-out, refits on everything and records the choice and every hold-out error in
    ``mapping.report``.
    """
    n = len(contents)
    if n < MIN_ITEMS:
        raise ValueError(f"content mapping needs at least {MIN_ITEMS} training items with content, found {n}")
    if targets.shape != (n, in_dim + out_dim + 1) or support.shape != (n,):
        raise ValueError("targets must be (N, in_dim + out_dim + 1) and support (N,)")
    titles = [c.title for c in contents]
    unique = sorted(set(titles))
    vectors = encoder.encode(unique, batch_size=64)
    position = {title: i for i, title in enumerate(unique)}
    text = vectors[[position[t] for t in titles]]
    cats = [c.category for c in contents]
    weight = support.astype(np.float64) / max(float(support.mean()), 1e-12)
    y = targets.astype(np.float64)
    base: dict[str, Any] = {
        "text_identity": encoder.identity,
        "text_dim": encoder.dim,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "image_width": image_width,
        "n_buckets": N_BUCKETS,
    }
    order = np.random.default_rng(seed).permutation(n)
    held, fit = np.sort(order[: max(1, n // 5)]), np.sort(order[max(1, n // 5) :])
    errors: dict[str, dict[str, float]] = {}
    best: tuple[float, str, float, float] = (float("inf"), modes[0], lambdas[0], text_scales[0])
    for mode in modes:
        probe = _mapping(base, mode, [cats[i] for i in fit], y[fit])
        x_fit = probe.features(text[fit], [contents[i] for i in fit], exclude=y[fit])
        x_held = probe.features(text[held], [contents[i] for i in held])
        errors[mode] = {}
        for text_scale in text_scales:
            scale = _column_scale(probe, text_scale)
            for lam in lambdas:
                coef, xm, ym = ridge(x_fit, y[fit], weight[fit], lam, scale)
                pred = (x_held - xm) @ coef + ym
                err = float(weight[held] @ ((pred - y[held]) ** 2).sum(axis=1) / weight[held].sum())
                errors[mode][f"text x{text_scale} lambda {lam}"] = err
                if err < best[0]:
                    best = (err, mode, lam, text_scale)
    # The error of predicting every held-out item as the (weighted) mean item: the scale to read errors by.
    mean_err = float(weight[held] @ ((y[held] - weight[fit] @ y[fit] / weight[fit].sum()) ** 2).sum(axis=1))
    _, mode, lam, text_scale = best
    mapping = _mapping(base, mode, cats, y)
    x_all = mapping.features(text, contents, exclude=y)
    mapping.weights, mapping.x_mean, mapping.y_mean = ridge(
        x_all, y, weight, lam, _column_scale(mapping, text_scale)
    )
    mapping.report = {
        "n_items": n,
        "n_holdout": len(held),
        "category_mode": mode,
        "ridge_lambda": lam,
        "text_scale": text_scale,
        "holdout_error": errors,
        "holdout_error_of_mean_item": mean_err / weight[held].sum(),
        "weights": "training support / mean support",
    }
    return mapping


def item_targets(in_emb: np.ndarray, out_emb: np.ndarray | None, bias: np.ndarray) -> np.ndarray:
    """The target rows ``[in_emb | out_emb (untied only) | bias]`` of trained items."""
    parts = [in_emb] + ([out_emb] if out_emb is not None else []) + [bias[:, None]]
    return np.concatenate(parts, axis=1).astype(np.float64)


def fit_for_model(
    model: SessionGRU,
    item_ids: Sequence[str],
    support: np.ndarray,
    catalog_path: str | Path,
    seed: int = 0,
    encoder: TextEncoder | None = None,
) -> ContentMapping:
    """Fit the content mapping of a trained model's items (``support``: training counts) from a catalog."""
    catalog, width = load_item_catalog(catalog_path)
    with torch.no_grad():
        in_emb = model.item_emb.detach().numpy()
        out_emb = None if model.out_emb is None else model.out_emb.detach().numpy()
        bias = model.bias.detach()[:, 0].numpy()
    rows = [i for i, item in enumerate(item_ids) if item in catalog]
    mapping = fit_content_mapping(
        item_targets(in_emb, out_emb, bias)[rows],
        np.asarray(support, dtype=np.float64)[rows],
        [catalog[item_ids[i]] for i in rows],
        in_emb.shape[1],
        0 if out_emb is None else out_emb.shape[1],
        width,
        encoder or TextEncoder(),
        seed,
    )
    mapping.report["n_catalog_items"] = len(catalog)
    mapping.report["n_training_items"] = len(item_ids)
    return mapping
