"""The unseen-dataset check of ``benchmarks/model_quality.py --tuned``: its split and its report."""

from __future__ import annotations

from pathlib import Path

from benchmarks.quality.config import UNSEEN
from benchmarks.quality.report import render
from benchmarks.quality.unseen_split import split_retailrocket
from tests.ops.test_benchmark_plots import model_results

HEADER = "Time\tUserId\tType\tItemId\tSessionId\tCatId"
DAY = 86_400


def test_sessions_starting_in_the_last_day_are_the_test_and_stay_whole(tmp_path: Path) -> None:
    rows = [
        (0, "1", "view", "10", "s1", "7"),
        (DAY + 10, "1", "addtocart", "11", "s1", "7"),  # s1 started before the cut: train, all of it
        (2 * DAY, "2", "view", "12", "s2", "8"),
        (2 * DAY + 5, "2", "transaction", "13", "s2", "8"),
        (3 * DAY - 100, "3", "view", "14", "s3", "8"),  # the last session starts in the last day
        (3 * DAY, "3", "view", "15", "s3", "8"),
    ]
    folder = tmp_path / UNSEEN
    folder.mkdir()
    (folder / "events.tsv").write_text(
        HEADER + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8"
    )
    train, test = split_retailrocket(tmp_path, tmp_path / "work")
    train_lines = train.read_text(encoding="utf-8").splitlines()
    test_lines = test.read_text(encoding="utf-8").splitlines()
    assert train_lines[0] == test_lines[0] == HEADER
    # The cut is a day before the last session start (3 * DAY - 100): s2 starts 100 s after it.
    assert {line.split("\t")[4] for line in train_lines[1:]} == {"s1"}
    assert [line.split("\t")[3] for line in test_lines[1:]] == ["12", "13", "14", "15"]


def test_without_a_published_reference_the_goal_is_every_baseline() -> None:
    result = model_results()["yoochoose-100k"]
    knn = {"recall@10": 0.5, "mrr@10": 0.2, "recall@20": 0.72, "mrr@20": 0.3}
    result["baselines"]["session_knn"] = knn
    report = render({UNSEEN: result}, "benchmarks/model_quality.py --tuned")
    assert "Goal (beat every baseline (no published reference) in Recall@20 and MRR@20): NOT met" in report
    assert "Best Recall@20 of those 72.00 %: ours 71.06 % (-0.94 points)" in report
