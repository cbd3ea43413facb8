"""Concurrent `encode` calls merged into one forward pass.

A service embeds one short text per request (a memory to add, a query to search). On CPU a
transformer encoder costs nearly as much for one text as for eight (MiniLM on 2 cores: 7.5 ms
for one, 18.5 ms for eight; docs/benchmarks.md), so many threads each encoding alone spend
most of the machine on per-call overhead and fight over the same cores.

`BatchingEmbedder` lets the first caller through at once (no added latency when idle). Callers
arriving while a pass runs queue up; when the pass ends, the whole queue (up to `max_texts`)
goes through the next pass together, run by the first waiting caller. Each caller gets exactly
its own rows, and an encoder failure is raised in every caller whose texts were in that pass:
nobody gets an empty result for a failure.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from personavlm.embed.base import Embedder, Vectors

__all__ = ["BatchingEmbedder"]


@dataclass(eq=False, slots=True)
class _Request:
    texts: Sequence[str]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to run the next pass instead of with a result
    rows: Vectors | None = None
    error: BaseException | None = None


class BatchingEmbedder:
    """Wraps an Embedder; same name, dimension and vectors (up to float rounding of padding)."""

    def __init__(self, inner: Embedder, *, max_texts: int = 64) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts}")
        self.inner = inner
        self.max_texts = max_texts
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._running = False
        self.passes = 0  # forward passes run (tests and benchmarks read it)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        request = _Request(texts)
        with self._lock:
            self._queue.append(request)
            lead = not self._running
            self._running = True
        while not lead:
            request.done.wait()
            if not request.lead:
                break
            request.lead, lead = False, True
            request.done.clear()
        if lead:
            self._run_passes_until(request)
        if request.error is not None:
            raise request.error
        assert request.rows is not None
        return request.rows

    def _run_passes_until(self, mine: _Request) -> None:
        """Run passes until `mine` has its rows, then hand the queue to the next caller."""
        while not mine.done.is_set():
            self._run_pass(self._take_batch())
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.done.set()
            else:
                self._running = False

    def _take_batch(self) -> list[_Request]:
        with self._lock:
            batch: list[_Request] = []
            total = 0
            while self._queue and (
                not batch or total + len(self._queue[0].texts) <= self.max_texts
            ):
                request = self._queue.pop(0)
                batch.append(request)
                total += len(request.texts)
            return batch

    def _run_pass(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            rows = self.inner.encode(texts)
        except BaseException as exc:  # every caller of this pass gets the failure
            for request in batch:
                request.error = exc
                request.done.set()
            return
        finally:
            self.passes += 1
        start = 0
        for request in batch:
            request.rows = rows[start : start + len(request.texts)]
            start += len(request.texts)
            request.done.set()
