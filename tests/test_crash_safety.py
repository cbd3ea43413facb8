"""Crash safety: a test kills a process with SIGKILL in the middle of a large ingest, reopens
the store, and finds every committed turn intact and no half-written memory.

The ingest is the real CLI (`personavlm ingest`) in a subprocess, with the weight-free hashing
encoder. A separate read-only connection watches the turn count; once whole batches are
committed the process gets SIGKILL, wherever it is (most likely inside a write transaction or
embedding the next batch). The survivors are then checked row by row against the file, and
the same ingest run again must complete the job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from personavlm.embed import HashingEmbedder
from personavlm.memory import MemoryStore
from personavlm.memory.store import INGEST_BATCH
from personavlm.memory.turnlog import SESSION_GAP

USER = "crash-user"
TURNS = 16_000  # 62.5 batches: the last batch of the full ingest is a partial one
KILL_AFTER = TURNS // 4  # committed turns seen before the kill: well into the ingest
DISTINCTIVE = "quokka zanzibar marzipan"  # words only the file's last turn has
DEADLINE_S = 120.0  # guards against a hung subprocess; the test takes ~20 s

_VOCABULARY = """
apple river mountain coffee dog cat garden piano train holiday sister brother office rain
sunny bread cheese guitar novel museum bicycle lake doctor exam recipe market birthday camera
winter summer jacket concert painting soccer chess kitten rehearsal invoice marathon violin
tomato lantern harbour café naïve Zürich 東京 ĉu-vi-parolas l'été
"""
WORDS = tuple(_VOCABULARY.split())
GAPS_MINUTES = (0, 1, 2, 5, 15, 45, 60, 61, 240)  # 61 and 240 open a new session


def write_turns(path: Path) -> list[dict[str, str]]:
    rng = random.Random(20240301)
    when = datetime(2023, 1, 1, 8, 0)
    turns = []
    for i in range(TURNS):
        when += timedelta(minutes=rng.choice(GAPS_MINUTES))
        words = [DISTINCTIVE] if i == TURNS - 1 else rng.choices(WORDS, k=rng.randint(3, 25))
        turns.append(
            {
                "id": f"turn-{i:05d}",
                "time": when.strftime("%Y-%m-%d %H:%M"),
                "role": "user" if i % 2 == 0 else "assistant",
                "text": f"{' '.join(words)} (number {i})",
            }
        )
    with path.open("w", encoding="utf-8") as handle:
        for turn in turns:
            handle.write(json.dumps(turn, ensure_ascii=False) + "\n")
    return turns


def ingest_command(turns_file: Path, db: Path) -> list[str]:
    script = Path(sys.executable).with_name("personavlm")
    prefix = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from personavlm.cli import main; main()"]
    )
    return [
        *prefix,
        "ingest",
        "--user",
        USER,
        str(turns_file),
        "--db",
        str(db),
        "--embedder",
        "hashing",
    ]


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PERSONAVLM_HOME=str(tmp_path / "home"), PERSONAVLM_EMBEDDER="hashing")
    env.pop("PERSONAVLM_DB", None)
    return env


def committed_turns(db: Path) -> int:
    """Turns committed so far, seen through a read-only connection of our own; 0 while the
    database or its schema does not exist yet."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
            return int(conn.execute("SELECT count(*) FROM turns").fetchone()[0])
    except sqlite3.Error:  # not created yet (no table, no WAL file yet, a schema being written)
        return 0


def session_starts(times: list[str]) -> list[int]:
    """Indexes of the turns that open a session (the gap before them exceeds SESSION_GAP)."""
    parsed = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in times]
    return [0] + [i for i in range(1, len(parsed)) if parsed[i] - parsed[i - 1] > SESSION_GAP]


