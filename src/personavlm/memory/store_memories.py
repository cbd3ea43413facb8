"""The memory verbs of MemoryStore: add, update, invalidate, delete, apply, get, list, count,
history, undo, timeline and search. Each validates and embeds first, then runs one unit of
work: it happens whole or not at all."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from personavlm.errors import ValidationError
from personavlm.memory import search, writes
from personavlm.memory.memories import Listing
from personavlm.memory.records import Hit, Memory, MemoryEvent, MemoryStatus, MemoryType
from personavlm.memory.store_core import StoreCore
from personavlm.memory.validate import check_status, check_text, check_user_id
from personavlm.memory.writes import AddOp, DeleteOp, InvalidateOp, MemoryOp, UpdateOp
from personavlm.timeutil import TimeWindow, parse_time

__all__ = ["MemoryVerbs"]


class MemoryVerbs(StoreCore):
    def add(
        self,
        user_id: str,
        memory_type: MemoryType | str,
        content: str,
        *,
        key: str | None = None,
        keywords: Iterable[str] = (),
        source_turn_ids: Sequence[int] = (),
        image_ids: Sequence[str] = (),
        time: str | datetime | None = None,
        actor: str = "api",
    ) -> Memory:
        """Add a memory. For core and procedural memory an active record already holding
        `key` is superseded by the new one (one active record per key)."""
        op = AddOp(memory_type, content, key, keywords, source_turn_ids, image_ids, time)
        return self.apply(user_id, [op], actor=actor)[0]

    def update(
        self,
        user_id: str,
        memory_id: int,
        *,
        content: str | None = None,
        keywords: Iterable[str] | None = None,
        source_turn_ids: Sequence[int] | None = None,
        time: str | datetime | None = None,
        actor: str = "api",
    ) -> Memory:
        """Write a new version that supersedes the active memory `memory_id`; returns it."""
        op = UpdateOp(memory_id, content, keywords, source_turn_ids, time)
        return self.apply(user_id, [op], actor=actor)[0]

    def invalidate(
        self,
        user_id: str,
        memory_id: int,
        *,
        time: str | datetime | None = None,
        actor: str = "api",
    ) -> Memory:
        """Mark an active memory as no longer true from `time` on; it stays in history."""
        return self.apply(user_id, [InvalidateOp(memory_id, time)], actor=actor)[0]

    def delete(self, user_id: str, memory_id: int, *, actor: str = "api") -> Memory:
        """Remove a memory from retrieval and listings; history() and undo() still see it."""
        return self.apply(user_id, [DeleteOp(memory_id)], actor=actor)[0]

    def apply(self, user_id: str, ops: Sequence[MemoryOp], *, actor: str = "api") -> list[Memory]:
        """Apply `ops` in one transaction, one audit event each, in order; returns the memory
        each produced. All are validated (and their text embedded) first: one bad operation
        fails the whole call and nothing is written."""
        prepared = self.prepare(user_id, ops)
        with self.transaction(user_id) as tx:
            tx.users.ensure(user_id)
            return tx.memories.apply(user_id, prepared, actor)

    def prepare(self, user_id: str, ops: Sequence[MemoryOp]) -> list[writes.Prepared]:
        """Validate operations and embed their text, outside any transaction (the result
        goes to `tx.memories.apply` inside one)."""
        check_user_id(user_id)
        return [self._prepare(user_id, op) for op in ops]

    def get(self, user_id: str, memory_id: int) -> Memory:
        with self.reading() as tx:
            return tx.memories.get(user_id, memory_id)

    def list(
        self,
        user_id: str,
        *,
        types: Iterable[MemoryType | str] | None = None,
        status: MemoryStatus | str | None = MemoryStatus.ACTIVE,
        key: str | None = None,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        after: tuple[datetime, int] | None = None,
        newest_first: bool = False,
    ) -> builtins.list[Memory]:
        """Memories in event-time order (newest first if asked). status=None lists every
        status; start/end keep memories whose event time overlaps the window. `after` =
        (event_start, id) of the last memory of the previous page: a page boundary that
        inserts cannot shift."""
        listing = Listing(
            types=Listing.kinds(types),
            status=None if status is None else check_status(status),
            key=key,
            window=TimeWindow.parse(start, end),
            limit=limit,
            offset=offset,
            after=after,
            newest_first=newest_first,
        )
        with self.reading() as tx:
            tx.users.require(user_id)
            return tx.memories.list(user_id, listing)

    def count(
        self, user_id: str, *, status: MemoryStatus | str | None = MemoryStatus.ACTIVE
    ) -> dict[str, int]:
        """How many memories the user has per type (of `status`; None counts every status)."""
        with self.reading() as tx:
            tx.users.require(user_id)
            return tx.memories.count(user_id, status=status)

    def history(self, user_id: str, memory_id: int) -> builtins.list[MemoryEvent]:
        with self.reading() as tx:
            return tx.memories.history(user_id, memory_id)

    def event(self, user_id: str, event_id: int) -> MemoryEvent:
        with self.reading() as tx:
            return tx.memories.event(user_id, event_id)

    def undo(self, user_id: str, event_id: int, *, actor: str = "api") -> MemoryEvent:
        """Restore what event `event_id` changed; the undo is itself an event (returned)."""
        with self.transaction(user_id) as tx:
            return tx.memories.undo(user_id, event_id, actor=actor)

    def timeline(self, user_id: str, memory_id: int) -> builtins.list[Memory]:
        """The versions of this memory, oldest first, each with its validity interval."""
        with self.reading() as tx:
            return tx.memories.timeline(user_id, memory_id)

    def search(
        self,
        user_id: str,
        text: str,
        *,
        types: Iterable[MemoryType | str] | None = None,
        k: Mapping[MemoryType | str, int] | int | None = None,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        window: TimeWindow | None = None,
        exclude_ids: Iterable[int] = (),
        config: search.RetrievalConfig | None = None,
    ) -> builtins.list[Hit]:
        """Scored hits per type (semantic, episodic, procedural unless `types` says otherwise),
        each with its source turns and images, best first within a type. The time filter is
        `window`, or `start`/`end` parsed into one."""
        check_text(text, field="query")
        config = config or self.retrieval
        query = search.Query(
            user_id=user_id,
            text=text,
            vector=None if config.method is search.Method.BM25 else self._embed([text])[0],
            plan=search.plan(types, k),
            window=window or TimeWindow.parse(start, end),
            exclude=frozenset(int(i) for i in exclude_ids),
            config=config,
        )
        with self.reading() as tx:
            tx.users.require(user_id)
            return search.hydrate(tx, user_id, search.retrieve(tx.conn, query))

    def _prepare(self, user_id: str, op: MemoryOp) -> writes.Prepared:
        if isinstance(op, AddOp):
            kind, key, checked, when = writes.prepare_add(op)
            text = writes.index_text(kind, key, op.content, checked)
            return writes.Prepared(op, kind, key, checked, when, self._embed([text])[0])
        if isinstance(op, UpdateOp):
            with self.reading() as tx:
                old = tx.memories.get(user_id, op.memory_id)
            text, words, when = writes.prepare_update(op, old)
            return writes.Prepared(op, old.type, old.key, words, when, self._embed([text])[0])
        if isinstance(op, InvalidateOp):
            return writes.Prepared(op, time=None if op.time is None else parse_time(op.time))
        if isinstance(op, DeleteOp):
            return writes.Prepared(op)
        raise ValidationError(f"{op!r} is not a memory operation (AddOp, UpdateOp, ...)")
