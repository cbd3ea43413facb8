"""The numpy MiniLM gives the torch encoder's vectors (within 1e-5) under the same name, so
a store indexed by one reads with the other; the command line picks it for `minilm`."""

from __future__ import annotations

import numpy as np
import pytest

from personavlm import embed
from personavlm.cli.common import command_line_encoder
from personavlm.embed import MiniLMEmbedder, MiniLMNumpyEmbedder

TEXTS = [
    "I went hiking with Bobby",
    "what is my dog called?",
    "a longer one: commas, numbers 1234, Ünïcode and CAPITALS, to pad the short ones",
    "x",
    "word " * 400,  # past the 256-token limit: both truncate
]


@pytest.mark.slow
def test_vectors_equal_the_torch_encoder() -> None:
    fast = MiniLMNumpyEmbedder().encode(TEXTS)
    reference = MiniLMEmbedder().encode(TEXTS)
    assert fast.shape == reference.shape == (len(TEXTS), 384) and fast.dtype == np.float32
    assert float(np.abs(fast - reference).max()) < 1e-5


def test_rows_are_unit_length_and_texts_differ() -> None:
    vectors = MiniLMNumpyEmbedder().encode(TEXTS[:3])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.99
    assert MiniLMNumpyEmbedder().encode([]).shape == (0, 384)


def test_same_name_and_selection() -> None:
    assert MiniLMNumpyEmbedder.name == MiniLMEmbedder.name
    assert isinstance(embed.load("minilm-numpy"), MiniLMNumpyEmbedder)
    assert isinstance(embed.load("minilm"), MiniLMEmbedder)
    assert command_line_encoder("minilm") == "minilm-numpy"
    assert command_line_encoder("hashing-64") == "hashing-64"
