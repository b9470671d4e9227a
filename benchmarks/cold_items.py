"""Cold items: next-item ranking of items first seen after training, placed by the content mapping.

    .venv/bin/python benchmarks/cold_items.py [--cut 0.75] [--config yoochoose-100k] [--window-hours 24]
                                              [--json] [--out DIR]
    .venv/bin/python benchmarks/cold_items.py --from-json benchmarks/reports/cold_items.json

On ``retailrocket-sample`` (KAIROS_DATA_DIR): events before the ``--cut`` quantile of time train the
GRU (``run_training`` with ``--items``: the content mapping is fitted on the trained items); every
event after it whose session has an earlier event is a test case (the prefix may start before the cut).
Targets are *cold* (the item's first event is after the cut), *warm* (the model knows the item) or
*warm, not in the model* (seen before the cut but dropped by preprocessing, e.g. only in one-event
sessions). The worker's view is simulated: every catalog item the model does not know is added with
``IncrementalScorer.add_items`` before the test stream (a catalog message precedes an item's events).

RetailRocket has categories but no titles, so the only honest content is the category (titles are
empty: the text vector is one constant). Methods, each ranking the full catalog (known + added items,
pessimistic ties), Recall@20 / MRR@20:

* ``model``: the GRU with the cold items added;
* ``model + trending tie-break``: plus 1e-4 * log(1 + the item's events in the last ``--window-hours``
  before the case) — only separates (near-)ties, e.g. cold items of one category with equal content;
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
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.cli import run_training  # noqa: E402
from model.config import load_config  # noqa: E402
from model.content import ItemContent  # noqa: E402
from model.data import TYPE_ALIASES, TYPE_INDEX  # noqa: E402
from model.scorer import IncrementalScorer  # noqa: E402
from stream.settings import get_settings  # noqa: E402

K = 20
TIE_EPS = 1e-4
GROUPS = ("cold", "cold, not a repeat", "warm", "warm, not in the model")


def load_events(path: Path) -> list[tuple[float, str, int, str, str]]:
    """(time, session, event type index, item, category) sorted by time (file order within a second)."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            kind = TYPE_INDEX[TYPE_ALIASES[row["Type"].strip().lower()]]
            rows.append((float(row["Time"]), row["SessionId"], kind, row["ItemId"], row["CatId"]))
    rows.sort(key=lambda r: r[0])
    return rows


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


