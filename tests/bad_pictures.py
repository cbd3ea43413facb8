"""Pictures for the input-bound tests, built in memory: good ones in every format the blob
store takes, and the hostile ones it must refuse (cut short, a decompression bomb, bytes that
start like one format and are another)."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp",
           "BMP": "image/bmp"}  # fmt: skip


def picture(fmt: str = "PNG", size: tuple[int, int] = (32, 24), seed: int = 0) -> bytes:
    """A real picture of random pixels (so it does not compress away) in Pillow format
    `fmt`."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(3 * size[0] * size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first part of a picture: its header is whole, its pixel data cut short."""
    return data[: int(len(data) * keep)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def huge_png(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG file whose header declares width x height pixels: one
    compressed row of data (decoding it would need the whole width x height in memory)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + _chunk(b"IEND", b"")
    )


def png_signature_on_jpeg() -> bytes:
    """The PNG signature followed by a JPEG: its first bytes say PNG, the rest is not."""
    return b"\x89PNG\r\n\x1a\n" + picture("JPEG")
