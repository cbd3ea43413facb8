"""Content-addressed image blobs, the only way to picture bytes.

A blob is named by the sha256 of its bytes and lives at `<root>/<sha256[:2]>/<sha256>`,
written atomically. Database rows store the sha256 only, never a path: every reader and
deleter (prompts, the image route, export, forgetting) comes through `BlobStore`, so the
folder can move, or become an object store behind the same five verbs (put, read, open,
delete, exists).

A blob is written before the database row that names it, so a crash can leave an unnamed
blob (harmless: same bytes, same name, the next ingest reuses it) but never a row naming a
missing blob.

Nothing is stored that is not a whole picture: `describe` (which `put` runs first) sniffs the
type from the first bytes, then decodes the picture with Pillow (`verify_picture`): only the
sniffed format's decoder is tried (bytes that start like a PNG and are something else do not
decode), the size must be at most `max_pixels` (read from the header, before any pixel is
decoded), and both `verify()` and a full `load()` of a fresh open must succeed (verify
checks a PNG's chunks and checksums but not its compressed data, and checks a JPEG, GIF or
WebP hardly at all). A truncated file or a decompression bomb (a small file declaring
20000x20000 pixels) is a ValidationError and writes nothing. The type a data URL declares is
not trusted or checked: the bytes decide (a JPEG sent as `data:image/png` is stored as the
JPEG it is).

This module is a leaf: it imports nothing of the memory engine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from personavlm.errors import ConfigError, NotFoundError, StoreError, ValidationError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_IMAGE_BYTES",
    "BlobRef",
    "BlobStore",
    "ImageSource",
    "check_max_pixels",
    "image_bytes",
    "is_blob_id",
    "sniff_mime",
    "verify_picture",
]

# An image as callers hand it over: a file path, the encoded bytes, or a data URL
# (`data:image/png;base64,...`, what OpenAI-style clients send).
ImageSource = Path | str | bytes

MAX_IMAGE_BYTES = 50 * 1024 * 1024
# 40 megapixels: above what cameras save by default and three times what a vision model
# takes in (Qwen2.5-VL's processor resizes to at most 12.8 MP), while decoding one costs at
# most 160 MB (4 bytes a pixel). Pillow's own guard (Image.MAX_IMAGE_PIXELS, a global we do
# not touch) warns from 89 MP and raises from 179 MP while opening; our limit is checked from
# the header right after, before anything is decoded.
DEFAULT_MAX_PIXELS = 40_000_000

_SHA256 = re.compile(r"[0-9a-f]{64}")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
# Pillow's format name for each type we sniff; only these decoders are ever tried.
_PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
}


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A stored (or checked) image: its sha256, type and size in bytes."""

    id: str
    mime: str
    size: int


def is_blob_id(value: str) -> bool:
    """Whether `value` has the shape of a blob id (64 lower-case hex digits)."""
    return _SHA256.fullmatch(value) is not None


def check_max_pixels(value: int) -> int:
    """A picture size limit as configured: ConfigError unless it is a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"the picture limit must be a whole number of pixels >= 1, got {value!r}")
    return value


def sniff_mime(data: bytes) -> str | None:
    """The image type from the file's first bytes; None when it is no image we know."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return None


class BlobStore:
    def __init__(self, root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = root
        self.max_pixels = check_max_pixels(max_pixels)

    def describe(self, source: ImageSource) -> tuple[BlobRef, bytes]:
        """Validate an image (path, bytes or data URL) without writing it: its reference
        and bytes. The picture is decoded in full (`verify_picture`)."""
        data, label = image_bytes(source)
        mime = sniff_mime(data)
        if mime is None:
            raise ValidationError(
                f"{label} is not a PNG, JPEG, GIF, WebP or BMP image (checked its first bytes)"
            )
        verify_picture(data, mime, label, max_pixels=self.max_pixels)
        return BlobRef(hashlib.sha256(data).hexdigest(), mime, len(data)), data

    def put(self, source: ImageSource) -> BlobRef:
        """Validate and store an image; storing the same bytes again writes nothing."""
        ref, data = self.describe(source)
        target = self._path(ref.id)
        if not target.exists():
            self._write(target, data)
        return ref

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).is_file()

    def read(self, blob_id: str) -> bytes:
        """The blob's bytes; NotFoundError names a blob that is not there."""
        with self.open(blob_id) as handle:
            return handle.read()

    def open(self, blob_id: str) -> BinaryIO:
        path = self._path(blob_id)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"image blob {blob_id} is not in {self.root}") from exc
        except OSError as exc:
            raise StoreError(f"image blob {blob_id} cannot be read: {exc}") from exc

    def delete(self, blob_id: str) -> bool:
        """Remove a blob; False when it was already gone."""
        try:
            self._path(blob_id).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"image blob {blob_id} could not be removed: {exc}") from exc
        return True

    def _path(self, blob_id: str) -> Path:
        if not is_blob_id(blob_id):
            raise ValidationError(f"{blob_id!r} is not an image id (64 lower-case hex digits)")
        return self.root / blob_id[:2] / blob_id

    def _write(self, target: Path, data: bytes) -> None:
        try:
            # Owner only: the folders (0700) and, through mkstemp, the files (0600).
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.parent.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise StoreError(f"could not write image blob {target}: {exc}") from exc


def verify_picture(data: bytes, mime: str, label: str, *, max_pixels: int) -> None:
    """ValidationError unless `data` decodes whole, as the format `mime` (sniffed from its
    first bytes) says, in at most `max_pixels` pixels. Only the decoder of that format is
    tried, so bytes that start like a PNG but are something else do not decode at all. Only
    the first frame of an animation is decoded; its size is the one checked."""
    # Pillow is imported here: importing the blob store (every CLI command) stays cheap.
    from PIL import Image

    expected = _PILLOW_FORMATS[mime]
    try:
        with Image.open(io.BytesIO(data), formats=[expected]) as header:
            _check_pixels(header.size, label, max_pixels)
            header.verify()  # structure and checksums, without decoding the pixels
        with Image.open(io.BytesIO(data), formats=[expected]) as picture:
            _check_pixels(picture.size, label, max_pixels)  # a fresh open: verify spends it
            picture.load()  # every pixel of the first frame: finds data cut short
    except ValidationError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS) can fire before ours sees the size.
        raise ValidationError(
            f"{label} is too large a picture: {exc} (this store takes at most "
            f"{max_pixels:,} pixels)"
        ) from exc
    except Exception as exc:
        # Malformed files raise many kinds (OSError, SyntaxError, ValueError, EOFError,
        # struct.error, ...): each means these bytes are no picture we can store or show.
        raise ValidationError(
            f"{label} is not a valid {expected} picture (it starts like one but does not "
            f"decode: {str(exc) or type(exc).__name__}); send the whole, undamaged file"
        ) from exc


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ValidationError(
            f"{label} is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,} pixels: send a smaller picture"
        )


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
