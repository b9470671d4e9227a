"""The cold-items benchmark's measurement: train the GRU on the events before the cut (once per
catalog arm), add the catalog items it does not know from their content, step every test session
through each scorer and rank the full catalog with every method (:func:`run`); and the two datasets'
runs around it, RetailRocket's real sessions (:func:`run_retailrocket`) and the simulated shop with its
held-out cold items (:func:`run_sim`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cold_start.config import (
    COLD_SEED,
    COLD_SHARE,
    GROUPS,
    RETAILROCKET,
    SIM,
    SIM_CONFIG,
    SIM_EVENTS,
    TIE_EPS,
    Event,
)
from benchmarks.cold_start.datasets import drop_before, hold_out_items, load_events, sim_shop, write_catalog
from benchmarks.cold_start.metrics import full_scores, paired_hits, ranks_and_ties, summary
from model.cli import run_training
from model.config import TrainConfig, load_config
from model.content import ItemContent
from model.data import TYPE_INDEX
from model.scorer import IncrementalScorer
from model.warmup import count_feature, decayed_counts, in_session_categories, warmed
from stream.settings import get_settings
from stream.trending import TRENDING_WEIGHTS


def run(
    events: list[Event],
    contents: Mapping[str, ItemContent],
    work: Path,
    cut: float,
    cfg: TrainConfig,
    window_h: float,
    arms: Mapping[str, bool],
) -> dict[str, Any]:
    """Train, add the unknown catalog items, replay the test stream and rank; the results dict.

    ``arms``: model name → whether its catalog keeps the titles (one training with ``--items`` each;
    the first is the reference for ``model, no cold items`` and the GRU the others must share).
    """
    times = np.array([e[0] for e in events])
    first: dict[str, float] = {}
    for t, _, _, item, _ in events:
        first.setdefault(item, t)
    train_tsv = work / "train.tsv"
    with train_tsv.open("w", encoding="utf-8") as handle:
        handle.write("SessionId\tItemId\tTime\tType\n")
        names = {i: n for n, i in TYPE_INDEX.items()}
        for t, sess, kind, item, _ in events:
            if t < cut:
                handle.write(f"{sess}\t{item}\t{t}\t{names[kind]}\n")
    scorers: dict[str, IncrementalScorer] = {}
    train_s: dict[str, float] = {}
    content_reports: dict[str, Any] = {}
    content_reports_warmup: dict[str, Any] = {}
    weights: dict[str, str] = {}
    added = 0
    add_s: dict[str, float] = {}
    for arm, titles in arms.items():
        catalog, out = work / f"items-{len(scorers)}.jsonl", work / f"model-{len(scorers)}"
        write_catalog(catalog, contents, titles)
        started = time.perf_counter()
        metrics = run_training(str(train_tsv), "sessions", None, str(out), cfg, False, str(catalog))
        train_s[arm] = time.perf_counter() - started
        content_reports[arm] = metrics.get("content", {})
        content_reports_warmup[arm] = metrics.get("warmup", {})
        manifest = json.loads((out / "MANIFEST.json").read_text(encoding="utf-8"))
        weights[arm] = manifest["files"]["weights.pt"]
        scorer = IncrementalScorer.load(out, content="require")
        unknown = [i for i in sorted(contents) if scorer.item_indices([i])[0] < 0]
        started = time.perf_counter()
        added = scorer.add_items(
            unknown, [contents[i] if titles else ItemContent("", contents[i].category) for i in unknown]
        )
        add_s[arm] = time.perf_counter() - started
        scorers[arm] = scorer
    main = next(iter(arms))
    # The stream warm-up's weight: chosen by the training itself on its own data (model.warmup_fit).
    warmup = content_reports_warmup[main]
    plain = IncrementalScorer.load(work / "model-0", content="off")
    ref = scorers[main]
    n_all, n_known = ref.n_items, ref.n_artifact_items
    ids = [ref.item_id(i) for i in range(n_all)]
    for arm, scorer in scorers.items():
        if [scorer.item_id(i) for i in range(scorer.n_items)] != ids:
            raise RuntimeError(f"{arm}: a different catalog order than {main}")
    col = {item: i for i, item in enumerate(ids)}
    cat_codes = {c: k for k, c in enumerate(sorted({c.category for c in contents.values()}))}
    item_cat = np.array([cat_codes[contents[i].category] for i in ids])

    # Cases: state before each test event (stepped through the session with each scorer).
    by_session: dict[str, list[int]] = defaultdict(list)
    for pos, (_, sess, _, _, _) in enumerate(events):
        by_session[sess].append(pos)
    cases: list[tuple[int, int, int, str]] = []  # (event position, target column, last item column, group)
    models = {**scorers, "model, no cold items": plain}
    states: dict[str, list[np.ndarray]] = {name: [] for name in models}
    session_cats: list[list[int]] = []  # per case: categories of the session's last items (the worker's)
    covisit_window = get_settings().policy.covisit_window
    for positions in by_session.values():
        h = {name: s.initial_state(1) for name, s in models.items()}
        for j, pos in enumerate(positions):
            t, _, kind, item, _ = events[pos]
            if j > 0 and t >= cut:
                prev = events[positions[j - 1]][3]
                if first[item] >= cut:
                    groups = ["cold"] + (["cold, not a repeat"] if item != prev else [])
                elif col[item] < n_known:
                    groups = ["warm"]
                else:
                    groups = ["warm, not in the model"]
                before = sorted(
                    {int(item_cat[col[events[p][3]]]) for p in positions[max(0, j - covisit_window) : j]}
                )
                for group in groups:
                    cases.append((pos, col[item], col[prev], group))
                    session_cats.append(before)
                    for name in models:
                        states[name].append(h[name][0])
            kinds = np.array([kind])
            h = {name: s.step(h[name], s.item_indices([item]), kinds) for name, s in models.items()}
    stacked = {name: np.stack(rows) for name, rows in states.items()}
    ev_col = np.array([col[e[3]] for e in events])
    window = window_h * 3600.0
    names = {i: name for name, i in TYPE_INDEX.items()}
    ev_weight = np.array([TRENDING_WEIGHTS.get(names[e[2]], 0.0) for e in events])  # the worker's trending
    half_life = get_settings().policy.trending_half_life_seconds
    placed = np.arange(n_all) >= n_known

    ranks: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    ties: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    chunk = 256
    for a in range(0, len(cases), chunk):
        rows = cases[a : a + chunk]
        target = np.array([r[1] for r in rows])
        recent = np.zeros((len(rows), n_all))
        popular = np.zeros((len(rows), n_all))
        for r, (pos, _, last, _) in enumerate(rows):
            t = events[pos][0]
            hi = int(np.searchsorted(times, t, side="left"))  # strictly before the case: no peeking
            lo = int(np.searchsorted(times, t - window, side="left"))
            recent[r] = np.bincount(ev_col[lo:hi], minlength=n_all)
            counts = np.bincount(ev_col[:hi], minlength=n_all)
            popular[r] = counts + (counts.max() + 1.0) * (item_cat == item_cat[last])
        methods: dict[str, np.ndarray] = {}
        at = [events[pos][0] for pos, _, _, _ in rows]
        feature = count_feature(decayed_counts(times, ev_col, ev_weight, at, n_all, half_life), half_life)
        for arm, scorer in scorers.items():
            model = full_scores(scorer, stacked[arm][a : a + chunk], n_all)
            methods[arm] = model
            methods[f"{arm} + trending tie-break"] = model + TIE_EPS * np.log1p(recent)
            if arm == main:
                # As the worker applies it: on the placed items of the session's recent categories.
                mine = in_session_categories(item_cat, session_cats[a : a + chunk]) & placed[None, :]
                gamma, offset = scorer.warmup_gamma, scorer.warmup_offset
                methods[f"{arm} + stream warm-up"] = warmed(model, feature, mine, gamma, offset)
                methods[f"{arm} + stream warm-up, every category"] = warmed(
                    model, feature, placed, gamma, offset
                )
        methods["category popularity"] = popular
        methods["trending"] = recent
        for name, scores in methods.items():
            rk, tie = ranks_and_ties(scores, target)
            for r, row in enumerate(rows):
                ranks[row[3]][name].append(int(rk[r]))
                if name in scorers:
                    ties[name][row[3]].append(int(tie[r]))
        warm = np.array([r[3] == "warm" for r in rows])
        if warm.any():
            model_plain = full_scores(plain, stacked["model, no cold items"][a : a + chunk][warm], n_known)
            rk, _ = ranks_and_ties(model_plain, target[warm])
            ranks["warm"]["model, no cold items"].extend(int(x) for x in rk)
    results = {group: {name: summary(np.array(r)) for name, r in ranks[group].items()} for group in GROUPS}
    paired = {group: paired_hits(ranks[group], main) for group in GROUPS}
    tie_stats = {
        arm: {
            g: {
                "share_tied": float(np.mean(np.array(ties[arm][g]) > 0)) if ties[arm][g] else 0.0,
                "median_tie_size": float(np.median(ties[arm][g])) if ties[arm][g] else 0.0,
            }
            for g in GROUPS
        }
        for arm in scorers
    }
    return {
        "cut_time": cut,
        "n_events": len(events),
        "n_train_events": int((times < cut).sum()),
        "n_items": len(contents),
        "n_model_items": n_known,
        "n_added_items": added,
        "n_cold_items": sum(1 for t in first.values() if t >= cut),
        "n_categories": len(cat_codes),
        "train_seconds": train_s,
        "add_items_seconds": add_s,
        "same_gru": len(set(weights.values())) == 1,
        "content_report": content_reports,
        "results": results,
        "paired_vs_model": paired,
        "ties_of_model": tie_stats,
        "warmup": warmup,
    }


def run_retailrocket(data: Path, work: Path, cut_q: float, config: str, window_h: float) -> dict[str, Any]:
    """The real-sessions measurement (category-only content)."""
    events = load_events(data)
    cut = float(np.quantile([e[0] for e in events], cut_q))
    contents = {item: ItemContent("", cat) for _, _, _, item, cat in events}  # an item's last category
    res = run(events, contents, work, cut, load_config(config), window_h, {"model": False})
    return {"dataset": RETAILROCKET, "cut_quantile": cut_q, "config": config, "window_hours": window_h, **res}


def sim_training_config(spec: str) -> TrainConfig:
    """``demo``: the demo's training settings on the whole period; otherwise a preset or a file."""
    if spec != "demo":
        return load_config(spec)
    from stream.demo import DEMO_TRAINING

    return TrainConfig.model_validate({**DEMO_TRAINING, "train_on_all": True, "select_best": False})


