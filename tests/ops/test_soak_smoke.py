"""Smoke run of the soak benchmark (``benchmarks/soak.py``): end to end in under a minute.

A real broker, worker and simulated shop, as in the full soak; only the duration, rate and shop are small.
The model is the tests' small one (a few seconds to train).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.worker import ROOT, train_small_model

pytestmark = pytest.mark.integration


def test_soak_runs_end_to_end_and_writes_its_report(tmp_path: Path) -> None:
    model = train_small_model(tmp_path / "model" / "artifact")
    out = tmp_path / "report"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "soak.py"),
        "--minutes",
        "0.3",
        "--sample-seconds",
        "5",
        "--rate",
        "300",
        "--users",
        "1500",
        "--items",
        "600",
        "--model-dir",
        str(model),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    # Every event the shop produced was processed by the worker; none refused, the worker exited cleanly.
    assert summary["events_produced"] > 1000
    assert summary["events_processed"] == summary["events_produced"]
    assert summary["dead_letters"] == 0
    assert summary["worker_exit"] == 0
    # The series were measured: a live worker and broker, state on disk, a changelog that was read.
    assert summary["worker_rss_mib"] > 50
    assert summary["broker_rss_mib"] > 0
    assert summary["rocksdb_disk_mib"] > 0
    assert summary["changelog_records"] > 0
    # Each user id arrived has at most one live changelog record; the rest are the partitions' rows.
    assert 0 < summary["changelog_live_users"] <= summary["users_arrived"]
    assert (
        summary["changelog_live_keys"]
        == summary["changelog_live_users"] + summary["changelog_live_partition_rows"]
    )
    assert set(summary["verdicts"]) >= {"worker_rss_bytes", "rocksdb_disk_bytes", "changelog_bytes_read"}
    # The two big indexes are counted apart, under the caps the worker's settings give them.
    saved = json.loads((out / "soak.json").read_text())
    caps = saved["setup"]["caps"]
    assert 0 < summary["changelog_live_item_rows"] <= caps["changelog_live_item_rows"]
    assert 0 <= summary["changelog_live_interest_rows"] <= caps["changelog_live_interest_rows"]
    # Opt-out-only records are counted apart from the other user records.
    assert 0 <= summary["changelog_live_optouts"] <= summary["changelog_live_users"]

    report = (out / "soak.md").read_text()
    assert "## Does it level off?" in report
    assert "## Changelog compaction" in report
    for name in ("memory", "state", "keys", "changelog", "flow"):
        png = out / f"soak-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"![soak-{name}.png](soak-{name}.png)" in report

    # The raw samples are kept, and the report can be written again from them without a run.
    again = tmp_path / "again"
    redo = [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--from-json", str(out / "soak.json")]
    proc = subprocess.run([*redo, "--out", str(again)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary
    assert (again / "soak.md").read_text().split("\n", 3)[3] == report.split("\n", 3)[3]  # after the date
