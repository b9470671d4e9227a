"""Cold items: next-item ranking of items first seen after training, placed by the content mapping.

    .venv/bin/python benchmarks/cold_items.py [--dataset retailrocket|sim|both] [--cut 0.75]
                                              [--config yoochoose-100k] [--sim-config demo]
                                              [--window-hours 24] [--json] [--out DIR]
    .venv/bin/python benchmarks/cold_items.py --from-json benchmarks/reports/cold_items.json

Two measurements, one section each in the report (running one dataset rewrites its own section and
keeps the other's from the ``cold_items.json`` already in ``--out``):

``retailrocket`` (default): real sessions, ``retailrocket-sample`` (KAIROS_DATA_DIR). Events before the
``--cut`` quantile of time train the GRU (``run_training`` with ``--items``, ``--config``: the content
mapping is fitted on the trained items). RetailRocket has categories but no titles, so the only honest
content is the category (titles are empty: the text vector is one constant).

``sim``: the simulated shop (``stream.simulator``, fixed seeds: ``SIM_CONFIG``, its first
``SIM_EVENTS`` behaviour events), where an item's title is "{brand} {adjective} {category}" and the
adjective encodes the sign of the item's largest latent offset: the titles carry real signal, so the
text part of the mapping (title → all-MiniLM-L6-v2 → ridge) can be measured, which RetailRocket cannot
do. A seeded random ``COLD_SHARE`` of the catalog is held out as cold: every event on those items
before the cut is dropped (from training and from the replayed stream alike: to the system they did not
exist yet). The catalog file is ``World.initial_catalog()``; the GRU is trained with ``--sim-config``
(default ``demo``: ``stream.demo.DEMO_TRAINING`` trained on the whole period, ``train_on_all``), once
with the catalog's titles and categories and once with the titles blanked (the same training, so the
same GRU — checked — with the mapping refitted on categories only).

Both: every event after the cut whose session has an earlier event is a test case (the prefix may start
before the cut). Targets are *cold* (the item's first event — after the drop, for the simulated shop —
is after the cut), *warm* (the model knows the item) or *warm, not in the model* (seen before the cut
but dropped by preprocessing, e.g. only in one-event sessions). The worker's view is simulated: every
catalog item the model does not know is added with ``IncrementalScorer.add_items`` before the test
stream (a catalog message precedes an item's events). Methods, each ranking the full catalog (known +
added items, pessimistic ties), Recall@20 / MRR@20:

* ``model``: the GRU with the cold items added (title + category; category only on RetailRocket);
* ``model, category only`` (simulated shop): the same GRU, items added from a mapping fitted without
  titles;
* ``... + trending tie-break``: plus 1e-4 * log(1 + the item's events in the last ``--window-hours``
  before the case) — only separates (near-)ties, e.g. cold items of one category with equal content;
* ``model + stream warm-up`` (the main arm): plus the artifact's warm-up lift on the items added from
  content in the categories of the session's last ``covisit_window`` items, where the worker proposes
  them (``model.warmup``: ``offset + gamma * log1p(events per day)`` from the decayed trending count of
  the events before the case; ``offset`` and ``gamma`` chosen by the training on its own data,
  ``model.warmup_fit``);
  ``..., every category``: the lift on every added item;
* ``category popularity``: items of the session's last item's category first, by all their events
  before the case (training + test so far), then everything else by the same count;
* ``trending``: events of the item in the last ``--window-hours`` before the case (no peeking ahead);
* on warm targets also ``model, no cold items``: the artifact alone (``content="off"``; cold items in
  prefixes are skipped), ranking its own catalog.

Writes ``benchmarks/reports/cold_items.md`` and ``cold_items.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.cli import run_training  # noqa: E402
from model.config import TrainConfig, load_config  # noqa: E402
from model.content import ItemContent  # noqa: E402
from model.data import TYPE_ALIASES, TYPE_INDEX  # noqa: E402
from model.scorer import IncrementalScorer  # noqa: E402
from model.warmup import GAMMAS, count_feature, decayed_counts, in_session_categories, warmed  # noqa: E402
from model.warmup_fit import pick_warmup, table_key  # noqa: E402
from stream.settings import get_settings  # noqa: E402
from stream.simulator import SimConfig, World, generate_events  # noqa: E402
from stream.trending import TRENDING_WEIGHTS  # noqa: E402

K = 20
TIE_EPS = 1e-4
GROUPS = ("cold", "cold, not a repeat", "warm", "warm, not in the model")
RETAILROCKET, SIM = "retailrocket-sample", "simulated shop"
SIM_CONFIG = SimConfig(seed=11, n_users=5_000, n_items=3_000)
SIM_EVENTS = 100_000
COLD_SHARE = 0.1
COLD_SEED = 11
# A case: (time, session, event type index, item, category).
Event = tuple[float, str, int, str, str]


def load_events(path: Path) -> list[Event]:
    """(time, session, event type index, item, category) sorted by time (file order within a second)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            kind = TYPE_INDEX[TYPE_ALIASES[row["Type"].strip().lower()]]
            rows.append((float(row["Time"]), row["SessionId"], kind, row["ItemId"], row["CatId"]))
    rows.sort(key=lambda r: r[0])
    return rows


