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
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from personavlm.embed.base import Embedder, Vectors
from personavlm.errors import (
    ConfigError,
    ConflictError,
    EmbedderMismatchError,
    NotFoundError,
    ValidationError,
)
from personavlm.media.blobs import BlobStore
from personavlm.memory import audit, personality_log, search, turnlog
from personavlm.memory.records import (
    DEFAULT_K,
    KEYED_TYPES,
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
from personavlm.memory.sqlite import Database
from personavlm.memory.turnlog import TurnInput
from personavlm.memory.validate import (
    check_key,
    check_keywords,
    check_memory_type,
    check_status,
    check_text,
    check_user_id,
)
from personavlm.memory.vectors import VectorIndex
from personavlm.personality import PersonalityState, Reading, SkipRule
from personavlm.timeutil import local_now, parse_time, to_storage, to_storage_or_none, utc_now

__all__ = ["MemoryStore"]

# The store has a verb named `list`; inside the class body that name shadows the builtin, so
# the return types are spelled through these aliases.
Memories = list[Memory]
Events = list[MemoryEvent]
Hits = list[Hit]
Turns = list[Turn]

# Turns per ingest transaction: large enough that per-transaction costs vanish, small enough
# that a crash loses at most this many turns of work (the next ingest redoes them).
INGEST_BATCH = 256


class MemoryStore:
    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        blobs: BlobStore,
        *,
        retrieval: search.RetrievalConfig = search.SHIPPED,
    ) -> None:
        self._db = db
        self.embedder = embedder
        self.blobs = blobs
        self.retrieval = retrieval
        self._vectors = VectorIndex(embedder.dim)

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
        """Open the SQLite store at `path`, creating it unless `create` is False.

        Raises EmbedderMismatchError when the store's vectors came from another encoder,
        unless check_embedder is False (only `reindex` should do that), and ConfigError for
        a missing store when create is False (read-only callers: a typo in a path must not
        conjure up an empty store).
        """
        db_path = Path(path)
        if not create and not db_path.is_file():
            raise ConfigError(
                f"no personavlm store at {db_path}: check --db / PERSONAVLM_DB, or add or "
                "ingest something first"
            )
        db = Database(db_path)
        store = cls(
            db, embedder, BlobStore(blob_dir or default_blob_dir(db_path)), retrieval=retrieval
        )
        store._claim_encoder(check_embedder)
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._db.path

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
        check_user_id(user_id)
        kind = check_memory_type(memory_type)
        key = check_key(kind, key)
        check_text(content, field="content")
        words = check_keywords(keywords)
        explicit = None if time is None else parse_time(time)
        vector = self._embed([index_text(kind, key, content, words)])
        with self._db.write() as conn:
            _ensure_user(conn, user_id)
            holder = _active_holder(conn, user_id, kind, key)
            valid_from = _effective_time(explicit, holder)
            span = _event_span(conn, user_id, source_turn_ids, valid_from)
            _check_images(conn, image_ids)
            changes: dict[int, audit.Change] = {}
            if holder is not None:
                retired = _retire(conn, holder, MemoryStatus.SUPERSEDED, valid_from)
                changes[holder.id] = (snapshot(holder), snapshot(retired))
            memory = _insert_memory(
                conn,
                user_id,
                kind,
                key,
                content,
                words,
                image_ids,
                source_turn_ids,
                span,
                valid_from,
                vector[0],
                supersedes=holder,
            )
            changes[memory.id] = (None, snapshot(memory))
            audit.record_event(
                conn,
                user_id=user_id,
                op=EventOp.ADD,
                actor=actor,
                changes=changes,
                turn_id=source_turn_ids[-1] if source_turn_ids else None,
            )
        return memory

    def get(self, user_id: str, memory_id: int) -> Memory:
        with self._db.read() as conn:
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
    ) -> Memories:
        """Memories in event-time order. status=None lists every status; start/end keep
        memories whose event time overlaps the window."""
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
        if limit < 1 or offset < 0:
            raise ValidationError(f"limit must be >= 1 and offset >= 0, got {limit}, {offset}")
        sql += " ORDER BY event_start, id LIMIT ? OFFSET ?"
        params.extend([limit, offset])
        with self._db.read() as conn:
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
        if content is None and keywords is None:
            raise ValidationError("update needs new content or new keywords")
        if content is not None:
            check_text(content, field="content")
        words = None if keywords is None else check_keywords(keywords)
        explicit = None if time is None else parse_time(time)
        with self._db.read() as conn:
            old = audit.load_memory(conn, user_id, memory_id)
        new_content = old.content if content is None else content
        new_words = old.keywords if words is None else words
        vector = self._embed([index_text(old.type, old.key, new_content, new_words)])
        with self._db.write() as conn:
            old = audit.load_memory(conn, user_id, memory_id)
            _require_active(old, "update")
            valid_from = _effective_time(explicit, old)
            sources = old.source_turn_ids if source_turn_ids is None else tuple(source_turn_ids)
            span = _updated_span(conn, user_id, old, source_turn_ids, valid_from)
            retired = _retire(conn, old, MemoryStatus.SUPERSEDED, valid_from)
            memory = _insert_memory(
                conn,
                user_id,
                old.type,
                old.key,
                new_content,
                new_words,
                old.image_ids,
                sources,
                span,
                valid_from,
                vector[0],
                supersedes=old,
            )
            audit.record_event(
                conn,
                user_id=user_id,
                op=EventOp.UPDATE,
                actor=actor,
                changes={
                    old.id: (snapshot(old), snapshot(retired)),
                    memory.id: (None, snapshot(memory)),
                },
                turn_id=sources[-1] if source_turn_ids else None,
            )
        return memory

    def invalidate(
        self,
        user_id: str,
        memory_id: int,
        *,
        time: str | datetime | None = None,
        actor: str = "api",
    ) -> Memory:
        """Mark an active memory as no longer true from `time` on; it stays in history."""
        explicit = None if time is None else parse_time(time)
        return self._change_status(
            user_id, memory_id, MemoryStatus.INVALIDATED, explicit, EventOp.INVALIDATE, actor
        )

    def delete(self, user_id: str, memory_id: int, *, actor: str = "api") -> Memory:
        """Remove a memory from retrieval and listings; history() and undo() still see it."""
        return self._change_status(
            user_id, memory_id, MemoryStatus.DELETED, None, EventOp.DELETE, actor
        )

    def history(self, user_id: str, memory_id: int) -> Events:
        with self._db.read() as conn:
            return audit.history(conn, user_id, memory_id)

    def event(self, user_id: str, event_id: int) -> MemoryEvent:
        with self._db.read() as conn:
            return audit.load_event(conn, user_id, event_id)

    def undo(self, user_id: str, event_id: int, *, actor: str = "api") -> MemoryEvent:
        """Restore what event `event_id` changed; the undo is itself an event (returned)."""
        with self._db.write() as conn:
            new_id = audit.undo(conn, user_id, event_id, actor=actor)
            return audit.load_event(conn, user_id, new_id)

    def timeline(self, user_id: str, memory_id: int) -> Memories:
        """The versions of this memory, oldest first, each with its validity interval."""
        with self._db.read() as conn:
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
        with self._db.read() as conn:
            _require_user(conn, user_id)
            ranked = search.retrieve(
                conn,
                self._vectors,
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
        with self._db.read() as conn:
            pending = turnlog.new_turns(conn, user_id, turns)
        added = 0
        for offset in range(0, len(pending), batch_size):
            batch = pending[offset : offset + batch_size]
            texts = [turn_index_text(t) for t in batch]
            vectors = self._embed(texts)
            with self._db.write() as conn:
                _ensure_user(conn, user_id)
                for turn, text, vector in zip(batch, texts, vectors, strict=True):
                    added += self._append_one(conn, user_id, turn, text, vector, actor)
            if progress is not None:
                progress(len(batch))
        with self._db.read() as conn:
            sessions = turnlog.session_count(conn, user_id)
        return IngestReport(
            user_id=user_id, added=added, skipped=len(turns) - added, sessions=sessions
        )

    def check_turns(self, user_id: str, turns: Sequence[TurnInput]) -> builtins.list[TurnInput]:
        """The turns append_turns would add; raises what it would raise, writing nothing."""
        check_user_id(user_id)
        with self._db.read() as conn:
            return turnlog.new_turns(conn, user_id, turns)

    def _append_one(
        self,
        conn: sqlite3.Connection,
        user_id: str,
        turn_input: TurnInput,
        text: str,
        vector: Vectors,
        actor: str,
    ) -> bool:
        """Append one turn and its episodic entry; False if the turn was already stored."""
        _check_images(conn, turn_input.image_ids)
        turn = turnlog.append_turn(conn, user_id, turn_input)
        if turn is None:
            return False
        memory = _insert_memory(
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
        return True

    def store_image(self, source: Path, *, caption: str | None = None) -> ImageRef:
        """Copy an image file into the blob store and register it; returns its reference."""
        digest, mime, data = self.blobs.read_image(source)
        ref = self.blobs.put(digest, mime, data)
        with self._db.write() as conn:
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
        limit: int = 1000,
    ) -> Turns:
        sql = f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ?"
        params: list[object] = [user_id]
        if start is not None:
            sql += " AND time >= ?"
            params.append(to_storage(parse_time(start, field="start")))
        if end is not None:
            sql += " AND time <= ?"
            params.append(to_storage(parse_time(end, field="end")))
        sql += " ORDER BY time, id LIMIT ?"
        params.append(limit)
        with self._db.read() as conn:
            _require_user(conn, user_id)
            return [turn_from_row(row) for row in conn.execute(sql, params)]

    def users(self) -> builtins.list[str]:
        with self._db.read() as conn:
            return [row[0] for row in conn.execute("SELECT id FROM users ORDER BY id")]

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
        with self._db.write() as conn:
            _ensure_user(conn, user_id)
            return personality_log.record(conn, user_id, reading, turn_id, when, skip_rule)

    def personality(self, user_id: str) -> PersonalityState:
        with self._db.read() as conn:
            _require_user(conn, user_id)
            return personality_log.current(conn, user_id)

    def personality_readings(self, user_id: str) -> builtins.list[personality_log.ReadingRecord]:
        with self._db.read() as conn:
            _require_user(conn, user_id)
            return personality_log.readings(conn, user_id)

    # ----------------------------------------------------------------- maintenance

    def reindex(self, *, batch_size: int = 256) -> int:
        """Re-embed every memory with this store's encoder; returns how many."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT rowid, text FROM memory_fts ORDER BY rowid").fetchall()
        vectors = [
            self._embed([text for _, text in rows[i : i + batch_size]])
            for i in range(0, len(rows), batch_size)
        ]
        blobs = [v.tobytes() for chunk in vectors for v in chunk]
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE memory_vectors SET vector = ? WHERE memory_id = ?",
                [(blob, row[0]) for blob, row in zip(blobs, rows, strict=True)],
            )
            _set_meta(conn, "encoder", self.embedder.name)
            _set_meta(conn, "encoder_dim", str(self.embedder.dim))
            _set_meta(conn, "vectors_generation", uuid.uuid4().hex)
        self._vectors = VectorIndex(self.embedder.dim)
        return len(rows)

    # ----------------------------------------------------------------- internals

    def _change_status(
        self,
        user_id: str,
        memory_id: int,
        status: MemoryStatus,
        explicit_time: datetime | None,
        op: EventOp,
        actor: str,
    ) -> Memory:
        """Move a memory to `status`; every status but deleted also ends its validity."""
        with self._db.write() as conn:
            old = audit.load_memory(conn, user_id, memory_id)
            if status is MemoryStatus.DELETED:
                if old.status is MemoryStatus.DELETED:
                    raise ConflictError(f"memory {memory_id} is already deleted")
                valid_to = None
            else:
                _require_active(old, op.value)
                valid_to = _effective_time(explicit_time, old)
            new = _retire(conn, old, status, valid_to)
            audit.record_event(
                conn,
                user_id=user_id,
                op=op,
                actor=actor,
                changes={old.id: (snapshot(old), snapshot(new))},
            )
        return new

    def _embed(self, texts: Sequence[str]) -> Vectors:
        vectors = self.embedder.encode(texts)
        if vectors.shape != (len(texts), self.embedder.dim):
            raise EmbedderMismatchError(
                f"encoder {self.embedder.name!r} returned shape {vectors.shape}, "
                f"expected ({len(texts)}, {self.embedder.dim})"
            )
        return vectors

    def _claim_encoder(self, check: bool) -> None:
        with self._db.write() as conn:
            name = _get_meta(conn, "encoder")
            dim = _get_meta(conn, "encoder_dim")
            if name is None:
                _set_meta(conn, "encoder", self.embedder.name)
                _set_meta(conn, "encoder_dim", str(self.embedder.dim))
                return
        if check and (name, dim) != (self.embedder.name, str(self.embedder.dim)):
            raise EmbedderMismatchError(
                f"{self.path} was indexed with encoder {name!r} ({dim}-d) but the configured "
                f"encoder is {self.embedder.name!r} ({self.embedder.dim}-d). Either configure "
                f"the store's encoder, or re-embed every memory with the new one: "
                f"`personavlm reindex --db {self.path} --embedder <name>`"
            )


# --------------------------------------------------------------------- helpers


def default_blob_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".blobs")


def index_text(
    memory_type: MemoryType, key: str | None, content: str, keywords: Sequence[str]
) -> str:
    """What both retrievers see of a memory: its key, content and keywords."""
    text = f"{key}: {content}" if key else content
    if keywords:
        text += "\nkeywords: " + ", ".join(keywords)
    return text


def turn_index_text(turn: TurnInput) -> str:
    """A turn-level episodic entry: who spoke, what they said, what their picture shows."""
    speaker = turn.speaker or turn.role
    text = f"{speaker}: {turn.text}".rstrip()
    if turn.caption:
        text += f"\n[image: {turn.caption}]"
    return text


def _insert_memory(
    conn: sqlite3.Connection,
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
        "supersedes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'active', ?, ?, ?)",
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
    memory_id = cursor.lastrowid
    assert memory_id is not None
    conn.execute(
        "INSERT INTO memory_fts(rowid, tags, text) VALUES (?, ?, ?)",
        (memory_id, search.fts_tags(user_id, kind), index_text(kind, key, content, keywords)),
    )
    conn.execute(
        "INSERT INTO memory_vectors(memory_id, vector) VALUES (?, ?)",
        (memory_id, vector.astype("float32").tobytes()),
    )
    return audit.load_memory(conn, user_id, memory_id)


def _retire(
    conn: sqlite3.Connection, memory: Memory, status: MemoryStatus, valid_to: datetime | None
) -> Memory:
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


def _require_active(memory: Memory, verb: str) -> None:
    if memory.status is not MemoryStatus.ACTIVE:
        raise ConflictError(
            f"cannot {verb} memory {memory.id}: it is {memory.status.value}; "
            "only active memories change (see timeline() for its current version)"
        )


def _active_holder(
    conn: sqlite3.Connection, user_id: str, kind: MemoryType, key: str | None
) -> Memory | None:
    if kind not in KEYED_TYPES:
        return None
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ? AND type = ? AND key = ? "
        "AND status = 'active'",
        (user_id, kind.value, key),
    ).fetchone()
    return None if row is None else memory_from_row(row)


def _event_span(
    conn: sqlite3.Connection, user_id: str, turn_ids: Sequence[int], default: datetime
) -> tuple[datetime, datetime]:
    """Memory time is the time of the turns it came from; without turns, its valid_from."""
    if not turn_ids:
        return default, default
    found = turnlog.turns_by_ids(conn, list(turn_ids))
    missing = [t for t in turn_ids if t not in found or found[t].user_id != user_id]
    if missing:
        raise NotFoundError(f"source turn ids {missing} are not turns of user {user_id!r}")
    times = [found[t].time for t in turn_ids]
    return min(times), max(times)


def _updated_span(
    conn: sqlite3.Connection,
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


def _check_images(conn: sqlite3.Connection, image_ids: Sequence[str]) -> None:
    for image_id in image_ids:
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise NotFoundError(f"image {image_id!r} is not stored; store_image() it first")


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


def _hydrate(conn: sqlite3.Connection, user_id: str, ranked: list[search.Ranked]) -> list[Hit]:
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


def _images(conn: sqlite3.Connection, ids: list[str]) -> dict[str, ImageRef]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT id, mime, size, path, caption FROM images WHERE id IN ({marks})", ids
    )
    return {row[0]: ImageRef(*row) for row in rows}


def _ensure_user(conn: sqlite3.Connection, user_id: str) -> None:
    conn.execute(
        "INSERT INTO users(id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
        (user_id, to_storage(utc_now())),
    )


def _require_user(conn: sqlite3.Connection, user_id: str) -> None:
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
        raise NotFoundError(f"no user {user_id!r} in this store")


def _get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
