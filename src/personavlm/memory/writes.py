"""Memory writes inside one transaction: the operations, and the functions that apply them.

A caller describes changes as operations (`AddOp`, `UpdateOp`, `InvalidateOp`, `DeleteOp`);
`MemoryStore.prepare` validates all of them and embeds their text first; `MemoryRepo.apply`
applies them inside the caller's transaction with one audit event per operation (so each can
be undone on its own). Every store verb (add, update, invalidate, delete) is one operation
through this path, and the agent's update phase applies a whole update the same way, in its
own unit of work with the personality reading and the job it finishes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from personavlm.embed.base import Vectors
from personavlm.errors import ConflictError, NotFoundError, ValidationError
from personavlm.memory import audit
from personavlm.memory.engine import Conn, IndexEntry
from personavlm.memory.images import ImageRepo
from personavlm.memory.records import (
    KEYED_TYPES,
    EventOp,
    Memory,
    MemoryStatus,
    MemoryType,
)
from personavlm.memory.rows import MEMORY_COLUMNS, memory_from_row, snapshot
from personavlm.memory.turnlog import TurnRepo
from personavlm.memory.validate import check_key, check_keywords, check_memory_type, check_text
from personavlm.timeutil import local_now, parse_time, to_storage, to_storage_or_none, utc_now

__all__ = [
    "AddOp",
    "DeleteOp",
    "InvalidateOp",
    "MemoryOp",
    "Prepared",
    "UpdateOp",
    "index_text",
    "insert_memory",
    "prepare_add",
    "prepare_update",
    "require_active",
    "run",
]


@dataclass(frozen=True, slots=True)
class AddOp:
    """A new memory. For core and procedural memory, `key` is required and an active record
    holding it is superseded by this one."""

    type: MemoryType | str
    content: str
    key: str | None = None
    keywords: Iterable[str] = ()
    source_turn_ids: Sequence[int] = ()
    image_ids: Sequence[str] = ()
    time: str | datetime | None = None


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """A new version of an active memory (content and/or keywords); the old one is
    superseded, never overwritten."""

    memory_id: int
    content: str | None = None
    keywords: Iterable[str] | None = None
    source_turn_ids: Sequence[int] | None = None
    time: str | datetime | None = None


@dataclass(frozen=True, slots=True)
class InvalidateOp:
    """An active memory stops being true at `time` (default now); nothing replaces it."""

    memory_id: int
    time: str | datetime | None = None


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """A memory leaves retrieval and listings; history and undo still see it."""

    memory_id: int


MemoryOp = AddOp | UpdateOp | InvalidateOp | DeleteOp


@dataclass(frozen=True, slots=True)
class Prepared:
    """An operation after validation, with its parsed time and (for add/update) the vector of
    its index text, computed before the transaction so the write lock is held briefly."""

    op: MemoryOp
    kind: MemoryType | None = None
    key: str | None = None
    keywords: tuple[str, ...] | None = None
    time: datetime | None = None
    vector: Vectors | None = None


def run(conn: Conn, user_id: str, prepared: Prepared, actor: str) -> Memory:
    """Apply one prepared operation inside the caller's write transaction; returns the memory
    it produced (the new row of an add or update, the retired row otherwise)."""
    op = prepared.op
    if isinstance(op, AddOp):
        return _run_add(conn, user_id, prepared, op, actor)
    if isinstance(op, UpdateOp):
        return _run_update(conn, user_id, prepared, op, actor)
    if isinstance(op, InvalidateOp):
        return _change_status(
            conn, user_id, op.memory_id, MemoryStatus.INVALIDATED, prepared.time, actor
        )
    return _change_status(conn, user_id, op.memory_id, MemoryStatus.DELETED, None, actor)


def prepare_add(op: AddOp) -> tuple[MemoryType, str | None, tuple[str, ...], datetime | None]:
    kind = check_memory_type(op.type)
    key = check_key(kind, op.key)
    check_text(op.content, field="content")
    words = check_keywords(op.keywords)
    return kind, key, words, None if op.time is None else parse_time(op.time)


def prepare_update(
    op: UpdateOp, old: Memory
) -> tuple[str, tuple[str, ...] | None, datetime | None]:
    """The index text of the new version, its checked keywords (None: keep the old) and
    time; ValidationError when the update changes nothing it could."""
    if op.content is None and op.keywords is None:
        raise ValidationError("update needs new content or new keywords")
    if op.content is not None:
        check_text(op.content, field="content")
    words = None if op.keywords is None else check_keywords(op.keywords)
    content = old.content if op.content is None else op.content
    text = index_text(old.type, old.key, content, old.keywords if words is None else words)
    return text, words, None if op.time is None else parse_time(op.time)


def _run_add(conn: Conn, user_id: str, prepared: Prepared, op: AddOp, actor: str) -> Memory:
    assert prepared.kind is not None and prepared.vector is not None
    kind, key = prepared.kind, prepared.key
    holder = _active_holder(conn, user_id, kind, key)
    valid_from = _effective_time(prepared.time, holder)
    span = _event_span(conn, user_id, op.source_turn_ids, valid_from)
    ImageRepo(conn).require(op.image_ids)
    changes: dict[int, audit.Change] = {}
    if holder is not None:
        retired = _retire(conn, holder, MemoryStatus.SUPERSEDED, valid_from)
        changes[holder.id] = (snapshot(holder), snapshot(retired))
    memory = insert_memory(
        conn,
        user_id,
        kind,
        key,
        op.content,
        prepared.keywords or (),
        op.image_ids,
        op.source_turn_ids,
        span,
        valid_from,
        prepared.vector,
        supersedes=holder,
    )
    changes[memory.id] = (None, snapshot(memory))
    audit.record_event(
        conn,
        user_id=user_id,
        op=EventOp.ADD,
        actor=actor,
        changes=changes,
        turn_id=op.source_turn_ids[-1] if op.source_turn_ids else None,
    )
    return memory


def _run_update(conn: Conn, user_id: str, prepared: Prepared, op: UpdateOp, actor: str) -> Memory:
    assert prepared.vector is not None
    old = audit.load_memory(conn, user_id, op.memory_id)
    require_active(old, "update")
    valid_from = _effective_time(prepared.time, old)
    sources = old.source_turn_ids if op.source_turn_ids is None else tuple(op.source_turn_ids)
    span = _updated_span(conn, user_id, old, op.source_turn_ids, valid_from)
    retired = _retire(conn, old, MemoryStatus.SUPERSEDED, valid_from)
    memory = insert_memory(
        conn,
        user_id,
        old.type,
        old.key,
        old.content if op.content is None else op.content,
        old.keywords if prepared.keywords is None else prepared.keywords,
        old.image_ids,
        sources,
        span,
        valid_from,
        prepared.vector,
        supersedes=old,
    )
    audit.record_event(
        conn,
        user_id=user_id,
        op=EventOp.UPDATE,
        actor=actor,
        changes={old.id: (snapshot(old), snapshot(retired)), memory.id: (None, snapshot(memory))},
        turn_id=sources[-1] if op.source_turn_ids else None,
    )
    return memory


def _change_status(
    conn: Conn,
    user_id: str,
    memory_id: int,
    status: MemoryStatus,
    explicit_time: datetime | None,
    actor: str,
) -> Memory:
    """Move a memory to `status`; every status but deleted also ends its validity."""
    op = EventOp.DELETE if status is MemoryStatus.DELETED else EventOp.INVALIDATE
    old = audit.load_memory(conn, user_id, memory_id)
    if status is MemoryStatus.DELETED:
        if old.status is MemoryStatus.DELETED:
            raise ConflictError(f"memory {memory_id} is already deleted")
        valid_to = None
    else:
        require_active(old, op.value)
        valid_to = _effective_time(explicit_time, old)
    new = _retire(conn, old, status, valid_to)
    audit.record_event(
        conn, user_id=user_id, op=op, actor=actor, changes={old.id: (snapshot(old), snapshot(new))}
    )
    return new


def index_text(
    memory_type: MemoryType, key: str | None, content: str, keywords: Sequence[str]
) -> str:
    """What both retrievers see of a memory: its key, content and keywords."""
    text = f"{key}: {content}" if key else content
    if keywords:
        text += "\nkeywords: " + ", ".join(keywords)
    return text


def insert_memory(
    conn: Conn,
    user_id: str,
    kind: MemoryType,
    key: str | None,
    content: str,
    keywords: Sequence[str],
    image_ids: Sequence[str],
    source_turn_ids: Sequence[int],
    span: tuple[datetime, datetime],
    valid_from: datetime,
    vector: Vectors,
    *,
    supersedes: Memory | None,
) -> Memory:
    created = utc_now()
    cursor = conn.execute(
        "INSERT INTO memories(user_id, type, key, content, keywords, image_ids, "
        "source_turn_ids, event_start, event_end, valid_from, valid_to, status, version, "
        "supersedes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'active', ?, ?, ?) "
        "RETURNING id",
        (
            user_id,
            kind.value,
            key,
            content,
            json.dumps(list(keywords), ensure_ascii=False),
            json.dumps(list(image_ids)),
            json.dumps(list(source_turn_ids)),
            to_storage(span[0]),
            to_storage(span[1]),
            to_storage(valid_from),
            1 if supersedes is None else supersedes.version + 1,
            None if supersedes is None else supersedes.id,
            to_storage(created),
        ),
    )
    memory_id = int(cursor.fetchone()[0])
    text = index_text(kind, key, content, keywords)
    conn.engine.index(conn, IndexEntry(memory_id, user_id, kind, text, vector))
    return audit.load_memory(conn, user_id, memory_id)


def _retire(conn: Conn, memory: Memory, status: MemoryStatus, valid_to: datetime | None) -> Memory:
    if valid_to is not None and valid_to < memory.valid_from:
        raise ConflictError(
            f"time {to_storage(valid_to)} is before memory {memory.id}'s valid_from "
            f"{to_storage(memory.valid_from)}; a memory cannot end before it began"
        )
    # Deleting keeps the validity interval as it was; the other transitions end it now.
    stamp = to_storage_or_none(memory.valid_to) if valid_to is None else to_storage(valid_to)
    return audit.set_state(conn, memory, status, stamp)


def _effective_time(explicit: datetime | None, retiring: Memory | None) -> datetime:
    """The time a write takes effect: the caller's, or now. 'Now' is read inside the write
    transaction and never falls before the valid_from of the record it retires: another
    writer may have committed a later one while we waited for the lock, and a clock that
    steps back (daylight saving) must not make a default time invalid."""
    if explicit is not None:
        return explicit
    now = local_now()
    return now if retiring is None else max(now, retiring.valid_from)


def require_active(memory: Memory, verb: str) -> None:
    if memory.status is not MemoryStatus.ACTIVE:
        raise ConflictError(
            f"cannot {verb} memory {memory.id}: it is {memory.status.value}; "
            "only active memories change (see timeline() for its current version)"
        )


def _active_holder(conn: Conn, user_id: str, kind: MemoryType, key: str | None) -> Memory | None:
    if kind not in KEYED_TYPES:
        return None
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ? AND type = ? AND key = ? "
        "AND status = 'active'",
        (user_id, kind.value, key),
    ).fetchone()
    return None if row is None else memory_from_row(row)


def _event_span(
    conn: Conn, user_id: str, turn_ids: Sequence[int], default: datetime
) -> tuple[datetime, datetime]:
    """Memory time is the time of the turns it came from; without turns, its valid_from."""
    if not turn_ids:
        return default, default
    found = TurnRepo(conn).by_ids(list(turn_ids))
    missing = [t for t in turn_ids if t not in found or found[t].user_id != user_id]
    if missing:
        raise NotFoundError(f"source turn ids {missing} are not turns of user {user_id!r}")
    times = [found[t].time for t in turn_ids]
    return min(times), max(times)


def _updated_span(
    conn: Conn,
    user_id: str,
    old: Memory,
    new_turns: Sequence[int] | None,
    valid_from: datetime,
) -> tuple[datetime, datetime]:
    if new_turns:
        return _event_span(conn, user_id, new_turns, valid_from)
    if old.type is MemoryType.EPISODIC:  # a corrected summary still covers the same event
        return old.event_start, old.event_end
    return valid_from, valid_from
