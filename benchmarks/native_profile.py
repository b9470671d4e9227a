"""Where the engine's time goes in the native build: a sampling profile named by compiled function.

    .venv/bin/python benchmarks/native_profile.py [--events N] [--replay | --spread] [--hz 499] [--show F ...]

cProfile cannot see inside the modules mypyc compiles (``stream.native``), and the pure sources it
can see run at another speed. But a compiled function is a C function with a symbol
(``CPyDef_<module>___<Class>___<method>``), so Linux ``perf`` sampling with DWARF call graphs names
it, its callers and its callees. This script runs ``Engine.process`` in-process on the throughput
benchmark's events (live-paced, or with ``--replay`` the dataset's own times), as
``stream_throughput.py --engine-only`` does, in a child under ``perf record --call-graph dwarf``
(from after the setup to the end), then prints:

- each compiled function's inclusive share of the samples (the function and what it calls), largest
  first, and
- for ``walk_batch`` and each ``--show`` symbol (a substring of it), its direct callees' shares.

Needs ``perf`` (Debian's ``linux-perf``) and a kernel that lets this user sample its own processes
(``kernel.perf_event_paranoid`` at most 2). A measurement, never a test: the parsing is tested in
``tests/bench/test_native_profile.py``. Found with it (session 43): ``datetime.fromtimestamp``,
``round(x, 3)`` and one-byte ``bytes`` searches costing more than the work around them
(``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Frames that only pass a call on (the interpreter's and mypyc's call glue): a callee is the next
# frame toward the leaf that is none of these.
GLUE = (
    "Vectorcall",
    "vectorcall",
    "_PyEval",
    "EvalFrame",
    "PyObject_Call",
    "cfunction_",
    "slot_tp_call",
    "_PyFunction",
    "CPyPy_",
    "MakeTpCall",
    "FastCall",
    "Call_Prepend",
)
COMPILED = "CPyDef_"


def stacks(perf_script: Iterable[str]) -> list[list[str]]:
    """The samples of ``perf script`` output, each a list of symbols from the leaf to the root."""
    samples: list[list[str]] = []
    current: list[str] = []
    for line in perf_script:
        line = line.rstrip("\n")
        if not line.strip() or not line[0].isspace():  # a blank line or a sample's header ends a stack
            if current:
                samples.append(current)
            current = []
            continue
        parts = line.split(None, 1)  # "    7f3a... symbol+0x12 (library)"
        if len(parts) == 2:
            current.append(parts[1].split(" (")[0].split("+0x")[0])
    if current:
        samples.append(current)
    return samples


def inclusive(samples: list[list[str]], prefix: str = COMPILED) -> Counter[str]:
    """Per symbol starting with ``prefix``: in how many samples it is on the stack (once per sample)."""
    counts: Counter[str] = Counter()
    for stack in samples:
        counts.update({s for s in stack if s.startswith(prefix)})
    return counts


def callees(samples: list[list[str]], symbol: str) -> tuple[int, Counter[str]]:
    """The samples with ``symbol`` on the stack, and per direct callee (the nearest frame toward the
    leaf below its outermost occurrence that is not call glue) its samples; ``<self>`` where there is
    none: the function's own time, or Python code it called that runs in the interpreter."""
    total, counts = 0, Counter[str]()
    for stack in samples:
        where = [i for i, s in enumerate(stack) if s == symbol]
        if not where:
            continue
        total += 1
        callee = "<self>"
        for frame in reversed(stack[: where[-1]]):
            if not any(g in frame for g in GLUE):
                callee = frame
                break
        counts[callee] += 1
    return total, counts


def _engine_child(events: int, replay: bool, spread: bool, ready: Path) -> None:
    """Set up as ``--engine-only`` does, touch ``ready``, then process every event (what perf samples)."""
    import random

    sys.path.insert(0, str(ROOT))
    from benchmarks.stream_throughput import build_workload, ensure_model, get_settings, live_paced
    from benchmarks.throughput.profiles import EngineBench
    from benchmarks.throughput.workload import spread_users

    random.seed(0)
    settings = get_settings()
    work = build_workload(settings, events)
    if spread:
        work = spread_users(work)
    if not replay:
        work = live_paced(work, 50_000.0)
    bench = EngineBench.prepare(ensure_model(settings), work)
    engine, state = bench.fresh_engine()
    records = bench.records
    ready.write_text(str(os.getpid()))
    for i in range(0, len(records), 512):
        engine.process(records[i : i + 512], state)
    os._exit(0)  # no teardown for perf to sample (freeing the engine's state is not its work)


def main(argv: list[str] | None = None) -> int:
    """Profile the engine under perf and print the compiled functions' shares."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="Events to process (default 60,000).")
    parser.add_argument("--replay", action="store_true", help="The dataset's own event times (decisions).")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="Each user's events spread over the run (stream_throughput.py --engine-only --spread).",
    )
    parser.add_argument("--hz", type=int, default=499, help="Samples per second (default 499).")
    parser.add_argument("--top", type=int, default=40, help="Compiled functions to list (default 40).")
    parser.add_argument("--show", nargs="*", default=[], help="Symbols (substrings) whose callees to list.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _engine_child(args.events, args.replay, args.spread, Path(args.child))
        return 0
    perf = shutil.which("perf")
    if perf is None:
        print("perf not found (Debian: apt install linux-perf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kairos-perf-") as tmp:
        ready, data = Path(tmp) / "ready", Path(tmp) / "perf.data"
        child_argv = [sys.executable, __file__, "--child", str(ready), "--events", str(args.events)]
        modes = (["--replay"] if args.replay else []) + (["--spread"] if args.spread else [])
        child = subprocess.Popen(child_argv + modes, cwd=ROOT)
        while not ready.exists():
            if child.poll() is not None:
                print("the engine run ended before its setup did", file=sys.stderr)
                return 1
            time.sleep(0.2)
        record = [perf, "record", "-F", str(args.hz), "--call-graph", "dwarf,16384", "-p", ready.read_text()]
        subprocess.run([*record, "-o", str(data)], check=False, capture_output=True)
        child.wait()
        script = subprocess.run(
            [perf, "script", "-i", str(data)], check=True, capture_output=True, text=True
        ).stdout
    samples = stacks(script.splitlines())
    n = max(len(samples), 1)
    mode = ("replay" if args.replay else "live-paced") + (", spread" if args.spread else "")
    print(f"{len(samples)} samples ({mode}, {args.events:,} events)")
    for symbol, count in inclusive(samples).most_common(args.top):
        print(f"{100 * count / n:6.2f} %  {symbol}")
    everything = {s for stack in samples for s in stack}
    for wanted in ["CPyDef_batch_walk___walk_batch", *args.show]:
        for symbol in sorted(s for s in everything if wanted in s and s.startswith(COMPILED)):
            total, counts = callees(samples, symbol)
            print(f"\n{symbol}: {100 * total / n:.2f} %")
            for callee, count in counts.most_common(15):
                print(f"  {100 * count / n:6.2f} %  {callee}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