def run(data: Path, work: Path, cut_q: float, config: str, window_h: float) -> dict[str, Any]:
    events = load_events(data)
    times = np.array([e[0] for e in events])
    cut = float(np.quantile(times, cut_q))
    first: dict[str, float] = {}
    category: dict[str, str] = {}
    for t, _, _, item, cat in events:
        first.setdefault(item, t)
        category[item] = cat
    train_tsv, catalog = work / "train.tsv", work / "items.jsonl"
    with train_tsv.open("w", encoding="utf-8") as handle:
        handle.write("SessionId\tItemId\tTime\tType\n")
        names = {i: n for n, i in TYPE_INDEX.items()}
        for t, sess, kind, item, _ in events:
            if t < cut:
                handle.write(f"{sess}\t{item}\t{t}\t{names[kind]}\n")
    with catalog.open("w", encoding="utf-8") as handle:
        for item in sorted(category):
            handle.write(json.dumps({"item_id": item, "title": "", "category": category[item]}) + "\n")
    cfg = load_config(config)
    started = time.perf_counter()
    metrics = run_training(str(train_tsv), "sessions", None, str(work / "model"), cfg, False, str(catalog))
    train_s = time.perf_counter() - started

    with_cold = IncrementalScorer.load(work / "model", threads=2, content="require")
    plain = IncrementalScorer.load(work / "model", threads=2, content="off")
    unknown = [i for i in sorted(category) if with_cold.item_indices([i])[0] < 0]
    started = time.perf_counter()
    added = with_cold.add_items(unknown, [ItemContent("", category[i]) for i in unknown])
    add_s = time.perf_counter() - started
    n_all, n_known = with_cold.n_items, with_cold.n_artifact_items
    ids = [with_cold.item_id(i) for i in range(n_all)]
    col = {item: i for i, item in enumerate(ids)}
    cat_codes = {c: k for k, c in enumerate(sorted(set(category.values())))}
    item_cat = np.array([cat_codes[category[i]] for i in ids])

    # Cases: state before each test event (stepped through the session with each scorer).
    by_session: dict[str, list[int]] = defaultdict(list)
    for pos, (_, sess, _, _, _) in enumerate(events):
        by_session[sess].append(pos)
    cases: list[tuple[int, int, int, str]] = []  # (event position, target column, last item column, group)
    states_cold, states_plain = [], []
    for positions in by_session.values():
        hc, hp = with_cold.initial_state(1), plain.initial_state(1)
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
                for group in groups:
                    cases.append((pos, col[item], col[prev], group))
                    states_cold.append(hc[0])
                    states_plain.append(hp[0])
            kinds = np.array([kind])
            hc = with_cold.step(hc, with_cold.item_indices([item]), kinds)
            hp = plain.step(hp, plain.item_indices([item]), kinds)
    s_cold, s_plain = np.stack(states_cold), np.stack(states_plain)
    ev_col = np.array([col[e[3]] for e in events])
    window = window_h * 3600.0

    ranks: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    ties: dict[str, list[int]] = defaultdict(list)
    chunk = 256
    for a in range(0, len(cases), chunk):
        rows = cases[a : a + chunk]
        target = np.array([r[1] for r in rows])
        idx, top = with_cold.topk(s_cold[a : a + chunk], n_all)
        model = np.empty((len(rows), n_all), dtype=np.float64)
        np.put_along_axis(model, idx, top.astype(np.float64), axis=1)
        idx_p, top_p = plain.topk(s_plain[a : a + chunk], n_known)
        model_plain = np.empty((len(rows), n_known), dtype=np.float64)
        np.put_along_axis(model_plain, idx_p, top_p.astype(np.float64), axis=1)
        recent = np.zeros((len(rows), n_all))
        popular = np.zeros((len(rows), n_all))
        for r, (pos, _, last, _) in enumerate(rows):
            t = events[pos][0]
            hi = int(np.searchsorted(times, t, side="left"))  # strictly before the case: no peeking
            lo = int(np.searchsorted(times, t - window, side="left"))
            recent[r] = np.bincount(ev_col[lo:hi], minlength=n_all)
            counts = np.bincount(ev_col[:hi], minlength=n_all)
            popular[r] = counts + (counts.max() + 1.0) * (item_cat == item_cat[last])
        methods = {
            "model": model,
            "model + trending tie-break": model + TIE_EPS * np.log1p(recent),
            "category popularity": popular,
            "trending": recent,
        }
        for name, scores in methods.items():
            rk, tie = ranks_and_ties(scores, target)
            for r, row in enumerate(rows):
                ranks[row[3]][name].append(int(rk[r]))
                if name == "model":
                    ties[row[3]].append(int(tie[r]))
        warm = np.array([r[3] == "warm" for r in rows])
        if warm.any():
            rk, _ = ranks_and_ties(model_plain[warm], target[warm])
            ranks["warm"]["model, no cold items"].extend(int(x) for x in rk)
    results = {group: {name: summary(np.array(r)) for name, r in ranks[group].items()} for group in GROUPS}
    tie_stats = {
        g: {
            "share_tied": float(np.mean(np.array(ties[g]) > 0)) if ties[g] else 0.0,
            "median_tie_size": float(np.median(ties[g])) if ties[g] else 0.0,
        }
        for g in GROUPS
    }
    n_cold_items = sum(1 for t in first.values() if t >= cut)
    return {
        "dataset": "retailrocket-sample",
        "cut_quantile": cut_q,
        "cut_time": cut,
        "config": config,
        "window_hours": window_h,
        "n_events": len(events),
        "n_train_events": int((times < cut).sum()),
        "n_items": len(category),
        "n_model_items": n_known,
        "n_added_items": added,
        "n_cold_items": n_cold_items,
        "n_categories": len(cat_codes),
        "train_seconds": train_s,
        "add_items_seconds": add_s,
        "content_report": metrics.get("content", {}),
        "results": results,
        "ties_of_model": tie_stats,
    }


