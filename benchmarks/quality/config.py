"""The model-quality benchmark's fixed settings: the repository root, the reference figures per
dataset (from ``shared/data/REFERENCES.md``), each preset dataset's train and test files and formats,
and the unseen dataset (``retailrocket-sample``: no preset, no published figure) with its test window.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# (name, how obtained, R@10, MRR@10, R@20, MRR@20, training rows/s) from shared/data/REFERENCES.md
REFERENCES: dict[str, list[tuple[str, float | None, float | None, float, float, float | None]]] = {
    "yoochoose-100k": [
        ("popularity (measured)", 0.0739, 0.0254, 0.0894, 0.0264, None),
        ("transitions (measured)", 0.5479, 0.3400, 0.5907, 0.3430, None),
        ("official GRU4Rec 480 units, 10 ep (measured)", 0.5393, 0.2922, 0.6249, 0.2983, 2873.0),
        (
            "official GRU4Rec 100 units, 5 ep (measured, picked on test)",
            0.6230,
            0.3712,
            0.6993,
            0.3765,
            6960.0,
        ),
    ],
    "diginetica": [
        ("SR-GNN (published)", None, None, 0.5073, 0.1759, None),
        ("GCE-GNN (published)", None, None, 0.5422, 0.1904, None),
        ("NARM (published)", None, None, 0.4970, 0.1617, None),
        ("transitions (measured)", None, None, 0.3472, 0.1292, None),
        ("official GRU4Rec BPR-max 512 units (measured)", 0.4060, 0.1739, 0.5422, 0.1833, 4491.0),
    ],
}

DATASETS = {
    "yoochoose-100k": ("yoochoose-100k/train_full.tsv", "sessions", "yoochoose-100k/test.tsv", "sessions"),
    "diginetica": ("diginetica/train_sessions.txt", "sequences", "diginetica/test_prefixes.tsv", "prefixes"),
}
# A dataset split at run time from a raw event file, with no preset and no published reference: the
# stand-in for "a shop's own data that the presets and the tuner's candidates were never shaped on"
# (they came from yoochoose and Diginetica). ``--tuned`` runs only; its anchor is our strongest baseline.
UNSEEN = "retailrocket-sample"
TEST_HOURS = 24.0  # the sessions that start in the last day of the file are the test
