"""Choose the stream warm-up's weights (``model.warmup``) at training time, on validation only.

``kairos train --items`` calls :func:`choose_warmup` with its own training sessions: a model trained on
the events before their ``VALID_QUANTILE`` of time (same configuration and catalog) ranks every later
event of the training data, the items it never saw placed from their content, once per pair of
:data:`model.warmup.OFFSETS` and :data:`model.warmup.GAMMAS`, the lift on the placed items of the
session's recent categories (where the worker proposes them). A seeded ``HELD_OUT_SHARE`` of the
training data's items is held back until the validation cut (their earlier events dropped from the
inner model's data and from the replayed stream), so validation has new items to place even when few
items of the training period appear late. The pair with the best MRR@20 over all those cases (warm
and cold together) wins among those that cost the warm cases at most ``WARM_TOLERANCE`` of their
Recall@20 and of their MRR@20 without warm-up (established items keep their ranking); it is stored in
the artifact's metrics under ``warmup``. Only the training file is ever read; a ``--valid`` file or a
test set is not involved. Costs one more training on 75 % of the data; ``stream_warmup: false`` in the
configuration skips it.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.config import TrainConfig
from model.content_fit import load_item_catalog
from model.data import ItemIndex, SessionLog
from model.metrics import RankAccumulator, pessimistic_ranks
from model.scorer import IncrementalScorer
from model.warmup import GAMMAS, OFFSETS, count_feature, decayed_counts, in_session_categories, warmed
from stream.contract import EVENT_TYPES
from stream.policy_config import PolicyConfig
from stream.trending import TRENDING_WEIGHTS

# The weight is chosen on the training events after this quantile of their time.
VALID_QUANTILE = 0.75
# The most a weight may cost the warm cases' MRR@20 (relative to no warm-up) and still be chosen.
WARM_TOLERANCE = 0.01
# The share of the training data's items held back until the validation cut (placed from content).
HELD_OUT_SHARE = 0.1
K = 20
CHUNK = 256
# An event: (time, session position, event type index, item id).
Event = tuple[float, int, int, str]


def log_events(log: SessionLog) -> list[Event]:
    """The log's events in time order (session order, then position, on equal times)."""
    assert log.times is not None
    types = log.types
    events = [
        (float(t), s, int(types[s][i]) if types is not None else 0, item)
        for s, (items, times) in enumerate(zip(log.items, log.times, strict=True))
        for i, (item, t) in enumerate(zip(items, times, strict=True))
    ]
    events.sort(key=lambda e: e[0])
    return events


def held_out_items(events: list[Event], share: float, seed: int) -> set[str]:
    """A seeded random ``share`` of the distinct items of ``events`` (the same set whatever their order)."""
    pool = sorted({e[3] for e in events})
    order = np.random.default_rng(seed).permutation(len(pool))
    return {pool[i] for i in order[: round(share * len(pool))]}


def prefix_log(
    log: SessionLog, cut: float, min_session_length: int, held: frozenset[str] | set[str] = frozenset()
) -> SessionLog:
    """The events of ``log`` before ``cut``, session by session (sessions left too short dropped),
    without those on ``held`` items."""
    assert log.times is not None
    items: list[list[str]] = []
    types: list[list[int]] | None = None if log.types is None else []
    times: list[list[float]] = []
    for s, session_times in enumerate(log.times):
        keep = [i for i, t in enumerate(session_times) if t < cut and log.items[s][i] not in held]
        if len(keep) < min_session_length:
            continue
        items.append([log.items[s][i] for i in keep])
        times.append([session_times[i] for i in keep])
        if types is not None and log.types is not None:
            types.append([log.types[s][i] for i in keep])
    return SessionLog(items=items, types=types, times=times, source=log.source)


