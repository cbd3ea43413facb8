"""Content-addressed image blobs: `<root>/<sha256[:2]>/<sha256>`, written atomically.

A blob is written before the database row that names it, so a crash can leave an unnamed
blob (harmless: same bytes, same name, the next ingest reuses it) but never a row naming a
missing file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from pathlib import Path

from personavlm.errors import StoreError, ValidationError
from personavlm.memory.records import ImageRef

__all__ = ["MAX_IMAGE_BYTES", "BlobStore", "ImageSource", "image_bytes", "sniff_mime"]

# An image as callers hand it over: a file path, the encoded bytes, or a data URL
# (`data:image/png;base64,...`, what OpenAI-style clients send).
ImageSource = Path | str | bytes

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

    def read_image(self, source: ImageSource) -> tuple[str, str, bytes]:
        """Validate an image (path, bytes or data URL); returns (sha256, mime, bytes).
        Writes nothing."""
        data, label = image_bytes(source)
        mime = sniff_mime(data)
        if mime is None:
            raise ValidationError(
                f"{label} is not a PNG, JPEG, GIF, WebP or BMP image (checked its first bytes)"
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


def image_bytes(source: ImageSource) -> tuple[bytes, str]:
    """The encoded bytes of an image source and a label for error messages; checks size."""
    if isinstance(source, bytes):
        data, label = source, f"image bytes ({len(source)} bytes)"
    elif isinstance(source, str) and source.startswith("data:"):
        data, label = _data_url_bytes(source), "image data URL"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValidationError(f"image file not found: {path}")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ValidationError(f"image {path} is {size} bytes; the limit is {MAX_IMAGE_BYTES}")
        data, label = path.read_bytes(), str(path)
    if not data:
        raise ValidationError(f"{label} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValidationError(f"{label} is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    return data, label


def _data_url_bytes(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ValidationError(
            f"image data URL must read data:image/<type>;base64,<data> (got {header[:40]!r}...)"
        )
    declared = header[len("data:") : -len(";base64")]
    if not declared.startswith("image/"):
        raise ValidationError(f"data URL type {declared!r} is not an image type")
    # base64 grows data by 4/3: refuse before decoding what would be over the limit.
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ValidationError(f"image data URL is over the {MAX_IMAGE_BYTES}-byte limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"image data URL holds invalid base64: {exc}") from exc
