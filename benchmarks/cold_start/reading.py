"""The cold-items report's readings: what the figures say, in words, for RetailRocket, for the
simulated shop and for the stream warm-up, each sentence computed from the results so that a rerun
keeps it true.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from benchmarks.cold_start.metrics import sign_test
from benchmarks.json_out import nan_if_null


def _r20(group: Mapping[str, Any], name: str) -> str:
    return f"{group[name]['recall@20']:.4f}"


def _m20(group: Mapping[str, Any], name: str) -> str:
    return f"{group[name]['mrr@20']:.4f}"


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
        # An undefined error (NaN in the run) is null in a saved run: NaN again, as the run had it.
        return float(min(min(nan_if_null(e) for e in v.values()) for v in rep["holdout_error"].values()))

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
        f"{nan_if_null(res['content_report'][both].get('holdout_error_of_mean_item', 0.0)):.4f}): "
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
