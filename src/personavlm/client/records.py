"""The service's JSON back into the library's records (memory/records.py, keys, queue).

The server writes them with each record's `to_dict`; these are the inverses, so a client
caller handles the same types as a library caller. The service and this client ship in one
package version, so a missing field is a bug (KeyError), not something to paper over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from personavlm.memory.keys import ApiKey
from personavlm.memory.queue import JobRecord
from personavlm.memory.records import (
    EventOp,
    Hit,
    ImageRef,
    Memory,
    MemoryEvent,
    MemoryStatus,
    MemoryType,
    Turn,
)
from personavlm.timeutil import from_storage

__all__ = ["api_key", "event", "hit", "job", "memory", "turn"]


def _time(value: str) -> datetime:
    return from_storage(value)


def _time_or_none(value: str | None) -> datetime | None:
    return None if value is None else from_storage(value)


def memory(data: dict[str, Any]) -> Memory:
    return Memory(
        id=data["id"],
        user_id=data["user_id"],
        type=MemoryType(data["type"]),
        key=data["key"],
        content=data["content"],
        keywords=tuple(data["keywords"]),
        image_ids=tuple(data["image_ids"]),
        source_turn_ids=tuple(data["source_turn_ids"]),
        event_start=_time(data["event_start"]),
        event_end=_time(data["event_end"]),
        valid_from=_time(data["valid_from"]),
        valid_to=_time_or_none(data["valid_to"]),
        status=MemoryStatus(data["status"]),
        version=data["version"],
        supersedes=data["supersedes"],
        created_at=_time(data["created_at"]),
    )


def turn(data: dict[str, Any]) -> Turn:
    return Turn(
        id=data["id"],
        user_id=data["user_id"],
        ext_id=data["ext_id"],
        session_id=data["session_id"],
        time=_time(data["time"]),
        role=data["role"],
        speaker=data["speaker"],
        text=data["text"],
        caption=data["caption"],
        image_ids=tuple(data["image_ids"]),
        status=data["status"],
    )


def event(data: dict[str, Any]) -> MemoryEvent:
    return MemoryEvent(
        id=data["id"],
        user_id=data["user_id"],
        op=EventOp(data["op"]),
        actor=data["actor"],
        time=_time(data["time"]),
        turn_id=data["turn_id"],
        undoes=data["undoes"],
        changes={c["memory_id"]: (c["before"], c["after"]) for c in data["changes"]},
    )


def hit(data: dict[str, Any]) -> Hit:
    # The image's bytes are at the route `url` (Client.image); ImageRef keeps the rest.
    images = tuple(
        ImageRef(id=i["id"], mime=i["mime"], size=i["size"], caption=i["caption"])
        for i in data["images"]
    )
    return Hit(
        memory=memory(data["memory"]),
        score=data["score"],
        turns=tuple(turn(t) for t in data["turns"]),
        images=images,
        ranks=dict(data["ranks"]),
    )


def api_key(data: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=data["id"],
        user_id=data["user_id"],
        label=data["label"],
        prefix=data["prefix"],
        created_at=_time(data["created_at"]),
        # A new key (POST ./keys) is answered without revoked_at: it is live.
        revoked_at=_time_or_none(data.get("revoked_at")),
    )


def job(data: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=data["id"],
        user_id=data["user_id"],
        kind=data["kind"],
        status=data["status"],
        payload=dict(data["payload"]),
        attempts=data["attempts"],
        last_error=data["last_error"],
        replies=tuple(data["replies"]),
        created_at=_time(data["created_at"]),
        finished_at=_time_or_none(data["finished_at"]),
    )
