"""The `meta` table: store-wide facts (schema version, encoder, vectors generation)."""

from __future__ import annotations

from personavlm.memory.engine import Conn

__all__ = ["MetaRepo"]


class MetaRepo:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
