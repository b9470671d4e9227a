"""Stream worker benchmark: throughput, its parse ceiling, and event→push latency against the broker floor.

    .venv/bin/python benchmarks/stream_throughput.py [--json] [--events N] [--rate R] [--seconds S]
                                                     [--steady-events N] [--profile] [--py-spy PATH]
                                                     [--out DIR]
    .venv/bin/python benchmarks/stream_throughput.py --from-json benchmarks/reports/stream_throughput.json
    .venv/bin/python benchmarks/stream_throughput.py --engine-only [--events N] [--spread]  # no broker

Everything runs for real in one run: the embedded Tansu broker, ``python -m stream.cli worker`` in its
own process, a GRU model trained (once, cached under ``.kairos/bench/``) on the replayed events.

Events are the real ``retailrocket-sample`` stream (``stream.replay``, moved in time to the simulated
shop's era) merged in time order with simulated shop events (``stream.simulator.generate_events``);
users of the two sources are disjoint, so every user's events stay in order. Each item gets a catalog
entry on the ``catalog`` topic first (synthetic entries for the dataset items, the simulated shop's
own catalog for the rest).

Phase A (broker 1) - throughput:
  1. produce the catalog and N events to ``events``, before any worker exists; the events' times are
     spaced ``1 / pace`` apart (default 50,000/s: the event times a shop at the goal rate would send;
     see :func:`live_paced`);
  2. start the worker (production defaults, except ``clock=event`` so the decisions follow the event
     times, deterministically); poll its ``/metrics`` ``kairos_events_total`` every 0.5 s (a scrape
     renders every series while holding the GIL: polled often, it slows the worker it measures);
  3. ``events_per_s = (N - c0) / (t_last - t0)``: ``(t0, c0)`` is the first poll that sees a processed
     event, so group join, recovery, model load and the first fetch are all before ``t0`` and the c0
     events processed before it are not counted; ``t_last`` is the worker's own
     ``kairos_last_event_timestamp_seconds`` once the counter reaches N;
  4. ``ceiling_events_per_s``: the same topic read from offset 0 by a bare confluent-kafka consumer
     that parses every record with the worker's own parser, ``stream.event_decoder.decode_event``
     (first record to last; the median of three reads, one being too short to trust on shared cores).
Phase A' (another fresh broker): steps 1-3 again with the dataset's own event times
  (``replay_events_per_s``), i.e. a replay where event time runs far faster than wall time.
Phase B (broker 2, fresh) - latency at a fixed offered rate, one measurement after the other:
  5. floor: on its own topic ``bench-floor`` (as many partitions as ``events``), a bare producer
     (the tests' producer: murmur2_random, linger 2 ms) sends events at R/s
     whose ``ts`` is the wall clock at produce; a bare consumer (``fetch.wait.max.ms=10``) records
     receive time minus ``ts``;
  6. the worker (wall clock, permissive policy: see ``LATENCY_ENV``) reads the same kind of events
     at R/s; a consumer on ``pushes`` (``fetch.wait.max.ms=10``) records receive time minus
     ``push.event_ts`` (= the triggering event's produce time). The first second of pushes is
     dropped as warm-up. After the producer stops, the measurement waits (up to 120 s) until the
     worker processed every event sent, so a worker that fell behind is measured on its backlog too.
Phase C (broker 3, fresh): steps 5-6 again at ``--high-rate`` (default 10,000/s) for
  ``--high-seconds`` (default 5 s): the issue's second latency point.

``--profile`` adds (a) py-spy on the worker during phase A (when py-spy is found), aggregated into
time shares per stage, and (b) cProfile of ``Engine.process`` in-process on the same events.
Writes ``<out>/stream_throughput.md`` (default ``benchmarks/reports``), its figures
``<out>/stream_throughput-*.png`` and the raw results ``<out>/stream_throughput.json``; ``--from-json``
writes the report and figures again from that file without running anything. A measurement, never a
test assertion.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import json_out  # noqa: E402
from benchmarks.throughput.charts import draw_figures  # noqa: E402
from benchmarks.throughput.config import CACHE, FLOOR_TOPIC, LATENCY_ENV, REPORT, WARMUP_SECONDS, _say  # noqa: E402
from benchmarks.throughput.latency_phase import _create_topic, measure_floor, measure_latency  # noqa: E402
from benchmarks.throughput.profiles import DictState, profile_engine, summarise_py_spy  # noqa: E402
from benchmarks.throughput.report import machine, write_report  # noqa: E402
from benchmarks.throughput.throughput_phase import measure_ceiling, measure_throughput  # noqa: E402
from benchmarks.throughput.workload import (  # noqa: E402
    Workload,
    build_workload,
    ensure_model,
    live_paced,
    spread_users,
)
from stream import native  # noqa: E402
from stream.broker import EmbeddedBroker  # noqa: E402
from stream.settings import get_settings  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402
from tests.support.worker import settings_for  # noqa: E402

# Scratch scripts import this file (``import stream_throughput as st``) and use these names.
__all__ = [
    "DictState",
    "LATENCY_ENV",
    "Workload",
    "build_workload",
    "ensure_model",
    "live_paced",
    "measure_throughput",
    "profile_engine",
]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a summary (and with ``--json`` one JSON object as the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Print one JSON object as the last line.")
    parser.add_argument(
        "--events",
        type=int,
        default=60_000,
        help="Events for the throughput phase (a window of several seconds).",
    )
    parser.add_argument(
        "--pace", type=float, default=50_000.0, help="Event-time spacing (events/s) of the live-paced run."
    )
    parser.add_argument(
        "--steady-events",
        type=int,
        default=150_000,
        help="Events of the engine-alone steady-state run (live-paced; enough that the partitions' "
        "co-visitation rows fill, as at a shop that has run a while; cut to what the workload holds, "
        "98,741 events with the benchmark's data); 0 skips it.",
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="Offered rate of the latency phase.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of each latency measurement.")
    parser.add_argument(
        "--high-rate",
        type=float,
        default=10_000.0,
        help="A second latency point (floor and worker) at this offered rate; 0 skips it.",
    )
    parser.add_argument(
        "--high-seconds", type=float, default=5.0, help="Length of each measurement at --high-rate."
    )
    parser.add_argument(
        "--profile", action="store_true", help="Also profile (py-spy on the worker, cProfile)."
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary for --profile.")
    parser.add_argument("--no-report", action="store_true", help="Do not write the markdown report.")
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="Only the engine in-process on the live-paced events (no broker, no report): µs per event "
        "per stage and a digest of the states and pushes, in seconds.",
    )
    parser.add_argument(
        "--spread",
        action="store_true",
        help="With --engine-only: each user's events spread over the run (workload.spread_users), so a "
        "batch touches about one user per event, as at a busy shop.",
    )
    parser.add_argument(
        "--input-reader",
        choices=("bulk", "faust"),
        default="bulk",
        help="How the measured worker reads its inputs (KAIROS_WORKER__INPUT_READER).",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="Skip phase A with the other input reader (run by default, for the README's choice).",
    )
    parser.add_argument(
        "--out", type=Path, default=REPORT.parent, help="Report folder (default benchmarks/reports)."
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="Write the report and figures again from a run's stream_throughput.json (nothing is run).",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/stream_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        publish(saved["result"], saved["command"], args.out)
        return 0

    random.seed(0)
    started = time.time()
    reader_env = {"KAIROS_WORKER__INPUT_READER": args.input_reader}
    LATENCY_ENV.update(reader_env)
    other = "faust" if args.input_reader == "bulk" else "bulk"
    settings = get_settings()
    mach = machine()
    model_dir = ensure_model(settings)
    work = build_workload(settings, args.events)
    if args.spread:
        if not args.engine_only:
            parser.error("--spread needs --engine-only")
        work = spread_users(work)
    live = live_paced(work, args.pace)
    if args.engine_only:
        timing = profile_engine(model_dir, live, only_plain=True)
        engine_only = {"command": command, "machine": mach, **timing}
        print(json_out.dumps(engine_only) if args.json else json_out.dumps(engine_only, indent=1))
        return 0
    # The engine alone in this process, before any broker runs: the live-paced events, and the same
    # events with each user's spread over the run (a user record read and written per event, as at a
    # busy shop; workload.spread_users), which the worker's live-paced figure leaves out.
    _say("[bench] the engine alone: live-paced, then each user's events spread, then the steady state")
    engine_alone = {
        "live_paced": profile_engine(model_dir, live, only_plain=True),
        "spread": profile_engine(model_dir, live_paced(spread_users(work), args.pace), only_plain=True),
    }
    # The throughput phase's events are too few to fill the co-visitation rows (a full row evicts its
    # weakest neighbour for every new one, and writes its 40 neighbours to the changelog at each change):
    # the steady state of a worker that has run a while, in the engine alone (benchmarks/README.md).
    if args.steady_events > 0:
        steady = live_paced(build_workload(settings, args.steady_events), args.pace)
        engine_alone["steady"] = profile_engine(model_dir, steady, only_plain=True)
    # Enough distinct events for the latency run (it repeats them, renamed, when it needs more).
    offered = build_workload(settings, int(args.rate * (args.seconds + WARMUP_SECONDS)))
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    profile: dict[str, Any] = {}
    spy_out = workdir / "py-spy.txt" if args.profile and args.py_spy else None
    try:
        with EmbeddedBroker() as broker:
            ensure_topics(settings_for(broker.bootstrap))
            # Which code the worker runs (stream.native): a source edited since `make install` leaves
            # the native build stale and the worker on the sources, which is worth knowing before reading.
            _say(f"[bench] the worker's hot modules: {native.status}")
            _say(f"[bench] phase A: {len(live.events):,} live-paced events through the worker")
            thr = measure_throughput(
                broker.bootstrap, model_dir, live, workdir, args.py_spy, spy_out, reader_env
            )
            _say(f"[bench] worker {thr['events_per_s']:,.0f} events/s; ceiling read")
            ceil = measure_ceiling(broker.bootstrap, "events", len(live.events))
        compared: dict[str, Any] | None = None
        if not args.no_compare:
            with EmbeddedBroker() as broker:
                ensure_topics(settings_for(broker.bootstrap))
                _say(f"[bench] phase A with input_reader={other}")
                compared = measure_throughput(
                    broker.bootstrap,
                    model_dir,
                    live,
                    workdir / other,
                    None,
                    None,
                    {"KAIROS_WORKER__INPUT_READER": other},
                )
                _say(f"[bench] worker ({other} input) {compared['events_per_s']:,.0f} events/s")
        with EmbeddedBroker() as broker:
            ensure_topics(settings_for(broker.bootstrap))
            _say(f"[bench] phase A': {len(work.events):,} events with the dataset's own times")
            replayed = measure_throughput(
                broker.bootstrap, model_dir, work, workdir / "replay", None, None, reader_env
            )
            _say(f"[bench] worker {replayed['events_per_s']:,.0f} events/s with replay timestamps")
        offered_high = (
            build_workload(settings, int(args.high_rate * (args.high_seconds + WARMUP_SECONDS)))
            if args.high_rate > 0
            else None
        )
        # The paced producer and the latency readers are threads of this process, which holds the
        # workloads (millions of objects): a full collection over them stalled the producer below the
        # offered rate. Freeze what exists now (phase C's workload included), so collections during
        # phases B and C skip it.
        gc.collect()
        gc.freeze()
        with EmbeddedBroker() as broker:
            ensure_topics(settings_for(broker.bootstrap))
            _create_topic(broker.bootstrap, FLOOR_TOPIC, settings.topics.partitions)
            _say(f"[bench] phase B: floor at {args.rate:,.0f}/s for {args.seconds:.0f} s")
            floor = measure_floor(broker.bootstrap, offered, args.rate, args.seconds)
            _say(f"[bench] phase B: worker latency at {args.rate:,.0f}/s for {args.seconds:.0f} s")
            lat = measure_latency(broker.bootstrap, model_dir, offered, workdir, args.rate, args.seconds)
        high: dict[str, Any] | None = None
        if offered_high is not None:
            with EmbeddedBroker() as broker:
                ensure_topics(settings_for(broker.bootstrap))
                _create_topic(broker.bootstrap, FLOOR_TOPIC, settings.topics.partitions)
                _say(f"[bench] phase C: floor and worker latency at {args.high_rate:,.0f}/s")
                high = {
                    "rate": args.high_rate,
                    "seconds": args.high_seconds,
                    "floor": measure_floor(broker.bootstrap, offered_high, args.high_rate, args.high_seconds),
                    "latency": measure_latency(
                        broker.bootstrap,
                        model_dir,
                        offered_high,
                        workdir,
                        args.high_rate,
                        args.high_seconds,
                        name="latency-high",
                    ),
                }
        if args.profile:
            if spy_out is not None and spy_out.exists():
                profile["py_spy"] = summarise_py_spy(spy_out)
                shutil.copy(spy_out, CACHE / "last-py-spy.txt")  # raw stacks for a closer look
            _say("[bench] profiling Engine.process in-process")
            profile["engine"] = profile_engine(model_dir, live)
            profile["engine_replay"] = profile_engine(model_dir, work)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result: dict[str, Any] = {
        "events_per_s": thr["events_per_s"],
        "ceiling_events_per_s": ceil["ceiling_events_per_s"],
        "ratio": thr["events_per_s"] / ceil["ceiling_events_per_s"],
        "p50_ms": lat.get("p50_ms", float("nan")),
        "p99_ms": lat.get("p99_ms", float("nan")),
        "floor_p50_ms": floor.get("p50_ms", float("nan")),
        "floor_p99_ms": floor.get("p99_ms", float("nan")),
        "rate": args.rate,
        "latency_samples": lat.get("n", 0),
        "n_dataset": work.n_dataset,
        "n_simulated": work.n_simulated,
        "n_catalog": len(work.catalog),
        "replay_events_per_s": replayed["events_per_s"],
        "pace": args.pace,
        "throughput": thr,
        "throughput_replay": replayed,
        "input_reader": args.input_reader,
        "compared": None if compared is None else {"input_reader": other, **compared},
        "ceiling": ceil,
        "latency": lat,
        "floor": floor,
        "high_rate": high,
        "engine_alone": engine_alone,
        "machine": mach,
        "model_dir": str(model_dir),
        "started_at": started,
        "wall_seconds": time.time() - started,
    }
    if profile:
        result["profile"] = profile
    print(
        f"events_per_s {result['events_per_s']:,.0f}  ceiling {result['ceiling_events_per_s']:,.0f}  "
        f"ratio {result['ratio']:.3f}\n"
        f"event->push p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms "
        f"(floor p50 {result['floor_p50_ms']:.1f} p99 {result['floor_p99_ms']:.1f}) at {args.rate:,.0f}/s, "
        f"{result['latency_samples']} samples",
        flush=True,
    )
    if not args.no_report:
        args.out.mkdir(parents=True, exist_ok=True)
        # The raw results first: the report and figures can be redrawn from them (--from-json).
        saved = {"command": command.strip(), "result": result}
        (args.out / "stream_throughput.json").write_text(json_out.dumps(saved, default=str, indent=1) + "\n")
        publish(result, command.strip(), args.out)
    if args.json:
        print(json_out.dumps(result, default=str))
    return 0


def publish(result: dict[str, Any], command: str, out: Path) -> Path:
    """Draw the figures and write the markdown report that links them, both under ``out``."""
    report = out / REPORT.name
    figures = draw_figures(result, out)
    write_report(result, command, report, figures)
    _say(f"[bench] report: {report} ({len(figures)} figures)")
    return report


if __name__ == "__main__":
    sys.exit(main())
