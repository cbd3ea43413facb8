"""The append-only audit log of memory changes, and what is built on it: history, undo,
timeline.

Every call that changes memory writes one `memory_events` row and, per memory it touched, a
`memory_event_changes` row with JSON snapshots before and after. Memory content never changes
in place (an update is a new row), so undoing an event only has to put back each touched row's
`status` and `valid_to` — which makes undo exact, and undo of an undo a redo.
"""

from __future__ import annotations

import json
from typing import Any

from personavlm.errors import ConflictError, NotFoundError
from personavlm.memory.engine import Conn, integrity_errors
from personavlm.memory.records import EventOp, Memory, MemoryEvent, MemoryStatus
from personavlm.memory.rows import MEMORY_COLUMNS, memory_from_row, snapshot
from personavlm.timeutil import from_storage, to_storage, to_storage_or_none, utc_now

__all__ = ["history", "load_memory", "record_event", "timeline", "undo"]

Snapshot = dict[str, Any]
Change = tuple[Snapshot | None, Snapshot | None]


def load_memory(conn: Conn, user_id: str, memory_id: int) -> Memory:
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ? AND user_id = ?",
        (memory_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no memory {memory_id} for user {user_id!r}")
    return memory_from_row(row)


def record_event(
    conn: Conn,
    *,
    user_id: str,
    op: EventOp,
    actor: str,
    changes: dict[int, Change],
    turn_id: int | None = None,
    undoes: int | None = None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO memory_events(user_id, op, actor, time, turn_id, undoes) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (user_id, op.value, actor, to_storage(utc_now()), turn_id, undoes),
    )
    event_id = int(cursor.fetchone()[0])
    conn.executemany(
        "INSERT INTO memory_event_changes(event_id, memory_id, before, after) VALUES (?, ?, ?, ?)",
        [
            (event_id, memory_id, _dump(before), _dump(after))
            for memory_id, (before, after) in changes.items()
        ],
    )
    return event_id


def history(conn: Conn, user_id: str, memory_id: int) -> list[MemoryEvent]:
    load_memory(conn, user_id, memory_id)  # NotFoundError for another user's memory
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT event_id FROM memory_event_changes WHERE memory_id = ? ORDER BY event_id",
            (memory_id,),
        )
    ]
    return [load_event(conn, user_id, event_id) for event_id in ids]


def load_event(conn: Conn, user_id: str, event_id: int) -> MemoryEvent:
    row = conn.execute(
        "SELECT id, user_id, op, actor, time, turn_id, undoes FROM memory_events "
        "WHERE id = ? AND user_id = ?",
        (event_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no memory event {event_id} for user {user_id!r}")
    changes = {
        memory_id: (_load(before), _load(after))
        for memory_id, before, after in conn.execute(
            "SELECT memory_id, before, after FROM memory_event_changes WHERE event_id = ? "
            "ORDER BY memory_id",
            (event_id,),
        )
    }
    return MemoryEvent(
        id=row[0],
        user_id=row[1],
        op=EventOp(row[2]),
        actor=row[3],
        time=from_storage(row[4]),
        turn_id=row[5],
        undoes=row[6],
        changes=changes,
    )


def undo(conn: Conn, user_id: str, event_id: int, *, actor: str) -> int:
    """Put every memory the event touched back to its state before it; returns the new
    event's id. Refuses (ConflictError) when a touched memory changed after the event."""
    event = load_event(conn, user_id, event_id)
    current = {mid: load_memory(conn, user_id, mid) for mid in event.changes}
    for memory_id, (_, after) in event.changes.items():
        _check_unchanged_since(conn, event, current[memory_id], after)
    targets = {
        mid: _state_before(before, current[mid]) for mid, (before, _) in event.changes.items()
    }
    # Leave "active" for last: undoing an update first retires the newer version, then
    # reactivates the older, so the one-active-per-key index never sees two.
    order = sorted(targets, key=lambda mid: targets[mid][0] == MemoryStatus.ACTIVE)
    changes: dict[int, Change] = {}
    for memory_id in order:
        status, valid_to = targets[memory_id]
        after_memory = set_state(conn, current[memory_id], status, valid_to)
        changes[memory_id] = (snapshot(current[memory_id]), snapshot(after_memory))
    return record_event(
        conn, user_id=user_id, op=EventOp.UNDO, actor=actor, changes=changes, undoes=event_id
    )


def set_state(conn: Conn, memory: Memory, status: MemoryStatus, valid_to: str | None) -> Memory:
    try:
        conn.execute(
            "UPDATE memories SET status = ?, valid_to = ? WHERE id = ?",
            (status.value, valid_to, memory.id),
        )
    except integrity_errors() as exc:
        raise ConflictError(
            f"memory {memory.id} cannot become active again: {memory.type.value} key "
            f"{memory.key!r} already has another active memory; delete or undo that one first"
        ) from exc
    return load_memory(conn, memory.user_id, memory.id)


def timeline(conn: Conn, user_id: str, memory_id: int) -> list[Memory]:
    """The supersedes chain through this memory, oldest first.

    Going forward, a version that was undone (deleted) gives way to a live successor; the
    chain shows what was believed when, not every abandoned edit (history() has those).
    """
    memory = load_memory(conn, user_id, memory_id)
    chain = [memory]
    while chain[0].supersedes is not None:
        chain.insert(0, load_memory(conn, user_id, chain[0].supersedes))
    while (successor := _successor(conn, user_id, chain[-1].id)) is not None:
        chain.append(successor)
    return chain


def _successor(conn: Conn, user_id: str, memory_id: int) -> Memory | None:
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE supersedes = ? AND user_id = ? "
        "ORDER BY status = 'deleted', id DESC LIMIT 1",
        (memory_id, user_id),
    ).fetchone()
    return None if row is None else memory_from_row(row)


def _check_unchanged_since(
    conn: Conn, event: MemoryEvent, memory: Memory, after: Snapshot | None
) -> None:
    expected = (after or {}).get("status"), (after or {}).get("valid_to")
    if (memory.status.value, to_storage_or_none(memory.valid_to)) == expected:
        return
    later = conn.execute(
        "SELECT e.id, e.op FROM memory_event_changes c JOIN memory_events e ON e.id = c.event_id "
        "WHERE c.memory_id = ? AND c.event_id > ? ORDER BY e.id DESC LIMIT 1",
        (memory.id, event.id),
    ).fetchone()
    by = f" by event {later[0]} ({later[1]})" if later else ""
    raise ConflictError(
        f"cannot undo event {event.id}: memory {memory.id} was changed since{by}; "
        "undo the later events first (newest first)"
    )


def _state_before(before: Snapshot | None, memory: Memory) -> tuple[MemoryStatus, str | None]:
    if before is None:  # the event created it: undoing the creation deletes it
        return MemoryStatus.DELETED, to_storage_or_none(memory.valid_to)
    return MemoryStatus(before["status"]), before.get("valid_to")


def _dump(value: Snapshot | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _load(value: str | None) -> Snapshot | None:
    return None if value is None else dict(json.loads(value))
