"""The stream worker benchmark's events and model: the ``retailrocket-sample`` replay moved to the
simulated shop's era and merged in time order with simulated events (:func:`build_workload`), the same
events re-timed as a live shop sends them (:func:`live_paced`), and the benchmark model trained once on
them and cached under ``.kairos/bench/`` (:func:`ensure_model`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.throughput.config import CACHE, SIM_CONFIG, SIM_TRAIN_EVENTS, TRAINING, _say
from stream.contract import CatalogUpdate, Event, to_json_bytes
from stream.replay import replay
from stream.settings import Settings
from stream.simulator import WORLD_VERSION, World, generate_events


@dataclass
class Workload:
    """The events (key, JSON value) in produce order, and the catalog entries they need."""

    events: list[tuple[bytes, bytes]]
    catalog: list[tuple[bytes, bytes]]
    n_dataset: int
    n_simulated: int


def _sim_events_file() -> Path:
    path = CACHE / f"sim-{SIM_CONFIG.seed}-{SIM_TRAIN_EVENTS}-w{WORLD_VERSION}.jsonl"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for event in generate_events(SIM_CONFIG, SIM_TRAIN_EVENTS):
                f.write(to_json_bytes(event) + b"\n")
        tmp.replace(path)
    return path


def _dataset(settings: Settings, shift: float = 0.0) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The dataset's events and catalog entries, their times moved by ``shift`` seconds."""
    events: list[bytes] = []
    catalog: list[tuple[bytes, bytes]] = []
    for msg in replay("retailrocket", settings.data_dir, with_catalog=True):
        m = msg.message
        if isinstance(m, Event):
            events.append(to_json_bytes(m.model_copy(update={"ts": m.ts + shift})))
        elif isinstance(m, CatalogUpdate):
            moved = m.model_copy(update={"updated_at": m.updated_at + shift})
            catalog.append((m.item_id.encode(), to_json_bytes(moved)))
    return events, catalog


def live_paced(work: Workload, pace: float) -> Workload:
    """The same events with event times spaced ``1 / pace`` apart, as a shop at that rate sends them.

    Replaying the dataset's own times runs event time thousands of times faster than wall time, which
    makes every event-time-driven refresh (trending top list, decays) fire far more often than in a
    live shop; this is the live-shop view of the same events. Order and every other field are kept.
    """
    base = _ts(work.events[0][1])
    events = [(k, _stamped(v, base + i / pace)) for i, (k, v) in enumerate(work.events)]
    return Workload(events, work.catalog, work.n_dataset, work.n_simulated)


def spread_users(work: Workload) -> Workload:
    """The same events with each user's spread over the run: every user's first event, then every
    user's second, and so on (each user's events in their order, ties in the original order).

    At a busy shop a shopper's next event comes seconds, so thousands of events, after the last, in
    another batch: each event costs a user record read and written. The dataset's order keeps a
    shopper's events together, so a live-paced batch of 512 touches about 140 users; spread, a batch
    touches nearly one user per event (until only the few longest histories are left). Times are
    kept: pace it with :func:`live_paced`.
    """
    seen: dict[bytes, int] = {}
    ranked: list[tuple[int, int]] = []
    for i, (key, _) in enumerate(work.events):
        n = seen.get(key, 0)
        seen[key] = n + 1
        ranked.append((n, i))
    ranked.sort()
    events = [work.events[i] for _, i in ranked]
    return Workload(events, work.catalog, work.n_dataset, work.n_simulated)


def _ts(raw: bytes) -> float:
    return float(json.loads(raw)["ts"])


def build_workload(settings: Settings, n_events: int) -> Workload:
    """The real dataset and simulated events merged in time order, cut to ``n_events``.

    The dataset (2015) is moved in time to start with the simulated shop (2026): mixing eras would
    send the event-time clock back by 11 years, which the decayed counters do not survive (see the
    report). Merging by time keeps every user's events in order (the two sources share no user).
    """
    sim_lines = _sim_events_file().read_bytes().splitlines()
    rr_first = _dataset_first_ts(settings)
    rr_events, rr_catalog = _dataset(settings, _ts(sim_lines[0]) - rr_first)
    n_sim = min(len(sim_lines), max(n_events - len(rr_events), n_events // 4))
    n_rr = min(len(rr_events), n_events - n_sim)
    mixed = [
        v
        for _, v in heapq.merge(
            ((_ts(v), v) for v in rr_events[:n_rr]),
            ((_ts(v), v) for v in sim_lines[:n_sim]),
            key=lambda x: x[0],
        )
    ]
    events = [(json.loads(v)["user_id"].encode(), v) for v in mixed]
    sim_catalog = [(c.item_id.encode(), to_json_bytes(c)) for c in World(SIM_CONFIG).initial_catalog()]
    return Workload(events, rr_catalog + sim_catalog, n_rr, n_sim)


def _dataset_first_ts(settings: Settings) -> float:
    for msg in replay("retailrocket", settings.data_dir, with_catalog=False):
        return float(msg.message.updated_at if isinstance(msg.message, CatalogUpdate) else msg.message.ts)
    raise ValueError("empty dataset")


def ensure_model(settings: Settings) -> Path:
    """Train (once) a model on the dataset + simulated events; cached by training config."""
    from model.cli import train_main

    key = hashlib.sha256(
        json.dumps([TRAINING, SIM_CONFIG.seed, SIM_TRAIN_EVENTS, WORLD_VERSION], sort_keys=True).encode()
    ).hexdigest()[:10]
    out = CACHE / f"model-{key}"
    if (out / ".complete").exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    train_file = CACHE / "train-events.jsonl"
    rr_events, _ = _dataset(settings)
    with open(train_file, "wb") as f:
        for line in rr_events:
            f.write(line + b"\n")
        f.write(_sim_events_file().read_bytes())
    config = CACHE / f"training-{key}.json"
    config.write_text(json.dumps(TRAINING))
    if out.exists():
        shutil.rmtree(out)
    _say(f"[bench] training the benchmark model -> {out} (once; cached)")
    started = time.monotonic()
    code = train_main(
        ["--train", str(train_file), "--train-format", "events", "--out", str(out), "--config", str(config)]
    )
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    (out / ".complete").write_text(f"{time.monotonic() - started:.1f}\n")
    return out


def _stamped(template: bytes, ts: float) -> bytes:
    data = json.loads(template)
    data["ts"] = ts
    return json.dumps(data, separators=(",", ":")).encode()
