"""One schema truth (memory/ddl.py): live databases of both engines, new or migrated, have it.

Live schemas are read back from the database's catalogue (SQLite: sqlite_master and the
table/foreign-key/index pragmas; PostgreSQL: pg_catalog) into one shape: per table its
columns (type, NOT NULL, generated key, generated column), primary key, foreign keys with
their target and ON DELETE, unique constraints, and named indexes with their columns,
uniqueness and whether they are partial. The shape leaves out column order (PostgreSQL's
ALTER TABLE can only append), CHECKs and defaults. A primary-key column counts as NOT NULL
(PostgreSQL's rule; SQLite still lets NULL into a non-INTEGER key, a legacy quirk).

Engine-specific tables are compared on their own: SQLite's FTS5 table by its CREATE statement
(its shadow tables belong to FTS5), PostgreSQL's `memory_fts` is in the description.

These tests open the engines directly, not MemoryStore: they are about the schema only.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from personavlm.errors import StoreError
from personavlm.memory import ddl
from personavlm.memory.ddl import SCHEMA_VERSION, Dialect
from personavlm.memory.keys import shown_prefix
from personavlm.memory.schema import MIGRATIONS, rebuild_table
from personavlm.memory.sqlite import SqliteEngine

SCHEMA_DIR = Path(__file__).parent / "data" / "schema"
DUMPS = sorted(SCHEMA_DIR.glob("v[0-9]*.sql"), key=lambda p: int(p.stem[1:]))
FTS5_SHADOW_SUFFIXES = ("config", "content", "data", "docsize", "idx")
DIALECTS: tuple[Dialect, ...] = ("sqlite", "postgres")

Shape = dict[str, dict[str, Any]]


# --------------------------------------------------------------------- the shapes


def expected_shape(dialect: Dialect) -> Shape:
    """What ddl.py says `dialect`'s ordinary tables are."""
    shape: Shape = {}
    for table in ddl.tables(dialect):
        shape[table.name] = {
            "columns": {
                c.name: (
                    ddl.type_name(c, dialect).lower(),
                    c.not_null or c.name in table.primary_key,
                    c.type == "id",
                    c.generated is not None,
                )
                for c in table.columns
            },
            "primary_key": table.primary_key,
            "foreign_keys": sorted(
                (c.name, c.references.table, c.references.column, c.references.on_delete)
                for c in table.columns
                if c.references is not None
            ),
            "unique": sorted(table.unique),
            "indexes": {i.name: (i.columns, i.unique, i.where is not None) for i in table.indexes},
        }
    return shape


def sqlite_shape(conn: sqlite3.Connection) -> Shape:
    return {name: _sqlite_table(conn, name) for name in _sqlite_tables(conn)}


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    virtual = {name for name, sql in rows if sql.startswith("CREATE VIRTUAL TABLE")}
    shadows = {f"{v}_{suffix}" for v in virtual for suffix in FTS5_SHADOW_SUFFIXES}
    return sorted(name for name, _ in rows if name not in virtual | shadows)


