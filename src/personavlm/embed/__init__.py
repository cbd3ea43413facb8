"""Text encoders, chosen by name: `minilm` (default, bundled weights, torch), `minilm-numpy`
(the same vectors without torch: fast to start) or `hashing[-DIM]`."""

from __future__ import annotations

from personavlm.embed.base import Embedder, Vectors
from personavlm.embed.hashing import HashingEmbedder
from personavlm.embed.minilm import MiniLMEmbedder
from personavlm.embed.minilm_numpy import MiniLMNumpyEmbedder
from personavlm.errors import ConfigError

__all__ = [
    "EMBEDDER_NAMES",
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "MiniLMNumpyEmbedder",
    "Vectors",
    "load",
]

EMBEDDER_NAMES = ("minilm", "minilm-numpy", "hashing")


def load(name: str) -> Embedder:
    """`minilm` -> all-MiniLM-L6-v2; `hashing` or `hashing-512` -> HashingEmbedder."""
    if name in ("minilm", MiniLMEmbedder.name):
        return MiniLMEmbedder()
    if name == "minilm-numpy":
        return MiniLMNumpyEmbedder()
    if name == "hashing":
        return HashingEmbedder()
    if name.startswith("hashing-"):
        suffix = name.removeprefix("hashing-")
        if suffix.isdigit() and int(suffix) > 0:
            return HashingEmbedder(int(suffix))
    raise ConfigError(
        f"unknown embedder {name!r}; use one of: minilm, minilm-numpy, hashing, hashing-<dim> "
        "(set with --embedder or PERSONAVLM_EMBEDDER)"
    )
