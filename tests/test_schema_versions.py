"""Databases written by every released schema version still open, migrate and read back.

tests/data/schema/v<N>.sql is a SQL text dump of a database written by schema version N (see
the README there). Each is restored into a fresh file, opened with the current code, and read
through every verb; the values asserted are the ones `build_sample_store` wrote.

To add the dump of a new schema version (never rewrite an existing one):

    .venv/bin/python tests/test_schema_versions.py tests/data/schema/v<SCHEMA_VERSION>.sql
"""

from __future__ import annotations

import math
import re
import sqlite3
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

import personavlm
from personavlm.agent.exchange import close_session
from personavlm.agent.jobs import SessionJob, decode
from personavlm.embed import HashingEmbedder
from personavlm.errors import SchemaVersionError, StoreError
from personavlm.memory.records import EventOp, MemoryStatus, MemoryType
from personavlm.memory.schema import SCHEMA_VERSION
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.personality import Reading

SCHEMA_DIR = Path(__file__).parent / "data" / "schema"
# The encoder every dump was built with (see each dump's header): HashingEmbedder() = 256-d.
DUMP_ENCODER = "hashing-256"
# FTS5 keeps a virtual table's data in these shadow tables.
FTS5_SHADOW_SUFFIXES = ("config", "content", "data", "docsize", "idx")


def dump_files() -> list[Path]:
    found = [p for p in SCHEMA_DIR.glob("v*.sql") if re.fullmatch(r"v\d+", p.stem)]
    return sorted(found, key=lambda p: int(p.stem[1:]))


# --------------------------------------------------------------------- building a dump


def build_sample_store(path: Path) -> None:
    """A little of everything, written through the public verbs with HashingEmbedder()."""
    with MemoryStore.open(path, embedder=HashingEmbedder()) as store:
        ann_turns = [
            TurnInput.create(
                ext_id="a1",
                time="2024-03-02 09:00",
                role="user",
                speaker="Ann",
                text="Hi, I'm Ann. I just adopted a beagle called Bobby.",
            ),
            TurnInput.create(
                ext_id="a2",
                time="2024-03-02 09:01",
                role="assistant",
                speaker="Assistant",
                text="Congratulations on Bobby! Beagles are great company.",
            ),
            TurnInput.create(
                ext_id="a3",
                time="2024-03-09 18:00",
                role="user",
                speaker="Ann",
                text="My sister Lena is visiting Lyon next weekend.",
            ),
            TurnInput.create(
                ext_id="a4",
                time="2024-03-09 18:02",
                role="assistant",
                speaker="Assistant",
                text="Lovely! Show her the Basilica of Fourviere.",
            ),
        ]
        store.append_turns("ann", ann_turns)
        store.append_turns(
            "bo",
            [
                TurnInput.create(
                    ext_id="b1",
                    time="2024-02-01 12:00",
                    role="user",
                    speaker="Bo",
                    text="I collect old stamps from Japan.",
                )
            ],
        )
        turn = {t.ext_id: t.id for t in store.turns("ann")}

        store.add("ann", "core", "Sprite", key="favourite drink", time="2024-01-05 10:00")
        store.add("ann", "core", "Coca-Cola", key="favourite drink", time="2024-03-01 10:00")
        store.add("ann", "core", "Ann", key="name", time="2024-03-02 09:00")
        store.add(
            "ann",
            "semantic",
            "Ann's dog Bobby is a beagle",
            keywords=["dog", "Bobby"],
            source_turn_ids=[turn["a1"]],
            time="2024-03-02 09:05",
        )
        paris = store.add("ann", "semantic", "Ann lives in Paris", time="2024-01-10 08:00")
        store.invalidate("ann", paris.id, time="2024-03-01 12:00")
        mushrooms = store.add("ann", "semantic", "Ann hates mushrooms", time="2024-02-15 19:00")
        store.delete("ann", mushrooms.id)
        nurse = store.add("ann", "semantic", "Ann works as a nurse", time="2024-03-02 09:10")
        store.update(
            "ann",
            nurse.id,
            content="Ann works night shifts as a nurse in Lyon",
            time="2024-03-05 08:00",
        )
        store.add(
            "ann",
            "episodic",
            "Ann's sister Lena planned a visit to Lyon",
            source_turn_ids=[turn["a3"], turn["a4"]],
            time="2024-03-09 18:05",
        )
        store.add(
            "ann",
            "procedural",
            "Keep answers short and friendly",
            key="reply style",
            time="2024-03-02 09:15",
        )
        badminton = store.add(
            "ann", "semantic", "Ann plays badminton on Wednesdays", time="2024-03-12 20:00"
        )
        store.delete("ann", badminton.id)
        store.undo("ann", store.history("ann", badminton.id)[-1].id)

        store.add(
            "bo",
            "semantic",
            "Bo collects stamps from Japan",
            source_turn_ids=[store.turns("bo")[0].id],
            time="2024-02-01 12:05",
        )
        store.add("bo", "core", "Bo", key="name", time="2024-02-01 12:00")

        store.record_personality(
            "ann", Reading(4, 3, 2, 4, 3), turn_id=turn["a1"], time="2024-03-02 09:00"
        )
        store.record_personality(  # all neutral: kept, but not absorbed (paper's rule)
            "ann", Reading(3, 3, 3, 3, 3), turn_id=turn["a3"], time="2024-03-09 18:00"
        )
        store.record_personality("ann", Reading(5, 2, 2, 4, 2), time="2024-03-09 18:02")
        store.record_personality("bo", Reading(2, 4, 3, 3, 3), time="2024-02-01 12:00")
        if SCHEMA_VERSION >= 2:  # the update queue: ann's last session waits to be closed
            close_session(store, "ann")
        if SCHEMA_VERSION >= 3:  # API keys: an admin key, and one live and one revoked of ann
            store.register_api_key("admin-key-of-the-v3-fixture", None, label="admin")
            store.create_api_key("ann", label="phone")
            laptop, _ = store.create_api_key("ann", label="laptop")
            store.revoke_api_key(laptop.id)


