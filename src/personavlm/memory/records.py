"""The values the memory store hands out: memories, turns, events, hits.

All frozen dataclasses: a record is a snapshot of a row at read time, never a live handle.
Ids are integers assigned by the store; `Turn.ext_id` is the caller's own turn id (the one an
ingest file uses), unique per user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from personavlm.timeutil import to_storage_or_none

__all__ = [
    "DEFAULT_K",
    "KEYED_TYPES",
    "EventOp",
    "Hit",
    "ImageRef",
    "IngestReport",
    "Memory",
    "MemoryEvent",
    "MemoryStatus",
    "MemoryType",
    "Turn",
]


class MemoryType(StrEnum):
    CORE = "core"
    SEMANTIC = "semantic"
    EPISODIC = "episodic"
    PROCEDURAL = "procedural"


# Core and procedural memory hold one active record per key (PAPER.md section 2): the latest
# version is the one used, older ones stay as superseded history.
KEYED_TYPES = frozenset({MemoryType.CORE, MemoryType.PROCEDURAL})

# Retrieval top-k per type, PAPER.md section 4. Core memory is always in the prompt whole, so it
# is only searched when asked for explicitly.
DEFAULT_K: dict[MemoryType, int] = {
    MemoryType.SEMANTIC: 4,
    MemoryType.EPISODIC: 2,
    MemoryType.PROCEDURAL: 2,
    MemoryType.CORE: 4,
}


class MemoryStatus(StrEnum):
    ACTIVE = "active"  # true now and retrievable
    SUPERSEDED = "superseded"  # replaced by a newer version (valid_to set)
    INVALIDATED = "invalidated"  # no longer true, nothing replaced it (valid_to set)
    DELETED = "deleted"  # removed; kept for history and undo, never retrieved


class EventOp(StrEnum):
    ADD = "add"
    INGEST = "ingest"
    UPDATE = "update"
    INVALIDATE = "invalidate"
    DELETE = "delete"
    UNDO = "undo"
    SKIP = "skip"  # an update job given up on: its turn was never analysed (no changes)


@dataclass(frozen=True, slots=True)
class ImageRef:
    id: str  # sha256 of the bytes
    mime: str
    size: int
    caption: str | None = None  # the bytes: MemoryStore.blobs.read(id)


@dataclass(frozen=True, slots=True)
class Memory:
    id: int
    user_id: str
    type: MemoryType
    key: str | None
    content: str
    keywords: tuple[str, ...]
    image_ids: tuple[str, ...]
    source_turn_ids: tuple[int, ...]
    event_start: datetime
    event_end: datetime
    valid_from: datetime
    valid_to: datetime | None
    status: MemoryStatus
    version: int  # position in its supersedes chain, 1 for an original
    supersedes: int | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type.value,
            "key": self.key,
            "content": self.content,
            "keywords": list(self.keywords),
            "image_ids": list(self.image_ids),
            "source_turn_ids": list(self.source_turn_ids),
            "event_start": to_storage_or_none(self.event_start),
            "event_end": to_storage_or_none(self.event_end),
            "valid_from": to_storage_or_none(self.valid_from),
            "valid_to": to_storage_or_none(self.valid_to),
            "status": self.status.value,
            "version": self.version,
            "supersedes": self.supersedes,
            "created_at": to_storage_or_none(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Turn:
    id: int
    user_id: str
    ext_id: str | None
    session_id: int
    time: datetime
    role: str
    speaker: str | None
    text: str
    caption: str | None
    image_ids: tuple[str, ...]
    # "failed": a user's message the model never answered (kept so nothing the user said is
    # lost; no update job reads it as an exchange).
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "ext_id": self.ext_id,
            "session_id": self.session_id,
            "time": to_storage_or_none(self.time),
            "role": self.role,
            "speaker": self.speaker,
            "text": self.text,
            "caption": self.caption,
            "image_ids": list(self.image_ids),
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """One call that changed memory. `changes` maps memory id -> (before, after) snapshots;
    a snapshot is None where the memory did not exist."""

    id: int
    user_id: str
    op: EventOp
    actor: str
    time: datetime
    turn_id: int | None
    undoes: int | None
    changes: dict[int, tuple[dict[str, Any] | None, dict[str, Any] | None]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "op": self.op.value,
            "actor": self.actor,
            "time": to_storage_or_none(self.time),
            "turn_id": self.turn_id,
            "undoes": self.undoes,
            "changes": [
                {"memory_id": mid, "before": before, "after": after}
                for mid, (before, after) in sorted(self.changes.items())
            ],
        }


@dataclass(frozen=True, slots=True)
class Hit:
    memory: Memory
    score: float
    turns: tuple[Turn, ...]
    images: tuple[ImageRef, ...]
    # 1-based rank of this memory in each candidate list it appeared in ("bm25", "dense").
    ranks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "ranks": dict(self.ranks),
            "memory": self.memory.to_dict(),
            "turns": [t.to_dict() for t in self.turns],
            "images": [
                {"id": i.id, "mime": i.mime, "size": i.size, "caption": i.caption}
                for i in self.images
            ],
        }


@dataclass(frozen=True, slots=True)
class IngestReport:
    user_id: str
    added: int  # turns appended to the log (each with its episodic entry)
    skipped: int  # turns whose id was already stored with the same content
    sessions: int  # sessions the user has after the ingest

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "added": self.added,
            "skipped": self.skipped,
            "sessions": self.sessions,
        }
