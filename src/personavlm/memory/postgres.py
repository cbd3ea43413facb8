"""The scale-out engine: PostgreSQL (15+) with pgvector, for many processes and many users.

Transactions. A write is one transaction that first takes advisory locks: a shared lock on
the whole store plus an exclusive lock on its scope (one user's data, one picture, the job
queue), so writes of different users run in parallel while the store's read-check-write
logic (one active record per key, turns in time order, undo conflicts) sees no interleaving
within a user; a write without a scope (schema, meta, re-indexing, deleting a user) takes the
store lock exclusively. Reads are REPEATABLE READ READ ONLY: one snapshot per read, like
SQLite's WAL readers. Connections are per thread, made on first use, replaced when broken.

Indexes. Lexical: a generated `tsvector` (english stemming) ranked with `ts_rank`, per user
and type. Dense: pgvector's negative inner product `<#>`, exact (no approximate index: a user's
rows are few), so scores equal SQLite's numpy inner products.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from personavlm.embed.base import Vectors
from personavlm.errors import ConfigError, MissingDependencyError, StoreError
from personavlm.memory.engine import IndexEntry, Scored, SearchFilter, hard_filters
from personavlm.memory.postgres_schema import create_or_migrate
from personavlm.memory.records import MemoryType

__all__ = ["PostgresEngine", "redact_url"]

# Advisory lock keys: (namespace, key). The store lock is (_STORE, 0); scopes hash into
# (_SCOPE, crc32(scope)) — a collision only serialises two unrelated writes, never breaks one.
_STORE = 0x5056
_SCOPE = 0x5057


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise MissingDependencyError(
            "a postgresql:// store needs the postgres extra: "
            "pip install -c constraints.txt 'personavlm[postgres]'"
        ) from exc
    return psycopg


class _PgConnection:
    """A psycopg connection speaking the store's `?` placeholders (memory/engine.py Conn)."""

    def __init__(self, raw: Any, engine: PostgresEngine) -> None:
        self.raw = raw
        self._engine = engine

    @property
    def engine(self) -> PostgresEngine:
        return self._engine

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        if not parameters:
            return self.raw.execute(sql)
        return self.raw.execute(_placeholders(sql), list(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(_placeholders(sql), [list(p) for p in parameters])
        return cursor


def _placeholders(sql: str) -> str:
    # The store's SQL has no '?' or '%' inside string literals, so this is exact.
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresEngine:
    kind = "postgres"

    def __init__(self, url: str, *, dim: int, create: bool = True) -> None:
        self.url = url
        self.dim = dim
        self._psycopg = _psycopg()
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        with self.write() as conn:
            if not create and conn.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
                raise ConfigError(
                    f"no personavlm store at {self.location}: the database has no personavlm "
                    "tables; check --db / PERSONAVLM_DB, or add or ingest something first"
                )
            create_or_migrate(conn, location=self.location)

    @property
    def location(self) -> str:
        return redact_url(self.url)

    # ----------------------------------------------------------------- connections

    def _connection(self) -> _PgConnection:
        conn: _PgConnection | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.raw.closed and not conn.raw.broken:
            return conn
        try:
            raw = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.location}: {_first_line(exc)}") from exc
        conn = _PgConnection(raw, self)
        self._local.conn = conn
        with self._all_lock:
            self._all.append(raw)
        return conn

    @contextmanager
    def write(self, scope: str | None = None) -> Iterator[_PgConnection]:
        with self._transaction("BEGIN") as conn:
            if scope is None:
                conn.execute("SELECT pg_advisory_xact_lock(?, 0)", (_STORE,))
            else:
                conn.execute("SELECT pg_advisory_xact_lock_shared(?, 0)", (_STORE,))
                key = zlib.crc32(scope.encode("utf-8")) - 2**31  # int4 range
                conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (_SCOPE, key))
            yield conn

    @contextmanager
    def read(self) -> Iterator[_PgConnection]:
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as conn:
            yield conn

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[_PgConnection]:
        conn = self._connection()
        errors = self._psycopg.Error
        try:
            conn.execute(begin)
        except errors as exc:
            raise StoreError(f"PostgreSQL error on {self.location}: {_first_line(exc)}") from exc
        try:
            yield conn
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, errors) and not isinstance(exc, self._integrity()):
                raise StoreError(
                    f"PostgreSQL error on {self.location}: {_first_line(exc)}"
                ) from exc
            raise
        try:
            conn.execute("COMMIT")
        except errors as exc:
            self._rollback(conn)
            raise StoreError(f"PostgreSQL error on {self.location}: {_first_line(exc)}") from exc

    def _integrity(self) -> type[Exception]:
        integrity: type[Exception] = self._psycopg.errors.IntegrityError
        return integrity

    def _rollback(self, conn: _PgConnection) -> None:
        if conn.raw.closed or conn.raw.broken:
            return
        try:
            conn.raw.execute("ROLLBACK")
        except self._psycopg.Error:
            conn.raw.close()  # a connection that cannot roll back is not reused

    def close(self) -> None:
        with self._all_lock:
            for raw in self._all:
                raw.close()
            self._all.clear()
        self._local = threading.local()

    # ----------------------------------------------------------------- the indexes

    def index(self, conn: Any, entry: IndexEntry) -> None:
        conn.execute(
            "INSERT INTO memory_fts(memory_id, user_id, type, text) VALUES (?, ?, ?, ?)",
            (entry.memory_id, entry.user_id, entry.type.value, entry.text),
        )
        conn.execute(
            "INSERT INTO memory_vectors(memory_id, vector) VALUES (?, ?::vector)",
            (entry.memory_id, _vector_text(entry.vector)),
        )

    def lexical(
        self, conn: Any, terms: list[str], types: list[MemoryType], where: SearchFilter
    ) -> Scored:
        # Terms are \\w+ words (search.query_terms): no tsquery operators can hide in them.
        query = " | ".join(terms)
        filters, params = hard_filters(where)
        sql = (
            "SELECT m.id, ts_rank(f.tsv, q) AS rank "
            "FROM memory_fts f JOIN memories m ON m.id = f.memory_id, "
            "to_tsquery('english', ?) AS q "
            f"WHERE f.user_id = ? AND f.type = ? AND f.tsv @@ q AND {filters} "
            "ORDER BY rank DESC, m.id DESC LIMIT ?"
        )
        found: Scored = {}
        for memory_type in types:
            rows = conn.execute(
                sql, [query, where.user_id, memory_type.value, *params, where.depth]
            )
            found[memory_type] = [(int(memory_id), float(score)) for memory_id, score in rows]
        return found

    def dense(
        self, conn: Any, vector: Vectors, types: list[MemoryType], where: SearchFilter
    ) -> Scored:
        filters, params = hard_filters(where)
        sql = (
            "SELECT m.id, -(v.vector <#> ?::vector) AS score "
            "FROM memory_vectors v JOIN memories m ON m.id = v.memory_id "
            f"WHERE m.type = ? AND {filters} "
            "ORDER BY v.vector <#> ?::vector, m.id DESC LIMIT ?"
        )
        text = _vector_text(vector)
        found: Scored = {}
        for memory_type in types:
            rows = conn.execute(sql, [text, memory_type.value, *params, text, where.depth])
            found[memory_type] = [(int(memory_id), float(score)) for memory_id, score in rows]
        return found

    def indexed_texts(self, conn: Any) -> list[tuple[int, str]]:
        rows = conn.execute("SELECT memory_id, text FROM memory_fts ORDER BY memory_id")
        return [(int(memory_id), str(text)) for memory_id, text in rows]

    def replace_vectors(self, conn: Any, vectors: list[tuple[int, Vectors]]) -> None:
        conn.executemany(
            "UPDATE memory_vectors SET vector = ?::vector WHERE memory_id = ?",
            [(_vector_text(v), memory_id) for memory_id, v in vectors],
        )

    def after_forget(self) -> None:
        """Nothing here: deleted rows stay in their pages until VACUUM reclaims them (see
        docs/service.md "Forgetting" for the VACUUM advice)."""

    def forget_user(self, conn: Any, user_id: str) -> None:
        """Nothing to do: the index rows cascade from the memories."""


def _vector_text(vector: Vectors) -> str:
    # pgvector's text form; repr of a float32 round-trips exactly through float4 parsing.
    return "[" + ",".join(repr(float(x)) for x in vector.astype("float32")) + "]"


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