def _sqlite_table(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    autoincrement = "AUTOINCREMENT" in sql.upper()
    info = conn.execute(f'PRAGMA table_xinfo("{name}")').fetchall()
    columns = {
        col: (decl.lower(), bool(notnull) or pk > 0, autoincrement and pk > 0, hidden in (2, 3))
        for _, col, decl, notnull, _, pk, hidden in info
    }
    primary_key = tuple(row[1] for row in sorted((r for r in info if r[5] > 0), key=lambda r: r[5]))
    foreign_keys = sorted(
        (row[3], row[2], row[4], row[6])
        for row in conn.execute(f'PRAGMA foreign_key_list("{name}")')
    )
    unique, indexes = [], {}
    for _, index, is_unique, origin, partial in conn.execute(f'PRAGMA index_list("{name}")'):
        cols = tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{index}")'))
        if origin == "u":
            unique.append(cols)
        elif origin == "c":
            indexes[index] = (cols, bool(is_unique), bool(partial))
    return {
        "columns": columns,
        "primary_key": primary_key,
        "foreign_keys": foreign_keys,
        "unique": sorted(unique),
        "indexes": indexes,
    }


_PG_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL"}


def pg_shape(url: str) -> Shape:
    import psycopg

    with psycopg.connect(url) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        return {name: _pg_table(conn, name) for name in names}


def _pg_table(conn: Any, name: str) -> dict[str, Any]:
    columns = {
        col: (kind, notnull, identity != "", generated != "")
        for col, kind, notnull, identity, generated in conn.execute(
            "SELECT attname, format_type(atttypid, NULL), attnotnull, attidentity, "
            "attgenerated FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (name,),
        )
    }
    constraints: dict[str, list[Any]] = {"p": [], "u": [], "f": []}
    for contype, cols, target, target_cols, on_delete in conn.execute(
        "SELECT contype, "
        "ARRAY(SELECT attname FROM unnest(conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute "
        "      ON attrelid = conrelid AND attnum = k.n ORDER BY k.o), "
        "confrelid::regclass::text, "
        "ARRAY(SELECT attname FROM unnest(confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute "
        "      ON attrelid = confrelid AND attnum = k.n ORDER BY k.o), "
        "confdeltype FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN "
        "('p', 'u', 'f')",
        (name,),
    ):
        if contype == "f":
            (col,), (target_col,) = cols, target_cols
            constraints["f"].append((col, target, target_col, _PG_ON_DELETE[on_delete]))
        else:
            constraints[contype].append(tuple(cols))
    indexes = {
        index: (tuple(cols), unique, partial)
        for index, cols, unique, partial in conn.execute(
            "SELECT c.relname, "
            "ARRAY(SELECT attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o) "
            "      JOIN pg_attribute ON attrelid = i.indrelid AND attnum = k.n ORDER BY k.o), "
            "i.indisunique, i.indpred IS NOT NULL "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid)",
            (name,),
        )
    }
    (primary_key,) = constraints["p"]
    return {
        "columns": columns,
        "primary_key": primary_key,
        "foreign_keys": sorted(constraints["f"]),
        "unique": sorted(constraints["u"]),
        "indexes": indexes,
    }


def pg_checks_and_defaults(url: str) -> dict[str, list[tuple[str, ...]]]:
    """What pg_shape leaves out, in PostgreSQL's own words (comparable between two stores)."""
    import psycopg

    with psycopg.connect(url) as conn:
        checks = conn.execute(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'c' AND connamespace = 'public'::regnamespace ORDER BY 1, 2"
        ).fetchall()
        defaults = conn.execute(
            "SELECT adrelid::regclass::text, attname, pg_get_expr(adbin, adrelid) "
            "FROM pg_attrdef JOIN pg_attribute ON attrelid = adrelid AND attnum = adnum "
            "ORDER BY 1, 2"
        ).fetchall()
    return {"checks": checks, "defaults": defaults}


# --------------------------------------------------------------------- helpers


def open_sqlite(path: Path) -> None:
    SqliteEngine(path, dim=8).close()


def restore(dump: Path, target: Path) -> Path:
    conn = sqlite3.connect(target)
    try:
        conn.executescript(dump.read_text(encoding="utf-8"))
    finally:
        conn.close()
    return target


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh SQLite store at SCHEMA_VERSION, opened by plain sqlite3."""
    path = tmp_path / "fresh.db"
    open_sqlite(path)
    conn = sqlite3.connect(path, isolation_level=None)
    yield conn
    conn.close()


def column_order(conn: sqlite3.Connection) -> dict[str, list[str]]:
    return {
        name: [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')]
        for name in _sqlite_tables(conn)
    }


def fts_sql(conn: sqlite3.Connection) -> str:
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'memory_fts'").fetchone()
    return " ".join(str(sql).split())


def schema_sql(conn: sqlite3.Connection) -> dict[str, str]:
    """Every table's and index's CREATE statement, as SQLite keeps it (so with its CHECKs and
    defaults), whitespace collapsed; a renamed table's name comes back quoted."""
    found = {}
    for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    ):
        sql = re.sub(r'^CREATE TABLE "(\w+)"', r"CREATE TABLE \1", sql)
        found[name] = " ".join(sql.split())
    return found


def meta_version(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in columns)
    return conn.execute(f'SELECT {names} FROM "{table}" ORDER BY rowid').fetchall()


# --------------------------------------------------------------------- the description


def test_every_version_has_its_migrations() -> None:
    from personavlm.memory.postgres_schema import PG_FIRST_VERSION, PG_MIGRATIONS

    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))
    assert sorted(PG_MIGRATIONS) == list(range(PG_FIRST_VERSION, SCHEMA_VERSION))


