"""The `images` table: which pictures are registered, and whose they are.

A row holds a picture's sha256, type, size and caption; the bytes are the blob store's
(media/blobs.py), found by the same sha256. Pictures are content-addressed and shared: two
users who sent the same bytes hold one row and one blob. So a picture is a user's when one of
the user's turns or memories shows it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from personavlm.errors import NotFoundError
from personavlm.media.blobs import BlobRef
from personavlm.memory.engine import Conn
from personavlm.memory.records import ImageRef
from personavlm.timeutil import to_storage, utc_now

__all__ = ["ImageRepo"]

# Tables whose rows show pictures (an `image_ids` JSON array).
_SHOWING = ("turns", "memories")


class ImageRepo:
    """Picture rows inside one transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def register(self, blob: BlobRef, caption: str | None) -> ImageRef:
        """Register a stored blob; a picture registered already keeps its first caption."""
        self._conn.execute(
            "INSERT INTO images(id, mime, size, caption, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO NOTHING",
            (blob.id, blob.mime, blob.size, caption, to_storage(utc_now())),
        )
        return ImageRef(blob.id, blob.mime, blob.size, caption)

    def by_ids(self, ids: Sequence[str]) -> dict[str, ImageRef]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._conn.execute(
            f"SELECT id, mime, size, caption FROM images WHERE id IN ({marks})", list(ids)
        )
        return {row[0]: ImageRef(row[0], row[1], int(row[2]), row[3]) for row in rows}

    def require(self, ids: Sequence[str]) -> None:
        """NotFoundError for the first picture that is not registered."""
        found = self.by_ids(list(dict.fromkeys(ids)))
        for image_id in ids:
            if image_id not in found:
                raise NotFoundError(f"image {image_id!r} is not stored; store_image() it first")

    def shown_by(self, user_id: str, image_id: str) -> bool:
        """Whether a turn or memory of the user shows the picture."""
        # Image ids are sha256 hex digests (checked by callers), so LIKE sees no wildcards.
        return any(
            self._conn.execute(
                f"SELECT 1 FROM {table} WHERE user_id = ? AND image_ids LIKE ? LIMIT 1",
                (user_id, f'%"{image_id}"%'),
            ).fetchone()
            is not None
            for table in _SHOWING
        )

    def shown_by_anyone(self, image_id: str) -> bool:
        return any(
            self._conn.execute(
                f"SELECT 1 FROM {table} WHERE image_ids LIKE ? LIMIT 1", (f'%"{image_id}"%',)
            ).fetchone()
            is not None
            for table in _SHOWING
        )

    def ids_of(self, user_id: str) -> list[str]:
        """Every picture a turn or memory of the user shows, in first-seen order."""
        found: dict[str, None] = {}
        for table in _SHOWING:
            for (ids,) in self._conn.execute(
                f"SELECT image_ids FROM {table} WHERE user_id = ? AND image_ids <> '[]' "
                "ORDER BY id",
                (user_id,),
            ):
                found.update(dict.fromkeys(json.loads(ids)))
        return list(found)

    def remove(self, image_id: str) -> bool:
        """Delete the picture's row; False when it was not registered."""
        row = self._conn.execute(
            "DELETE FROM images WHERE id = ? RETURNING id", (image_id,)
        ).fetchone()
        return row is not None
