"""Dense search: each user's vectors held in memory as one float32 matrix, scored with numpy.

Brute force is exact and, at 384-d, one matrix-vector product over 100k rows takes a few
milliseconds on two cores, well inside the retrieval budget; an approximate index would buy
nothing at the sizes one user reaches. The cache is kept fresh through the audit log: every
change to a memory writes an event, so a search first asks for the user's events newer than
the last one it saw (one indexed lookup) and reloads only the memories those events touched.
That holds across processes too. `meta.vectors_generation` changes on re-index and drops
everything.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from personavlm.embed.base import Vectors
from personavlm.memory.engine import Conn
from personavlm.memory.records import MemoryStatus, MemoryType
from personavlm.memory.users import current_epoch
from personavlm.timeutil import TimeWindow

__all__ = ["TYPE_CODES", "VectorIndex"]

TYPE_CODES: dict[MemoryType, int] = {t: i for i, t in enumerate(MemoryType)}
_ACTIVE = MemoryStatus.ACTIVE.value
_MAX_CHUNKS = 16


@dataclass
class _UserVectors:
    generation: str
    last_event: int
    ids: npt.NDArray[np.int64]
    types: npt.NDArray[np.int8]
    active: npt.NDArray[np.bool_]
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    # Row blocks in id order. New memories arrive as a new block instead of a copy of the
    # whole matrix (150 MB at 100k rows, once per chat turn); blocks merge when there are
    # many, so the copying is amortised.
    chunks: list[Vectors]

    def cosines(self, query: Vectors) -> npt.NDArray[np.float32]:
        if len(self.chunks) > _MAX_CHUNKS:
            self.chunks = [np.concatenate(self.chunks)]
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        with _single_blas_thread():
            return np.concatenate([chunk @ query for chunk in self.chunks])

    @classmethod
    def empty(cls, generation: str, dim: int) -> _UserVectors:
        return cls(
            generation=generation,
            last_event=0,
            ids=np.zeros(0, dtype=np.int64),
            types=np.zeros(0, dtype=np.int8),
            active=np.zeros(0, dtype=np.bool_),
            starts=np.zeros(0, dtype=np.int64),
            ends=np.zeros(0, dtype=np.int64),
            chunks=[],
        )


class VectorIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._users: dict[str, _UserVectors] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._users.clear()

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._users.pop(user_id, None)

    def scores(
        self, conn: Conn, user_id: str, query: Vectors
    ) -> tuple[_UserVectors, npt.NDArray[np.float32]]:
        """Cosine of the query with every memory of the user (rows L2-normalised)."""
        with self._lock:
            cached = self._fresh(conn, user_id)
            return cached, cached.cosines(query)

    @staticmethod
    def window_mask(
        cached: _UserVectors,
        window: TimeWindow,
        exclude: frozenset[int],
    ) -> npt.NDArray[np.bool_]:
        """Active memories whose event time overlaps the window, minus the excluded."""
        keep: npt.NDArray[np.bool_] = cached.active & window.mask(
            cached.starts, cached.ends, _epoch
        )
        if exclude:
            keep &= ~np.isin(cached.ids, np.fromiter(exclude, dtype=np.int64))
        return keep

    @staticmethod
    def type_mask(cached: _UserVectors, memory_type: MemoryType) -> npt.NDArray[np.bool_]:
        mask: npt.NDArray[np.bool_] = cached.types == TYPE_CODES[memory_type]
        return mask

    def _fresh(self, conn: Conn, user_id: str) -> _UserVectors:
        # The user's epoch is part of the cache's identity: a user forgotten and made again
        # (by any process) starts from an empty cache, never from the old user's rows.
        generation = f"{_generation(conn)}/{current_epoch(conn, user_id)}"
        cached = self._users.get(user_id)
        if cached is None or cached.generation != generation:
            cached = _UserVectors.empty(generation, self.dim)
        last_event = _last_event(conn, user_id)
        if last_event != cached.last_event:
            cached = self._apply_changes(conn, user_id, cached, last_event)
        self._users[user_id] = cached
        return cached

    def _apply_changes(
        self, conn: Conn, user_id: str, cached: _UserVectors, last_event: int
    ) -> _UserVectors:
        changed = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT c.memory_id FROM memory_event_changes c "
                "JOIN memory_events e ON e.id = c.event_id "
                "WHERE e.user_id = ? AND e.id > ? AND e.id <= ?",
                (user_id, cached.last_event, last_event),
            )
        ]
        known_max = int(cached.ids[-1]) if len(cached.ids) else 0
        old = [mid for mid in changed if mid <= known_max]
        if old:
            _refresh_status(conn, cached, old)
        new = sorted(mid for mid in changed if mid > known_max)
        if new:
            cached = _append_rows(conn, cached, new, self.dim)
        cached.last_event = last_event
        return cached


def _refresh_status(conn: Conn, cached: _UserVectors, ids: list[int]) -> None:
    statuses: dict[int, str] = dict(
        _chunked_select(conn, "SELECT id, status FROM memories WHERE id IN ({})", ids)
    )
    positions = np.searchsorted(cached.ids, np.array(ids, dtype=np.int64))
    # Copy, then swap: a search in another thread may be reading the old array right now.
    active = cached.active.copy()
    for memory_id, position in zip(ids, positions, strict=True):
        if position < len(cached.ids) and cached.ids[position] == memory_id:
            active[position] = statuses.get(memory_id) == _ACTIVE
    cached.active = active


def _append_rows(conn: Conn, cached: _UserVectors, ids: list[int], dim: int) -> _UserVectors:
    rows = sorted(
        _chunked_select(
            conn,
            "SELECT m.id, m.type, m.status, m.event_start, m.event_end, v.vector "
            "FROM memories m JOIN memory_vectors v ON v.memory_id = m.id WHERE m.id IN ({})",
            ids,
        )
    )
    if not rows:
        return cached
    block = np.frombuffer(b"".join(r[5] for r in rows), dtype=np.float32).reshape(-1, dim)
    return _UserVectors(
        generation=cached.generation,
        last_event=cached.last_event,
        ids=np.concatenate([cached.ids, np.array([r[0] for r in rows], dtype=np.int64)]),
        types=np.concatenate(
            [cached.types, np.array([TYPE_CODES[MemoryType(r[1])] for r in rows], dtype=np.int8)]
        ),
        active=np.concatenate([cached.active, np.array([r[2] == _ACTIVE for r in rows])]),
        starts=np.concatenate([cached.starts, _epochs([r[3] for r in rows])]),
        ends=np.concatenate([cached.ends, _epochs([r[4] for r in rows])]),
        chunks=[*cached.chunks, block],
    )


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _single_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Run the product on the calling thread. A matrix-vector product is memory-bound, so
    BLAS worker threads gain little; worse, left spinning they fight torch's OpenMP pool, and
    the next query embedding took 2x longer at p50 and 8x at p95 (docs/benchmarks.md)."""
    return _blas_controller().limit(limits=1, user_api="blas")  # type: ignore[no-any-return]


def _chunked_select(conn: Conn, sql: str, ids: list[int], size: int = 900) -> list[Any]:
    # SQLite caps bound parameters per statement; 900 stays below every build's limit.
    rows: list[Any] = []
    for offset in range(0, len(ids), size):
        chunk = ids[offset : offset + size]
        rows.extend(conn.execute(sql.format(",".join("?" * len(chunk))), chunk))
    return rows


def _generation(conn: Conn) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = 'vectors_generation'").fetchone()
    return "0" if row is None else str(row[0])


def _last_event(conn: Conn, user_id: str) -> int:
    row = conn.execute("SELECT max(id) FROM memory_events WHERE user_id = ?", (user_id,)).fetchone()
    return 0 if row[0] is None else int(row[0])


def _epochs(values: list[str]) -> npt.NDArray[np.int64]:
    return np.array(values, dtype="datetime64[s]").astype(np.int64)


def _epoch(value: datetime) -> int:
    return int(np.datetime64(value, "s").astype(np.int64))
