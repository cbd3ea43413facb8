"""The SQLite schema's history: the frozen SQL of old versions and the migrations.

The current schema is memory/ddl.py, rendered for SQLite: a new database is created from it
straight at SCHEMA_VERSION. A database records its version in `meta.schema_version`; opening
an older one runs every migration from its version up, in one transaction (a failure leaves
it as it was), and a database newer than this code is refused. `MIGRATIONS[v]` takes version
v to v + 1. The SQL of versions 1 to 3 below is frozen history: it is what databases of those
versions were made with, so it is never edited. tests/data/schema/ keeps a dump of a database
of every released version, and the tests migrate each one and compare it with a new database.

Version 4 changed constraints SQLite's ALTER TABLE cannot change, so 3 -> 4 rebuilds tables
(`rebuild_table`), which only works with foreign keys off: the engine opens the migration's
transaction with them off (memory/sqlite.py), and `migrate` checks every foreign key before
the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping

from personavlm.errors import StoreError
from personavlm.memory import ddl
from personavlm.memory.ddl import SCHEMA_VERSION, SHORTEN_KEY_PREFIXES

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "rebuild_table"]

# Version 2: the agent's durable update queue. An update job is written in the same
# transaction as the turns it is about, so a crash between answering and updating loses
# nothing; a job leaves the queue only in the transaction that applies its result.
_V2 = """
CREATE TABLE update_jobs (
    id            INTEGER PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('turn', 'session')),
    session_id    INTEGER REFERENCES sessions(id) ON DELETE CASCADE,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    retry_after   TEXT,
    claimed_by    TEXT,
    claimed_until TEXT,
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX update_jobs_queue ON update_jobs(status, user_id, id);
-- a session is closed (summarised) once
CREATE UNIQUE INDEX update_jobs_session ON update_jobs(session_id) WHERE kind = 'session';
"""

# Version 3: the service's API keys, stored hashed (memory/keys.py). user_id NULL: an admin key.
_V3 = """
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    user_id     TEXT REFERENCES users(id) ON DELETE CASCADE,
    label       TEXT NOT NULL DEFAULT '',
    prefix      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id);
"""

Migration = Callable[[sqlite3.Connection], None]


def _script(sql: str) -> Migration:
    def run(conn: sqlite3.Connection) -> None:
        # executescript would COMMIT the caller's transaction; run statement by statement.
        for statement in _split_statements(sql):
            conn.execute(statement)

    return run


def _split_statements(sql: str) -> list[str]:
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


# From version 4 on, the tables are whatever memory/ddl.py describes: after the frozen steps
# above, a migration rebuilds every table whose definition differs from the rendered one
# (`_rebuild_changed`), so no version's table definitions need freezing here. What a rebuild
# cannot know goes below: columns filled from the old row, and data steps.
#
# Version 4: AUTOINCREMENT keys, PostgreSQL's ON DELETE CASCADEs, memories_user_time, images
# without `path`, a generic update queue: a session job's uniqueness becomes its dedupe key.
# Version 5: turns get a status ('failed': a message the model never answered), user epochs
# (deletion is final), and API keys keep at most 4 characters after the scheme in view.
# Version 6: update jobs can be dead (failed too often, kept with their replies) or dropped.
_COMPUTED: dict[str, dict[str, tuple[str, str]]] = {
    # table: {new column: (old column it needs, SQL over the old row)}
    "update_jobs": {
        "dedupe_key": ("session_id", "CASE WHEN kind = 'session' THEN 'session:' || session_id END")
    },
}


def _shorten_key_prefixes(conn: sqlite3.Connection) -> None:
    conn.execute(SHORTEN_KEY_PREFIXES)


# MIGRATIONS[v]: the data step from version v to v + 1 (the rebuild runs after all of them).
MIGRATIONS: dict[int, Migration] = {
    1: _script(_V2),
    2: _script(_V3),
    3: lambda conn: None,  # all of v4 is the rebuild
    4: _shorten_key_prefixes,
    5: lambda conn: None,  # v6 (dead and dropped jobs, their replies) is all the rebuild
}


def _rebuild_changed(conn: sqlite3.Connection) -> None:
    """Create missing tables and rebuild every table whose CREATE statement or indexes differ
    from ddl.py's, as a new database renders them."""
    wanted = _rendered_schema()
    found = _live_schema(conn)
    for table in ddl.tables("sqlite"):
        if table.name not in found:
            conn.execute(ddl.create_table(table, "sqlite"))
            for statement in ddl.create_indexes(table):
                conn.execute(statement)
        elif found[table.name] != wanted[table.name]:
            old = {row[1] for row in conn.execute(f'PRAGMA table_info("{table.name}")')}
            computed = {
                column: sql
                for column, (needs, sql) in _COMPUTED.get(table.name, {}).items()
                if needs in old
            }
            rebuild_table(conn, table, computed=computed)


