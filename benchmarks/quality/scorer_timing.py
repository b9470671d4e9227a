"""The model-quality benchmark's ``--scorer-timing``: µs per event of the scorer's ``step``, ``score``
and ``interest`` on untrained weights of the Diginetica preset's shape, one thread, with and without
the session memory; no data needed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from model.config import CONFIG_DIR


def _best_us(fn: Any, args: tuple[Any, ...], repeats: int) -> float:
    """Fastest of ``repeats`` calls, in µs (after one warm-up call)."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best


def scorer_timing(
    n_items_list: tuple[int, ...] = (3_000, 43_097), batch: int = 512, n_cands: int = 50, repeats: int = 20
) -> list[dict[str, float]]:
    """µs per event of ``step``, ``score`` and ``interest`` (both calibration features), one thread.

    Untrained weights of the Diginetica preset's shape (with its session memory, and a random neighbour
    table of the same size; speed does not depend on the values). The same weights are saved twice, once
    per calibration feature, so only ``interest`` differs. ``*_no_memory`` keys: the same model without
    session memory (``session_window`` 0), for the cost of the memory terms.
    """
    import numpy as np
    import torch

    from model.artifact import save_artifact
    from model.calibration import normaliser_sample
    from model.config import load_config
    from model.net import SessionGRU
    from model.scorer import IncrementalScorer
    from stream.contract import EVENT_TYPES

    torch.set_num_threads(1)
    cfg = load_config(str(CONFIG_DIR / "diginetica.json"))
    plain_cfg = cfg.model_copy(update={"session_window": 0})
    rows = []
    with tempfile.TemporaryDirectory(prefix="kairos-scorer-") as work:
        for n_items in n_items_list:
            torch.manual_seed(0)
            model = SessionGRU(n_items, len(EVENT_TYPES), cfg).eval()
            if model.neighbour_idx.shape[1]:
                k = model.neighbour_idx.shape[1]
                table = torch.sort(torch.randint(0, n_items, (n_items, k), dtype=torch.int32), dim=1).values
                model.set_neighbours(table, torch.full((n_items, k), 1.0 / k))
            plain = SessionGRU(n_items, len(EVENT_TYPES), plain_cfg).eval()
            counts = np.random.default_rng(0).zipf(1.3, size=n_items).astype(np.float64)
            norm_items, norm_logw = normaliser_sample(counts)
            cals = {
                "log_softmax": {"feature": "log_softmax", "a": 1.0, "b": 0.0, "horizon": 5},
                "sampled_log_softmax": {
                    "feature": "sampled_log_softmax",
                    "a": 1.0,
                    "b": 0.0,
                    "horizon": 5,
                    "norm_items": norm_items.tolist(),
                    "norm_logw": norm_logw.tolist(),
                },
            }
            ids = [str(i) for i in range(n_items)]
            rng = np.random.default_rng(1)
            items = rng.integers(0, n_items, size=batch)
            types = np.zeros(batch, dtype=np.int64)
            cands = rng.integers(0, n_items, size=(batch, n_cands))
            row: dict[str, float] = {"n_items": n_items, "batch": batch, "candidates": n_cands}
            variants = [("", model, cfg, feature, cal) for feature, cal in cals.items()]
            variants.append(
                ("_no_memory", plain, plain_cfg, "sampled_log_softmax", cals["sampled_log_softmax"])
            )
            for suffix, net, net_cfg, feature, cal in variants:
                path = Path(work) / f"{n_items}-{feature}{suffix}"
                save_artifact(path, net, ids, net_cfg, {}, "0" * 64, cal)
                scorer = IncrementalScorer.load(path)
                states = scorer.initial_state(batch)
                for _ in range(net_cfg.session_window or 1):  # fill the window
                    states = scorer.step(states, rng.integers(0, n_items, size=batch), types)
                calls: list[tuple[str, Any, tuple[Any, ...]]] = [
                    (f"step{suffix}", scorer.step, (states, items, types)),
                    (f"score{suffix}", scorer.score, (states, cands)),
                    (f"interest_{feature}{suffix}", scorer.interest, (states, cands)),
                ]
                for name, fn, args in calls:
                    row[f"{name}_us_per_event"] = _best_us(fn, args, repeats) / batch
            rows.append(row)
    return rows