def sim_shop(config: SimConfig, n_events: int) -> tuple[list[Event], dict[str, ItemContent]]:
    """The simulated shop's first ``n_events`` behaviour events with an item, and its whole catalog.

    Item ids become their catalog position and session ids the order of their first event (the
    ``sessions`` training format wants non-negative integers).
    """
    updates = World(config).initial_catalog()
    code = {u.item_id: str(k) for k, u in enumerate(updates)}
    catalog = {code[u.item_id]: ItemContent(u.title, u.category) for u in updates}
    sessions: dict[str, str] = {}
    events = []
    for e in generate_events(config, n_events):
        if e.item_id is not None and e.session_id is not None:
            item, session = code[e.item_id], sessions.setdefault(e.session_id, str(len(sessions)))
            events.append((e.ts, session, TYPE_INDEX[e.type], item, catalog[item].category))
    events.sort(key=lambda r: r[0])
    return events, catalog


def hold_out_items(items: Iterable[str], share: float, seed: int) -> set[str]:
    """A seeded random ``share`` of the distinct ``items`` (the same set whatever their order)."""
    pool = sorted(set(items))
    order = np.random.default_rng(seed).permutation(len(pool))
    return {pool[i] for i in order[: round(share * len(pool))]}


def drop_before(events: Sequence[Event], items: set[str], cut: float) -> list[Event]:
    """``events`` without those on ``items`` before ``cut``: to the system those items start at the cut."""
    return [e for e in events if e[0] >= cut or e[3] not in items]


def write_catalog(path: Path, contents: Mapping[str, ItemContent], titles: bool = True) -> None:
    """The ``kairos train --items`` JSONL catalog; ``titles`` False blanks every title."""
    with path.open("w", encoding="utf-8") as handle:
        for item in sorted(contents):
            c = contents[item]
            row = {"item_id": item, "title": c.title if titles else "", "category": c.category}
            handle.write(json.dumps(row) + "\n")


def ranks_and_ties(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pessimistic 1-based ranks and how many other items score exactly the target's score."""
    t = scores[np.arange(len(targets)), targets][:, None]
    return (scores >= t).sum(axis=1), (scores == t).sum(axis=1) - 1


def summary(ranks: np.ndarray) -> dict[str, float]:
    """Recall@K and MRR@K (K = 20 and 10) and the case count."""
    out: dict[str, float] = {"n": int(len(ranks))}
    for k in (10, K):
        out[f"recall@{k}"] = float(np.mean(ranks <= k)) if len(ranks) else 0.0
        out[f"mrr@{k}"] = float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0))) if len(ranks) else 0.0
    return out