def test_description_is_consistent() -> None:
    for dialect in DIALECTS:
        names = [t.name for t in ddl.tables(dialect)]
        assert len(names) == len(set(names))
        seen: set[str] = set()
        for table in ddl.tables(dialect):  # parents first: PostgreSQL checks references
            assert all(table.column(name) for name in table.primary_key)
            for column in table.columns:
                ref = column.references
                if ref is not None:
                    assert ref.table in seen | {table.name}, (table.name, column.name)
                    assert ddl.table(ref.table, dialect).column(ref.column)
                    # Version 4: every foreign key cascades, identically on both engines.
                    assert ref.on_delete == "CASCADE", (table.name, column.name)
            seen.add(table.name)


# --------------------------------------------------------------------- (i) new stores


def test_new_sqlite_store_is_the_description(db: sqlite3.Connection) -> None:
    assert sqlite_shape(db) == expected_shape("sqlite")
    assert fts_sql(db) == " ".join(ddl.SQLITE_FTS.split())
    assert column_order(db) == {t.name: [c.name for c in t.columns] for t in ddl.tables("sqlite")}
    assert meta_version(db) == str(SCHEMA_VERSION) == "6"


@pytest.mark.postgres
def test_new_postgres_store_is_the_description(pg_cluster: Any) -> None:
    import psycopg

    from personavlm.memory.postgres import PostgresEngine

    with pg_cluster.database() as url:
        PostgresEngine(url, dim=8).close()
        assert pg_shape(url) == expected_shape("postgres")
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert row == (str(SCHEMA_VERSION),)


def test_engines_differ_only_where_documented() -> None:
    sqlite, postgres = expected_shape("sqlite"), expected_shape("postgres")
    assert set(postgres) - set(sqlite) == {"memory_fts"}  # SQLite's is the FTS5 table
    types: dict[str, set[str]] = {"sqlite": set(), "postgres": set()}
    for dialect, shape in (("sqlite", sqlite), ("postgres", postgres)):
        for name in sqlite:
            table = dict(shape[name])
            cols = table.pop("columns")
            assert table == {k: v for k, v in sqlite[name].items() if k != "columns"}
            assert {c: rest for c, (_, *rest) in cols.items()} == {
                c: rest for c, (_, *rest) in sqlite[name]["columns"].items()
            }
            types[dialect] |= {kind for kind, *_ in cols.values()}
    assert types == {"sqlite": {"integer", "text", "blob"},
                     "postgres": {"integer", "bigint", "text", "vector"}}  # fmt: skip


# --------------------------------------------------------------------- (ii) SQLite migrations


@pytest.fixture(params=DUMPS, ids=lambda p: p.stem)
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A released version's dump, restored and opened (so migrated) by the current code."""
    dump: Path = request.param
    path = restore(dump, tmp_path / f"{dump.stem}.db")
    open_sqlite(path)
    conn = sqlite3.connect(path, isolation_level=None)
    yield conn
    conn.close()


def test_dumps_of_versions_1_to_3_are_there() -> None:
    assert [p.stem for p in DUMPS][:3] == ["v1", "v2", "v3"]


def test_migrated_dump_equals_a_new_store(
    migrated: sqlite3.Connection, db: sqlite3.Connection
) -> None:
    assert sqlite_shape(migrated) == sqlite_shape(db) == expected_shape("sqlite")
    assert schema_sql(migrated) == schema_sql(db)
    assert column_order(migrated) == column_order(db)
    assert meta_version(migrated) == str(SCHEMA_VERSION)
    assert migrated.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert migrated.execute("PRAGMA foreign_key_check").fetchall() == []
    migrated.execute("INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')")


# --------------------------------------------------------------------- (iv) what migration keeps


@pytest.fixture
def v3(tmp_path: Path) -> Path:
    """The v3 dump plus what it lacks: a turn job (no dedupe key) and a stored picture."""
    path = restore(SCHEMA_DIR / "v3.sql", tmp_path / "v3.db")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO update_jobs(user_id, kind, session_id, payload, status, created_at) "
            "VALUES ('bo', 'turn', NULL, '{\"v\": 1}', 'done', '2024-02-01 12:01:00')"
        )
        conn.execute(
            "INSERT INTO images(id, mime, size, path, caption, created_at) VALUES "
            "('ab' || printf('%062d', 0), 'image/png', 68, 'ab/ab00', 'a dot', "
            "'2024-02-01 12:00:00')"
        )
    conn.close()
    return path


