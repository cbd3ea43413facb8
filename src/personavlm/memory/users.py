"""Whole users: which pictures are theirs, exporting everything they have, forgetting them.

Pictures are content-addressed and shared: two users who sent the same bytes hold one blob.
So a picture is a user's when one of the user's turns or memories shows it, and forgetting a
user removes only the pictures no other user's turn or memory shows.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personavlm.errors import NotFoundError, StoreError
from personavlm.memory import audit, keys, personality_log
from personavlm.memory.engine import Conn
from personavlm.memory.records import ImageRef
from personavlm.memory.rows import MEMORY_COLUMNS, TURN_COLUMNS, memory_from_row, turn_from_row
from personavlm.timeutil import from_storage, to_storage

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "UserDeletion",
    "delete_rows",
    "export",
    "image_ids_of",
    "remove_blobs",
    "shows_image",
]

EXPORT_FORMAT = "personavlm.export"
EXPORT_VERSION = 1


@dataclass(frozen=True, slots=True)
class UserDeletion:
    user_id: str
    memories: int
    turns: int
    events: int
    images: int  # picture rows removed (no other user shows them)
    blobs: int  # blob files removed
    keys: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "memories": self.memories,
            "turns": self.turns,
            "events": self.events,
            "images": self.images,
            "blobs": self.blobs,
            "keys": self.keys,
        }


def shows_image(conn: Conn, user_id: str, image_id: str) -> bool:
    # Image ids are sha256 hex digests (checked by the caller), so LIKE sees no wildcards.
    pattern = f'%"{image_id}"%'
    for table in ("turns", "memories"):
        row = conn.execute(
            f"SELECT 1 FROM {table} WHERE user_id = ? AND image_ids LIKE ? LIMIT 1",
            (user_id, pattern),
        ).fetchone()
        if row is not None:
            return True
    return False


def image_ids_of(conn: Conn, user_id: str) -> list[str]:
    """Every picture a turn or memory of the user shows, in first-seen order."""

    found: dict[str, None] = {}
    for table in ("turns", "memories"):
        for (ids,) in conn.execute(
            f"SELECT image_ids FROM {table} WHERE user_id = ? AND image_ids <> '[]' ORDER BY id",
            (user_id,),
        ):
            found.update(dict.fromkeys(json.loads(ids)))
    return list(found)


def delete_rows(conn: Conn, user_id: str) -> tuple[UserDeletion, list[ImageRef]]:
    """Delete every row of the user inside the caller's transaction; returns the counts and
    the pictures that became nobody's (their blobs go after the commit: remove_blobs)."""
    counts = {
        table: int(
            conn.execute(f"SELECT count(*) FROM {table} WHERE user_id = ?", (user_id,)).fetchone()[
                0
            ]
        )
        for table in ("memories", "turns", "memory_events", "api_keys")
    }
    pictures = image_ids_of(conn, user_id)
    conn.engine.forget_user(conn, user_id)
    # Everything else hangs off users by ON DELETE CASCADE (schema.py / postgres_schema.py).
    conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
    orphans = [i for i in pictures if not _shown_by_anyone(conn, i)]
    refs = []
    for image_id in orphans:
        row = conn.execute(
            "DELETE FROM images WHERE id = ? RETURNING id, mime, size, path, caption", (image_id,)
        ).fetchone()
        if row is not None:
            refs.append(ImageRef(row[0], row[1], int(row[2]), row[3], row[4]))
    deletion = UserDeletion(
        user_id=user_id,
        memories=counts["memories"],
        turns=counts["turns"],
        events=counts["memory_events"],
        images=len(refs),
        blobs=0,
        keys=counts["api_keys"],
    )
    return deletion, refs


def remove_blobs(refs: list[ImageRef]) -> int:
    removed = 0
    for ref in refs:
        try:
            Path(ref.path).unlink()
            removed += 1
        except FileNotFoundError:
            continue  # already gone: nothing of the user is left there
        except OSError as exc:
            raise StoreError(
                f"the user's rows are deleted but the picture {ref.path} could not be "
                f"removed: {exc}; delete the file by hand"
            ) from exc
    return removed


def export(conn: Conn, user_id: str) -> dict[str, Any]:
    """Everything of the user as one JSON-ready document, pictures inline as base64."""
    created = conn.execute("SELECT created_at FROM users WHERE id = ?", (user_id,)).fetchone()
    if created is None:
        raise NotFoundError(f"no user {user_id!r}")
    memories = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = ? ORDER BY id", (user_id,)
    ).fetchall()
    turns = conn.execute(
        f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ? ORDER BY time, id", (user_id,)
    ).fetchall()
    event_ids = [
        int(row[0])
        for row in conn.execute(
            "SELECT id FROM memory_events WHERE user_id = ? ORDER BY id", (user_id,)
        )
    ]
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "user": {"id": user_id, "created_at": to_storage(from_storage(created[0]))},
        "memories": [memory_from_row(row).to_dict() for row in memories],
        "events": [audit.load_event(conn, user_id, i).to_dict() for i in event_ids],
        "turns": [turn_from_row(row).to_dict() for row in turns],
        "personality": {
            "current": personality_log.current(conn, user_id).to_dict(),
            "readings": [r.to_dict() for r in personality_log.readings(conn, user_id)],
        },
        "keys": [k.to_dict() for k in keys.listing(conn, user_id)],
        "images": [_image_entry(conn, i) for i in image_ids_of(conn, user_id)],
    }


def _image_entry(conn: Conn, image_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, mime, size, path, caption FROM images WHERE id = ?", (image_id,)
    ).fetchone()
    if row is None:
        raise StoreError(f"picture {image_id} is referenced but not registered in images")
    try:
        data = Path(row[3]).read_bytes()
    except OSError as exc:
        raise StoreError(f"picture {image_id}'s blob {row[3]} cannot be read: {exc}") from exc
    return {
        "id": row[0],
        "mime": row[1],
        "size": int(row[2]),
        "caption": row[4],
        "data_base64": base64.b64encode(data).decode("ascii"),
    }


def _shown_by_anyone(conn: Conn, image_id: str) -> bool:
    pattern = f'%"{image_id}"%'
    return any(
        conn.execute(f"SELECT 1 FROM {table} WHERE image_ids LIKE ? LIMIT 1", (pattern,)).fetchone()
        is not None
        for table in ("turns", "memories")
    )
