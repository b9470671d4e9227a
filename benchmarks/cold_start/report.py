"""The cold-items markdown report: one section per dataset measured (its command, the data and the
content mapping, how the stream warm-up was chosen, a table per target group with the tie shares,
then its reading), put together by :func:`report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.cold_start.config import RETAILROCKET, SIM
from benchmarks.cold_start.reading import retailrocket_reading, sim_reading
from benchmarks.json_out import nan_if_null
from model.warmup import GAMMAS
from model.warmup_fit import pick_warmup, table_key


def _mapping_lines(reports: Mapping[str, Any]) -> list[str]:
    # A hold-out error that is undefined (NaN in the run) is null in a saved run: shown as NaN again.
    lines = []
    for arm, rep in reports.items():
        errs = "; ".join(
            f"{mode}: " + ", ".join(f"{key} → {nan_if_null(err):.4f}" for key, err in by_setting.items())
            for mode, by_setting in rep.get("holdout_error", {}).items()
        )
        lines.append(
            f"- Mapping of `{arm}`: category mode `{rep.get('category_mode')}`, text scale "
            f"{rep.get('text_scale', 1.0)}, ridge λ {rep.get('ridge_lambda')} (chosen on a 20 % hold-out "
            "of the warm items); hold-out error "
            "(support-weighted squared error of the target vector; predicting the mean item: "
            f"{nan_if_null(rep.get('holdout_error_of_mean_item')):.4f}): {errs}"
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