def snapshot(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    conn = sqlite3.connect(path)
    try:
        found = {t: (cols, rows(conn, t, cols)) for t, cols in column_order(conn).items()}
        meta = found["meta"][1]  # the one row a migration changes
        found["meta"] = (found["meta"][0], [r for r in meta if r[0] != "schema_version"])
        found["memory_fts"] = (["rowid", "tags", "text"],
                               rows(conn, "memory_fts", ["rowid", "tags", "text"]))  # fmt: skip
        return found
    finally:
        conn.close()


def project(
    columns: list[str], found: list[tuple[Any, ...]], kept: list[str]
) -> list[tuple[Any, ...]]:
    return [tuple(row[columns.index(c)] for c in kept) for row in found]


def test_migration_keeps_rows_ids_fts_and_vectors(v3: Path) -> None:
    before = snapshot(v3)
    open_sqlite(v3)
    after = snapshot(v3)
    assert set(after) == set(before) | {"user_epochs"}  # v5's new table
    for table, (old_columns, old_rows) in before.items():
        new_columns, new_rows = after[table]
        kept = [c for c in old_columns if c in new_columns]
        assert set(old_columns) - set(kept) <= {"path", "session_id"}, table
        expected = project(old_columns, old_rows, kept)
        if table == "api_keys":  # v5 keeps 4 characters after the scheme in view
            at = kept.index("prefix")
            expected = [(*r[:at], shown_prefix(r[at]), *r[at + 1 :]) for r in expected]
        assert project(new_columns, new_rows, kept) == expected, table
    assert all(before[t][1] for t in ("memories", "memory_vectors", "memory_fts", "images"))


def test_migration_maps_session_jobs_to_dedupe_keys(v3: Path) -> None:
    conn = sqlite3.connect(v3)
    old = conn.execute("SELECT id, kind, session_id FROM update_jobs ORDER BY id").fetchall()
    conn.close()
    assert old == [(1, "session", 2), (2, "turn", None)]
    open_sqlite(v3)
    conn = sqlite3.connect(v3)
    try:
        jobs = conn.execute(
            "SELECT id, kind, dedupe_key, payload, status FROM update_jobs ORDER BY id"
        ).fetchall()
        image = conn.execute("SELECT * FROM images").fetchall()
    finally:
        conn.close()
    assert jobs == [
        (1, "session", "session:2", '{"v": 1, "session_id": 2}', "pending"),
        (2, "turn", None, '{"v": 1}', "done"),
    ]
    assert image == [("ab" + "0" * 62, "image/png", 68, "a dot", "2024-02-01 12:00:00")]


def test_migrated_fts_still_finds_memories(v3: Path) -> None:
    open_sqlite(v3)
    conn = sqlite3.connect(v3)
    try:
        found = conn.execute(
            "SELECT m.content FROM memory_fts JOIN memories m ON m.id = memory_fts.rowid "
            "WHERE memory_fts MATCH 'text : beagle' ORDER BY m.id"
        ).fetchall()
    finally:
        conn.close()
    assert ("Ann's dog Bobby is a beagle",) in found


def test_migrated_sqlite_cascades_like_postgres(v3: Path) -> None:
    open_sqlite(v3)
    conn = sqlite3.connect(v3, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        (turn,) = conn.execute("SELECT min(turn_id) FROM personality_readings").fetchone()
        conn.execute("DELETE FROM turns WHERE id = ?", (turn,))
        assert conn.execute(
            "SELECT count(*) FROM personality_readings WHERE turn_id = ?", (turn,)
        ).fetchone() == (0,)
        conn.execute("DELETE FROM users WHERE id = 'ann'")
        for table in ("memories", "memory_events", "update_jobs", "api_keys", "sessions"):
            remaining = conn.execute(f"SELECT count(*) FROM {table} WHERE user_id = 'ann'")
            assert remaining.fetchone() == (0,), table
    finally:
        conn.close()


# --------------------------------------------------------------------- (v) ids never come back


def test_deleted_max_id_is_not_reused_after_migration(v3: Path) -> None:
    open_sqlite(v3)
    conn = sqlite3.connect(v3, isolation_level=None)
    try:
        for table in ("memories", "api_keys", "update_jobs"):
            (top,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
            (seq,) = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
            ).fetchone()
            assert seq == top, table
        (top,) = conn.execute("SELECT max(id) FROM memories").fetchone()
        conn.execute("DELETE FROM memories WHERE id = ?", (top,))
        new = conn.execute(
            "INSERT INTO memories(user_id, type, content, event_start, event_end, valid_from, "
            "status, created_at) VALUES ('bo', 'semantic', 'x', '2024-01-01 00:00:00', "
            "'2024-01-01 00:00:00', '2024-01-01 00:00:00', 'active', '2024-01-01 00:00:00') "
            "RETURNING id"
        ).fetchone()
        assert new == (top + 1,)
    finally:
        conn.close()


def test_rebuild_keeps_a_sequence_above_the_last_id(db: sqlite3.Connection) -> None:
    db.executemany(
        "INSERT INTO api_keys(hash, prefix, created_at) VALUES (?, 'p', '2024-01-01 00:00:00')",
        [("h1",), ("h2",), ("h3",)],
    )
    db.execute("DELETE FROM api_keys WHERE id = 3")
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("BEGIN")
    rebuild_table(db, ddl.table("api_keys", "sqlite"))
    db.execute("COMMIT")
    new = db.execute(
        "INSERT INTO api_keys(hash, prefix, created_at) VALUES ('h4', 'p', '2024-01-01') "
        "RETURNING id"
    ).fetchone()
    assert new == (4,)
    assert sqlite_shape(db)["api_keys"] == expected_shape("sqlite")["api_keys"]


# --------------------------------------------------------------------- failures change nothing


def test_rebuild_refuses_to_run_with_foreign_keys_on(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(StoreError, match="foreign keys off"):
        rebuild_table(db, ddl.table("memories", "sqlite"))


def test_failed_migration_leaves_the_database_as_it_was(v3: Path) -> None:
    conn = sqlite3.connect(v3)
    with conn:  # a vector without its memory: the v4 foreign key check refuses it
        conn.execute("INSERT INTO memory_vectors(memory_id, vector) VALUES (999, x'00')")
    schema_before = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    conn.close()
    data_before = snapshot(v3)
    with pytest.raises(StoreError, match=r"memory_vectors row 999 -> memories"):
        open_sqlite(v3)
    conn = sqlite3.connect(v3)
    try:
        assert conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall() == (
            schema_before
        )
        assert meta_version(conn) == "3"
    finally:
        conn.close()
    assert snapshot(v3) == data_before


def test_engine_keeps_foreign_keys_on_after_migrating(v3: Path) -> None:
    engine = SqliteEngine(v3, dim=8)
    try:
        with engine.write() as conn:
            assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        engine.close()


# --------------------------------------------------------------------- (iii) PostgreSQL


def _pg_v3_store(url: str) -> None:
    """A version-3 store as version 3 made it: the frozen DDL, then a few rows."""
    import psycopg

    frozen = (SCHEMA_DIR / "pg_v3.sql").read_text()

    vector = "[" + ",".join(["0.5"] * 8) + "]"
    with psycopg.connect(url) as conn:
        conn.execute(frozen)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '3')")
        conn.execute("INSERT INTO users(id, created_at) VALUES ('ann', 't'), ('bo', 't')")
        conn.execute(
            "INSERT INTO sessions(id, user_id, start_time, end_time) VALUES "
            "(7, 'ann', 's', 'e'), (8, 'bo', 's', 'e')"
        )
        conn.execute(
            "INSERT INTO update_jobs(id, user_id, kind, session_id, payload, status, "
            "created_at) VALUES (3, 'ann', 'session', 7, '{\"session_id\": 7}', 'pending', 't'), "
            "(4, 'bo', 'turn', NULL, '{\"v\": 1}', 'done', 't'), "
            "(5, 'bo', 'session', 8, '{\"session_id\": 8}', 'done', 't')"
        )
        conn.execute(
            "INSERT INTO images(id, mime, size, path, caption, created_at) "
            "VALUES ('abc', 'image/png', 68, 'ab/abc', NULL, 't')"
        )
        conn.execute(
            "INSERT INTO memories(id, user_id, type, content, event_start, event_end, "
            "valid_from, status, created_at) VALUES (11, 'ann', 'semantic', 'Ann has a beagle', "
            "'t', 't', 't', 'active', 't')"
        )
        conn.execute(
            "INSERT INTO memory_fts(memory_id, user_id, type, text) "
            "VALUES (11, 'ann', 'semantic', 'Ann has a beagle')"
        )
        conn.execute(
            "INSERT INTO memory_vectors(memory_id, vector) VALUES (11, %s::vector)", (vector,)
        )


@pytest.fixture
def pg_v3(pg_cluster: Any) -> Iterator[str]:
    with pg_cluster.database() as url:
        _pg_v3_store(url)
        yield url


@pytest.mark.postgres
def test_postgres_v3_migrates_to_a_new_store(pg_v3: str, pg_cluster: Any) -> None:
    from personavlm.memory.postgres import PostgresEngine

    PostgresEngine(pg_v3, dim=8).close()
    with pg_cluster.database() as fresh:
        PostgresEngine(fresh, dim=8).close()
        assert pg_shape(pg_v3) == pg_shape(fresh) == expected_shape("postgres")
        assert pg_checks_and_defaults(pg_v3) == pg_checks_and_defaults(fresh)


@pytest.mark.postgres
def test_postgres_migration_keeps_rows_and_maps_session_jobs(pg_v3: str) -> None:
    import psycopg

    from personavlm.memory.postgres import PostgresEngine

    PostgresEngine(pg_v3, dim=8).close()
    with psycopg.connect(pg_v3, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT id, user_id, kind, dedupe_key, payload, status FROM update_jobs ORDER BY id"
        ).fetchall()
        assert jobs == [
            (3, "ann", "session", "session:7", '{"session_id": 7}', "pending"),
            (4, "bo", "turn", None, '{"v": 1}', "done"),
            (5, "bo", "session", "session:8", '{"session_id": 8}', "done"),
        ]
        assert conn.execute("SELECT * FROM images").fetchall() == [
            ("abc", "image/png", 68, None, "t")
        ]
        assert conn.execute(
            "SELECT memory_id FROM memory_fts WHERE tsv @@ to_tsquery('english', 'beagles')"
        ).fetchall() == [(11,)]
        vectors = conn.execute("SELECT memory_id, vector::text FROM memory_vectors").fetchall()
        assert vectors == [(11, "[" + ",".join(["0.5"] * 8) + "]")]
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        # A second session job for session 7 is refused, as before the migration.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO update_jobs(user_id, kind, dedupe_key, payload, status, "
                "created_at) VALUES ('ann', 'session', 'session:7', '{}', 'pending', 't')"
            )


@pytest.mark.postgres
def test_failed_postgres_migration_leaves_the_store_as_it_was(pg_v3: str) -> None:
    import psycopg

    from personavlm.memory.postgres import PostgresEngine

    with psycopg.connect(pg_v3) as conn:  # breaks the migration's DROP CONSTRAINT
        conn.execute("ALTER TABLE update_jobs DROP CONSTRAINT update_jobs_kind_check")
    before = pg_shape(pg_v3)
    with pytest.raises(StoreError, match="update_jobs_kind_check"):
        PostgresEngine(pg_v3, dim=8)
    assert pg_shape(pg_v3) == before
    assert "path" in before["images"]["columns"]
    with psycopg.connect(pg_v3) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "3",
        )


def test_shape_reader_sees_what_version_4_changed(tmp_path: Path) -> None:
    """The comparisons are worth something only if the reader sees these differences."""
    conn = sqlite3.connect(restore(SCHEMA_DIR / "v3.sql", tmp_path / "v3.db"))
    try:
        old, new = sqlite_shape(conn), expected_shape("sqlite")
    finally:
        conn.close()
    assert "path" in old["images"]["columns"] and "path" not in new["images"]["columns"]
    assert old["memories"]["columns"]["id"][2] is False  # no AUTOINCREMENT
    assert ("supersedes", "memories", "id", "NO ACTION") in old["memories"]["foreign_keys"]
    assert "memories_user_time" not in old["memories"]["indexes"]
    assert old["update_jobs"]["indexes"]["update_jobs_session"] == (("session_id",), True, True)
    assert {t: old[t] for t in ("meta", "users", "memory_event_changes")} == {
        t: new[t] for t in ("meta", "users", "memory_event_changes")
    }
