"""A quick training on a slice of yoochoose-100k must beat popularity on held-out sessions."""

from __future__ import annotations

import pytest

from model.baselines import Popularity
from model.config import TrainConfig
from model.data import ItemIndex, SessionLog, cases_from_sessions, encode
from model.data_files import load_session_tsv
from model.evaluate import evaluate_baseline, evaluate_model
from model.train import train
from stream.settings import get_settings


@pytest.mark.data
def test_quick_training_beats_popularity_on_yoochoose() -> None:
    root = get_settings().data_dir / "yoochoose-100k"
    if not (root / "train_tr.tsv").is_file():
        pytest.skip(f"yoochoose-100k not found under {root} (real datasets are not part of the repo)")
    train_log = load_session_tsv(root / "train_tr.tsv")
    train_log = train_log.subset(list(range(len(train_log) - 6000, len(train_log))))  # the latest sessions
    valid_log: SessionLog = load_session_tsv(root / "train_valid.tsv")
    valid_log = valid_log.subset(list(range(min(800, len(valid_log)))))
    index = ItemIndex.build(train_log)
    cases = cases_from_sessions(encode(valid_log, index))
    cfg = TrainConfig(
        embedding_size=48,
        hidden_size=48,
        n_negatives=512,
        batch_size=32,
        bptt=3,
        epochs=3,
        learning_rate=0.003,
        threads=1,
        logq=1.0,
        sample_alpha=0.2,
        select_best=False,
    )
    result = train(encode(train_log, index), index, cfg, None, progress=False)
    gru = evaluate_model(result.model, cases)
    pop = evaluate_baseline(Popularity().fit(encode(train_log, index), len(index)), cases)
    assert gru["n_cases"] > 500
    assert gru["recall@20"] > pop["recall@20"] + 0.15
    assert gru["mrr@20"] > pop["mrr@20"] + 0.05
