"""The memories repository: the four memory types with history, undo and timeline.

Writes are operations (memory/writes.py) applied with one audit event each (memory/audit.py);
content never changes in place. Reads are the listing, counts, history, timeline and the
turn-level episodic entry every stored turn gets.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from personavlm.embed.base import Vectors
from personavlm.errors import ValidationError
from personavlm.memory import audit, writes
from personavlm.memory.engine import Conn
from personavlm.memory.records import EventOp, Memory, MemoryEvent, MemoryStatus, MemoryType, Turn
from personavlm.memory.rows import MEMORY_COLUMNS, memory_from_row, snapshot
from personavlm.memory.validate import check_memory_type, check_status
from personavlm.timeutil import TimeWindow, to_storage

__all__ = ["Listing", "MemoryRepo"]


@dataclass(frozen=True, slots=True)
class Listing:
    """Which memories a listing shows, checked: types (None: all), status (None: every
    status), key, the event-time window, and the page (limit, offset, keyset `after` =
    (event_start, id) of the previous page's last memory)."""

    types: tuple[MemoryType, ...] | None = None
    status: MemoryStatus | None = MemoryStatus.ACTIVE
    key: str | None = None
    window: TimeWindow = field(default_factory=TimeWindow)
    limit: int = 100
    offset: int = 0
    after: tuple[datetime, int] | None = None
    newest_first: bool = False

    def __post_init__(self) -> None:
        if self.limit < 1 or self.offset < 0:
            raise ValidationError(
                f"limit must be >= 1 and offset >= 0, got {self.limit}, {self.offset}"
            )

    @staticmethod
    def kinds(types: Iterable[MemoryType | str] | None) -> tuple[MemoryType, ...] | None:
        """Caller-given types, checked (None: every type)."""
        return None if types is None else tuple(check_memory_type(t) for t in types)


class MemoryRepo:
    """Memory rows and their audit log inside one transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def apply(self, user_id: str, prepared: Sequence[writes.Prepared], actor: str) -> list[Memory]:
        """Apply prepared operations in order, one audit event each; the memory each made."""
        return [writes.run(self._conn, user_id, p, actor) for p in prepared]

    def get(self, user_id: str, memory_id: int) -> Memory:
        return audit.load_memory(self._conn, user_id, memory_id)

    def add_turn_entry(
        self, user_id: str, turn: Turn, text: str, vector: Vectors, actor: str
    ) -> Memory:
        """The turn-level episodic memory of a stored turn (searchable before any model
        summarised it), recorded as an ingest event."""
        memory = writes.insert_memory(
            self._conn,
            user_id,
            MemoryType.EPISODIC,
            None,
            text,
            (),
            turn.image_ids,
            (turn.id,),
            (turn.time, turn.time),
            turn.time,
            vector,
            supersedes=None,
        )
        audit.record_event(
            self._conn,
            user_id=user_id,
            op=EventOp.INGEST,
            actor=actor,
            changes={memory.id: (None, snapshot(memory))},
            turn_id=turn.id,
        )
        return memory

    def record_skip(self, user_id: str, turn_id: int, actor: str) -> MemoryEvent:
        """Say in the audit log that a turn's update was given up (a dropped job): the
        memory holds nothing from that turn, and history shows why."""
        return self.event(
            user_id,
            audit.record_event(
                self._conn, user_id=user_id, op=EventOp.SKIP, actor=actor, changes={},
                turn_id=turn_id,
            ),
        )  # fmt: skip

    def list(self, user_id: str, listing: Listing) -> builtins.list[Memory]:
        """Memories in event-time order (newest first if asked), keyset-paged by `after`."""
        sql = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ?"
        params: builtins.list[object] = [user_id]
        if listing.types is not None:
            sql += f" AND type IN ({','.join('?' * len(listing.types))})"
            params.extend(t.value for t in listing.types)
        if listing.status is not None:
            sql += " AND status = ?"
            params.append(listing.status.value)
        if listing.key is not None:
            sql += " AND key = ?"
            params.append(listing.key)
        clauses, bounds = listing.window.sql("event_start", "event_end")
        sql += clauses
        params.extend(bounds)
        beyond, order = ("<", "DESC") if listing.newest_first else (">", "ASC")
        if listing.after is not None:
            sql += f" AND (event_start {beyond} ? OR (event_start = ? AND id {beyond} ?))"
            stamp = to_storage(listing.after[0])
            params.extend([stamp, stamp, int(listing.after[1])])
        sql += f" ORDER BY event_start {order}, id {order} LIMIT ? OFFSET ?"
        params.extend([listing.limit, listing.offset])
        return [memory_from_row(row) for row in self._conn.execute(sql, params)]

    def count(
        self, user_id: str, *, status: MemoryStatus | str | None = MemoryStatus.ACTIVE
    ) -> dict[str, int]:
        """How many memories the user has per type (of `status`; None: every status)."""
        sql = "SELECT type, count(*) FROM memories WHERE user_id = ?"
        params: list[object] = [user_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(check_status(status).value)
        found = dict(self._conn.execute(sql + " GROUP BY type", params).fetchall())
        return {kind.value: int(found.get(kind.value, 0)) for kind in MemoryType}

    def every(self, user_id: str) -> builtins.list[Memory]:
        """Every memory of the user, every status, by id (exports)."""
        rows = self._conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [memory_from_row(row) for row in rows]

    def events_of(self, user_id: str) -> builtins.list[MemoryEvent]:
        """Every audit event of the user, oldest first (exports)."""
        rows = self._conn.execute(
            "SELECT id FROM memory_events WHERE user_id = ? ORDER BY id", (user_id,)
        ).fetchall()
        return [self.event(user_id, int(row[0])) for row in rows]

    def history(self, user_id: str, memory_id: int) -> builtins.list[MemoryEvent]:
        return audit.history(self._conn, user_id, memory_id)

    def event(self, user_id: str, event_id: int) -> MemoryEvent:
        return audit.load_event(self._conn, user_id, event_id)

    def undo(self, user_id: str, event_id: int, *, actor: str) -> MemoryEvent:
        """Restore what the event changed; the undo is itself an event (returned)."""
        return self.event(user_id, audit.undo(self._conn, user_id, event_id, actor=actor))

    def timeline(self, user_id: str, memory_id: int) -> builtins.list[Memory]:
        return audit.timeline(self._conn, user_id, memory_id)