def paired_hits(ranks: Mapping[str, Sequence[int]], ref: str) -> dict[str, list[int]]:
    """Per method: [cases only ``ref`` has in its top K, cases only the method has] (the same cases)."""
    if ref not in ranks:
        return {}
    hit = np.array(ranks[ref]) <= K
    out = {}
    for name, r in ranks.items():
        other = np.array(r) <= K
        if name != ref and len(other) == len(hit):
            out[name] = [int(np.sum(hit & ~other)), int(np.sum(other & ~hit))]
    return out


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test p-value of ``a`` against ``b`` discordant cases."""
    n = a + b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def full_scores(scorer: IncrementalScorer, states: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float64 model scores of the first ``n`` catalog items (all of them: ``n`` = n_items)."""
    return scorer.catalog_scores(states)[:, :n].astype(np.float64)


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
    window = get_settings().policy.covisit_window
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
                before = sorted({int(item_cat[col[events[p][3]]]) for p in positions[max(0, j - window) : j]})
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


def _r20(group: Mapping[str, Any], name: str) -> str:
    return f"{group[name]['recall@20']:.4f}"


def _m20(group: Mapping[str, Any], name: str) -> str:
    return f"{group[name]['mrr@20']:.4f}"


def _mapping_lines(reports: Mapping[str, Any]) -> list[str]:
    lines = []
    for arm, rep in reports.items():
        errs = "; ".join(
            f"{mode}: " + ", ".join(f"{setting} → {err:.4f}" for setting, err in by_setting.items())
            for mode, by_setting in rep.get("holdout_error", {}).items()
        )
        lines.append(
            f"- Mapping of `{arm}`: category mode `{rep.get('category_mode')}`, text scale "
            f"{rep.get('text_scale', 1.0)}, ridge λ {rep.get('ridge_lambda')} (chosen on a 20 % hold-out "
            "of the warm items); hold-out error "
            "(support-weighted squared error of the target vector; predicting the mean item: "
            f"{rep.get('holdout_error_of_mean_item', float('nan')):.4f}): {errs}"
        )
    return lines


def _warmup_lines(res: Mapping[str, Any]) -> list[str]:
    """How the stream warm-up's weights were chosen (training data only) and what they gave there."""
    w = res.get("warmup")
    if not w:
        return []
    table = w["table"]
    offset = w.get("offset", 0.0)

    def row(key: str) -> str:
        t = table[key]
        return (
            f"all MRR@20 {t['all']['mrr@20']:.4f}, cold R@20 {t['cold']['recall@20']:.3f} / MRR@20 "
            f"{t['cold']['mrr@20']:.4f}, warm MRR@20 {t['warm']['mrr@20']:.4f}"
        )

    keys = list(table)
    chosen = table_key(offset, w["gamma"])
    best_gamma_only = table_key(*pick_warmup(table, [(0.0, g) for g in GAMMAS]))
    held = (
        f", {w['n_held_out_items']:,} of the training items ({w['held_out_share']:.0%}, seeded) held back "
        "until the validation cut"
        if "n_held_out_items" in w
        else ""
    )
    return [
        f"- Stream warm-up (`model.warmup`): offset {offset:g}, gamma {w['gamma']:g}, chosen by "
        f"`kairos train --items` on its own training data (`model.warmup_fit`): a model trained on the first "
        f"{w['n_prefix_events']:,} training events (time quantile {w['valid_quantile']}{held}) ranked the "
        f"rest of the training period ({w['n_cases']:,} cases, {w['n_cold_cases']:,} cold; "
        f"{w['n_placed_items']:,} items placed from content), in {w['seconds']:.0f} s; the best MRR@20 "
        f"over all those cases among the {len(keys)} (offset, gamma) pairs tried that cost the warm cases "
        f"at most {w.get('warm_tolerance', 0.0):.0%} of their Recall@20 and of their MRR@20 (the whole "
        f"table is in `cold_items.json`). There: no warm-up ({keys[0]}): {row(keys[0])}; "
        + f"chosen: {row(chosen)}; "
        + f"the best without an offset ({best_gamma_only}): {row(best_gamma_only)}.",
    ]


