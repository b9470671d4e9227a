"""The model-quality benchmark's PNGs: per dataset, the training curve (loss and validation metrics per
epoch, when the run recorded them) and Recall@20 / MRR@20 of ours and the baselines beside the
references.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.json_out import nan_if_null
from benchmarks.quality.config import REFERENCES


def draw_figures(
    results: dict[str, dict[str, Any]], out: Path, stem: str = "model_quality"
) -> dict[str, list[tuple[str, Path]]]:
    """Per dataset: training curves (when the run recorded them), Recall/MRR@20 beside the references."""
    from benchmarks import plots

    drawn: dict[str, list[tuple[str, Path]]] = {}
    for name, res in results.items():
        figs: list[tuple[str, Path]] = []
        history = res["train"].get("history") or []
        if history:
            epochs = [int(h["epoch"]) for h in history]
            fig, ax = plots.figure(7.5, 3.6)
            # A loss or metric that was NaN in the run (a diverged epoch) is null in its saved JSON.
            losses = [nan_if_null(h["loss"]) for h in history]
            ax.plot(epochs, losses, "o-", color=plots.OURS, label="training loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"training loss ({res['config'].get('loss', 'loss')}, per event)")
            ax.set_xticks(epochs)
            ax.grid(alpha=0.3)
            handles = ax.get_legend_handles_labels()
            if any("valid_recall@20" in h for h in history):
                right = ax.twinx()
                for key, label, style, colour in (
                    ("valid_recall@20", "validation Recall@20", "s--", "tab:green"),
                    ("valid_mrr@20", "validation MRR@20", "^--", "tab:red"),
                ):
                    values = [100 * nan_if_null(h.get(key)) for h in history]
                    right.plot(epochs, values, style, color=colour, label=label)
                # With train_on_all the validation tail is also trained on: an optimistic curve.
                seen = " (tail also trained on)" if res["config"].get("train_on_all") else ""
                right.set_ylabel(f"validation metric, %{seen}")
                more = right.get_legend_handles_labels()
                handles = (handles[0] + more[0], handles[1] + more[1])
            ax.legend(*handles, fontsize=8, loc="center right")
            ax.set_title(f"{name}: training curve ({len(history)} epochs)")
            figs.append(("Training curve", plots.save(fig, out / f"{stem}-{name}-training.png")))

        gru = res["gru"]
        rows: list[tuple[str, float, float, str]] = [
            (
                "Kairos GRU + session memory" if res.get("gru_alone") else "Kairos GRU",
                gru["recall@20"],
                gru["mrr@20"],
                plots.OURS,
            ),
        ]
        if res.get("gru_alone"):
            rows.append(
                ("Kairos GRU alone", res["gru_alone"]["recall@20"], res["gru_alone"]["mrr@20"], "tab:cyan")
            )
        rows += [
            (f"{b} (ours)", m["recall@20"], m["mrr@20"], "tab:olive") for b, m in res["baselines"].items()
        ]
        rows += [(ref[0], ref[3], ref[4], plots.OTHER) for ref in REFERENCES.get(name, [])]
        fig, axes = plots.figure(11.0, 0.9 + 0.32 * len(rows), ncols=2)
        refs = REFERENCES.get(name, [])
        for k, metric in enumerate(("Recall@20", "MRR@20")):
            ax = axes[0][k]
            plots.hbars(
                ax,
                [r[0] if k == 0 else "" for r in rows],
                [100 * float(r[1 + k]) for r in rows],
                [r[3] for r in rows],
                fmt="{:.2f}",
            )
            if refs:
                best_ref = max(100 * (ref[3] if k == 0 else ref[4]) for ref in refs)
                ax.axvline(best_ref, color="tab:red", linestyle="--", linewidth=1)
            ax.set_xlabel(f"{metric}, % (dashed: best reference)")
            ax.set_title(metric)
        fig.suptitle(f"{name}: next-item ranking on the test split, full catalog")
        figs.append(
            (
                "Recall@20 and MRR@20 against the references",
                plots.save(fig, out / f"{stem}-{name}-ranking.png"),
            )
        )
        drawn[name] = figs
    return drawn
