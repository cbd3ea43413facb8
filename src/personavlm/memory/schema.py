"""The SQLite schema, its version, and the migrations between versions.

`SCHEMA_VERSION` is the version this code writes. A database records its version in
`meta.schema_version`; opening one runs every migration from its version up, in one
transaction, and refuses a database newer than this code. Each migration is the SQL that takes
version N-1 to N; version 1 is the whole schema below. tests/data/schema/ keeps a dump of a
database of every released version, and a test opens each one.

Times are 'YYYY-MM-DD HH:MM:SS' text (personavlm.timeutil). Lists (keywords, image ids,
source turn ids) are JSON arrays. Memory rows never change their content: an update writes a
new row that `supersedes` the old one, so only `status` and `valid_to` of a row ever move.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from personavlm.errors import SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    start_time  TEXT NOT NULL,
    end_time    TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id, start_time);

CREATE TABLE turns (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ext_id      TEXT,
    session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    time        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    speaker     TEXT,
    text        TEXT NOT NULL,
    caption     TEXT,
    image_ids   TEXT NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL,
    UNIQUE (user_id, ext_id)
);
CREATE INDEX turns_user_time ON turns(user_id, time);

CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    mime        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    caption     TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE memories (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type            TEXT NOT NULL
                    CHECK (type IN ('core', 'semantic', 'episodic', 'procedural')),
    key             TEXT,
    content         TEXT NOT NULL,
    keywords        TEXT NOT NULL DEFAULT '[]',
    image_ids       TEXT NOT NULL DEFAULT '[]',
    source_turn_ids TEXT NOT NULL DEFAULT '[]',
    event_start     TEXT NOT NULL,
    event_end       TEXT NOT NULL,
    valid_from      TEXT NOT NULL,
    valid_to        TEXT,
    status          TEXT NOT NULL
                    CHECK (status IN ('active', 'superseded', 'invalidated', 'deleted')),
    version         INTEGER NOT NULL DEFAULT 1,
    supersedes      INTEGER REFERENCES memories(id),
    created_at      TEXT NOT NULL,
    CHECK ((type IN ('core', 'procedural')) = (key IS NOT NULL))
);
CREATE INDEX memories_user_type ON memories(user_id, type, status);
CREATE INDEX memories_supersedes ON memories(supersedes);
-- one active record per key for core and procedural memory
CREATE UNIQUE INDEX memories_active_key ON memories(user_id, type, key)
    WHERE status = 'active' AND key IS NOT NULL;

-- `tags` holds one token for the user and one for the type, so a MATCH can be narrowed to one
-- user's memories of one type inside the index instead of scoring every user's rows.
CREATE VIRTUAL TABLE memory_fts USING fts5(
    tags, text, tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TABLE memory_vectors (
    memory_id   INTEGER PRIMARY KEY REFERENCES memories(id) ON DELETE CASCADE,
    vector      BLOB NOT NULL
);

CREATE TABLE memory_events (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    op          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    time        TEXT NOT NULL,
    turn_id     INTEGER REFERENCES turns(id),
    undoes      INTEGER REFERENCES memory_events(id)
);
CREATE INDEX memory_events_user ON memory_events(user_id, id);

-- before/after are JSON snapshots of the memory row (NULL: did not exist), each carrying
-- its snapshot format version under "v".
CREATE TABLE memory_event_changes (
    event_id    INTEGER NOT NULL REFERENCES memory_events(id) ON DELETE CASCADE,
    memory_id   INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    before      TEXT,
    after       TEXT,
    PRIMARY KEY (event_id, memory_id)
);
CREATE INDEX memory_event_changes_memory ON memory_event_changes(memory_id, event_id);

CREATE TABLE personality_state (
    user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    traits      TEXT NOT NULL,
    step        INTEGER NOT NULL,
    skip_rule   TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE personality_readings (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    turn_id     INTEGER REFERENCES turns(id),
    time        TEXT NOT NULL,
    reading     TEXT NOT NULL,
    absorbed    INTEGER NOT NULL,
    traits_after TEXT NOT NULL,
    step_after  INTEGER NOT NULL
);
CREATE INDEX personality_readings_user ON personality_readings(user_id, id);
"""

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


# MIGRATIONS[i] takes a database from version i to version i + 1.
MIGRATIONS: tuple[Migration, ...] = (_script(_V1), _script(_V2), _script(_V3))
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, *, location: str) -> int:
    """Bring the database up to SCHEMA_VERSION inside the caller's write transaction."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{location} has schema version {version}, but this personavlm understands up to "
            f"{SCHEMA_VERSION}: upgrade personavlm (pip install -U personavlm)"
        )
    for index in range(version, SCHEMA_VERSION):
        MIGRATIONS[index](conn)
    if version < SCHEMA_VERSION:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
    return version