def _tables(res: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for group, methods in res["results"].items():
        if not methods:
            lines += [f"### Targets: {group}: no cases", ""]
            continue
        n = next(iter(methods.values()))["n"]
        lines += [f"### Targets: {group} ({n:,} cases)", "", "| method | R@10 | MRR@10 | R@20 | MRR@20 |"]
        lines.append("|---|---|---|---|---|")
        for name, m in methods.items():
            lines.append(
                f"| {name} | {m['recall@10']:.4f} | {m['mrr@10']:.4f} "
                f"| {m['recall@20']:.4f} | {m['mrr@20']:.4f} |"
            )
        lines.append("")
        for arm, by_group in res["ties_of_model"].items():
            tie = by_group[group]
            lines.append(
                f"`{arm}` scores tied with at least one other item: {tie['share_tied']:.1%} of the cases "
                f"(median tie size {tie['median_tie_size']:.0f})."
            )
        lines.append("")
    return lines


def _command(res: Mapping[str, Any], dataset: str) -> str:
    config = "--config" if dataset == "retailrocket" else "--sim-config"
    return (
        f"`.venv/bin/python benchmarks/cold_items.py --dataset {dataset} --cut {res['cut_quantile']} "
        f"{config} {res['config']} --window-hours {res['window_hours']:g}`"
    )


def retailrocket_section(res: Mapping[str, Any]) -> list[str]:
    """The real-sessions section of the report."""
    return [
        "## RetailRocket sample: real sessions, category-only content",
        "",
        f"Command: {_command(res, 'retailrocket')} (details in the script's docstring).",
        "",
        f"- {res['n_events']:,} events, the first {res['n_train_events']:,} (time quantile "
        f"{res['cut_quantile']}) train the GRU; {res['n_items']:,} items in {res['n_categories']} "
        f"categories, {res['n_model_items']:,} in the model, {res['n_added_items']:,} added from content "
        f"({res['n_cold_items']:,} cold: first seen after the cut), in "
        f"{res['add_items_seconds']['model']:.1f} s.",
        "- Content: category only (RetailRocket has no titles; the text vector is that of an empty "
        "title for every item, a constant).",
        *_mapping_lines(res["content_report"]),
        f"- Full catalog (known + added), pessimistic ties; trending window {res['window_hours']:g} h.",
        f"- Training {res['train_seconds']['model']:.0f} s ({res['config']} preset).",
        *_warmup_lines(res),
        "",
        *_tables(res),
        *retailrocket_reading(res),
    ]


def _warmup_reading(res: Mapping[str, Any]) -> list[str]:
    """The stream warm-up's effect on the test period, in words (from the figures)."""
    w = res.get("warmup")
    if not w:
        return []
    cold, fresh, warm = (res["results"][g] for g in ("cold", "cold, not a repeat", "warm"))
    name = "model + stream warm-up"
    every = f"{name}, every category"
    pop = "category popularity"

    def verdict(group: Mapping[str, Any]) -> str:
        ahead = [m for m in ("recall@20", "mrr@20") if group[name][m] > group[pop][m]]
        return "the warm-up is ahead in " + " and ".join(ahead) if ahead else "category popularity is ahead"

    offset = w.get("offset", 0.0)
    if w["gamma"] == 0 and offset == 0:
        return [
            f"- Stream warm-up: validation chose no lift ({w['n_cold_cases']:,} cold cases there), so the "
            "method equals the model on test."
        ]
    loss = 1.0 - warm[name]["mrr@20"] / max(warm["model"]["mrr@20"], 1e-12)
    return [
        f"- Stream warm-up (offset {offset:g}, gamma {w['gamma']:g}, from validation): being new in the "
        f"shopper's category and the cold item's own recent events lift it: cold R@20 {_r20(cold, 'model')} "
        f"→ {_r20(cold, name)}, MRR@20 {_m20(cold, 'model')} → {_m20(cold, name)}; cold, not a repeat R@20 "
        f"{_r20(fresh, 'model')} → {_r20(fresh, name)}, MRR@20 {_m20(fresh, 'model')} → {_m20(fresh, name)}; "
        f"warm R@20 {_r20(warm, 'model')} → {_r20(warm, name)}, MRR@20 {_m20(warm, 'model')} → "
        f"{_m20(warm, name)} ({loss:.1%} lost; the lift on the session's recent categories, as the "
        f"worker proposes new items; on every category: cold R@20 {_r20(cold, every)}, MRR@20 "
        f"{_m20(cold, every)}, warm R@20 {_r20(warm, every)}, MRR@20 {_m20(warm, every)}). Category "
        f"popularity: cold R@20 {_r20(cold, pop)}, MRR@20 {_m20(cold, pop)} ({verdict(cold)}); cold, not a "
        f"repeat R@20 {_r20(fresh, pop)}, MRR@20 {_m20(fresh, pop)} ({verdict(fresh)}). "
        "The worker applies the same lift to the content-placed candidates it scores, from its "
        "partitions' trending counts (`stream/scoring.py`).",
    ]


def retailrocket_reading(res: Mapping[str, Any]) -> list[str]:
    """What the RetailRocket figures say, in words (computed from them, so a rerun keeps it true)."""
    cold, warm = res["results"]["cold"], res["results"]["warm"]
    tie = res["ties_of_model"]["model"]["cold"]
    return [
        "### Reading",
        "",
        f"- Cold targets: the content-mapped model reaches R@20 {_r20(cold, 'model')}, far below category "
        f"popularity ({_r20(cold, 'category popularity')}). With category-only content every cold item of a "
        f"category gets the same vector and bias (its score ties with others in {tie['share_tied']:.0%} of "
        "the cases, median tie size "
        f"{tie['median_tie_size']:.0f}), and that bias is the category's *mean* item's, below its "
        "established items; category popularity instead counts the cold item's own events in the test "
        "stream so far, which a content map cannot see. The model alone is not a good cold-item ranker "
        "on this content.",
        *_warmup_reading(res),
        f"- The trending tie-break (a count the worker has) separates the ties: R@20 {_r20(cold, 'model')} → "
        f"{_r20(cold, 'model + trending tie-break')}, MRR@20 {_m20(cold, 'model')} → "
        f"{_m20(cold, 'model + trending tie-break')}; small, because it only reorders (near-)ties.",
        "- Warm targets: adding the cold items costs nothing; it gains (R@20 "
        f"{_r20(warm, 'model, no cold items')} → {_r20(warm, 'model')}, "
        f"MRR@20 {_m20(warm, 'model, no cold items')} → {_m20(warm, 'model')}) because the GRU now steps "
        "on cold items in the prefixes instead of skipping them.",
        "- Not measured here: titles. RetailRocket has none, and no installable package with a product "
        "catalog whose items also have sessions was found, so the text part of the mapping is unmeasured "
        "on real sessions; the simulated shop below measures it where titles carry signal by construction.",
        "",
    ]


def sim_section(res: Mapping[str, Any]) -> list[str]:
    """The simulated-shop section of the report."""
    sim = res["sim_config"]
    secs = res["train_seconds"]
    return [
        "## Simulated shop (titles carry signal)",
        "",
        "**Simulated data**, not real shoppers. It is here because RetailRocket has no titles, so the text "
        "part of the content mapping (title → all-MiniLM-L6-v2 vector → ridge map into the item space) is "
        'never exercised above. In `stream.simulator` an item\'s title is "{brand} {adjective} {category}" '
        "of made-up words, and the adjective encodes the sign of the item's largest latent offset from its "
        "category's centre (one word per category, latent direction and sign; the brand is noise), and "
        "shoppers choose by those latent vectors: here titles say something true about the item, by "
        "construction. The figures show what the text path adds when that is so; they do not say how much "
        "real titles carry.",
        "",
        f"Command: {_command(res, 'sim')} (details in the script's docstring).",
        "",
        f"- `SimConfig(seed={sim['seed']}, n_users={sim['n_users']:,}, n_items={sim['n_items']:,})` "
        f"({sim['n_categories']} categories, latent dimension {sim['latent_dim']}): its first "
        f"{res['sim_events']:,} behaviour events, {res['n_events'] + res['n_held_out_events_dropped']:,} "
        "of them with an item.",
        f"- Cold: a seeded random {res['cold_share']:.0%} of the catalog (seed {res['cold_seed']}, "
        f"{res['n_held_out']:,} items) held out: their {res['n_held_out_events_dropped']:,} events before "
        f"the cut (time quantile {res['cut_quantile']}) dropped, {res['n_held_out_in_test']:,} of them "
        f"occur after it. Cold targets are items first seen after the cut: those plus "
        f"{res['n_cold_items'] - res['n_held_out_in_test']:,} items the simulation first shows after it.",
        f"- {res['n_events']:,} events kept, {res['n_train_events']:,} train the GRU; "
        f"{res['n_items']:,} catalog items, {res['n_model_items']:,} in the model, "
        f"{res['n_added_items']:,} added from content (every catalog item the model does not know) in "
        + ", ".join(f"{s:.1f} s (`{arm}`)" for arm, s in res["add_items_seconds"].items())
        + ".",
        f"- Training ({res['config']}: "
        + ("`stream.demo.DEMO_TRAINING` with `train_on_all`" if res["config"] == "demo" else "preset")
        + "): "
        + ", ".join(f"`{arm}` {s:.0f} s" for arm, s in secs.items())
        + "; the same GRU both times (weights' SHA-256 "
        + ("equal" if res["same_gru"] else "**differ**: the comparison mixes GRUs")
        + "), only the content mapping differs.",
        *_mapping_lines(res["content_report"]),
        *_warmup_lines(res),
        f"- Full catalog (known + added), pessimistic ties; trending window {res['window_hours']:g} h.",
        "",
        *_tables(res),
        *sim_reading(res),
    ]


def sim_reading(res: Mapping[str, Any]) -> list[str]:
    """What the simulated-shop figures say (computed from them, so a rerun keeps it true)."""
    cold, warm = res["results"]["cold"], res["results"]["warm"]
    ties = res["ties_of_model"]
    both, cat = "model", "model, category only"
    only_both, only_cat = res["paired_vs_model"]["cold"][cat]
    pop_both, pop_only = res["paired_vs_model"]["cold"]["category popularity"]
    n = cold[both]["n"]
    p = cold[both]["recall@20"]

    def best(arm: str) -> float:
        rep = res["content_report"][arm]
        return float(min(min(v.values()) for v in rep["holdout_error"].values()))

    err_both, err_cat = best(both), best(cat)
    return [
        "### Reading",
        "",
        f"- Cold targets, title + category against category only: R@20 {_r20(cold, cat)} → "
        f"{_r20(cold, both)}, MRR@20 {_m20(cold, cat)} → {_m20(cold, both)}. Paired over the same "
        f"{n:,} cases, only the model with titles has the target in its top 20 in {only_both} cases, only "
        f"the category-only one in {only_cat} (sign test p = {sign_test(only_both, only_cat):.2f}; the "
        f"binomial standard error of R@20 alone is ±{math.sqrt(p * (1 - p) / max(n, 1)):.4f}).",
        f"- The mapping's best hold-out error is {'higher' if err_both > err_cat else 'lower'} with titles "
        f"({err_both:.4f}) than without ({err_cat:.4f}; predicting the mean item: "
        f"{res['content_report'][both].get('holdout_error_of_mean_item', 0.0):.4f}): "
        + (
            "even at the quietest text scale the hold-out chose "
            f"(x{res['content_report'][both].get('text_scale', 1.0)}), the 384 text features cost more in "
            "fitting noise than the adjective's signal gives back."
            if err_both > err_cat
            else "the text features predict the item's vector better than the category alone."
        ),
        f"- Ties: with category only a cold target's score ties with another item in "
        f"{ties[cat]['cold']['share_tied']:.0%} of the cases (median tie size "
        f"{ties[cat]['cold']['median_tie_size']:.0f}), with titles in "
        f"{ties[both]['cold']['share_tied']:.0%}; "
        f"the trending tie-break moves category only to R@20 {_r20(cold, cat + ' + trending tie-break')} "
        f"and the model with titles to {_r20(cold, both + ' + trending tie-break')}.",
        *_warmup_reading(res),
        f"- Counting baselines: category popularity R@20 {_r20(cold, 'category popularity')} (paired: only "
        f"the model with titles hits in {pop_both} cases, only category popularity in {pop_only}, "
        f"p = {sign_test(pop_both, pop_only):.2f}), trending {_r20(cold, 'trending')}.",
        "- Warm targets: with the cold items added R@20 "
        f"{_r20(warm, 'model, no cold items')} → {_r20(warm, both)} (category only: {_r20(warm, cat)}), "
        f"MRR@20 {_m20(warm, 'model, no cold items')} → {_m20(warm, both)} ({_m20(warm, cat)}).",
        "",
    ]


def report(all_res: Mapping[str, Mapping[str, Any]]) -> str:
    """The markdown report: one section per dataset measured."""
    lines = [
        "# Cold items: content-mapped new items",
        "",
        "Next-item ranking of items the model never trained on, added to the loaded model from their "
        "content (`IncrementalScorer.add_items`), against counting baselines. Two measurements: real "
        "sessions without titles (RetailRocket), and a simulated shop whose titles carry signal.",
        "",
    ]
    if RETAILROCKET in all_res:
        lines += retailrocket_section(all_res[RETAILROCKET])
    if SIM in all_res:
        lines += sim_section(all_res[SIM])
    return "\n".join(lines).rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["retailrocket", "sim", "both"], default="retailrocket")
    parser.add_argument("--cut", type=float, default=0.75, help="time quantile that ends training")
    parser.add_argument("--config", default="yoochoose-100k", help="RetailRocket: training preset or file")
    parser.add_argument(
        "--sim-config", default="demo", help="simulated shop: 'demo' (the demo's settings), a preset or file"
    )
    parser.add_argument("--window-hours", type=float, default=24.0, help="trending window")
    parser.add_argument("--json", action="store_true", help="last stdout line: the results as JSON")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "reports"), help="report directory")
    parser.add_argument("--from-json", help="write the report again from a saved results file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    saved = out / "cold_items.json"
    if args.from_json:
        all_res = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        all_res = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
        data = Path(get_settings().data_dir) / "retailrocket-sample" / "events.tsv"
        if args.dataset in ("retailrocket", "both"):
            if not data.exists():
                print(f"data not found: {data} (KAIROS_DATA_DIR)", file=sys.stderr)
                return 2
            with tempfile.TemporaryDirectory(prefix="kairos-cold-") as work:
                all_res[RETAILROCKET] = run_retailrocket(
                    data, Path(work), args.cut, args.config, args.window_hours
                )
        if args.dataset in ("sim", "both"):
            with tempfile.TemporaryDirectory(prefix="kairos-cold-sim-") as work:
                all_res[SIM] = run_sim(Path(work), args.cut, args.sim_config, args.window_hours)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(all_res, indent=2, default=float), encoding="utf-8")
    text = report(all_res)
    (out / "cold_items.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if args.json:
        print(json.dumps(all_res, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
