"""Opaque page cursors: urlsafe base64 of `{"t": time, "id": id}`, the last row of a page.

Pages are keyset pages over (time, id), so a page never skips or repeats a row when rows are
added in between (an offset would). The cursor is opaque to clients; one that does not
decode, or decodes to values no page of ours ends with (an id outside 1..MAX_ROW_ID, a year
outside 1000..9999), is a 400 naming the cursor.

Ids in paths and query values are checked here too, before they reach SQL: SQLite INTEGER
and PostgreSQL BIGINT are signed 64-bit, and a larger Python int raises OverflowError in the
driver (a 500) instead of finding nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from personavlm.errors import NotFoundError, ValidationError
from personavlm.timeutil import parse_time, to_storage

if TYPE_CHECKING:
    from personavlm.memory import MemoryStore

__all__ = [
    "MAX_LIMIT",
    "MAX_ROW_ID",
    "check_limit",
    "check_query_id",
    "decode_cursor",
    "encode_cursor",
    "memory_page",
    "stored_id",
]

MAX_LIMIT = 500
# Every row id of either engine is in 1..MAX_ROW_ID (a signed 64-bit key, counted from 1).
MAX_ROW_ID = 2**63 - 1

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
    if not isinstance(row_id, int) or isinstance(row_id, bool) or not _in_range(row_id):
        raise ValidationError(_GARBLED)
    try:
        return parse_time(data["t"], field="cursor"), row_id
    except ValidationError as exc:
        raise ValidationError(_GARBLED) from exc


def stored_id(value: int, what: str, user_id: str | None = None) -> int:
    """A row id from a path: NotFoundError (404) for one outside 1..MAX_ROW_ID, which no row
    can have, worded like the store's own answer for a missing row."""
    if not _in_range(value):
        owner = "" if user_id is None else f" for user {user_id!r}"
        raise NotFoundError(f"no {what} {value}{owner} (ids are 1..{MAX_ROW_ID})")
    return value


def check_query_id(value: int | None, name: str) -> int | None:
    """An id given as a query value (a filter): ValidationError (400) outside 1..MAX_ROW_ID."""
    if value is not None and not _in_range(value):
        raise ValidationError(f"{name} must be an id in 1..{MAX_ROW_ID}, got {value}")
    return value


def _in_range(value: int) -> bool:
    return 1 <= value <= MAX_ROW_ID


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")
    return limit


def memory_page(
    store: MemoryStore,
    user_id: str,
    *,
    types: Sequence[str] | None,
    status: str,
    start: str | None,
    end: str | None,
    limit: int,
    cursor: str | None,
    order: Literal["asc", "desc"],
) -> dict[str, Any]:
    """One page of a user's memories with the cursor of the next (REST and MCP list alike):
    one row more than asked says whether there is a next page."""
    check_limit(limit)
    rows = store.list(
        user_id,
        types=list(types) if types else None,
        status=None if status == "any" else status,
        start=start,
        end=end,
        limit=limit + 1,
        after=decode_cursor(cursor),
        newest_first=order == "desc",
    )
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "data": [m.to_dict() for m in page],
        "next_cursor": encode_cursor(page[-1].event_start, page[-1].id) if more else None,
    }
