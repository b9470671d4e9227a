"""The two command lines end to end on tiny data, and the learning sanity check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.cli import evaluate_main, train_main
from model.config import load_config


def test_evaluate_json_with_baselines(
    tiny_artifact: Path, tiny_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = evaluate_main(
        ["--model", str(tiny_artifact), "--test", str(tiny_data["test"]), "--baselines", "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_cases"] > 100 and result["n_dropped"] >= 0
    assert set(result["baselines"]) == {"popularity", "transitions", "item_knn", "session_knn"}
    # The data is a sparse Markov chain: the GRU must learn it far better than popularity.
    assert result["recall@5"] > result["baselines"]["popularity"]["recall@5"] + 0.2
    assert result["mrr@20"] > 0.3


def test_train_main_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("SessionId\tItem\n", encoding="utf-8")
    assert train_main(["--train", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "missing column" in capsys.readouterr().err


def test_named_quick_config_exists() -> None:
    cfg = load_config("quick")
    assert cfg.epochs >= 1
    with pytest.raises(ValueError, match="neither a file nor a preset"):
        load_config("no-such-preset")


def test_toml_config(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("hidden_size = 8\nloss = 'bpr-max'\n", encoding="utf-8")
    cfg = load_config(str(f))
    assert cfg.hidden_size == 8 and cfg.loss == "bpr-max"


def test_train_and_evaluate_a_catalog_smaller_than_the_top_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Calibration takes each position's top 20 items; a 3-item shop made numpy's argpartition fail.
    rows = ["SessionId\tItemId\tTime"] + [f"{k // 4}\t{k % 3}\t{1000 + k}" for k in range(160)]
    data = tmp_path / "s.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = tmp_path / "c.toml"
    cfg.write_text("embedding_size = 4\nhidden_size = 4\nn_negatives = 4\nepochs = 1\nbatch_size = 8\n")
    model = tmp_path / "m"
    assert train_main(["--train", str(data), "--out", str(model), "--config", str(cfg), "--quiet"]) == 0
    assert evaluate_main(["--model", str(model), "--test", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["recall@20"] == 1.0


def test_train_main_one_session_blames_the_hold_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.txt"
    one.write_text("1 2 3 4 5\n", encoding="utf-8")
    argv = [
        "--train",
        str(one),
        "--train-format",
        "sequences",
        "--out",
        str(tmp_path / "m"),
        "--config",
        "quick",
    ]
    assert train_main(argv) == 2
    assert "validation hold-out (1 session(s)" in capsys.readouterr().err
