"""The native profile's reading of ``perf script`` output (benchmarks/native_profile.py)."""

from __future__ import annotations

from benchmarks.native_profile import callees, inclusive, stacks

# Three samples as `perf script` prints them with call graphs: a header line, then one frame per line
# from the leaf to the root, a blank line after each sample.
PERF_SCRIPT = """\
python 1234 100.000: 2004008 cpu-clock:ppp:
\t    7f01 unicodekeys_lookup_unicode+0x3f (/usr/lib/libpython3.11.so.1.0)
\t    7f02 CPyDef_covisitation___CoVisitationIndex___observe+0x1a (/x/build.so)
\t    7f03 CPyDef_intake___Intake___bookkeep+0x99 (/x/build.so)
\t    7f04 CPyDef_batch_walk___walk_batch+0x10 (/x/build.so)
\t    7f05 _start+0x1 (/usr/bin/python3.11)

python 1234 100.002: 2004008 cpu-clock:ppp:
\t    7f06 _PyEval_EvalFrameDefault+0x5 (/usr/lib/libpython3.11.so.1.0)
\t    7f07 _PyObject_VectorcallTstate+0x5 (inlined)
\t    7f03 CPyDef_intake___Intake___bookkeep+0x40 (/x/build.so)
\t    7f04 CPyDef_batch_walk___walk_batch+0x10 (/x/build.so)

python 1234 100.004: 2004008 cpu-clock:ppp:
\t    7f04 CPyDef_batch_walk___walk_batch+0x22 (/x/build.so)
\t    7f05 _start+0x1 (/usr/bin/python3.11)
"""


def test_samples_are_read_leaf_first_with_symbols_bare() -> None:
    samples = stacks(PERF_SCRIPT.splitlines())
    assert len(samples) == 3
    assert samples[0][:2] == [
        "unicodekeys_lookup_unicode",
        "CPyDef_covisitation___CoVisitationIndex___observe",
    ]
    assert samples[2] == ["CPyDef_batch_walk___walk_batch", "_start"]


def test_compiled_functions_count_once_per_sample_they_are_in() -> None:
    counts = inclusive(stacks(PERF_SCRIPT.splitlines()))
    assert counts["CPyDef_batch_walk___walk_batch"] == 3
    assert counts["CPyDef_intake___Intake___bookkeep"] == 2
    assert counts["CPyDef_covisitation___CoVisitationIndex___observe"] == 1
    assert "unicodekeys_lookup_unicode" not in counts  # not compiled: listed as a callee only


def test_callees_skip_the_call_glue_and_name_self_time() -> None:
    samples = stacks(PERF_SCRIPT.splitlines())
    total, counts = callees(samples, "CPyDef_batch_walk___walk_batch")
    assert total == 3
    assert counts == {"CPyDef_intake___Intake___bookkeep": 2, "<self>": 1}
    total, counts = callees(samples, "CPyDef_intake___Intake___bookkeep")
    # Only interpreter frames below it in the second sample: Python code it called, counted as its own.
    assert counts == {"CPyDef_covisitation___CoVisitationIndex___observe": 1, "<self>": 1}
