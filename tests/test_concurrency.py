"""Concurrency: several processes writing to the same user and store at once; every write is
present afterwards, and no 'database is locked' escapes to the caller.

The workers (tests/procs.py) are separate processes started with the 'spawn' method, so each
has its own SQLite connections exactly as separate programs would. They wait on one barrier
and open the store only after it, so even the creation of the database file and its schema is
contended.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

import procs
from conftest import ENGINES
from helpers import connect
from personavlm.embed import HashingEmbedder
from personavlm.memory import MemoryStatus, MemoryStore
from personavlm.memory.turnlog import SESSION_GAP
from personavlm.timeutil import parse_time

CTX = multiprocessing.get_context("spawn")
DEADLINE_S = 150.0  # a guard against a hung worker, far above the expected few seconds

MEMORY_WORKERS = 4
ROUNDS = 24  # per round 2 adds, every other round an update: 60 writes per worker
SHARED_USER = "shared-user"

TURN_USERS = 3
TURNS_PER_USER = 300

Results = dict[str, tuple[str, Any]]


@contextmanager
def running(
    targets: dict[str, tuple[Callable[..., None], tuple[Any, ...]]],
) -> Iterator[list[Any]]:
    """Start one spawned process per target; on the way out kill whatever is still alive."""
    processes = [
        CTX.Process(target=target, args=args, name=name, daemon=True)
        for name, (target, args) in targets.items()
    ]
    try:
        for process in processes:
            process.start()
        yield processes
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)


def collect(
    results_queue: Any,
    processes: list[Any],
    *,
    on_report: Callable[[Results], None] = lambda _: None,
) -> Results:
    """Every worker's report, waiting at most DEADLINE_S; a worker that dies without one,
    or a deadline passed, fails the test with what is known so far."""
    names = {p.name for p in processes}
    results: Results = {}
    deadline = time.monotonic() + DEADLINE_S
    while set(results) != names:
        if time.monotonic() > deadline:
            pytest.fail(f"workers {sorted(names - set(results))} did not report: {results}")
        try:
            name, status, payload = results_queue.get(timeout=0.5)
        except queue.Empty:
            dead = [
                p.name for p in processes if p.exitcode not in (None, 0) and p.name not in results
            ]
            if dead:
                pytest.fail(f"workers {dead} died without reporting: {results}")
            continue
        results[name] = (status, payload)
        on_report(results)
    return results


def assert_no_failures(results: Results) -> None:
    locked = {n: p for n, (_, p) in results.items() if "locked" in str(p).lower()}
    assert not locked, "'database is locked' reached the caller:\n" + "\n".join(
        f"--- {n}\n{p}" for n, p in locked.items()
    )
    failed = {n: p for n, (s, p) in results.items() if s != "ok"}
    assert not failed, "workers failed:\n" + "\n".join(f"--- {n}\n{p}" for n, p in failed.items())


def assert_integrity(db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')")


# ------------------------------------------------------------------------- one user


@pytest.mark.slow
@pytest.mark.parametrize("store_location", ENGINES, indirect=True)
def test_processes_writing_to_one_user_lose_nothing(store_location: str) -> None:
    # SQLite: the file is created by the workers themselves, all at once. PostgreSQL: the
    # database is empty, so the workers race to create the schema.
    db = store_location
    barrier = CTX.Barrier(MEMORY_WORKERS)
    results_queue = CTX.Queue()
    targets = {
        f"memory worker {w}": (
            procs.memory_worker,
            (db, SHARED_USER, w, ROUNDS, barrier, results_queue),
        )
        for w in range(MEMORY_WORKERS)
    }
    with running(targets) as processes:
        results = collect(results_queue, processes)
    assert_no_failures(results)
    reports = {int(name.rsplit(" ", 1)[1]): payload for name, (_, payload) in results.items()}
    writes_per_worker = 2 * ROUNDS + ROUNDS // 2
    assert all(r["writes"] == writes_per_worker for r in reports.values())

    if not db.startswith("postgresql://"):
        assert_integrity(Path(db))
    with procs.open_location(db) as store, connect(db) as conn:
        # One audit event per write call, each attributed to the worker that made it.
        events = conn.execute("SELECT user_id, actor, op FROM memory_events ORDER BY id").fetchall()
        assert len(events) == MEMORY_WORKERS * writes_per_worker
        assert {user for user, _, _ in events} == {SHARED_USER}
        assert Counter((actor, op) for _, actor, op in events) == {
            **{(f"worker-{w}", "add"): 2 * ROUNDS for w in range(MEMORY_WORKERS)},
            **{(f"worker-{w}", "update"): ROUNDS // 2 for w in range(MEMORY_WORKERS)},
        }
        # The workers really overlapped: run one after the other, the event log would switch
        # actor exactly MEMORY_WORKERS - 1 times.
        actors = [actor for _, actor, _ in events]
        switches = sum(a != b for a, b in itertools.pairwise(actors))
        assert switches >= MEMORY_WORKERS, f"writers did not interleave: {switches} switches"

        # Every semantic memory each worker added is there, superseded by its own update
        # where it made one.
        for w, report in reports.items():
            semantic = {int(i): mid for i, mid in report["semantic"].items()}
            updated = {int(i): mid for i, mid in report["updated"].items()}
            assert sorted(semantic) == list(range(ROUNDS))
            assert sorted(updated) == list(range(0, ROUNDS - 1, 2))
            for i, memory_id in semantic.items():
                original = store.get(SHARED_USER, memory_id)
                assert original.content == procs.semantic_text(w, i)
                assert original.type == "semantic"
                if i not in updated:
                    assert original.status is MemoryStatus.ACTIVE
                    assert original.valid_to is None
                    continue
                newer = store.get(SHARED_USER, updated[i])
                assert original.status is MemoryStatus.SUPERSEDED
                assert newer.content == procs.updated_text(w, i)
                assert newer.status is MemoryStatus.ACTIVE
                assert (newer.supersedes, newer.version) == (original.id, 2)
                assert original.valid_to == newer.valid_from
                assert [m.id for m in store.timeline(SHARED_USER, memory_id)] == [
                    original.id,
                    newer.id,
                ]
        contents = Counter(
            row[0] for row in conn.execute("SELECT content FROM memories WHERE type = 'semantic'")
        )
        assert contents == Counter(
            {procs.semantic_text(w, i): 1 for w in reports for i in range(ROUNDS)}
            | {procs.updated_text(w, i): 1 for w in reports for i in range(0, ROUNDS, 2)}
        )

        # The fought-over core key: one active record, and its chain holds every add of
        # every worker exactly once, in order, each version ending where the next begins.
        active = store.list(SHARED_USER, types=["core"], key="shared key")
        assert len(active) == 1
        assert conn.execute(
            "SELECT count(*) FROM memories WHERE type = 'core' AND status = 'active'"
        ).fetchone() == (1,)
        chain = store.timeline(SHARED_USER, active[0].id)
        core_ids = sorted(mid for r in reports.values() for mid in r["core"])
        assert [m.id for m in chain] == core_ids
        assert Counter(m.content for m in chain) == Counter(
            {procs.core_value(w, i): 1 for w in reports for i in range(ROUNDS)}
        )
        for w, report in reports.items():  # each worker's own adds keep their order
            mine = [m.content for m in chain if m.id in set(report["core"])]
            assert mine == [procs.core_value(w, i) for i in range(ROUNDS)]
        assert [m.version for m in chain] == list(range(1, len(chain) + 1))
        assert chain[0].supersedes is None
        assert chain[-1].status is MemoryStatus.ACTIVE and chain[-1].valid_to is None
        for older, newer in itertools.pairwise(chain):
            assert newer.supersedes == older.id
            assert older.status is MemoryStatus.SUPERSEDED
            assert older.valid_from <= newer.valid_from
            assert older.valid_to == newer.valid_from
            # The add that created `newer` retired `older` in the same event.
            created = store.history(SHARED_USER, newer.id)[0]
            assert created.op == "add" and created.changes[newer.id][0] is None
            assert set(created.changes) == {older.id, newer.id}

        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (
            MEMORY_WORKERS * (2 * ROUNDS + ROUNDS // 2),
        )


# ------------------------------------------------------------------------- turn log


@pytest.mark.slow
@pytest.mark.parametrize("store_location", ENGINES, indirect=True)
def test_processes_appending_turns_for_different_users(store_location: str) -> None:
    db = store_location
    users = [f"user-{u}" for u in range(TURN_USERS)]
    barrier = CTX.Barrier(TURN_USERS + 1)
    stop = CTX.Event()
    results_queue = CTX.Queue()
    targets: dict[str, tuple[Callable[..., None], tuple[Any, ...]]] = {
        f"turn worker {u}": (
            procs.turn_worker,
            (db, u, TURNS_PER_USER, barrier, results_queue),
        )
        for u in range(TURN_USERS)
    }
    targets["search worker"] = (procs.search_worker, (db, users, barrier, stop, results_queue))

    def stop_searching_when_appends_end(results: Results) -> None:
        if all(f"turn worker {u}" in results for u in range(TURN_USERS)):
            stop.set()

    with running(targets) as processes:
        results = collect(results_queue, processes, on_report=stop_searching_when_appends_end)
    assert_no_failures(results)
    for u in range(TURN_USERS):
        report = results[f"turn worker {u}"][1]
        assert report["added"] == TURNS_PER_USER
        assert report["skipped"] == report["resent"] > 0
    searched = results["search worker"][1]
    assert searched["searches"] >= TURN_USERS and searched["hits"] > 0

    if not db.startswith("postgresql://"):
        assert_integrity(Path(db))
    with procs.open_location(db) as store, connect(db) as conn:
        assert sorted(store.users()) == users
        for u, user in enumerate(users):
            plan = procs.turn_plan(u, TURNS_PER_USER)
            turns = store.turns(user, limit=2 * TURNS_PER_USER)
            # Every turn present once, as sent, in order.
            assert [t.ext_id for t in turns] == [p["id"] for p in plan]
            for turn, sent in zip(turns, plan, strict=True):
                assert (turn.time, turn.role, turn.text) == (
                    parse_time(sent["time"]),
                    sent["role"],
                    sent["text"],
                )
            # Sessions: a new one exactly where the gap exceeds SESSION_GAP, each spanning
            # its turns, none empty, none shared with another user.
            starts = [0] + [
                i for i in range(1, len(turns)) if turns[i].time - turns[i - 1].time > SESSION_GAP
            ]
            assert [
                i
                for i in range(len(turns))
                if i == 0 or turns[i].session_id != turns[i - 1].session_id
            ] == starts
            sessions = conn.execute(
                "SELECT id, start_time, end_time FROM sessions WHERE user_id = ? ORDER BY id",
                (user,),
            ).fetchall()
            assert len(sessions) == len(starts) == len({t.session_id for t in turns})
            for (session_id, start, end), first in zip(sessions, starts, strict=True):
                members = [t for t in turns if t.session_id == session_id]
                assert members and members[0] is turns[first]
                assert (parse_time(start), parse_time(end)) == (
                    members[0].time,
                    members[-1].time,
                )
            # Each turn has exactly one turn-level episodic memory and one ingest event.
            sources = [
                row[0]
                for row in conn.execute(
                    "SELECT source_turn_ids FROM memories WHERE user_id = ? AND type = 'episodic'",
                    (user,),
                )
            ]
            assert sorted(sources) == sorted(f"[{t.id}]" for t in turns)
            assert conn.execute(
                "SELECT count(*), count(DISTINCT turn_id) FROM memory_events "
                "WHERE user_id = ? AND op = 'ingest'",
                (user,),
            ).fetchone() == (TURNS_PER_USER, TURNS_PER_USER)
        # The appenders really overlapped (run one after another, the log would switch
        # user TURN_USERS - 1 times).
        owners = [row[0] for row in conn.execute("SELECT user_id FROM turns ORDER BY id")]
        switches = sum(a != b for a, b in itertools.pairwise(owners))
        assert switches >= TURN_USERS, f"appenders did not interleave: {switches} switches"
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (
            TURN_USERS * TURNS_PER_USER,
        )
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (
            TURN_USERS * TURNS_PER_USER,
        )


@pytest.mark.slow
def test_two_ingests_of_one_file_for_one_user_at_once(tmp_path: Path) -> None:
    # Both runs check the log before writing and find nothing; whichever commits a batch
    # second must skip those turns, not fail on them.
    import json
    import os
    import subprocess
    import sys

    turns = [
        {
            "id": f"t{i:05d}",
            "time": f"2024-01-{1 + i // 1440:02d} {i // 60 % 24:02d}:{i % 60:02d}",
            "role": "user",
            "text": f"turn {i} about walrus {i % 97}",
        }
        for i in range(3000)
    ]
    path = tmp_path / "turns.jsonl"
    path.write_text("\n".join(json.dumps(t) for t in turns) + "\n")
    db = tmp_path / "m.db"
    MemoryStore.open(db, embedder=HashingEmbedder()).close()  # the file exists for both
    exe = Path(sys.executable).with_name("personavlm")
    env = {**os.environ, "PERSONAVLM_HOME": str(tmp_path / "home")}
    argv = [
        str(exe),
        "ingest",
        "--user",
        "u",
        str(path),
        "--db",
        str(db),
        "--embedder",
        "hashing",
        "--json",
    ]
    runs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=DEADLINE_S) for run in runs]
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["added"] for r in reports) == len(turns)
    assert all(r["added"] + r["skipped"] == len(turns) for r in reports)
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT ext_id) FROM turns").fetchone() == (
            len(turns),
            len(turns),
        )
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == len(turns)
