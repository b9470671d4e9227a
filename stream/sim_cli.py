"""``kairos simulate``: the simulated shop or a dataset replay against a broker, or events to a file.

Live mode runs :class:`stream.sim_runner.ShopSimulator` until stopped; replay mode sends a real
dataset with compressed timing (:func:`stream.sim_runner.replay_to_kafka`); offline mode writes
events to a JSON-lines file without a broker.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stream.contract import to_json_bytes
from stream.replay import DATASETS, DatasetMissingError, replay
from stream.settings import Settings
from stream.sim_runner import ShopSimulator, replay_to_kafka
from stream.simulator import SimConfig, summary_json, write_jsonl

log = logging.getLogger(__name__)


def _write_replay_jsonl(path: Path, dataset: str, settings: Settings, limit: int | None) -> int:
    written = 0
    with open(path, "wb") as f:
        for item in replay(dataset, settings.data_dir, 1.0, with_catalog=False):
            if limit is not None and written >= limit:
                break
            f.write(to_json_bytes(item.message) + b"\n")
            written += 1
    return written


def build_parser() -> argparse.ArgumentParser:
    """The ``kairos simulate`` command line."""
    p = argparse.ArgumentParser(
        prog="kairos simulate", description="Run the simulated shop or replay a dataset."
    )
    p.add_argument(
        "--bootstrap", help="Kafka bootstrap HOST:PORT (default: KAIROS_KAFKA__BOOTSTRAP_SERVERS)."
    )
    p.add_argument("--rate", type=float, help="Target events per second (paces by rate instead of speed).")
    p.add_argument("--speed", type=float, help="Simulated seconds per real second (default 60).")
    p.add_argument("--seconds", type=float, help="Stop after this many seconds (default: run until Ctrl-C).")
    p.add_argument("--replay", choices=DATASETS, help="Replay a real dataset instead of simulating.")
    p.add_argument(
        "--compress", type=float, default=3600.0, help="Replay speed-up (3600: an hour per second)."
    )
    p.add_argument("--out", type=Path, help="Offline: write events as JSON lines to this file (no broker).")
    p.add_argument("--events", type=int, help="Offline: number of events to write (default 100000).")
    p.add_argument("--users", type=int, help="Number of simulated users.")
    p.add_argument("--items", type=int, help="Number of simulated items.")
    p.add_argument("--seed", type=int, help="Seed of the simulated world.")
    p.add_argument("--group-id", help="Consumer group for the pushes topic (default: <app_id>-simulator).")
    p.add_argument("--no-pushes", action="store_true", help="Do not consume pushes (open loop).")
    p.add_argument("--no-create-topics", action="store_true", help="Do not create missing topics.")
    return p


def _sim_config(args: argparse.Namespace) -> SimConfig:
    update: dict[str, Any] = {}
    if args.users is not None:
        update["n_users"] = args.users
    if args.items is not None:
        update["n_items"] = args.items
    if args.seed is not None:
        update["seed"] = args.seed
    return SimConfig(**update)


def simulate_main(argv: list[str]) -> int:
    """Entry point of ``kairos simulate``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.events is not None and args.events < 0:
        parser.error("--events must be 0 or more")
    if not args.replay:
        try:
            _sim_config(args)
        except ValidationError as exc:
            parser.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()  # type: ignore[call-arg]  # every field has a default
    try:
        if args.out is not None:
            if args.replay:
                n = _write_replay_jsonl(args.out, args.replay, settings, args.events)
            else:
                n = write_jsonl(args.out, 100_000 if args.events is None else args.events, _sim_config(args))
            print(f"wrote {n} events to {args.out}", file=sys.stderr)
            return 0
        if args.bootstrap:
            settings = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": args.bootstrap})}
            )
        if not settings.kafka.bootstrap_servers:
            print(
                "error: no broker; pass --bootstrap HOST:PORT or set KAIROS_KAFKA__BOOTSTRAP_SERVERS",
                file=sys.stderr,
            )
            return 2
        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            return _run_live(args, settings, stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except DatasetMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_live(args: argparse.Namespace, settings: Settings, stop: threading.Event) -> int:
    """Replay a dataset or run the simulated shop against the broker until stopped."""
    if args.replay:
        counts = replay_to_kafka(
            settings,
            args.replay,
            args.compress,
            args.seconds,
            stop,
            create_topics=not args.no_create_topics,
        )
        print(summary_json({k: float(v) for k, v in counts.items()}))
        return 0
    sim = ShopSimulator(
        settings,
        _sim_config(args),
        rate=args.rate,
        speed=args.speed,
        consume_pushes=not args.no_pushes,
        group_id=args.group_id,
        create_topics=not args.no_create_topics,
    )
    sim.start()
    deadline = math.inf if args.seconds is None else time.monotonic() + args.seconds
    last_log = time.monotonic()
    while not stop.is_set() and sim.running() and time.monotonic() < deadline:
        stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        if time.monotonic() - last_log >= 10.0:
            last_log = time.monotonic()
            s = sim.summary()
            log.info("events %d, pushes received %d, opens %d", s["events"], s["pushes"], s["opens"])
    sim.stop()
    print(summary_json(sim.summary()))
    return 1 if sim.error is not None else 0
