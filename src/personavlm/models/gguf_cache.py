"""GGUF files converted once: the de-quantised checkpoint kept as safetensors.

transformers reads a GGUF file by parsing its metadata and de-quantising every tensor, at
every load: 25-35 s for the bundled 98 MB SmolLM2 on 2 cores, paid again by every start of
`serve` and `chat`. Written once with `save_pretrained` (weights in the dtype they were
loaded in, the tokenizer with the file's chat template), the same model loads from the
cache folder as an ordinary checkpoint, with the same weights.

A cached copy is named by what it was made from: the GGUF file's resolved path, size and
modification time, the transformers version that de-quantised it and this cache's format.
A changed file or another transformers version makes a new copy (old ones are left for the
user to delete: the folder is under PERSONAVLM_HOME/models). A copy is written in a
temporary folder beside its final name and renamed into place, so a crash or a second
process never leaves a half-written copy that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CACHE_FORMAT", "cache_key", "cached_checkpoint", "store_checkpoint"]

CACHE_FORMAT = 1
_MARKER = "personavlm-gguf-cache.json"  # written last: a folder without it is not a copy


def cache_key(gguf: Path) -> str:
    import transformers

    stat = gguf.stat()
    made_from = {
        "format": CACHE_FORMAT,
        "file": str(gguf.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
    }
    digest = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()
    return f"{gguf.stem}-{digest[:16]}"


def cached_checkpoint(gguf: Path, root: Path) -> Path | None:
    """The folder of a complete converted copy of `gguf` under `root`, or None."""
    folder = root / cache_key(gguf)
    return folder if (folder / _MARKER).is_file() else None


def store_checkpoint(gguf: Path, root: Path, model: Any, tokenizer: Any) -> Path:
    """Write `model` and `tokenizer` (loaded from `gguf`) as a checkpoint under `root`."""
    final = root / cache_key(gguf)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        with _as_plain_checkpoint(model):
            model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        marker = {"format": CACHE_FORMAT, "from": str(gguf.resolve())}
        (staging / _MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        try:
            os.replace(staging, final)
        except OSError:  # another process stored the same copy first: keep theirs
            if not (final / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@contextmanager
def _as_plain_checkpoint(model: Any) -> Iterator[None]:
    """`model` without its GGUF quantizer for the time of a save: transformers keeps the
    GGUF marker on a model it read from GGUF (and refuses to save one), though the weights
    it holds are de-quantised tensors; saved with the marker, the copy would be read as GGUF
    again."""
    quantizer = getattr(model, "hf_quantizer", None)
    config = model.config
    marker = getattr(config, "quantization_config", None)
    model.hf_quantizer = None
    if marker is not None:
        del config.quantization_config
    try:
        yield
    finally:
        model.hf_quantizer = quantizer
        if marker is not None:
            config.quantization_config = marker
