"""Settings every test shares, applied before any test module imports the project."""

import os

# The test process runs the Python sources, never the native build (stream.native): some tests spy on
# a module's function, which compiled callers would not look up. Worker and simulator processes the
# tests start run the native build when there is a current one, as production does (so the
# integration tests, several of which compare a worker's decisions and states with the engine run
# in-process, check the build against the sources); tests/bench/test_push_outcomes_repro.py runs one
# world each way explicitly.
_was = os.environ.get("KAIROS_NATIVE")
os.environ["KAIROS_NATIVE"] = "0"
import stream  # noqa: E402,F401  (stream.native.install() runs here, reading the setting above)

if _was is None:
    del os.environ["KAIROS_NATIVE"]
else:
    os.environ["KAIROS_NATIVE"] = _was