def report(res: dict[str, Any]) -> str:
    """The markdown report."""
    lines = [
        "# Cold items: content-mapped new items on retailrocket-sample",
        "",
        "Command: `.venv/bin/python benchmarks/cold_items.py "
        f"--cut {res['cut_quantile']} --config {res['config']} --window-hours {res['window_hours']:g}` "
        "(details in the script's docstring).",
        "",
        f"- {res['n_events']:,} events, the first {res['n_train_events']:,} (time quantile "
        f"{res['cut_quantile']}) train the GRU; {res['n_items']:,} items in {res['n_categories']} "
        f"categories, {res['n_model_items']:,} in the model, {res['n_added_items']:,} added from content "
        f"({res['n_cold_items']:,} cold: first seen after the cut), in {res['add_items_seconds']:.1f} s.",
        "- Content: category only (RetailRocket has no titles; the text vector is that of an empty "
        "title for every item, a constant). Mapping: category mode "
        f"`{res['content_report'].get('category_mode')}`, ridge λ "
        f"{res['content_report'].get('ridge_lambda')} (chosen on a 20 % hold-out of the warm items).",
        f"- Full catalog (known + added), pessimistic ties; trending window {res['window_hours']:g} h.",
        f"- Mapping hold-out error (support-weighted squared error of the target vector; predicting the "
        f"mean item: {res['content_report'].get('holdout_error_of_mean_item', float('nan')):.4f}): "
        + "; ".join(
            f"{mode}: " + ", ".join(f"λ {lam} → {err:.4f}" for lam, err in errs.items())
            for mode, errs in res["content_report"].get("holdout_error", {}).items()
        ),
        f"- Training {res['train_seconds']:.0f} s ({res['config']} preset).",
        "",
    ]
    for group, methods in res["results"].items():
        if not methods:
            lines += [f"## Targets: {group}: no cases", ""]
            continue
        n = next(iter(methods.values()))["n"]
        lines += [f"## Targets: {group} ({n:,} cases)", "", "| method | R@10 | MRR@10 | R@20 | MRR@20 |"]
        lines.append("|---|---|---|---|---|")
        for name, m in methods.items():
            lines.append(
                f"| {name} | {m['recall@10']:.4f} | {m['mrr@10']:.4f} "
                f"| {m['recall@20']:.4f} | {m['mrr@20']:.4f} |"
            )
        tie = res["ties_of_model"][group]
        lines += [
            "",
            f"Model scores tied with at least one other item: {tie['share_tied']:.1%} of the cases "
            f"(median tie size {tie['median_tie_size']:.0f}).",
            "",
        ]
    lines += reading(res)
    return "\n".join(lines)


def reading(res: dict[str, Any]) -> list[str]:
    """What the figures say, in words (computed from them, so a rerun keeps it true)."""
    cold, warm = res["results"]["cold"], res["results"]["warm"]
    tie = res["ties_of_model"]["cold"]

    def r20(group: dict[str, Any], name: str) -> str:
        return f"{group[name]['recall@20']:.4f}"

    return [
        "## Reading",
        "",
        f"- Cold targets: the content-mapped model reaches R@20 {r20(cold, 'model')}, far below category "
        f"popularity ({r20(cold, 'category popularity')}). With category-only content every cold item of a "
        f"category gets the same vector and bias (its score ties with others in {tie['share_tied']:.0%} of "
        "the cases, median tie size "
        f"{tie['median_tie_size']:.0f}), and that bias is the category's *mean* item's, below its "
        "established items; category popularity instead counts the cold item's own events in the test "
        "stream so far, which a content map cannot see. The model is not a good cold-item ranker on "
        "this content.",
        f"- The trending tie-break (a count the worker has) separates the ties: R@20 {r20(cold, 'model')} → "
        f"{r20(cold, 'model + trending tie-break')}, MRR@20 {cold['model']['mrr@20']:.4f} → "
        f"{cold['model + trending tie-break']['mrr@20']:.4f}; small, because it only reorders (near-)ties.",
        "- Warm targets: adding the cold items costs nothing; it gains (R@20 "
        f"{r20(warm, 'model, no cold items')} → {r20(warm, 'model')}, "
        f"MRR@20 {warm['model, no cold items']['mrr@20']:.4f} → "
        f"{warm['model']['mrr@20']:.4f}) because the GRU now steps on cold items in the prefixes instead of "
        "skipping them.",
        "- Not measured: titles. RetailRocket has none, and no installable package with a product catalog "
        "whose items also have sessions was found, so the text part of the mapping (tested for agreement "
        "with sentence-transformers, and on synthetic data in tests/model/test_content.py) is unmeasured on "
        "real sessions.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cut", type=float, default=0.75, help="time quantile that ends training")
    parser.add_argument("--config", default="yoochoose-100k", help="training preset or config file")
    parser.add_argument("--window-hours", type=float, default=24.0, help="trending window")
    parser.add_argument("--json", action="store_true", help="last stdout line: the results as JSON")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "reports"), help="report directory")
    parser.add_argument("--from-json", help="write the report again from a saved results file")
    args = parser.parse_args(argv)
    data = Path(get_settings().data_dir) / "retailrocket-sample" / "events.tsv"
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    elif not data.exists():
        print(f"data not found: {data} (KAIROS_DATA_DIR)", file=sys.stderr)
        return 2
    else:
        with tempfile.TemporaryDirectory(prefix="kairos-cold-") as work:
            res = run(data, Path(work), args.cut, args.config, args.window_hours)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold_items.json").write_text(json.dumps(res, indent=2, default=float), encoding="utf-8")
    text = report(res)
    (out / "cold_items.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if args.json:
        print(json.dumps(res, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