def _live_schema(conn: sqlite3.Connection) -> dict[str, tuple[str, frozenset[str]]]:
    """Per table: its CREATE statement and its indexes' (SQLite's own autoindexes aside)."""
    tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    indexes: dict[str, set[str]] = {}
    for table, sql in conn.execute(
        "SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ):
        indexes.setdefault(table, set()).add(sql)
    return {name: (sql, frozenset(indexes.get(name, ()))) for name, sql in tables.items()}


def _rendered_schema() -> dict[str, tuple[str, frozenset[str]]]:
    fresh = sqlite3.connect(":memory:")
    try:
        for statement in ddl.render("sqlite"):
            fresh.execute(statement)
        return _live_schema(fresh)
    finally:
        fresh.close()


def rebuild_table(
    conn: sqlite3.Connection, table: ddl.Table, *, computed: Mapping[str, str] | None = None
) -> None:
    """Rebuild `table` to its definition in ddl.py, keeping its rows, ids and id sequence.

    SQLite's procedure for changes ALTER TABLE cannot make (sqlite.org/lang_altertable.html,
    "other kinds of table schema changes"): create the new table under another name, copy
    the columns both have (`computed`: SQL expressions over the old row for new columns),
    drop the old table (its indexes go with it), give the new one the old name, create the
    indexes. Other tables' foreign keys name the table, not its storage, so they hold again
    once it is renamed. Runs inside the caller's transaction, with foreign keys off.
    """
    # With foreign keys on, DROP TABLE would first delete the rows of every child table
    # through ON DELETE CASCADE.
    if conn.execute("PRAGMA foreign_keys").fetchone()[0]:
        raise StoreError(f"rebuilding {table.name} needs foreign keys off (PRAGMA foreign_keys)")
    computed = computed or {}
    old = {row[1] for row in conn.execute(f'PRAGMA table_info("{table.name}")')}
    names = [c.name for c in table.columns if c.name in old or c.name in computed]
    targets = ", ".join(f'"{name}"' for name in names)
    sources = ", ".join(computed.get(name, f'"{name}"') for name in names)
    staging = f"{table.name}_rebuild"
    sequence = _sequence(conn, table.name)
    conn.execute(ddl.create_table(table, "sqlite", name=staging))
    conn.execute(f'INSERT INTO "{staging}" ({targets}) SELECT {sources} FROM "{table.name}"')
    conn.execute(f'DROP TABLE "{table.name}"')
    conn.execute(f'ALTER TABLE "{staging}" RENAME TO "{table.name}"')
    for statement in ddl.create_indexes(table):
        conn.execute(statement)
    # Inserting the old ids set the sequence to their maximum; an AUTOINCREMENT table's own
    # sequence can be higher (its last rows deleted) and went with DROP TABLE.
    if sequence is not None and table.column(table.primary_key[0]).type == "id":
        conn.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (sequence, table.name)
        )
        if conn.execute("SELECT changes()").fetchone()[0] == 0:
            conn.execute(
                "INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (table.name, sequence)
            )


def _sequence(conn: sqlite3.Connection, name: str) -> int | None:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).fetchone()
    if not exists:
        return None
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def current_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, *, location: str) -> int:
    """Create the schema in an empty database, or bring it up to SCHEMA_VERSION, inside the
    caller's write transaction; returns the version found (0: it was empty)."""
    version = current_version(conn)
    ddl.bring_up(conn, found=version, location=location, dialect="sqlite", migrations=MIGRATIONS)
    if 0 < version < SCHEMA_VERSION:
        _rebuild_changed(conn)
        _check_foreign_keys(conn, location)
    return version


def _check_foreign_keys(conn: sqlite3.Connection, location: str) -> None:
    # The migration ran with foreign keys off: a row it left without its parent would
    # otherwise only show when a later write trips over it.
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        shown = ", ".join(f"{row[0]} row {row[1]} -> {row[2]}" for row in broken[:5])
        raise StoreError(
            f"cannot migrate {location} to schema version {SCHEMA_VERSION}: "
            f"{len(broken)} rows break a foreign key ({shown}); nothing was changed"
        )