def choose_warmup(
    log: SessionLog, items_path: str | Path, cfg: TrainConfig, train_path: str = ""
) -> dict[str, Any]:
    """The warm-up weights for a model trained on ``log`` with the catalog at ``items_path``.

    Returns ``{"gamma": ..., "offset": ..., "table": {"offset O gamma G": {"all"|"cold"|"warm": {n,
    recall@20, mrr@20}}}, ...}``; both are 0 with a ``reason`` when the log has no times or leaves no
    validation cases.
    ``train_path`` only names the data in the inner model's fingerprint (the catalog when empty).
    """
    from model.cli import TrainingData, run_training  # the training entry point (it calls this module)

    started = time.perf_counter()
    if log.times is None:
        return {"gamma": 0.0, "offset": 0.0, "reason": "the training data has no event times"}
    events = log_events(log)
    cut = float(np.quantile([e[0] for e in events], VALID_QUANTILE))
    # Held back until the cut: to the inner model and the replayed stream they are new there.
    held = held_out_items(events, HELD_OUT_SHARE, cfg.seed)
    events = [e for e in events if e[0] >= cut or e[3] not in held]
    prefix = prefix_log(log, cut, cfg.min_session_length, held)
    if len(prefix) == 0:
        return {"gamma": 0.0, "offset": 0.0, "reason": "no training sessions before the validation cut"}
    data = TrainingData(log=prefix, index=ItemIndex.build(prefix, cfg.min_item_support), valid_log=None)
    inner = cfg.model_copy(update={"stream_warmup": False})
    with tempfile.TemporaryDirectory(prefix="kairos-warmup-") as scratch:
        model_dir = Path(scratch) / "model"
        named = train_path or str(items_path)  # the fingerprint reads a file; the data is ``prefix``
        run_training(named, "sessions", None, str(model_dir), inner, False, str(items_path), data=data)
        scorer = IncrementalScorer.load(model_dir, content="require")
        catalog, _ = load_item_catalog(items_path)
        seen = sorted({e[3] for e in events})
        unknown = [i for i in seen if i in catalog and scorer.item_indices([i])[0] < 0]
        scorer.add_items(unknown, [catalog[i] for i in unknown])
        categories = {item: content.category for item, content in catalog.items()}
        result = _rank(scorer, events, cut, categories)
    result.update(
        {
            "valid_quantile": VALID_QUANTILE,
            "held_out_share": HELD_OUT_SHARE,
            "n_held_out_items": len(held),
            "n_prefix_events": prefix.n_events(),
            "n_placed_items": len(unknown),
            "seconds": time.perf_counter() - started,
        }
    )
    return result


def _summary(ranks: np.ndarray) -> dict[str, float]:
    """Recall@20, MRR@20 and the case count of 1-based ranks."""
    acc = RankAccumulator((K,))
    acc.add(ranks)
    return acc.result()


def table_key(offset: float, gamma: float) -> str:
    """The validation table's key of an (offset, gamma) pair."""
    return f"offset {offset} gamma {gamma}"


def pick_warmup(
    table: dict[str, dict[str, dict[str, float]]], pairs: Sequence[tuple[float, float]] | None = None
) -> tuple[float, float]:
    """The (offset, gamma) pair with the best MRR@20 over all cases among those that cost the warm
    cases at most ``WARM_TOLERANCE`` of their Recall@20 and of their MRR@20 without warm-up (0, 0:
    always allowed); ties go to the smaller offset, then the smaller gamma. ``pairs``: the candidates
    (default: every pair of ``OFFSETS`` x ``GAMMAS``; a report may ask about a subset of the table).

    Both figures are guarded because both are what a ranking is judged by: a lift that lets new items
    push established ones out of the top 20 costs recall before it shows in MRR."""
    none = (OFFSETS[0], GAMMAS[0])
    if pairs is None:
        pairs = [(o, g) for o in OFFSETS for g in GAMMAS]
    warm = table[table_key(*none)]["warm"]
    floors = {m: (1.0 - WARM_TOLERANCE) * warm[m] for m in (f"recall@{K}", f"mrr@{K}")}

    def keeps_warm(pair: tuple[float, float]) -> bool:
        row = table[table_key(*pair)]["warm"]
        return all(row[m] >= floor for m, floor in floors.items())

    allowed = [p for p in pairs if p == none or keeps_warm(p)]
    return max(allowed, key=lambda p: (table[table_key(*p)]["all"][f"mrr@{K}"], -p[0], -p[1]))


