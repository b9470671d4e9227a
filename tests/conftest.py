"""Settings every test shares, applied before any test module imports the project."""

import os

# The suite runs the Python sources, never the native build (stream.native): some tests spy on a
# module's function, which compiled callers would not look up. Subprocesses inherit it; the one test
# that compares the native build with the sources (tests/bench/test_push_outcomes_repro.py) sets it
# per run.
os.environ["KAIROS_NATIVE"] = "0"
