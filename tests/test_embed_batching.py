"""BatchingEmbedder: concurrent callers share passes, each gets its own rows or the failure."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from personavlm.embed import HashingEmbedder
from personavlm.embed.base import Vectors
from personavlm.embed.batching import BatchingEmbedder


class GatedEmbedder:
    """The hashing encoder, but the first pass waits until `gate` opens, so the test can
    queue callers behind it; records every pass's texts."""

    name = "gated"
    dim = 64

    def __init__(self, *, fail_on: str | None = None) -> None:
        self.inner = HashingEmbedder(self.dim)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.passes: list[list[str]] = []
        self.fail_on = fail_on

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.entered.set()
        self.gate.wait(timeout=10)
        self.passes.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on!r}")
        return self.inner.encode(texts)


def _queue_behind_first(inner: GatedEmbedder, batching: BatchingEmbedder, n: int) -> list:  # type: ignore[type-arg]
    pool = ThreadPoolExecutor(max_workers=n + 1)
    first = pool.submit(batching.encode, ["first"])
    assert inner.entered.wait(timeout=10)
    futures = [first] + [pool.submit(batching.encode, [f"text {i}", f"more {i}"]) for i in range(n)]
    while len(batching._queue) < n:  # every later caller is waiting behind the first pass
        threading.Event().wait(0.005)
    inner.gate.set()
    results = [
        f.result(timeout=10) if f.exception(timeout=10) is None else f.exception() for f in futures
    ]
    pool.shutdown()
    return results


def test_an_idle_call_runs_at_once_and_equals_the_inner_encoder() -> None:
    inner = HashingEmbedder(64)
    batching = BatchingEmbedder(inner)
    rows = batching.encode(["a cat on a mat", "kayak"])
    np.testing.assert_array_equal(rows, inner.encode(["a cat on a mat", "kayak"]))
    assert (batching.name, batching.dim, batching.passes) == (inner.name, 64, 1)
    assert batching.encode([]).shape == (0, 64)


def test_callers_waiting_behind_a_pass_share_the_next_one_and_get_their_own_rows() -> None:
    inner = GatedEmbedder()
    batching = BatchingEmbedder(inner)
    results = _queue_behind_first(inner, batching, 6)
    assert [len(p) for p in inner.passes] == [1, 12]  # the first alone, then six callers at once
    reference = HashingEmbedder(64)
    np.testing.assert_array_equal(results[0], reference.encode(["first"]))
    for i, rows in enumerate(results[1:]):
        np.testing.assert_array_equal(rows, reference.encode([f"text {i}", f"more {i}"]))
    assert not batching._running and not batching._queue


def test_a_pass_is_at_most_max_texts_and_the_rest_follow() -> None:
    inner = GatedEmbedder()
    batching = BatchingEmbedder(inner, max_texts=4)
    results = _queue_behind_first(inner, batching, 5)
    assert [len(p) for p in inner.passes] == [1, 4, 4, 2]
    assert all(isinstance(r, np.ndarray) for r in results)


def test_a_failing_pass_raises_in_every_caller_of_that_pass_and_the_queue_goes_on() -> None:
    inner = GatedEmbedder(fail_on="text 1")
    batching = BatchingEmbedder(inner, max_texts=4)
    results = _queue_behind_first(inner, batching, 4)
    # passes: [first], [text 0, more 0, text 1, more 1] (fails), [text 2 .. more 3]
    assert isinstance(results[1], RuntimeError) and isinstance(results[2], RuntimeError)
    assert isinstance(results[0], np.ndarray)
    assert isinstance(results[3], np.ndarray) and isinstance(results[4], np.ndarray)
    with pytest.raises(RuntimeError, match="cannot encode"):
        batching.encode(["text 1"])
    assert not batching._running