def dump_sql(db_path: Path) -> str:
    """sqlite3's iterdump(), except for FTS5 tables: iterdump writes them as a raw
    sqlite_master insert plus rows into the not-yet-loaded virtual table, which cannot be
    restored ("no such table"). They are written instead as CREATE VIRTUAL TABLE and their
    rows with rowids, and their shadow tables are left to FTS5 to rebuild."""
    conn = sqlite3.connect(db_path)
    try:
        virtual = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND sql LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
        ).fetchall()
        dropped = ["PRAGMA writable_schema=", "INSERT INTO sqlite_master("]
        for name, _ in virtual:
            dropped.append(f'INSERT INTO "{name}" VALUES(')
            for suffix in FTS5_SHADOW_SUFFIXES:
                dropped += [f"CREATE TABLE '{name}_{suffix}'", f'INSERT INTO "{name}_{suffix}" ']
        statements = [s for s in conn.iterdump() if not s.startswith(tuple(dropped))]
        assert statements[-1] == "COMMIT;"
        tail = []
        for name, sql in virtual:
            tail.append(f"{sql};")
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')]
            quoted = " || ',' || ".join(f'quote("{c}")' for c in ["rowid", *columns])
            names = ", ".join(["rowid", *(f'"{c}"' for c in columns)])
            for (values,) in conn.execute(f'SELECT {quoted} FROM "{name}" ORDER BY rowid'):
                tail.append(f'INSERT INTO "{name}"({names}) VALUES({values});')
        return "\n".join([*statements[:-1], *tail, "COMMIT;"]) + "\n"
    finally:
        conn.close()


def dump_header(target: Path) -> str:
    return "\n".join(
        [
            f"-- personavlm test fixture: a database of schema version {SCHEMA_VERSION}, "
            "as SQL text.",
            f"-- Made with personavlm {personavlm.__version__} (SCHEMA_VERSION "
            f"{SCHEMA_VERSION}) by",
            "--     .venv/bin/python tests/test_schema_versions.py "
            f"tests/data/schema/{target.name}",
            "-- build_sample_store() wrote it through MemoryStore with the text encoder",
            f"-- HashingEmbedder(dim=256) ({DUMP_ENCODER!r}): open it with HashingEmbedder().",
            "-- dump_sql() dumped it with sqlite3 iterdump(), FTS5 tables as CREATE VIRTUAL TABLE",
            "-- plus rows. Restore with sqlite3 executescript().",
            "-- Never edit this file: it stands for databases users already have (README.md).",
            "",
        ]
    )


def write_dump(target: Path) -> None:
    if target.exists():
        raise SystemExit(f"{target} exists; released dumps are never rewritten")
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "sample.db"
        build_sample_store(db)
        text = dump_header(target) + dump_sql(db)
    target.write_text(text, encoding="utf-8")


def restore(dump: Path, target: Path) -> Path:
    conn = sqlite3.connect(target)
    try:
        conn.executescript(dump.read_text(encoding="utf-8"))
    finally:
        conn.close()
    return target


def meta(path: Path, key: str) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


