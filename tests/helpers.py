"""Plain helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import sqlite3
import struct
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from personavlm.memory import MemoryStore


def write_png(path: Path, rgb: tuple[int, int, int] = (200, 30, 30), size: int = 4) -> Path:
    """A real, tiny PNG file (so the blob store's format check sees genuine bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


@contextmanager
def connect(location: str) -> Iterator[Any]:
    """A plain driver connection to a store (SQLite path or PostgreSQL URL), for checks that
    look under the store's verbs; `execute` returns rows the same way for both."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            yield _QmarkConnection(conn)
        return
    with closing(sqlite3.connect(location)) as conn:
        yield conn


def table_counts(store: MemoryStore) -> dict[str, int]:
    """Row counts of every table: equal before and after a failed call means nothing was
    written."""
    if store.engine_kind == "postgres":
        return _postgres_counts(store.location)
    with sqlite3.connect(store.location) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'memory_fts_%' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


def _postgres_counts(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


class _QmarkConnection:
    """psycopg speaking SQLite's `?` placeholders, so one check runs on both engines."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = None) -> Any:
        if not params:
            return self._conn.execute(sql)
        return self._conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
