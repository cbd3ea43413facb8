"""The PostgreSQL schema's history and migrations.

The current schema is memory/ddl.py rendered for PostgreSQL: a new store is created from it
straight at SCHEMA_VERSION. Same tables, columns and text formats as SQLite (times as
'YYYY-MM-DD HH:MM:SS', lists as JSON text), so the store's SQL runs unchanged on both
engines; what PostgreSQL renders differently: identity columns, a lexical index that is a
`tsvector` column generated from the memory's indexed text (english stemming, ranked with
ts_rank) instead of FTS5, and pgvector `vector` values (any dimension: the encoder is recorded
in `meta`, as in SQLite). Searches are per user and exact (a user's rows are few), so the
indexes are on (user, type, status) and time, not approximate vector indexes.

Versions follow SQLite's numbers. The first PostgreSQL stores were version 3
(PG_FIRST_VERSION); their DDL is frozen in tests/data/schema/pg_v3.sql, from which the
tests build a version-3 store to migrate. `PG_MIGRATIONS[v]` takes a store from version v
to v + 1, in the caller's transaction. ALTER TABLE can only append columns, so a migrated
table may order its columns differently from a new one; the store names its columns
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from personavlm.memory import ddl
from personavlm.memory.ddl import SHORTEN_KEY_PREFIXES
from personavlm.memory.engine import Conn

__all__ = ["PG_FIRST_VERSION", "PG_MIGRATIONS", "create_or_migrate"]

PG_FIRST_VERSION = 3


PgMigration = Callable[[Conn], None]


def _statements(*sql: str) -> PgMigration:
    def run(conn: Conn) -> None:
        for statement in sql:
            conn.execute(statement)

    return run


# Version 4 (memory/ddl.py): images lose `path` (the blob store finds a blob by its id), and
# update_jobs becomes a generic queue: no session_id, no CHECK on kind, a per-user dedupe
# key, which a session job's uniqueness becomes. The dropped column takes its foreign key and
# update_jobs_session with it. PostgreSQL had v4's cascades and memories_user_time already.
_TO_V4 = _statements(
    "ALTER TABLE images DROP COLUMN path",
    "ALTER TABLE update_jobs ADD COLUMN dedupe_key TEXT",
    "UPDATE update_jobs SET dedupe_key = 'session:' || session_id WHERE kind = 'session'",
    "ALTER TABLE update_jobs DROP CONSTRAINT update_jobs_kind_check",
    "ALTER TABLE update_jobs DROP COLUMN session_id",
    "CREATE UNIQUE INDEX update_jobs_dedupe ON update_jobs(user_id, dedupe_key) "
    "WHERE dedupe_key IS NOT NULL",
)

# Version 5: turns get a status, user epochs make deletion final, key prefixes shrink.
_TO_V5 = _statements(
    "ALTER TABLE turns ADD COLUMN status TEXT NOT NULL DEFAULT 'ok' "
    "CHECK (status IN ('ok', 'failed'))",
    "CREATE TABLE user_epochs (user_key TEXT PRIMARY KEY, epoch BIGINT NOT NULL)",
    SHORTEN_KEY_PREFIXES,
)

# Version 6: update jobs can be dead (kept with the replies they got) or dropped.
_TO_V6 = _statements(
    "ALTER TABLE update_jobs DROP CONSTRAINT update_jobs_status_check",
    "ALTER TABLE update_jobs ADD CONSTRAINT update_jobs_status_check "
    "CHECK (status IN ('pending', 'done', 'dead', 'dropped'))",
    "ALTER TABLE update_jobs ADD COLUMN replies TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE update_jobs ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0",
)

# PG_MIGRATIONS[v] takes a PostgreSQL store from version v to v + 1 (v >= PG_FIRST_VERSION).
PG_MIGRATIONS: dict[int, PgMigration] = {3: _TO_V4, 4: _TO_V5, 5: _TO_V6}


def create_or_migrate(conn: Conn, *, location: str) -> int:
    """Create the schema in an empty database, or migrate it up to SCHEMA_VERSION, inside
    the caller's write transaction (which holds the global lock: one process does it);
    returns the version found (0: it was empty)."""
    version = _current_version(conn)
    ddl.bring_up(
        conn, found=version, location=location, dialect="postgres", migrations=PG_MIGRATIONS
    )
    return version


def _current_version(conn: Conn) -> int:
    found = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not found[0]:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0