# --------------------------------------------------------------------- the tests


def test_fresh_store_records_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    MemoryStore.open(path, embedder=HashingEmbedder()).close()
    assert meta(path, "schema_version") == str(SCHEMA_VERSION)
    assert meta(path, "encoder") == "hashing-256"
    assert meta(path, "encoder_dim") == "256"


def test_every_schema_version_has_a_dump() -> None:
    versions = [int(p.stem[1:]) for p in dump_files()]
    assert versions == list(range(1, SCHEMA_VERSION + 1)), (
        "tests/data/schema/ needs one dump per schema version; make the missing one with "
        "`python tests/test_schema_versions.py tests/data/schema/v<N>.sql`"
    )


def test_dumps_say_how_they_were_made() -> None:
    for dump in dump_files():
        head = dump.read_text(encoding="utf-8")[:2000]
        assert f"schema version {dump.stem[1:]}" in head
        assert "HashingEmbedder(dim=256)" in head


@pytest.fixture(params=dump_files(), ids=lambda p: p.stem)
def restored(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    dump: Path = request.param
    return restore(dump, tmp_path / f"{dump.stem}.db")


def test_restored_dump_migrates_to_current_version(restored: Path) -> None:
    MemoryStore.open(restored, embedder=HashingEmbedder()).close()
    assert meta(restored, "schema_version") == str(SCHEMA_VERSION)
    assert meta(restored, "encoder") == DUMP_ENCODER
    conn = sqlite3.connect(restored)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.execute("INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_restored_dump_users_and_turns(restored: Path) -> None:
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        assert store.users() == ["ann", "bo"]
        turns = store.turns("ann")
        assert [t.ext_id for t in turns] == ["a1", "a2", "a3", "a4"]
        assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
        assert turns[0].time == datetime(2024, 3, 2, 9, 0)
        assert turns[0].text == "Hi, I'm Ann. I just adopted a beagle called Bobby."
        # Two sessions: a1-a2, then a3-a4 a week later.
        assert turns[0].session_id == turns[1].session_id
        assert turns[2].session_id == turns[3].session_id
        assert turns[1].session_id != turns[2].session_id
        assert [t.ext_id for t in store.turns("bo")] == ["b1"]


def test_restored_dump_list_and_get(restored: Path) -> None:
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        every = {m.content: m for m in store.list("ann", status=None)}
        statuses = {content: m.status for content, m in every.items()}
        assert statuses == {
            "Ann: Hi, I'm Ann. I just adopted a beagle called Bobby.": MemoryStatus.ACTIVE,
            "Assistant: Congratulations on Bobby! Beagles are great company.": MemoryStatus.ACTIVE,
            "Ann: My sister Lena is visiting Lyon next weekend.": MemoryStatus.ACTIVE,
            "Assistant: Lovely! Show her the Basilica of Fourviere.": MemoryStatus.ACTIVE,
            "Sprite": MemoryStatus.SUPERSEDED,
            "Coca-Cola": MemoryStatus.ACTIVE,
            "Ann": MemoryStatus.ACTIVE,
            "Ann's dog Bobby is a beagle": MemoryStatus.ACTIVE,
            "Ann lives in Paris": MemoryStatus.INVALIDATED,
            "Ann hates mushrooms": MemoryStatus.DELETED,
            "Ann works as a nurse": MemoryStatus.SUPERSEDED,
            "Ann works night shifts as a nurse in Lyon": MemoryStatus.ACTIVE,
            "Ann's sister Lena planned a visit to Lyon": MemoryStatus.ACTIVE,
            "Keep answers short and friendly": MemoryStatus.ACTIVE,
            "Ann plays badminton on Wednesdays": MemoryStatus.ACTIVE,
        }

        active = store.list("ann")
        assert "Ann hates mushrooms" not in {m.content for m in active}
        # Event-time order.
        assert [m.event_start for m in active] == sorted(m.event_start for m in active)

        drinks = store.list("ann", types=["core"], status=None, key="favourite drink")
        assert [(m.content, m.version) for m in drinks] == [("Sprite", 1), ("Coca-Cola", 2)]

        dog = store.get("ann", every["Ann's dog Bobby is a beagle"].id)
        assert dog.type is MemoryType.SEMANTIC
        assert dog.keywords == ("dog", "Bobby")
        assert dog.valid_from == datetime(2024, 3, 2, 9, 5)
        # Event time is the time of the source turn.
        assert dog.event_start == dog.event_end == datetime(2024, 3, 2, 9, 0)
        assert dog.source_turn_ids == (store.turns("ann")[0].id,)

        paris = store.get("ann", every["Ann lives in Paris"].id)
        assert paris.valid_to == datetime(2024, 3, 1, 12, 0)

        lena = every["Ann's sister Lena planned a visit to Lyon"]
        assert (lena.event_start, lena.event_end) == (
            datetime(2024, 3, 9, 18, 0),
            datetime(2024, 3, 9, 18, 2),
        )
        style = store.list("ann", types=["procedural"])
        assert [(m.key, m.content) for m in style] == [
            ("reply style", "Keep answers short and friendly")
        ]
        assert [m.content for m in store.list("bo", types=["semantic"])] == [
            "Bo collects stamps from Japan"
        ]


def test_restored_dump_history_timeline_and_undo(restored: Path) -> None:
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        every = {m.content: m for m in store.list("ann", status=None)}
        sprite, cola = every["Sprite"], every["Coca-Cola"]

        chain = store.timeline("ann", cola.id)
        assert [(m.content, m.status, m.valid_to) for m in chain] == [
            ("Sprite", MemoryStatus.SUPERSEDED, datetime(2024, 3, 1, 10, 0)),
            ("Coca-Cola", MemoryStatus.ACTIVE, None),
        ]
        assert cola.supersedes == sprite.id
        assert [m.id for m in store.timeline("ann", sprite.id)] == [sprite.id, cola.id]

        badminton = every["Ann plays badminton on Wednesdays"]
        events = store.history("ann", badminton.id)
        assert [e.op for e in events] == [EventOp.ADD, EventOp.DELETE, EventOp.UNDO]
        assert events[2].undoes == events[1].id
        assert events[1].changes[badminton.id][1]["status"] == "deleted"  # type: ignore[index]

        mushrooms = every["Ann hates mushrooms"]
        assert [e.op for e in store.history("ann", mushrooms.id)] == [
            EventOp.ADD,
            EventOp.DELETE,
        ]

        old, new = every["Ann works as a nurse"], every["Ann works night shifts as a nurse in Lyon"]
        assert [e.op for e in store.history("ann", old.id)] == [EventOp.ADD, EventOp.UPDATE]
        (update,) = store.history("ann", new.id)
        assert update.op is EventOp.UPDATE
        assert sorted(update.changes) == [old.id, new.id]

        # Snapshots written by the old version still drive undo, and undo of the undo.
        first = store.undo("ann", update.id)
        assert store.get("ann", old.id).status is MemoryStatus.ACTIVE
        assert store.get("ann", old.id).valid_to is None
        assert store.get("ann", new.id).status is MemoryStatus.DELETED
        store.undo("ann", first.id)
        assert store.get("ann", old.id).status is MemoryStatus.SUPERSEDED
        assert store.get("ann", old.id).valid_to == datetime(2024, 3, 5, 8, 0)
        assert store.get("ann", new.id).status is MemoryStatus.ACTIVE

        ingest_events = store.history("ann", every["Ann"].id)
        assert [e.op for e in ingest_events] == [EventOp.ADD]
        turn_memory = every["Ann: Hi, I'm Ann. I just adopted a beagle called Bobby."]
        assert [e.op for e in store.history("ann", turn_memory.id)] == [EventOp.INGEST]


def test_restored_dump_search(restored: Path) -> None:
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        hits = store.search("ann", "dog Bobby beagle", types=["semantic"], k=1)
        assert [h.memory.content for h in hits] == ["Ann's dog Bobby is a beagle"]
        assert [t.ext_id for t in hits[0].turns] == ["a1"]
        assert set(hits[0].ranks) == {"bm25", "dense"}

        # Deleted, invalidated and superseded memories are never hits.
        contents = {
            h.memory.content
            for h in store.search("ann", "mushrooms Paris nurse", types=["semantic"], k=10)
        }
        assert "Ann hates mushrooms" not in contents
        assert "Ann lives in Paris" not in contents
        assert "Ann works as a nurse" not in contents
        assert "Ann works night shifts as a nurse in Lyon" in contents

        core = store.search("ann", "favourite drink", types=["core"], k=5)
        assert "Coca-Cola" in {h.memory.content for h in core}
        assert "Sprite" not in {h.memory.content for h in core}

        episodic = store.search(
            "ann", "sister Lena Lyon", types=["episodic"], k=1, start="2024-03-09 00:00"
        )
        assert episodic[0].memory.content == "Ann's sister Lena planned a visit to Lyon"
        assert [t.ext_id for t in episodic[0].turns] == ["a3", "a4"]
        windowed = store.search(
            "ann", "sister Lena Lyon", types=["episodic"], end="2024-03-05 00:00"
        )
        assert all(h.memory.event_start <= datetime(2024, 3, 5) for h in windowed)
        assert len(windowed) == 2  # a1 and a2, the only episodic memories before then

        bo = store.search("bo", "stamps from Japan", types=["semantic"], k=3)
        assert [h.memory.content for h in bo] == ["Bo collects stamps from Japan"]

        # The restored store takes new memories and finds them.
        added = store.add("ann", "semantic", "Ann bought a red bicycle", time="2024-04-01 10:00")
        found = store.search("ann", "red bicycle", types=["semantic"], k=1)
        assert [h.memory.id for h in found] == [added.id]


def test_restored_dump_personality(restored: Path) -> None:
    lam0 = 0.5
    lam1 = 0.7 - 0.2 * math.cos(math.pi / 50)
    first = [lam0 * 3 + (1 - lam0) * r for r in (4, 3, 2, 4, 3)]
    expected = [lam1 * p + (1 - lam1) * r for p, r in zip(first, (5, 2, 2, 4, 2), strict=True)]
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        state = store.personality("ann")
        assert state.step == 2
        assert state.traits.as_tuple() == pytest.approx(expected, abs=1e-9)

        records = store.personality_readings("ann")
        turn = {t.ext_id: t.id for t in store.turns("ann")}
        assert [r.reading.as_tuple() for r in records] == [
            (4, 3, 2, 4, 3),
            (3, 3, 3, 3, 3),
            (5, 2, 2, 4, 2),
        ]
        assert [r.absorbed for r in records] == [True, False, True]
        assert [r.turn_id for r in records] == [turn["a1"], turn["a3"], None]
        assert [r.time for r in records] == [
            datetime(2024, 3, 2, 9, 0),
            datetime(2024, 3, 9, 18, 0),
            datetime(2024, 3, 9, 18, 2),
        ]
        assert records[0].state_after.traits.as_tuple() == pytest.approx(first, abs=1e-9)
        assert records[1].state_after == records[0].state_after

        bo = store.personality("bo")
        assert bo.step == 1
        assert bo.traits.as_tuple() == pytest.approx((2.5, 3.5, 3.0, 3.0, 3.0), abs=1e-9)


def test_restored_dump_update_queue(restored: Path) -> None:
    """Version 2 added the update queue: a v1 database migrates to an empty queue; a v2
    dump keeps its pending session-close job, which a worker can still claim."""
    dumped_version = int(restored.stem[1:])
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        status = store.queue_status()
        if dumped_version < 2:
            assert (status.pending, status.failed, status.done) == (0, 0, 0)
            return
        assert (status.pending, status.failed) == (1, 0)
        job = store.claim_job("test-worker")
        session_id = store.turns("ann")[-1].session_id
        assert job is not None and job.kind == "session"
        assert job.dedupe_key == f"session:{session_id}"
        assert job.payload == {"v": 1, "session_id": session_id}  # as written, still read:
        assert decode(job) == SessionJob(session_id)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    MemoryStore.open(path, embedder=HashingEmbedder()).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    conn.close()
    with pytest.raises(SchemaVersionError, match="upgrade personavlm") as caught:
        MemoryStore.open(path, embedder=HashingEmbedder())
    assert f"schema version {SCHEMA_VERSION + 1}" in str(caught.value)
    assert meta(path, "schema_version") == str(SCHEMA_VERSION + 1)  # left as it was


def test_file_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError, match=r"notes\.db"):
        MemoryStore.open(path, embedder=HashingEmbedder())
    assert path.read_bytes() == b"these are my notes, not a database\n" * 200


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/test_schema_versions.py tests/data/schema/vN.sql")
    write_dump(Path(sys.argv[1]))


def test_restored_dump_api_keys(restored: Path) -> None:
    """Version 3 added the service's API keys: older databases migrate to none (so the
    service generates an admin key on first start); a v3 dump keeps its hashed keys."""
    dumped_version = int(restored.stem[1:])
    with MemoryStore.open(restored, embedder=HashingEmbedder()) as store:
        if dumped_version < 3:
            assert not store.has_admin_key() and store.api_keys("ann") == []
            return
        admin = store.authenticate("admin-key-of-the-v3-fixture")
        assert admin is not None and admin.is_admin and admin.label == "admin"
        phone, laptop = store.api_keys("ann")
        assert (phone.label, phone.revoked_at) == ("phone", None)
        assert laptop.label == "laptop" and laptop.revoked_at is not None
        assert "admin-key-of-the-v3-fixture" not in restored.read_text(errors="replace")