def check_store(db: Path, turns: list[dict[str, str]]) -> int:
    """Everything in the store is a whole, exact prefix of the file's turns, each with its
    complete episodic memory (row, vector, full-text row, audit event); returns its length."""
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')")
        assert conn.execute("SELECT id FROM users").fetchall() == [(USER,)]

        # Turns: exactly the file's first n, in order, each once, as written.
        rows = conn.execute(
            "SELECT id, user_id, ext_id, session_id, time, role, speaker, text, caption, "
            "image_ids FROM turns ORDER BY id"
        ).fetchall()
        n = len(rows)
        assert [r[2] for r in rows] == [t["id"] for t in turns[:n]]
        for row, turn in zip(rows, turns, strict=False):
            assert row[1:2] + row[4:] == (
                USER,
                turn["time"] + ":00",
                turn["role"],
                None,
                turn["text"],
                None,
                "[]",
            ), f"turn {turn['id']} was not stored as written"
        turn_ids = [r[0] for r in rows]
        turn_time = {r[0]: r[4] for r in rows}
        turn_text = {r[0]: f"{r[5]}: {r[7]}" for r in rows}  # what the episodic entry holds

        # Memories: one whole turn-level episodic memory per turn, none without its turn.
        memories = conn.execute(
            "SELECT id, user_id, type, key, content, keywords, image_ids, source_turn_ids, "
            "event_start, event_end, valid_from, valid_to, status, version, supersedes "
            "FROM memories ORDER BY id"
        ).fetchall()
        memory_of_turn: dict[int, int] = {}
        for m in memories:
            (source,) = json.loads(m[7])
            assert source not in memory_of_turn, f"turn {source} has two memories"
            memory_of_turn[source] = m[0]
            stamp = turn_time.get(source)
            assert m[1:7] + m[8:] == (
                USER,
                "episodic",
                None,
                turn_text.get(source),
                "[]",
                "[]",
                stamp,
                stamp,
                stamp,
                None,
                "active",
                1,
                None,
            ), f"memory {m[0]} is not the whole entry of turn {source}"
        assert sorted(memory_of_turn) == turn_ids, "a turn without its memory, or vice versa"
        memory_ids = [m[0] for m in memories]

        # Each memory's vector is there and is exactly the encoding of its text.
        vectors = dict(conn.execute("SELECT memory_id, vector FROM memory_vectors").fetchall())
        assert sorted(vectors) == memory_ids
        expected = HashingEmbedder().encode([m[4] for m in memories])
        stored = np.stack([np.frombuffer(vectors[mid], dtype=np.float32) for mid in memory_ids])
        assert np.array_equal(stored, expected.reshape(n, -1))

        # Each memory's full-text row is there, with its text.
        fts = dict(conn.execute("SELECT rowid, text FROM memory_fts").fetchall())
        assert fts == {m[0]: m[4] for m in memories}

        # One 'ingest' event per turn, touching exactly that turn's memory.
        events = conn.execute(
            "SELECT e.user_id, e.op, e.actor, e.turn_id, e.undoes, c.memory_id, c.before, "
            "c.after FROM memory_events e LEFT JOIN memory_event_changes c ON c.event_id = e.id "
            "ORDER BY e.id"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM memory_event_changes").fetchone() == (n,)
        assert sorted(e[3] for e in events) == turn_ids
        for user, op, actor, turn_id, undoes, memory_id, before, after in events:
            assert (user, op, actor, undoes) == (USER, "ingest", "ingest", None)
            assert memory_id == memory_of_turn[turn_id] and before is None
            assert json.loads(after)["id"] == memory_id

        # Sessions: split exactly where the file's gaps say, each spanning its turns, and no
        # session left behind without turns.
        session_of = [r[3] for r in rows]
        opened = [i for i in range(n) if i == 0 or session_of[i] != session_of[i - 1]]
        assert opened == session_starts([r[4] for r in rows])
        sessions = conn.execute(
            "SELECT id, user_id, start_time, end_time FROM sessions ORDER BY id"
        ).fetchall()
        assert [s[0] for s in sessions] == [session_of[i] for i in opened]
        bounds = [*opened, n]
        for s, first, end in zip(sessions, bounds, bounds[1:], strict=False):
            assert s[1:] == (USER, rows[first][4], rows[end - 1][4])

        for table in ("images", "personality_state", "personality_readings"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    return n


@pytest.mark.slow
def test_sigkill_mid_ingest_keeps_whole_batches_and_resumes(tmp_path: Path) -> None:
    turns_file = tmp_path / "turns.jsonl"
    turns = write_turns(turns_file)
    db = tmp_path / "memory.db"
    env = subprocess_env(tmp_path)
    command = ingest_command(turns_file, db)

    # 1. Start the ingest; SIGKILL it once whole batches are committed but far from all.
    log = tmp_path / "ingest-1.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + DEADLINE_S
            seen = 0
            while seen < KILL_AFTER:
                if process.poll() is not None:
                    pytest.fail(
                        f"the ingest ended (exit code {process.returncode}) with {seen} turns "
                        f"committed, before it could be killed; make TURNS bigger.\n"
                        + log.read_text(errors="replace")[-2000:]
                    )
                if time.monotonic() > deadline:
                    pytest.fail(f"the ingest committed only {seen} turns in {DEADLINE_S} s")
                seen = committed_turns(db)
                time.sleep(0.005)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, (
        f"the ingest ended by itself (exit code {process.returncode}) before SIGKILL landed; "
        "make TURNS bigger"
    )

    # 2. Reopen through the library (recovers the WAL), then check what survived.
    with MemoryStore.open(db, embedder=HashingEmbedder()) as store:
        survivors = store.turns(USER, limit=TURNS)
    assert len(survivors) >= seen, "turns seen committed before the kill are gone"
    kept = check_store(db, turns)
    assert seen <= kept < TURNS
    assert kept % INGEST_BATCH == 0, f"{kept} turns: a batch was half-written"

    # 3. The same ingest again completes the job: every turn exactly once.
    finished = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads(finished.stdout)
    assert (report["added"], report["skipped"]) == (TURNS - kept, kept)
    assert report["sessions"] == len(session_starts([t["time"] + ":00" for t in turns]))
    assert check_store(db, turns) == TURNS
    with closing(sqlite3.connect(db)) as conn:
        per_id = Counter(row[0] for row in conn.execute("SELECT ext_id FROM turns"))
    assert per_id == Counter({t["id"]: 1 for t in turns})

    with MemoryStore.open(db, embedder=HashingEmbedder()) as store:
        hits = store.search(USER, f"the {DISTINCTIVE}?", types=["episodic"], k=3)
    assert hits, "search found nothing after the resumed ingest"
    assert [t.ext_id for t in hits[0].turns] == [turns[-1]["id"]]
