"""Code that runs in worker processes of the concurrency tests (multiprocessing 'spawn').

Spawned children import their target by module name, so the workers live here, importable
without pytest. Each worker waits on a shared barrier so all of them hit the store at once,
and reports back on a queue one tuple: (name, "ok", payload) or (name, "error", traceback).
A worker never lets an exception escape: the parent must see every failure's text.
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from personavlm.embed import HashingEmbedder
from personavlm.errors import NotFoundError
from personavlm.memory import MemoryStore, TurnInput

BARRIER_TIMEOUT_S = 120.0
TURN_GAP_MINUTES = (1, 3, 7, 20, 45, 61, 180)  # 61 and 180 exceed the 60-minute session gap


def _report(queue: Any, name: str, body: Callable[[], Any]) -> None:
    try:
        queue.put((name, "ok", body()))
    except BaseException:
        queue.put((name, "error", traceback.format_exc()))


# --------------------------------------------------------------- memory verbs, one user


def semantic_text(worker: int, i: int) -> str:
    return f"worker {worker} fact {i}: the lantern number {worker * 1000 + i} glows amber"


def updated_text(worker: int, i: int) -> str:
    return f"worker {worker} fact {i} revised: the lantern number {worker * 1000 + i} glows blue"


def open_location(db: str) -> MemoryStore:
    """The store at `db` (a SQLite path or a PostgreSQL URL), pictures in a temp folder for
    PostgreSQL (a SQLite store keeps them beside its file)."""
    blobs = None
    if db.startswith("postgresql://"):
        blobs = Path(tempfile.gettempdir()) / "personavlm-test-blobs"
    return MemoryStore.open(db, embedder=HashingEmbedder(), blob_dir=blobs)


def core_value(worker: int, i: int) -> str:
    return f"value {worker}-{i}"


def memory_worker(db: str, user: str, worker: int, rounds: int, barrier: Any, queue: Any) -> None:
    """`rounds` rounds of: add a semantic memory, add to the shared core key, and every odd
    round update the previous round's semantic memory; a search or list in between.
    Returns the ids it wrote, in order, so the parent can check each one."""

    def body() -> dict[str, Any]:
        barrier.wait(BARRIER_TIMEOUT_S)
        actor = f"worker-{worker}"
        writes = 0
        semantic: dict[int, int] = {}  # round -> id of the added semantic memory
        updated: dict[int, int] = {}  # round -> id of the version that superseded it
        core: list[int] = []
        with open_location(db) as store:
            for i in range(rounds):
                memory = store.add(user, "semantic", semantic_text(worker, i), actor=actor)
                semantic[i] = memory.id
                writes += 1
                memory = store.add(
                    user, "core", core_value(worker, i), key="shared key", actor=actor
                )
                core.append(memory.id)
                writes += 1
                if i % 2 == 1:
                    memory = store.update(
                        user, semantic[i - 1], content=updated_text(worker, i - 1), actor=actor
                    )
                    updated[i - 1] = memory.id
                    writes += 1
                if i % 3 == 0:
                    store.search(user, f"lantern number {worker * 1000 + i} amber")
                else:
                    store.list(user, types=["semantic", "core"], limit=50)
        return {"writes": writes, "semantic": semantic, "updated": updated, "core": core}

    _report(queue, f"memory worker {worker}", body)


# --------------------------------------------------------------- turn log, many users


def turn_plan(user_index: int, count: int) -> list[dict[str, str]]:
    """The turns one appender writes: deterministic, time-ordered, with session gaps."""
    time = datetime(2024, 5, 1, 8, 0) + timedelta(days=user_index)
    turns = []
    for i in range(count):
        time += timedelta(minutes=TURN_GAP_MINUTES[(i * 7 + user_index) % len(TURN_GAP_MINUTES)])
        turns.append(
            {
                "id": f"u{user_index}-t{i}",
                "time": time.strftime("%Y-%m-%d %H:%M"),
                "role": "user" if i % 2 == 0 else "assistant",
                "text": f"user {user_index} turn {i} mentions heron{user_index} and kayak {i}",
            }
        )
    return turns


def chunk_sizes(user_index: int, count: int) -> list[int]:
    sizes, total, step = [], 0, 0
    while total < count:
        size = min(1 + (step * 13 + user_index * 5) % 37, count - total)
        sizes.append(size)
        total += size
        step += 1
    return sizes


RESENT = 3  # each call after the first re-sends this many turns of the previous call


def turn_worker(db: str, user_index: int, count: int, barrier: Any, queue: Any) -> None:
    """Append the user's turns in calls of varying size; each call also re-sends the last
    few turns of the call before (append_turns must skip them: it is idempotent by id)."""

    def body() -> dict[str, int]:
        user = f"user-{user_index}"
        plan = [
            TurnInput.create(time=t["time"], role=t["role"], text=t["text"], ext_id=t["id"])
            for t in turn_plan(user_index, count)
        ]
        barrier.wait(BARRIER_TIMEOUT_S)
        added = skipped = resent = calls = 0
        with open_location(db) as store:
            start = 0
            for size in chunk_sizes(user_index, count):
                begin = max(0, start - RESENT)
                report = store.append_turns(
                    user, plan[begin : start + size], batch_size=1 + calls % 8
                )
                added += report.added
                skipped += report.skipped
                resent += start - begin
                calls += 1
                start += size
        return {"added": added, "skipped": skipped, "resent": resent, "calls": calls}

    _report(queue, f"turn worker {user_index}", body)


def search_worker(db: str, users: list[str], barrier: Any, stop: Any, queue: Any) -> None:
    """Search every user's memories until told to stop, then once more. A user who has no
    turns yet is a NotFoundError (expected early on); any other exception is a failure."""

    def body() -> dict[str, int]:
        barrier.wait(BARRIER_TIMEOUT_S)
        searches = not_yet = hits = 0
        with open_location(db) as store:
            last_round = False
            while True:
                last_round = stop.is_set()
                for index, user in enumerate(users):
                    try:
                        found = store.search(user, f"heron{index} kayak", k=5)
                        store.turns(user, limit=20)
                    except NotFoundError:
                        not_yet += 1
                        continue
                    searches += 1
                    hits += len(found)
                if last_round:
                    break
        return {"searches": searches, "not_yet": not_yet, "hits": hits}

    _report(queue, "search worker", body)
