"""Whole users: registering them, exporting everything they have, forgetting them.

Pictures are content-addressed and shared (memory/images.py), so forgetting a user removes
only the pictures no other user's turn or memory shows; their blobs go after the commit,
through the blob store.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from personavlm.errors import NotFoundError, StoreError, UserGoneError
from personavlm.media.blobs import BlobStore
from personavlm.memory.engine import Conn
from personavlm.memory.images import ImageRepo
from personavlm.memory.keys import KeyRepo
from personavlm.memory.memories import MemoryRepo
from personavlm.memory.personality_log import PersonalityRepo
from personavlm.memory.turnlog import TurnRepo
from personavlm.timeutil import from_storage, to_storage, utc_now

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "UserDeletion",
    "UserRepo",
    "current_epoch",
    "remove_blobs",
    "user_key",
]

EXPORT_FORMAT = "personavlm.export"
EXPORT_VERSION = 1

# Tables counted in a deletion report (everything else cascades from `users` unreported).
_COUNTED = ("memories", "turns", "memory_events", "api_keys")


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


def user_key(user_id: str) -> str:
    """How the user epochs table names a user: the id's sha256, so forgetting a user leaves
    no readable trace of the id."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def current_epoch(conn: Conn, user_id: str) -> int:
    """How often the user id was forgotten so far (0: never)."""
    row = conn.execute(
        "SELECT epoch FROM user_epochs WHERE user_key = ?", (user_key(user_id),)
    ).fetchone()
    return 0 if row is None else int(row[0])


class UserRepo:
    """The `users` table, and what is done to a user as a whole, inside one transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def exists(self, user_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone()
        return row is not None

    def require(self, user_id: str) -> None:
        if not self.exists(user_id):
            raise NotFoundError(f"no user {user_id!r} in this store")

    def epoch(self, user_id: str) -> int:
        return current_epoch(self._conn, user_id)

    def ensure(self, user_id: str, *, epoch: int | None = None) -> bool:
        """Register the user unless known; True when this call registered it.

        `epoch`: the user's epoch when the caller's work began (`epoch()`); if the user was
        forgotten since, UserGoneError, so work that started before a deletion can never
        bring the user back."""
        if epoch is not None and self.epoch(user_id) != epoch:
            raise UserGoneError(
                f"user {user_id!r} was deleted while this request ran; nothing of it was stored"
            )
        cursor = self._conn.execute(
            "INSERT INTO users(id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
            (user_id, to_storage(utc_now())),
        )
        return cursor.rowcount == 1

    def ids(self) -> list[str]:
        return [row[0] for row in self._conn.execute("SELECT id FROM users ORDER BY id")]

    def created_at(self, user_id: str) -> datetime:
        row = self._conn.execute("SELECT created_at FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user {user_id!r}")
        return from_storage(row[0])

    def delete(self, user_id: str) -> tuple[UserDeletion, list[str]]:
        """Delete every row of the user; returns the counts and the pictures that became
        nobody's (their blobs go after the commit: remove_blobs)."""
        conn = self._conn
        self.require(user_id)
        counts = {
            table: int(
                conn.execute(
                    f"SELECT count(*) FROM {table} WHERE user_id = ?", (user_id,)
                ).fetchone()[0]
            )
            for table in _COUNTED
        }
        images = ImageRepo(conn)
        pictures = images.ids_of(user_id)
        conn.engine.forget_user(conn, user_id)
        # Everything else hangs off users by ON DELETE CASCADE (memory/ddl.py).
        conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
        conn.execute(
            "INSERT INTO user_epochs(user_key, epoch) VALUES (?, 1) "
            "ON CONFLICT(user_key) DO UPDATE SET epoch = user_epochs.epoch + 1",
            (user_key(user_id),),
        )
        orphans = [i for i in pictures if not images.shown_by_anyone(i) and images.remove(i)]
        deletion = UserDeletion(
            user_id=user_id,
            memories=counts["memories"],
            turns=counts["turns"],
            events=counts["memory_events"],
            images=len(orphans),
            blobs=0,
            keys=counts["api_keys"],
        )
        return deletion, orphans

    def export(self, user_id: str, blobs: BlobStore) -> dict[str, Any]:
        """Everything of the user as one JSON-ready document, pictures inline as base64."""
        created = self.created_at(user_id)
        memories = MemoryRepo(self._conn)
        personality = PersonalityRepo(self._conn)
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "user": {"id": user_id, "created_at": to_storage(created)},
            "memories": [m.to_dict() for m in memories.every(user_id)],
            "events": [e.to_dict() for e in memories.events_of(user_id)],
            "turns": [t.to_dict() for t in TurnRepo(self._conn).every(user_id)],
            "personality": {
                "current": personality.current(user_id).to_dict(),
                "readings": [r.to_dict() for r in personality.readings(user_id)],
            },
            "keys": [k.to_dict() for k in KeyRepo(self._conn).listing(user_id)],
            "images": self._image_entries(user_id, blobs),
        }

    def _image_entries(self, user_id: str, blobs: BlobStore) -> list[dict[str, Any]]:
        images = ImageRepo(self._conn)
        ids = images.ids_of(user_id)
        found = images.by_ids(ids)
        entries = []
        for image_id in ids:
            if image_id not in found:
                raise StoreError(f"picture {image_id} is referenced but not registered in images")
            ref = found[image_id]
            try:
                data = blobs.read(image_id)
            except NotFoundError as exc:  # a registered picture without bytes: our fault
                raise StoreError(f"picture {image_id} is registered but {exc}") from exc
            entries.append(
                {
                    "id": ref.id,
                    "mime": ref.mime,
                    "size": ref.size,
                    "caption": ref.caption,
                    "data_base64": base64.b64encode(data).decode("ascii"),
                }
            )
        return entries


def remove_blobs(blobs: BlobStore, image_ids: list[str]) -> int:
    """Remove the blobs of pictures nobody shows any more; how many files went."""
    removed = 0
    for image_id in image_ids:
        try:
            removed += blobs.delete(image_id)
        except StoreError as exc:
            raise StoreError(
                f"the user's rows are deleted but picture {image_id} could not be removed: "
                f"{exc}; delete the file by hand"
            ) from exc
    return removed
