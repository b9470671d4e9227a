"""Event files from a simulated world: its first events (no pushes) as JSON lines, and a summary as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from stream.contract import Event, to_json_bytes
from stream.simulator.config import HOUR, SimConfig
from stream.simulator.world import World


def generate_events(config: SimConfig, n_events: int) -> Iterator[Event]:
    """The first ``n_events`` behaviour events of a world with ``config`` (no pushes), in time order."""
    world = World(config)
    produced = 0
    while produced < n_events:
        for msg in world.advance(world.now + HOUR):
            if isinstance(msg, Event):
                yield msg
                produced += 1
                if produced >= n_events:
                    return


def write_jsonl(path: str | Path, n_events: int, config: SimConfig) -> int:
    """Write the first ``n_events`` events of a simulated shop as JSON lines (the model's ``events`` format).

    Returns the number of lines written.
    """
    written = 0
    with open(path, "wb") as f:
        for event in generate_events(config, n_events):
            f.write(to_json_bytes(event) + b"\n")
            written += 1
    return written


def summary_json(summary: dict[str, float]) -> str:
    """A summary as one sorted JSON line (what the CLI prints)."""
    return json.dumps({k: round(v, 6) for k, v in summary.items()}, sort_keys=True)