def _rank(
    scorer: IncrementalScorer, events: list[Event], cut: float, categories: dict[str, str]
) -> dict[str, Any]:
    """Rank every event after ``cut`` (its session's earlier events as the prefix) for each weight.

    The lift goes to the placed items of the categories of the session's last ``covisit_window``
    items, as the worker proposes them (``model.warmup.in_session_categories``).
    """
    n_all, n_known = scorer.n_items, scorer.n_artifact_items
    col = {scorer.item_id(i): i for i in range(n_all)}
    codes = {c: k for k, c in enumerate(sorted(set(categories.values())))}
    item_cat = np.array([codes.get(categories.get(scorer.item_id(i), ""), -1) for i in range(n_all)])
    window = PolicyConfig().covisit_window
    first: dict[str, float] = {}
    for t, _, _, item in events:
        first.setdefault(item, t)
    by_session: dict[int, list[int]] = defaultdict(list)
    for pos, e in enumerate(events):
        by_session[e[1]].append(pos)
    cases: list[tuple[float, int, bool]] = []  # (time, target column, cold)
    states: list[np.ndarray] = []
    recent: list[list[int]] = []  # per case: category codes of the session's last items
    unranked = 0
    for session in sorted(by_session):
        positions = by_session[session]
        h = scorer.initial_state(1)
        for j, pos in enumerate(positions):
            t, _, kind, item = events[pos]
            if j > 0 and t >= cut:
                if item in col:
                    cases.append((t, col[item], first[item] >= cut))
                    states.append(h[0])
                    before = [events[p][3] for p in positions[max(0, j - window) : j]]
                    recent.append(sorted({codes[categories[i]] for i in before if i in categories}))
                else:
                    unranked += 1  # no content to place it from: a miss for every weight alike
            h = scorer.step(h, scorer.item_indices([item]), np.array([kind], dtype=np.int64))
    if not cases:
        return {
            "gamma": 0.0,
            "offset": 0.0,
            "reason": "no validation cases",
            "n_cases": 0,
            "n_unranked": unranked,
        }
    known = [e for e in events if e[3] in col]
    times = np.array([e[0] for e in known])
    columns = np.array([col[e[3]] for e in known])
    weights = np.array([TRENDING_WEIGHTS.get(EVENT_TYPES[e[2]], 0.0) for e in known])
    half_life = PolicyConfig().trending_half_life_seconds
    placed = np.arange(n_all) >= n_known
    pairs = [(o, g) for o in OFFSETS for g in GAMMAS]
    ranks: dict[tuple[float, float], list[np.ndarray]] = {p: [] for p in pairs}
    for a in range(0, len(cases), CHUNK):
        rows = cases[a : a + CHUNK]
        target = np.array([r[1] for r in rows])
        model = scorer.catalog_scores(np.stack(states[a : a + CHUNK])).astype(np.float64)
        counts = decayed_counts(times, columns, weights, [r[0] for r in rows], n_all, half_life)
        feature = count_feature(counts, half_life)
        lifted = in_session_categories(item_cat, recent[a : a + CHUNK]) & placed[None, :]
        for offset, gamma in pairs:
            scores = warmed(model, feature, lifted, gamma, offset)
            ranks[(offset, gamma)].append(pessimistic_ranks(scores, target))
    cold = np.array([c for _, _, c in cases], dtype=bool)
    table = {}
    for pair, parts in ranks.items():
        every = np.concatenate(parts)
        table[table_key(*pair)] = {
            "all": _summary(every),
            "cold": _summary(every[cold]),
            "warm": _summary(every[~cold]),
        }
    offset, gamma = pick_warmup(table)
    return {
        "gamma": gamma,
        "offset": offset,
        "warm_tolerance": WARM_TOLERANCE,
        "half_life_seconds": half_life,
        "n_cases": len(cases),
        "n_cold_cases": int(cold.sum()),
        "n_unranked": unranked,
        "table": table,
    }