def run_sim(work: Path, cut_q: float, config: str, window_h: float) -> dict[str, Any]:
    """The simulated-shop measurement: titles carry signal; content vs category-only mapping."""
    started = time.perf_counter()
    events, contents = sim_shop(SIM_CONFIG, SIM_EVENTS)
    simulate_s = time.perf_counter() - started
    cut = float(np.quantile([e[0] for e in events], cut_q))
    held = hold_out_items(contents, COLD_SHARE, COLD_SEED)
    kept = drop_before(events, held, cut)
    arms = {"model": True, "model, category only": False}
    res = run(kept, contents, work, cut, sim_training_config(config), window_h, arms)
    return {
        "dataset": SIM,
        "sim_config": SIM_CONFIG.model_dump(
            include={"seed", "n_users", "n_items", "n_categories", "latent_dim"}
        ),
        "sim_events": SIM_EVENTS,
        "simulate_seconds": simulate_s,
        "cold_share": COLD_SHARE,
        "cold_seed": COLD_SEED,
        "n_held_out": len(held),
        "n_held_out_events_dropped": len(events) - len(kept),
        "n_held_out_in_test": len({e[3] for e in kept if e[3] in held}),
        "cut_quantile": cut_q,
        "config": config,
        "window_hours": window_h,
        **res,
    }
