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
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from benchmarks.cold_start.config import RETAILROCKET, SIM  # noqa: E402
from benchmarks.cold_start.datasets import drop_before, hold_out_items  # noqa: E402
from benchmarks.cold_start.report import report  # noqa: E402
from benchmarks.cold_start.runner import run_retailrocket, run_sim  # noqa: E402
from stream.settings import get_settings  # noqa: E402

# The parts live in benchmarks/cold_start/; callers that import this file by its old name use these.
__all__ = ["drop_before", "hold_out_items", "report", "run_retailrocket", "run_sim"]


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
    saved.write_text(json_out.dumps(all_res, indent=2, default=float), encoding="utf-8")
    text = report(all_res)
    (out / "cold_items.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if args.json:
        print(json_out.dumps(all_res, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
