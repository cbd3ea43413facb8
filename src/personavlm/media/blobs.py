"""Content-addressed image blobs: `<root>/<sha256[:2]>/<sha256>`, written atomically.

A blob is written before the database row that names it, so a crash can leave an unnamed
blob (harmless: same bytes, same name, the next ingest reuses it) but never a row naming a
missing file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from personavlm.errors import StoreError, ValidationError
from personavlm.memory.records import ImageRef

__all__ = ["MAX_IMAGE_BYTES", "BlobStore", "sniff_mime"]

MAX_IMAGE_BYTES = 50 * 1024 * 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_mime(data: bytes) -> str | None:
    """The image type from the file's first bytes; None when it is no image we know."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return None


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def read_image(self, source: Path) -> tuple[str, str, bytes]:
        """Validate an image file; returns (sha256, mime, bytes). Writes nothing."""
        if not source.is_file():
            raise ValidationError(f"image file not found: {source}")
        size = source.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ValidationError(
                f"image {source} is {size} bytes; the limit is {MAX_IMAGE_BYTES} bytes"
            )
        data = source.read_bytes()
        mime = sniff_mime(data)
        if mime is None:
            raise ValidationError(
                f"{source} is not a PNG, JPEG, GIF, WebP or BMP image (checked its first bytes)"
            )
        return hashlib.sha256(data).hexdigest(), mime, data

    def put(self, digest: str, mime: str, data: bytes) -> ImageRef:
        target = self.path_for(digest)
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                raise StoreError(f"could not write image blob {target}: {exc}") from exc
        return ImageRef(id=digest, mime=mime, size=len(data), path=str(target))
