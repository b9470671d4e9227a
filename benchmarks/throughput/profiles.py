"""Where the stream worker's time goes: py-spy's collapsed stacks of the worker summarised per stage
(:func:`summarise_py_spy`), and ``Engine.process`` run in-process on the benchmark's events
(:func:`profile_engine`: plain timing, a digest of states and pushes for ``--engine-only``, cProfile).
"""

from __future__ import annotations

import cProfile
import hashlib
import pstats
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from benchmarks.throughput.workload import Workload
from stream.settings import Settings, get_settings

if TYPE_CHECKING:
    from model.scorer import IncrementalScorer
    from stream.engine import Engine, Inbound, StateAccess

# (stage, substring of a frame "function (file)") in priority order: the first match names a sample.
STAGES: list[tuple[str, str]] = [
    ("start-up (imports)", "importlib._bootstrap"),
    ("metrics scrape (benchmark's own polling)", "web.py"),
    ("parse (stream.event_decoder, stream.contract)", "event_decoder.py"),
    ("parse (stream.event_decoder, stream.contract)", "contract.py"),
    ("GRU step (scorer.step)", "step (model/scorer.py"),
    ("scoring (scorer.interest/score)", "interest (model/scorer.py"),
    ("scoring (scorer.interest/score)", "score (model/scorer.py"),
    ("candidate gathering", "gather_candidates"),
    ("policy (decide, push building)", "stream/decider.py"),
    ("state encode/decode (UserRecords.load/save)", "save (stream/engine/users.py"),
    ("state encode/decode (UserRecords.load/save)", "load (stream/engine/users.py"),
    ("engine bookkeeping (rest of Engine.process)", "stream/engine/"),
    ("output + changelog produce/flush (BatchCommitter.commit)", "commit (stream/batch_commit.py"),
    ("output + changelog produce/flush (BatchCommitter.commit)", "stream/commit_pipeline.py"),
    ("metrics/lag bookkeeping in the agent", "_consume (stream/worker_input.py"),
    ("timers/catalog tick", "_tick (stream/worker_tick.py"),
    ("recovery and startup", "_recover (stream/worker_recovery.py"),
    ("event loop in select() (waiting for I/O)", "select (selectors.py"),
    ("faust stream + aiokafka (take_events, fetch, decode)", "faust"),
    ("faust stream + aiokafka (take_events, fetch, decode)", "aiokafka"),
    ("faust stream + aiokafka (take_events, fetch, decode)", "mode/"),
    ("asyncio event loop", "asyncio"),
]


def summarise_py_spy(path: Path) -> dict[str, Any]:
    """Time shares per stage from py-spy's collapsed stacks (main thread vs all threads)."""
    per_stage: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        per_thread[thread] += count
        total += count
        rest = frames[1:]
        stage = "other"
        for name, needle in STAGES:
            if any(needle in f for f in rest):
                stage = name
                break
        per_stage[stage] += count
    return {
        "samples": total,
        "stages": dict(per_stage.most_common()),
        "threads": dict(per_thread.most_common(8)),
    }


class DictState:
    """An in-memory stand-in for the store transaction (``get``/``put``)."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes | None] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The staged or stored value."""
        return self.data.get((partition, key))

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Stage a value."""
        self.data[(partition, key)] = value


@dataclass
class EngineBench:
    """The engine-only runs' setup (``--engine-only``, ``benchmarks/native_profile.py``): the worker's
    settings with the event clock, the model loaded as the worker loads it, and the workload as input
    records of four partitions."""

    settings: Settings
    scorer: IncrementalScorer
    records: list[Inbound]
    catalog: list[Inbound]

    @classmethod
    def prepare(cls, model_dir: Path, work: Workload) -> EngineBench:
        """Load the model and turn ``work`` into records; sets the worker's young GC threshold."""
        from model.scorer import IncrementalScorer
        from stream import gc_tuning
        from stream.engine import Inbound
        from stream.partitioning import partition_for

        settings = get_settings().model_copy(deep=True)
        settings.worker.clock = "event"
        scorer = IncrementalScorer.load(model_dir, threads=1)
        gc_tuning.configure(settings.worker.gc_young_threshold)  # as the worker does (stream/gc_tuning.py)
        records = [Inbound("events", partition_for(k, 4), i, k, v) for i, (k, v) in enumerate(work.events)]
        catalog = [Inbound("catalog", 0, i, k, v) for i, (k, v) in enumerate(work.catalog)]
        return cls(settings, scorer, records, catalog)

    def fresh_engine(self) -> tuple[Engine, DictState]:
        """A new engine owning the four partitions, with the catalog read and the start-up frozen."""
        from stream import gc_tuning
        from stream.engine import Engine, Scorer, StateAccess

        engine = Engine(self.settings, cast(Scorer, self.scorer))
        engine.owned = {0, 1, 2, 3}
        store = DictState()
        # As the worker's start-up read of the pre-produced topic: a bootstrap (versions by time, the
        # first holding from the start), so the engine alone decides exactly what the worker does.
        engine.apply_catalog(self.catalog, cast(StateAccess, store), announce=False)
        gc_tuning.freeze_long_lived(self.settings.worker.gc_freeze)  # the worker freezes at catalog ready
        return engine, store


