"""Text encoders: shapes, normalisation, determinism, and MiniLM's semantics (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from personavlm import embed
from personavlm.embed import Embedder, HashingEmbedder
from personavlm.errors import ConfigError


def test_hashing_encoder_is_normalised_and_deterministic() -> None:
    encoder = HashingEmbedder(128)
    vectors = encoder.encode(["the dog barks", "the dog barks", "tax forms", ""])
    assert vectors.shape == (4, 128) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0)
    assert np.array_equal(vectors[0], vectors[1])
    assert not vectors[3].any()  # nothing to hash: a zero vector, not NaN
    assert float(vectors[0] @ vectors[2]) < float(vectors[0] @ vectors[1])


def test_encoders_by_name() -> None:
    assert embed.load("hashing").dim == 256
    assert embed.load("hashing-64").name == "hashing-64"
    minilm = embed.load("minilm")
    assert (minilm.name, minilm.dim) == ("all-MiniLM-L6-v2", 384)  # known without loading
    with pytest.raises(ConfigError, match="unknown embedder 'bert'"):
        embed.load("bert")
    with pytest.raises(ConfigError):
        embed.load("hashing-0")


@pytest.mark.slow
def test_minilm_vectors_are_unit_length_and_meaningful(minilm: Embedder) -> None:
    vectors = minilm.encode(["I adopted a kitten", "I got a new cat", "quarterly tax return"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2
    assert minilm.encode([]).shape == (0, 384)
