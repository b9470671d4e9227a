"""Choose the session-memory weights on a validation split (never on test).

    .venv/bin/python benchmarks/memory_sweep.py yoochoose-100k [--json]
    .venv/bin/python benchmarks/memory_sweep.py diginetica [--json]

Trains the dataset's preset GRU on the validation protocol's training part (yoochoose: ``train_tr.tsv``
-> ``train_valid.tsv``; Diginetica: the time-ordered last 10 % of ``train_sessions.txt`` held out),
builds the neighbour table from that same training part, and ranks the validation cases (the latest
``--max-cases``) against the whole catalog for every combination of window decay, repeat bonus,
neighbour weight and floor: the GRU's scores are computed once per batch and each combination only adds
its terms (``model.session_memory.SessionMemory``). Prints the grid best-first by MRR@20; the winner
goes into ``model/configs/<dataset>.json`` by hand (with the validation figures in docs/model.md).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from model.config import CONFIG_DIR, load_config  # noqa: E402
from model.data import ItemIndex, cases_from_sessions, encode, split_train_valid  # noqa: E402
from model.data_files import load_log  # noqa: E402
from model.evaluate import model_states, subset_cases  # noqa: E402
from model.metrics import pessimistic_ranks  # noqa: E402
from model.session_memory import SessionMemory, build_neighbours  # noqa: E402
from model.train import train  # noqa: E402
from stream.settings import get_settings  # noqa: E402

SPLITS = {
    "yoochoose-100k": ("yoochoose-100k/train_tr.tsv", "yoochoose-100k/train_valid.tsv", "sessions"),
    "diginetica": ("diginetica/train_sessions.txt", None, "sequences"),
}
DECAYS = (0.6, 0.8, 0.9, 1.0)
REPEAT_BONUS = (0.0, 1.0, 1.5, 2.0, 3.0)
NEIGHBOUR_WEIGHT = (0.0, 0.1, 0.3, 0.5)
NEIGHBOUR_FLOOR = (0.003, 0.01, 0.1)
NEIGHBOUR_BACKWARD = (0.0, 0.5)


def sweep(
    name: str, data_dir: Path, width: int, max_cases: int, repeat_mode: str = "sum"
) -> list[dict[str, Any]]:
    """Train the preset on the validation protocol and score every memory combination."""
    train_rel, valid_rel, fmt = SPLITS[name]
    cfg = load_config(str(CONFIG_DIR / f"{name}.json")).model_copy(
        # The window only feeds the scoring terms, never the training loss: the GRU is the preset's. The
        # sweep builds its own neighbour tables (one per backward weight), so training builds none.
        update={"session_window": width, "neighbour_weight": 0.0, "train_on_all": False, "select_best": False}
    )
    log = load_log(data_dir / train_rel, fmt)
    if valid_rel is None:
        train_log, valid_log = split_train_valid(log, 0.1)
    else:
        train_log, valid_log = log, load_log(data_dir / valid_rel, fmt)
    index = ItemIndex.build(train_log)
    sessions = encode(train_log, index)
    cases = cases_from_sessions(encode(valid_log, index))
    if len(cases) > max_cases:
        cases = subset_cases(cases, np.arange(len(cases) - max_cases, len(cases)))
    t0 = time.perf_counter()
    model = train(sessions, index, cfg, progress=False).model
    print(
        f"[{name}] trained in {time.perf_counter() - t0:.0f} s; {len(cases)} validation cases",
        file=sys.stderr,
    )
    n = len(index)
    tables = {
        back: build_neighbours(sessions, n, cfg.neighbour_k, cfg.neighbour_distance, back)
        for back in NEIGHBOUR_BACKWARD
    }
    grid = [
        g
        for g in itertools.product(
            DECAYS, REPEAT_BONUS, NEIGHBOUR_WEIGHT, NEIGHBOUR_FLOOR, NEIGHBOUR_BACKWARD
        )
        # Without neighbours the floor and the table do not matter: keep one such combination. Neighbours
        # without the repeat term lost clearly on yoochoose: only the GRU alone keeps a zero repeat bonus.
        if (g[2] > 0 or (g[3] == NEIGHBOUR_FLOOR[0] and g[4] == NEIGHBOUR_BACKWARD[0]))
        and (g[1] > 0 or g[2] == 0)
    ]
    ranks: dict[tuple[float, ...], list[np.ndarray]] = {g: [] for g in grid}
    model.eval()
    for a in range(0, len(cases), 512):
        rows = np.arange(a, min(a + 512, len(cases)))
        with torch.no_grad():
            states = model_states(model, cases, rows)
            base = model.full_scores(states, with_memory=False)
        window = model.window_of(states)
        targets = cases.targets[rows]
        for decay, bonus, weight, floor, back in grid:
            memory = SessionMemory(n, decay, bonus, repeat_mode, weight, floor, *tables[back])
            scores = base + memory.dense(window)
            ranks[(decay, bonus, weight, floor, back)].append(pessimistic_ranks(scores.numpy(), targets))
    out = []
    for (decay, bonus, weight, floor, back), parts in ranks.items():
        r = np.concatenate(parts)
        out.append(
            {
                "window_decay": decay,
                "repeat_bonus": bonus,
                "neighbour_weight": weight,
                "neighbour_floor": floor,
                "neighbour_backward": back,
                "recall@20": float(np.mean(r <= 20)),
                "mrr@20": float(np.mean(np.where(r <= 20, 1.0 / r, 0.0))),
            }
        )
    # Best MRR@20 at four decimals (finer differences are noise on 10k cases), then Recall@20.
    out.sort(key=lambda row: (-round(row["mrr@20"], 4), -row["recall@20"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(SPLITS))
    parser.add_argument("--window", type=int, default=10, help="session_window to evaluate")
    parser.add_argument("--max-cases", type=int, default=10_000, help="latest validation cases scored")
    parser.add_argument("--repeat-mode", choices=("sum", "max"), default="sum", help="repeat_mode swept")
    parser.add_argument("--json", action="store_true", help="last line: the grid as JSON")
    args = parser.parse_args(argv)
    data_dir = Path(get_settings().data_dir)
    if not (data_dir / SPLITS[args.dataset][0]).exists():
        print(f"data not found under {data_dir} (KAIROS_DATA_DIR)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory():
        rows = sweep(args.dataset, data_dir, args.window, args.max_cases, args.repeat_mode)
    base = next(r for r in rows if r["repeat_bonus"] == 0 and r["neighbour_weight"] == 0)
    print(f"GRU alone: R@20 {base['recall@20']:.4f} MRR@20 {base['mrr@20']:.4f}")
    print("decay  repeat  n.weight  n.floor  n.backward  R@20    MRR@20")
    for r in rows[:15]:
        print(
            f"{r['window_decay']:<6} {r['repeat_bonus']:<7} {r['neighbour_weight']:<9} "
            f"{r['neighbour_floor']:<8} {r['neighbour_backward']:<11} {r['recall@20']:.4f}  {r['mrr@20']:.4f}"
        )
    if args.json:
        print(
            json_out.dumps(
                {
                    "dataset": args.dataset,
                    "window": args.window,
                    "repeat_mode": args.repeat_mode,
                    "grid": rows,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
