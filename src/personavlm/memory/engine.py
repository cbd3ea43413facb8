"""The seam between the store and its database: one interface, two engines.

The store's SQL is written once, in the subset SQLite and PostgreSQL share (`?` placeholders,
`INSERT ... ON CONFLICT`, `RETURNING id`, `CASE` instead of summing booleans). What differs
sits behind `Engine`: how transactions are opened and serialised, the schema and its
migrations, and the two indexes retrieval needs — the lexical one (SQLite FTS5 with BM25;
PostgreSQL tsvector with ts_rank) and the dense one (an in-process numpy matrix per user;
pgvector). Every connection an engine hands out carries that engine as `conn.engine`, so the
functions that write a memory reach its indexes without threading the engine through every
call.

Engines: `memory/sqlite.py` (the embedded default) and `memory/postgres.py` (many processes,
many users). `tests/test_store.py` and the other contract suites run against both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from personavlm.embed.base import Vectors
from personavlm.memory.records import MemoryType
from personavlm.timeutil import TimeWindow

__all__ = [
    "Conn",
    "Cursor",
    "Engine",
    "IndexEntry",
    "Scored",
    "SearchFilter",
    "hard_filters",
    "integrity_errors",
]

# (memory id, score) best first, per memory type.
Scored = dict[MemoryType, list[tuple[int, float]]]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection inside one transaction: DB-API execute with `?` placeholders."""

    @property
    def engine(self) -> Engine: ...

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What retrieval indexes of one memory: its text and its vector."""

    memory_id: int
    user_id: str
    type: MemoryType
    text: str
    vector: Vectors


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """The hard filters both retrievers apply before ranking."""

    user_id: str
    window: TimeWindow
    exclude: frozenset[int]
    depth: int


class Engine(Protocol):
    kind: str  # "sqlite" | "postgres"

    @property
    def location(self) -> str:
        """Where the data lives, for messages (a path, or a URL without its password)."""
        ...

    def read(self) -> AbstractContextManager[Conn]:
        """A read transaction: every query inside sees one snapshot."""
        ...

    def write(self, scope: str | None = None) -> AbstractContextManager[Conn]:
        """A write transaction, committed on success, rolled back on any exception.

        Writes with the same `scope` are serialised: the store's checks read, then write, so
        two writes of one user ("user:<id>") must not interleave. None serialises against
        every write (schema, meta, re-indexing, deleting a user).
        """
        ...

    def close(self) -> None: ...

    def index(self, conn: Conn, entry: IndexEntry) -> None:
        """Index a new memory for lexical and dense search (rows never change content)."""
        ...

    def lexical(
        self, conn: Conn, terms: list[str], types: list[MemoryType], where: SearchFilter
    ) -> Scored:
        """Per type, memories matching any term, best first (ties: newer first)."""
        ...

    def dense(
        self, conn: Conn, vector: Vectors, types: list[MemoryType], where: SearchFilter
    ) -> Scored:
        """Per type, memories by inner product with the (L2-normalised) query, best first."""
        ...

    def indexed_texts(self, conn: Conn) -> list[tuple[int, str]]:
        """Every memory's indexed text, by id (re-embedding reads them)."""
        ...

    def replace_vectors(self, conn: Conn, vectors: list[tuple[int, Vectors]]) -> None: ...

    def after_forget(self) -> None:
        """After a user's rows are deleted and committed: leave nothing of them readable
        that the engine can clear (SQLite: the write-ahead log)."""
        ...

    def forget_user(self, conn: Conn, user_id: str) -> None:
        """Remove the user's index rows that no foreign key cascades."""
        ...


def integrity_errors() -> tuple[type[Exception], ...]:
    """The exception classes both drivers raise for a violated constraint."""
    found: list[type[Exception]] = [sqlite3.IntegrityError]
    try:
        import psycopg
    except ImportError:  # the postgres extra is not installed: only SQLite can raise
        return tuple(found)
    found.append(psycopg.errors.IntegrityError)
    return tuple(found)


def hard_filters(where: SearchFilter) -> tuple[str, list[object]]:
    """The filters applied before any ranking: active, in the time window, not excluded."""
    sql = "m.status = 'active' AND m.user_id = ?"
    params: list[object] = [where.user_id]
    clauses, bounds = where.window.sql("m.event_start", "m.event_end")
    sql += clauses
    params.extend(bounds)
    if where.exclude:
        excluded = sorted(where.exclude)
        sql += f" AND m.id NOT IN ({','.join('?' * len(excluded))})"
        params.extend(excluded)
    return sql, params
