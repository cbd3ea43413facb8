"""Opaque page cursors: urlsafe base64 of `{"t": time, "id": id}`, the last row of a page.

Pages are keyset pages over (time, id), so a page never skips or repeats a row when rows are
added in between (an offset would). The cursor is opaque to clients; one that does not
decode is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from personavlm.errors import ValidationError
from personavlm.timeutil import parse_time, to_storage

__all__ = ["MAX_LIMIT", "check_limit", "decode_cursor", "encode_cursor"]

MAX_LIMIT = 500

_GARBLED = "cursor is not one this service made; pass next_cursor from the previous page as is"


def encode_cursor(time: datetime, row_id: int) -> str:
    raw = json.dumps({"t": to_storage(time), "id": row_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(_GARBLED) from exc
    if not isinstance(data, dict) or not isinstance(data.get("t"), str):
        raise ValidationError(_GARBLED)
    row_id = data.get("id")
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        raise ValidationError(_GARBLED)
    try:
        return parse_time(data["t"], field="cursor"), row_id
    except ValidationError as exc:
        raise ValidationError(_GARBLED) from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")
    return limit