def profile_engine(
    model_dir: Path, work: Workload, batch: int = 512, only_plain: bool = False
) -> dict[str, Any]:
    """``Engine.process`` in-process on the events, in worker-sized batches: plain, then cProfile.

    ``only_plain``: the plain run alone, with the engine's own stage times and a SHA-256 of every
    stored row and push id (``--engine-only``: a change that must not alter decisions keeps it), and
    one of the push ids alone (``pushes_sha256``: the decisions, for a change that moves stored floats).
    """
    bench = EngineBench.prepare(model_dir, work)
    records = bench.records

    stages: dict[str, float] = {}
    loads = [0, 0]  # user records loaded warm, read from the store (the recorded run)
    digest = hashlib.sha256()
    recorded: list[str] = []  # the recorded run's push ids

    def run(record: bool = False) -> float:
        engine, store = bench.fresh_engine()
        state = cast("StateAccess", store)
        pushes: list[str] = []
        started = time.perf_counter()
        for i in range(0, len(records), batch):
            out = engine.process(records[i : i + batch], state)
            if record:
                pushes += [push.push_id for _, push in out.pushes]
                loads[0] += out.users_warm
                loads[1] += out.users_read
                for stage, seconds in out.stage_seconds.items():
                    stages[stage] = stages.get(stage, 0.0) + seconds
        elapsed = time.perf_counter() - started
        if record:  # what the run decided and stored: equal digests, equal decisions and states
            # The user records name the model's version, which holds its training time: left out, so two
            # checkouts that each trained the same weights (the cache is per checkout) compare.
            version = bench.scorer.version.encode()
            for (partition, key), value in sorted(store.data.items()):
                stored = (value or b"").replace(version, b"<model>")
                digest.update(b"%d\x1e%s\x1e%s\x1d" % (partition, key, stored))
            digest.update("\n".join(pushes).encode())
            recorded[:] = pushes
        return elapsed

    plain = run(record=True)
    if only_plain:
        n = len(records)
        return {
            "events": n,
            "batch": batch,
            "engine_us_per_event": 1e6 * plain / n,
            "engine_events_per_s": n / plain,
            "stage_us_per_event": {k: 1e6 * v / n for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
            # User records each event cost: kept warm since the batch before, or read and decoded.
            "user_loads_per_event": {"warm": loads[0] / n, "store": loads[1] / n},
            "state_and_pushes_sha256": digest.hexdigest(),
            "pushes": len(recorded),
            # The pushes alone: the decisions, for a change that moves stored floats.
            "pushes_sha256": hashlib.sha256("\n".join(recorded).encode()).hexdigest(),
        }
    prof = cProfile.Profile()
    prof.enable()
    profiled = run()
    prof.disable()
    stats = pstats.Stats(prof)
    wanted = {
        "decode_event": ("stream/event_decoder.py", "decode_event"),
        "GRU step (scorer.step)": ("model/scorer.py", "step"),
        "scorer.interest": ("model/scorer.py", "interest"),
        "scorer.score": ("model/scorer.py", "score"),
        "gather_candidates": ("stream/candidates.py", "gather_candidates"),
        "policy (Decider.decide)": ("stream/decider.py", "decide"),
        "state decode (UserRecords.load)": ("stream/engine/users.py", "load"),
        "state encode (UserRecords.save)": ("stream/engine/users.py", "save"),
        "catalog apply (not per event)": ("stream/engine/core.py", "apply_catalog"),
        "Engine.process (all)": ("stream/engine/core.py", "process"),
    }
    n = len(records)
    found: dict[str, float] = {}
    raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for label, (file_part, func) in wanted.items():
        cum = sum(v[3] for (fname, _, fn), v in raw_stats.items() if fn == func and fname.endswith(file_part))
        found[label] = 1e6 * cum / n
    top = sorted(((v[2], f"{Path(k[0]).name}:{k[1]}:{k[2]}") for k, v in raw_stats.items()), reverse=True)[
        :15
    ]
    return {
        "events": n,
        "engine_us_per_event": 1e6 * plain / n,
        "engine_events_per_s": n / plain,
        "profiled_us_per_event": 1e6 * profiled / n,
        "cumulative_us_per_event_under_cprofile": found,
        "top_self_time_us_per_event": [(name, 1e6 * t / n) for t, name in top],
    }
