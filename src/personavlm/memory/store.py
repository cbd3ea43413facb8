"""MemoryStore: the multi-user memory database and its verbs.

    store = MemoryStore.open("memory.db", embedder=personavlm.embed.load("minilm"))
    m = store.add("ann", "semantic", "Ann's dog is called Bobby", time="2024-03-02 10:00")
    store.search("ann", "what is my dog's name?")
    store.update("ann", m.id, content="Ann's dog is called Bobby; he is a beagle")
    store.history("ann", m.id); store.undo("ann", event_id)

Verbs: add, get, list, update, invalidate, delete, history, undo, timeline, search, plus the
turn log (append_turns, turns) and personality (record_personality, personality,
personality_readings). Every verb validates all input before it opens a transaction, and a
write is one transaction: it happens whole or not at all.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from personavlm.embed.base import Embedder, Vectors
from personavlm.errors import (
    ConfigError,
    ConflictError,
    EmbedderMismatchError,
    NotFoundError,
    ValidationError,
)
from personavlm.media.blobs import BlobStore, ImageSource
from personavlm.memory import audit, jobs, keys, personality_log, search, turnlog, users, writes
from personavlm.memory.engine import Conn, Engine
from personavlm.memory.records import (
    DEFAULT_K,
    EventOp,
    Hit,
    ImageRef,
    IngestReport,
    Memory,
    MemoryEvent,
    MemoryStatus,
    MemoryType,
    Turn,
)
from personavlm.memory.rows import (
    MEMORY_COLUMNS,
    TURN_COLUMNS,
    memory_from_row,
    snapshot,
    turn_from_row,
)
from personavlm.memory.sqlite import SqliteEngine
from personavlm.memory.turnlog import TurnInput
from personavlm.memory.users import UserDeletion
from personavlm.memory.validate import (
    check_keywords,
    check_memory_type,
    check_status,
    check_text,
    check_user_id,
)
from personavlm.memory.writes import AddOp, DeleteOp, InvalidateOp, MemoryOp, UpdateOp
from personavlm.personality import PersonalityState, Reading, SkipRule
from personavlm.timeutil import from_storage, local_now, parse_time, to_storage, utc_now

__all__ = ["Exchange", "MemoryStore"]

# The store has a verb named `list`; inside the class body that name shadows the builtin, so
# the return types are spelled through these aliases.
Memories = list[Memory]
Events = list[MemoryEvent]
Hits = list[Hit]
Turns = list[Turn]


@dataclass(frozen=True, slots=True)
class Exchange:
    """What record_exchange stored: the two turns, the session their arrival closed (if
    any), and the update job queued for them."""

    user_turn: Turn
    assistant_turn: Turn
    closed_session: int | None
    job_id: int


# Turns per ingest transaction: large enough that per-transaction costs vanish, small enough
# that a crash loses at most this many turns of work (the next ingest redoes them).
INGEST_BATCH = 256


class MemoryStore:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        blobs: BlobStore,
        *,
        retrieval: search.RetrievalConfig = search.SHIPPED,
    ) -> None:
        self._engine = engine
        self.embedder = embedder
        self.blobs = blobs
        self.retrieval = retrieval

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        embedder: Embedder,
        blob_dir: Path | None = None,
        retrieval: search.RetrievalConfig = search.SHIPPED,
        check_embedder: bool = True,
        create: bool = True,
    ) -> MemoryStore:
        """Open the store at `path` (a SQLite file, or a postgresql:// URL), creating it
        unless `create` is False.

        Raises EmbedderMismatchError when the store's vectors came from another encoder,
        unless check_embedder is False (only `reindex` should do that), and ConfigError for
        a missing store when create is False (read-only callers: a typo in a path must not
        conjure up an empty store).
        """
        engine: Engine
        if is_postgres_url(str(path)):
            from personavlm.memory.postgres import PostgresEngine

            if blob_dir is None:
                raise ConfigError(
                    "a PostgreSQL store keeps its pictures in a folder: give blob_dir "
                    "(the CLI uses $PERSONAVLM_HOME/blobs)"
                )
            engine = PostgresEngine(str(path), dim=embedder.dim, create=create)
        else:
            db_path = Path(path)
            if not create and not db_path.is_file():
                raise ConfigError(
                    f"no personavlm store at {db_path}: check --db / PERSONAVLM_DB, or add or "
                    "ingest something first"
                )
            engine = SqliteEngine(db_path, dim=embedder.dim)
            blob_dir = blob_dir or default_blob_dir(db_path)
        store = cls(engine, embedder, BlobStore(blob_dir), retrieval=retrieval)
        try:
            store._claim_encoder(check_embedder)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        """Where the data lives: the SQLite file, or the PostgreSQL URL without password."""
        return self._engine.location

    @property
    def engine_kind(self) -> str:
        return self._engine.kind

    # ----------------------------------------------------------------- memory verbs

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

    def get(self, user_id: str, memory_id: int) -> Memory:
        with self._engine.read() as conn:
            return audit.load_memory(conn, user_id, memory_id)

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
    ) -> Memories:
        """Memories in event-time order (newest first if asked). status=None lists every
        status; start/end keep memories whose event time overlaps the window. `after` =
        (event_start, id) of the last memory of the previous page: a page boundary that
        inserts cannot shift."""
        sql = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ?"
        params: list[object] = [user_id]
        if types is not None:
            kinds = [check_memory_type(t).value for t in types]
            sql += f" AND type IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        if status is not None:
            sql += " AND status = ?"
            params.append(check_status(status).value)
        if key is not None:
            sql += " AND key = ?"
            params.append(key)
        if start is not None:
            sql += " AND event_end >= ?"
            params.append(to_storage(parse_time(start, field="start")))
        if end is not None:
            sql += " AND event_start <= ?"
            params.append(to_storage(parse_time(end, field="end")))
        beyond, order = ("<", "DESC") if newest_first else (">", "ASC")
        if after is not None:
            sql += f" AND (event_start {beyond} ? OR (event_start = ? AND id {beyond} ?))"
            stamp = to_storage(after[0])
            params.extend([stamp, stamp, int(after[1])])
        if limit < 1 or offset < 0:
            raise ValidationError(f"limit must be >= 1 and offset >= 0, got {limit}, {offset}")
        sql += f" ORDER BY event_start {order}, id {order} LIMIT ? OFFSET ?"
        params.extend([limit, offset])
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            return [memory_from_row(row) for row in conn.execute(sql, params)]

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

    def apply(
        self,
        user_id: str,
        ops: Sequence[MemoryOp],
        *,
        actor: str = "api",
        reading: Reading | None = None,
        reading_turn_id: int | None = None,
        reading_time: str | datetime | None = None,
        finish_job: int | None = None,
    ) -> Memories:
        """Apply `ops` in one transaction, one audit event each, in order; returns the memory
        each produced. All are validated (and their text embedded) before the transaction:
        one bad operation fails the whole call and nothing is written.

        The agent's update phase also passes the turn's personality `reading` (absorbed with
        PEM, idempotent per `reading_turn_id`) and the update job it completes, so a crash
        leaves either all of an update or none of it.
        """
        check_user_id(user_id)
        prepared = [self._prepare(user_id, op) for op in ops]
        when = None if reading_time is None else parse_time(reading_time, field="reading time")
        with self._engine.write(_scope(user_id)) as conn:
            _ensure_user(conn, user_id)
            results = [writes.run(conn, user_id, p, actor) for p in prepared]
            if reading is not None:
                personality_log.record_once(
                    conn, user_id, reading, reading_turn_id, when or local_now(), None
                )
            if finish_job is not None:
                jobs.finish(conn, finish_job)
        return results

    def history(self, user_id: str, memory_id: int) -> Events:
        with self._engine.read() as conn:
            return audit.history(conn, user_id, memory_id)

    def event(self, user_id: str, event_id: int) -> MemoryEvent:
        with self._engine.read() as conn:
            return audit.load_event(conn, user_id, event_id)

    def undo(self, user_id: str, event_id: int, *, actor: str = "api") -> MemoryEvent:
        """Restore what event `event_id` changed; the undo is itself an event (returned)."""
        with self._engine.write(_scope(user_id)) as conn:
            new_id = audit.undo(conn, user_id, event_id, actor=actor)
            return audit.load_event(conn, user_id, new_id)

    def timeline(self, user_id: str, memory_id: int) -> Memories:
        """The versions of this memory, oldest first, each with its validity interval."""
        with self._engine.read() as conn:
            return audit.timeline(conn, user_id, memory_id)

    def search(
        self,
        user_id: str,
        text: str,
        *,
        types: Iterable[MemoryType | str] | None = None,
        k: Mapping[MemoryType | str, int] | int | None = None,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        exclude_ids: Iterable[int] = (),
        config: search.RetrievalConfig | None = None,
    ) -> Hits:
        """Scored hits per type (semantic, episodic, procedural unless `types` says otherwise),
        each with its source turns and images, best first within a type."""
        check_text(text, field="query")
        config = config or self.retrieval
        plan = _search_plan(types, k)
        window = (
            None if start is None else parse_time(start, field="start"),
            None if end is None else parse_time(end, field="end"),
        )
        if window[0] and window[1] and window[0] > window[1]:
            raise ValidationError("start is after end; swap them")
        exclude = frozenset(int(i) for i in exclude_ids)
        query_vector = None
        if config.method != search.Method.BM25:
            query_vector = self._embed([text])[0]
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            ranked = search.retrieve(
                conn,
                search.Query(
                    user_id=user_id,
                    text=text,
                    vector=query_vector,
                    plan=tuple(plan),
                    start=window[0],
                    end=window[1],
                    exclude=exclude,
                    config=config,
                ),
            )
            return _hydrate(conn, user_id, ranked)

    # ----------------------------------------------------------------- turn log

    def append_turns(
        self,
        user_id: str,
        turns: Sequence[TurnInput],
        *,
        actor: str = "ingest",
        batch_size: int = INGEST_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Append turns to the log, each with a turn-level episodic memory so it is
        retrievable before any model has summarised it. Idempotent by turn id.

        Every turn is checked against the log first (ids re-used with other content, time
        order), so a bad turn fails before anything is written. Then batches of `batch_size`
        commit one by one: a crash keeps whole batches, and running the ingest again
        completes it.
        """
        check_user_id(user_id)
        with self._engine.read() as conn:
            pending = turnlog.new_turns(conn, user_id, turns)
        added = 0
        for offset in range(0, len(pending), batch_size):
            batch = pending[offset : offset + batch_size]
            texts = [turn_index_text(t) for t in batch]
            vectors = self._embed(texts)
            with self._engine.write(_scope(user_id)) as conn:
                _ensure_user(conn, user_id)
                for turn, text, vector in zip(batch, texts, vectors, strict=True):
                    added += self._append_turn(conn, user_id, turn, text, vector, actor) is not None
            if progress is not None:
                progress(len(batch))
        with self._engine.read() as conn:
            sessions = turnlog.session_count(conn, user_id)
        return IngestReport(
            user_id=user_id, added=added, skipped=len(turns) - added, sessions=sessions
        )

    def check_turns(self, user_id: str, turns: Sequence[TurnInput]) -> builtins.list[TurnInput]:
        """The turns append_turns would add; raises what it would raise, writing nothing."""
        check_user_id(user_id)
        with self._engine.read() as conn:
            return turnlog.new_turns(conn, user_id, turns)

    def _append_turn(
        self,
        conn: Conn,
        user_id: str,
        turn_input: TurnInput,
        text: str,
        vector: Vectors,
        actor: str,
    ) -> Turn | None:
        writes.check_images(conn, turn_input.image_ids)
        turn = turnlog.append_turn(conn, user_id, turn_input)
        if turn is None:
            return None
        memory = writes.insert_memory(
            conn,
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
            conn,
            user_id=user_id,
            op=EventOp.INGEST,
            actor=actor,
            changes={memory.id: (None, snapshot(memory))},
            turn_id=turn.id,
        )
        return turn

    def store_image(self, source: ImageSource, *, caption: str | None = None) -> ImageRef:
        """Store an image (file path, bytes or data URL) content-addressed by sha256 and
        register it; returns its reference. Storing the same bytes again is a no-op."""
        digest, mime, data = self.blobs.read_image(source)
        ref = self.blobs.put(digest, mime, data)
        with self._engine.write(f"image:{ref.id}") as conn:
            conn.execute(
                "INSERT INTO images(id, mime, size, path, caption, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
                (ref.id, ref.mime, ref.size, ref.path, caption, to_storage(utc_now())),
            )
        return ImageRef(ref.id, ref.mime, ref.size, ref.path, caption)

    def turns(
        self,
        user_id: str,
        *,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        session_id: int | None = None,
        limit: int = 1000,
        after: tuple[datetime, int] | None = None,
    ) -> Turns:
        """The user's turns in time order, optionally within [start, end] or one session;
        `after` = (time, id) of the last turn of the previous page."""
        sql = f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ?"
        params: list[object] = [user_id]
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        if start is not None:
            sql += " AND time >= ?"
            params.append(to_storage(parse_time(start, field="start")))
        if end is not None:
            sql += " AND time <= ?"
            params.append(to_storage(parse_time(end, field="end")))
        if after is not None:
            sql += " AND (time > ? OR (time = ? AND id > ?))"
            stamp = to_storage(after[0])
            params.extend([stamp, stamp, int(after[1])])
        if limit < 1:
            raise ValidationError(f"limit must be >= 1, got {limit}")
        sql += " ORDER BY time, id LIMIT ?"
        params.append(limit)
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            return [turn_from_row(row) for row in conn.execute(sql, params)]

    def turns_by_ids(self, user_id: str, turn_ids: Sequence[int]) -> Turns:
        """These turns of the user, in the order asked; NotFoundError names any missing."""
        with self._engine.read() as conn:
            found = turnlog.turns_by_ids(conn, builtins.list(turn_ids))
        missing = [t for t in turn_ids if t not in found or found[t].user_id != user_id]
        if missing:
            raise NotFoundError(f"turns {missing} are not turns of user {user_id!r}")
        return [found[t] for t in turn_ids]

    def latest_turn(self, user_id: str) -> Turn | None:
        with self._engine.read() as conn:
            return turnlog.latest_turn(conn, user_id)

    # ----------------------------------------------------------------- update queue

    def record_exchange(
        self, user_id: str, user_turn: TurnInput, assistant_turn: TurnInput
    ) -> Exchange | None:
        """Append a user turn and the assistant's reply, and queue their update job, in one
        transaction. When the user turn opens a new session, the previous session's close job
        is queued first. None when both turns are stored already (a replayed exchange)."""
        check_user_id(user_id)
        texts = [turn_index_text(user_turn), turn_index_text(assistant_turn)]
        vectors = self._embed(texts)
        with self._engine.write(_scope(user_id)) as conn:
            _ensure_user(conn, user_id)
            previous = turnlog.latest_turn(conn, user_id)
            stored = [
                self._append_turn(conn, user_id, turn, text, vector, "agent")
                for turn, text, vector in zip(
                    (user_turn, assistant_turn), texts, vectors, strict=True
                )
            ]
            if stored[0] is None and stored[1] is None:
                return None
            if stored[0] is None or stored[1] is None:
                raise ConflictError(
                    "only one of the exchange's two turns is stored already; "
                    "give both turns new ids or replay them unchanged"
                )
            closed = None
            if previous is not None and previous.session_id != stored[0].session_id:
                closed = previous.session_id
                jobs.enqueue(
                    conn, user_id, jobs.JobKind.SESSION, {"session_id": closed}, session_id=closed
                )
            job_id = jobs.enqueue(
                conn,
                user_id,
                jobs.JobKind.TURN,
                {"user_turn": stored[0].id, "assistant_turn": stored[1].id},
            )
        assert job_id is not None
        return Exchange(stored[0], stored[1], closed, job_id)

    def close_session(self, user_id: str) -> int | None:
        """Queue the close of the user's latest session now (instead of waiting for the
        60-minute gap); the job id, or None when it is queued already or there is none."""
        with self._engine.write(_scope(user_id)) as conn:
            _require_user(conn, user_id)
            latest = turnlog.latest_turn(conn, user_id)
            if latest is None:
                return None
            return jobs.enqueue(
                conn,
                user_id,
                jobs.JobKind.SESSION,
                {"session_id": latest.session_id},
                session_id=latest.session_id,
            )

    def claim_job(
        self,
        worker: str,
        *,
        lease_s: float = 600.0,
        user_id: str | None = None,
        ignore_backoff: bool = False,
        skip_users: frozenset[str] = frozenset(),
    ) -> jobs.UpdateJob | None:
        """The next runnable update job, leased to `worker` (see memory/jobs.py)."""
        with self._engine.write("jobs") as conn:
            return jobs.claim(
                conn,
                worker,
                lease_s=lease_s,
                user_id=user_id,
                ignore_backoff=ignore_backoff,
                skip_users=skip_users,
            )

    def finish_job(self, job_id: int) -> None:
        """Mark a job done that had nothing to write (apply(finish_job=...) otherwise)."""
        with self._engine.write("jobs") as conn:
            jobs.finish(conn, job_id)

    def fail_job(self, job: jobs.UpdateJob, error: str) -> None:
        with self._engine.write("jobs") as conn:
            jobs.fail(conn, job.id, error, job.attempts)

    def queue_status(self, user_id: str | None = None) -> jobs.QueueStatus:
        with self._engine.read() as conn:
            return jobs.status(conn, user_id)

    def count(
        self, user_id: str, *, status: MemoryStatus | str | None = MemoryStatus.ACTIVE
    ) -> dict[str, int]:
        """How many memories the user has per type (of `status`; None counts every status)."""
        sql = "SELECT type, count(*) FROM memories WHERE user_id = ?"
        params: builtins.list[object] = [user_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(check_status(status).value)
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            found = dict(conn.execute(sql + " GROUP BY type", params).fetchall())
        return {kind.value: int(found.get(kind.value, 0)) for kind in MemoryType}

    def has_user(self, user_id: str) -> bool:
        with self._engine.read() as conn:
            return (
                conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is not None
            )

    def images(self, image_ids: Sequence[str]) -> builtins.list[ImageRef]:
        """The stored images with these ids, in the order asked; NotFoundError names any missing."""
        with self._engine.read() as conn:
            found = _images(conn, builtins.list(dict.fromkeys(image_ids)))
        missing = [i for i in image_ids if i not in found]
        if missing:
            raise NotFoundError(f"images {missing} are not stored")
        return [found[i] for i in image_ids]

    def users(self) -> builtins.list[str]:
        with self._engine.read() as conn:
            return [row[0] for row in conn.execute("SELECT id FROM users ORDER BY id")]

    def create_user(self, user_id: str) -> bool:
        """Register a user with no data yet; False when the user exists already."""
        check_user_id(user_id)
        with self._engine.write(_scope(user_id)) as conn:
            cursor = conn.execute(
                "INSERT INTO users(id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                (user_id, to_storage(utc_now())),
            )
            return cursor.rowcount == 1

    def user_created_at(self, user_id: str) -> datetime:
        with self._engine.read() as conn:
            row = conn.execute("SELECT created_at FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user {user_id!r}")
        return from_storage(row[0])

    def delete_user(self, user_id: str) -> UserDeletion:
        """Forget the user: every row (turns, memories, history, personality, jobs, keys)
        and every picture no other user shows, blob files included."""
        check_user_id(user_id)
        # Serialised against every write: another user storing the same picture right now
        # must not lose its blob.
        with self._engine.write() as conn:
            _require_user(conn, user_id)
            deletion, orphans = users.delete_rows(conn, user_id)
        return replace(deletion, blobs=users.remove_blobs(orphans))

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything of the user as one JSON-ready document (memory/users.py)."""
        with self._engine.read() as conn:
            return users.export(conn, user_id)

    def user_image(self, user_id: str, image_id: str) -> ImageRef:
        """A picture one of the user's turns or memories shows; NotFoundError otherwise,
        also for a picture only other users have (its existence is not theirs to learn)."""
        if not _SHA256.fullmatch(image_id):
            raise ValidationError(f"{image_id!r} is not an image id (64 lower-case hex digits)")
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            if not users.shows_image(conn, user_id, image_id):
                raise NotFoundError(f"no image {image_id} for user {user_id!r}")
            found = _images(conn, [image_id])
        if image_id not in found:
            raise NotFoundError(f"no image {image_id} for user {user_id!r}")
        return found[image_id]

    # ----------------------------------------------------------------- API keys

    def create_api_key(self, user_id: str | None, *, label: str = "") -> tuple[keys.ApiKey, str]:
        """A new key for `user_id` (None: an admin key), and its secret, shown only now.
        A key for a user the store does not know yet registers the user."""
        if user_id is not None:
            check_user_id(user_id)
        with self._engine.write(None if user_id is None else _scope(user_id)) as conn:
            if user_id is not None:
                _ensure_user(conn, user_id)
            return keys.create(conn, user_id, label)

    def register_api_key(self, secret: str, user_id: str | None, *, label: str = "") -> keys.ApiKey:
        """Store a key the caller chose (PERSONAVLM_ADMIN_KEY); idempotent."""
        if user_id is not None:
            check_user_id(user_id)
        with self._engine.write(None if user_id is None else _scope(user_id)) as conn:
            if user_id is not None:
                _ensure_user(conn, user_id)
            return keys.register(conn, secret, user_id, label)

    def authenticate(self, secret: str) -> keys.ApiKey | None:
        """The live key with this secret, or None (unknown or revoked)."""
        with self._engine.read() as conn:
            return keys.authenticate(conn, secret)

    def api_keys(self, user_id: str | None) -> builtins.list[keys.ApiKey]:
        """The user's keys (None: the admin keys), revoked ones included, without secrets."""
        with self._engine.read() as conn:
            if user_id is not None:
                _require_user(conn, user_id)
            return keys.listing(conn, user_id)

    def revoke_api_key(self, key_id: int) -> keys.ApiKey:
        with self._engine.write() as conn:
            return keys.revoke(conn, key_id)

    def has_admin_key(self) -> bool:
        with self._engine.read() as conn:
            return keys.has_admin(conn)

    # ----------------------------------------------------------------- personality

    def record_personality(
        self,
        user_id: str,
        reading: Reading,
        *,
        turn_id: int | None = None,
        time: str | datetime | None = None,
        skip_rule: SkipRule | str | None = None,
    ) -> PersonalityState:
        """Absorb one momentary reading with the paper's schedule; every reading is kept."""
        check_user_id(user_id)
        when = local_now() if time is None else parse_time(time)
        with self._engine.write(_scope(user_id)) as conn:
            _ensure_user(conn, user_id)
            return personality_log.record(conn, user_id, reading, turn_id, when, skip_rule)

    def personality(self, user_id: str) -> PersonalityState:
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            return personality_log.current(conn, user_id)

    def personality_readings(self, user_id: str) -> builtins.list[personality_log.ReadingRecord]:
        with self._engine.read() as conn:
            _require_user(conn, user_id)
            return personality_log.readings(conn, user_id)

    # ----------------------------------------------------------------- maintenance

    def reindex(self, *, batch_size: int = 256) -> int:
        """Re-embed every memory with this store's encoder; returns how many."""
        with self._engine.read() as conn:
            rows = self._engine.indexed_texts(conn)
        vectors = [
            vector
            for i in range(0, len(rows), batch_size)
            for vector in self._embed([text for _, text in rows[i : i + batch_size]])
        ]
        with self._engine.write() as conn:
            self._engine.replace_vectors(
                conn, [(row[0], v) for row, v in zip(rows, vectors, strict=True)]
            )
            _set_meta(conn, "encoder", self.embedder.name)
            _set_meta(conn, "encoder_dim", str(self.embedder.dim))
            _set_meta(conn, "vectors_generation", uuid.uuid4().hex)
        return len(rows)

    # ----------------------------------------------------------------- internals

    def _prepare(self, user_id: str, op: MemoryOp) -> writes.Prepared:
        if isinstance(op, AddOp):
            kind, key, words, when = writes.prepare_add(op)
            text = writes.index_text(kind, key, op.content, words)
            return writes.Prepared(op, kind, key, words, when, self._embed([text])[0])
        if isinstance(op, UpdateOp):
            return self._prepare_update(user_id, op)
        if isinstance(op, InvalidateOp):
            return writes.Prepared(op, time=None if op.time is None else parse_time(op.time))
        if isinstance(op, DeleteOp):
            return writes.Prepared(op)
        raise ValidationError(f"{op!r} is not a memory operation (AddOp, UpdateOp, ...)")

    def _prepare_update(self, user_id: str, op: UpdateOp) -> writes.Prepared:
        if op.content is None and op.keywords is None:
            raise ValidationError("update needs new content or new keywords")
        if op.content is not None:
            check_text(op.content, field="content")
        words = None if op.keywords is None else check_keywords(op.keywords)
        when = None if op.time is None else parse_time(op.time)
        with self._engine.read() as conn:
            old = audit.load_memory(conn, user_id, op.memory_id)
        content = old.content if op.content is None else op.content
        keywords = old.keywords if words is None else words
        text = writes.index_text(old.type, old.key, content, keywords)
        return writes.Prepared(op, old.type, old.key, words, when, self._embed([text])[0])

    def _embed(self, texts: Sequence[str]) -> Vectors:
        vectors = self.embedder.encode(texts)
        if vectors.shape != (len(texts), self.embedder.dim):
            raise EmbedderMismatchError(
                f"encoder {self.embedder.name!r} returned shape {vectors.shape}, "
                f"expected ({len(texts)}, {self.embedder.dim})"
            )
        return vectors

    def _claim_encoder(self, check: bool) -> None:
        with self._engine.write() as conn:
            name = _get_meta(conn, "encoder")
            dim = _get_meta(conn, "encoder_dim")
            if name is None:
                _set_meta(conn, "encoder", self.embedder.name)
                _set_meta(conn, "encoder_dim", str(self.embedder.dim))
                return
        if check and (name, dim) != (self.embedder.name, str(self.embedder.dim)):
            raise EmbedderMismatchError(
                f"{self.location} was indexed with encoder {name!r} ({dim}-d) but the configured "
                f"encoder is {self.embedder.name!r} ({self.embedder.dim}-d). Either configure "
                f"the store's encoder, or re-embed every memory with the new one: "
                f"`personavlm reindex --db {self.location} --embedder <name>`"
            )


# --------------------------------------------------------------------- helpers


_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_postgres_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def _scope(user_id: str) -> str:
    """The write scope of one user's data (memory/engine.py Engine.write)."""
    return f"user:{user_id}"


def default_blob_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".blobs")


def turn_index_text(turn: TurnInput) -> str:
    """A turn-level episodic entry: who spoke, what they said, what their picture shows."""
    speaker = turn.speaker or turn.role
    text = f"{speaker}: {turn.text}".rstrip()
    if turn.caption:
        text += f"\n[image: {turn.caption}]"
    return text


def _search_plan(
    types: Iterable[MemoryType | str] | None, k: Mapping[MemoryType | str, int] | int | None
) -> list[tuple[MemoryType, int]]:
    kinds = (
        [MemoryType.SEMANTIC, MemoryType.EPISODIC, MemoryType.PROCEDURAL]
        if types is None
        else [check_memory_type(t) for t in types]
    )
    if isinstance(k, int):
        per_type = {kind: k for kind in kinds}
    else:
        given = {check_memory_type(t): n for t, n in (k or {}).items()}
        per_type = {kind: given.get(kind, DEFAULT_K[kind]) for kind in kinds}
    for kind, n in per_type.items():
        if not isinstance(n, int) or n < 1 or n > 1000:
            raise ValidationError(f"k for {kind.value} must be an integer in 1..1000, got {n!r}")
    return list(per_type.items())


def _hydrate(conn: Conn, user_id: str, ranked: list[search.Ranked]) -> list[Hit]:
    memories = {r.memory_id: audit.load_memory(conn, user_id, r.memory_id) for r in ranked}
    turn_ids = sorted({t for m in memories.values() for t in m.source_turn_ids})
    turns = turnlog.turns_by_ids(conn, turn_ids)
    image_ids = sorted(
        {i for m in memories.values() for i in m.image_ids}
        | {i for t in turns.values() for i in t.image_ids}
    )
    images = _images(conn, image_ids)
    hits = []
    for r in ranked:
        memory = memories[r.memory_id]
        own_turns = tuple(turns[t] for t in memory.source_turn_ids)
        own_images = list(
            dict.fromkeys([*memory.image_ids, *(i for t in own_turns for i in t.image_ids)])
        )
        hits.append(
            Hit(
                memory=memory,
                score=r.score,
                turns=own_turns,
                images=tuple(images[i] for i in own_images),
                ranks=r.ranks,
            )
        )
    return hits


def _images(conn: Conn, ids: list[str]) -> dict[str, ImageRef]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT id, mime, size, path, caption FROM images WHERE id IN ({marks})", ids
    )
    return {row[0]: ImageRef(*row) for row in rows}


def _ensure_user(conn: Conn, user_id: str) -> None:
    conn.execute(
        "INSERT INTO users(id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
        (user_id, to_storage(utc_now())),
    )


def _require_user(conn: Conn, user_id: str) -> None:
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
        raise NotFoundError(f"no user {user_id!r} in this store")


def _get_meta(conn: Conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(conn: Conn, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
