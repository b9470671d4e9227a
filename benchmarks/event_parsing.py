"""Parsing an ``events`` message: the worker's fast path against pydantic, per event.

    .venv/bin/python benchmarks/event_parsing.py [--events 20000] [--repeats 7] [--json] [--no-report]

Events of the simulated shop (``stream.simulator``, seed 11; about a third carry a ``context`` with a
time zone), serialised as producers send them (``to_json_bytes``), parsed in worker-sized batches of
512 whose results stay alive until the batch ends (as in ``Engine.process``), with the worker's
garbage-collector settings (``stream.gc_tuning``). Each way is timed ``--repeats`` times, interleaved;
the median is reported.

- ``reference``: :func:`stream.contract.parse_event`, ``json.loads`` then pydantic validation (the
  path that gives every refusal its reason);
- ``pydantic_json``: ``Event.model_validate_json`` (pydantic-core's own JSON parser; the worker's fast
  path until 2026-12-03);
- ``worker``: :func:`stream.event_decoder.decode_event`, msgspec straight into
  :class:`~stream.event_decoder.ValidEvent` (the contract's fields and constraints), plus the checks
  beyond field constraints (an item unless a search; a known time zone);
- ``msgspec_struct``: the msgspec decode alone, without those checks.

Writes ``benchmarks/reports/event_parsing.md`` unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import json_out  # noqa: E402
from stream import event_decoder, gc_tuning  # noqa: E402
from stream.contract import Event, EventContext, parse_event, to_json_bytes  # noqa: E402
from stream.settings import get_settings  # noqa: E402
from stream.simulator import SimConfig, generate_events  # noqa: E402

REPORT = Path(__file__).resolve().parent / "reports" / "event_parsing.md"
BATCH = 512


def workload(n: int, seed: int = 11) -> list[bytes]:
    """``n`` simulated events as producers serialise them; every third gets a context with a zone."""
    out = []
    for i, event in enumerate(generate_events(SimConfig(seed=seed, n_users=2_000, n_items=1_000), n)):
        if i % 3 == 0:
            context = EventContext(device="ios", time_zone="Europe/Berlin")
            event = event.model_copy(update={"context": context})
        out.append(to_json_bytes(event))
    return out


def _per_event_us(parse: Callable[[bytes], Any], messages: list[bytes]) -> float:
    started = time.perf_counter()
    for i in range(0, len(messages), BATCH):
        batch = [parse(raw) for raw in messages[i : i + BATCH]]
        del batch
    return (time.perf_counter() - started) / len(messages) * 1e6


def measure(messages: list[bytes], repeats: int) -> dict[str, float]:
    """Median µs per event of each way (see the module docstring)."""
    ways: dict[str, Callable[[bytes], Any]] = {
        "reference": parse_event,
        "pydantic_json": Event.model_validate_json,
        "worker": event_decoder.decode_event,
        "msgspec_struct": event_decoder._DECODER.decode,
    }
    for parse in ways.values():  # every way accepts every message
        for raw in messages[:100]:
            parse(raw)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, parse in ways.items():
            times[name].append(_per_event_us(parse, messages))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run, print the figures, write the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    messages = workload(args.events)
    settings = get_settings()
    gc_tuning.configure(settings.worker.gc_young_threshold)
    gc.collect()
    gc.freeze()
    figures = measure(messages, args.repeats)
    ratio = figures["pydantic_json"] / figures["worker"]
    result = {"events": len(messages), "repeats": args.repeats, "us_per_event": figures, "speed_up": ratio}
    print(json_out.dumps(result, indent=2) if args.json else result)
    if not args.no_report:
        REPORT.write_text(_report(result, " ".join(sys.argv[1:])))
    return 0


def _report(result: dict[str, Any], arguments: str) -> str:
    machine = platform.processor() or platform.machine()
    command = ("python benchmarks/event_parsing.py " + arguments).strip()
    rows = "\n".join(f"| `{name}` | {us:.2f} |" for name, us in result["us_per_event"].items())
    return f"""# Parsing an events message

Command: `{command}`.
Run: {datetime.now(UTC):%Y-%m-%d %H:%M}Z on {machine}, Python {platform.python_version()}.
{result["events"]} simulated events, batches of {BATCH}, median of {result["repeats"]} interleaved runs.

| way | µs per event |
|---|---|
{rows}

The worker's path (`worker`) is {result["speed_up"]:.2f}× pydantic-core's JSON parser (`pydantic_json`).
What each way is: the module docstring of `benchmarks/event_parsing.py`.
"""


if __name__ == "__main__":
    raise SystemExit(main())
