"""Conversions between database rows and records, and the snapshots the audit log keeps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from personavlm.memory.records import Memory, MemoryStatus, MemoryType, Turn
from personavlm.timeutil import from_storage

__all__ = [
    "MEMORY_COLUMNS",
    "SNAPSHOT_VERSION",
    "TURN_COLUMNS",
    "memory_from_row",
    "snapshot",
    "turn_from_row",
]

MEMORY_COLUMNS = (
    "id, user_id, type, key, content, keywords, image_ids, source_turn_ids, event_start, "
    "event_end, valid_from, valid_to, status, version, supersedes, created_at"
)
TURN_COLUMNS = (
    "id, user_id, ext_id, session_id, time, role, speaker, text, caption, image_ids, status"
)

# Format of the JSON snapshots in memory_event_changes. Bump it when a field is added, and keep
# reading the old shape: undo compares only `status` and `valid_to`, which every version has.
SNAPSHOT_VERSION = 1


def memory_from_row(row: Sequence[Any]) -> Memory:
    return Memory(
        id=row[0],
        user_id=row[1],
        type=MemoryType(row[2]),
        key=row[3],
        content=row[4],
        keywords=tuple(json.loads(row[5])),
        image_ids=tuple(json.loads(row[6])),
        source_turn_ids=tuple(json.loads(row[7])),
        event_start=from_storage(row[8]),
        event_end=from_storage(row[9]),
        valid_from=from_storage(row[10]),
        valid_to=None if row[11] is None else from_storage(row[11]),
        status=MemoryStatus(row[12]),
        version=row[13],
        supersedes=row[14],
        created_at=from_storage(row[15]),
    )


def turn_from_row(row: Sequence[Any]) -> Turn:
    return Turn(
        id=row[0],
        user_id=row[1],
        ext_id=row[2],
        session_id=row[3],
        time=from_storage(row[4]),
        role=row[5],
        speaker=row[6],
        text=row[7],
        caption=row[8],
        image_ids=tuple(json.loads(row[9])),
        status=row[10],
    )


def snapshot(memory: Memory) -> dict[str, Any]:
    data = memory.to_dict()
    data["v"] = SNAPSHOT_VERSION
    return data
