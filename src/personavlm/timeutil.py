"""Conversation time: naive local datetimes, parsed strictly and stored as sortable text.

The paper's histories carry wall-clock times without a zone ("2024-03-05 14:30"), and its
prompts show them with the weekday. We keep them naive: a memory's time is the user's local
time of the turn that produced it. Stored form is 'YYYY-MM-DD HH:MM:SS', which sorts as text
in SQLite and compares as text in SQL filters.
"""

from __future__ import annotations

from datetime import UTC, datetime

from personavlm.errors import ValidationError

__all__ = [
    "STORAGE_FORMAT",
    "display_time",
    "from_storage",
    "local_now",
    "parse_time",
    "to_storage",
    "to_storage_or_none",
    "utc_now",
]

STORAGE_FORMAT = "%Y-%m-%d %H:%M:%S"
_INPUT_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_time(value: str | datetime, *, field: str = "time") -> datetime:
    """Parse 'YYYY-MM-DD HH:MM' (seconds and a 'T' separator are accepted too)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValidationError(
                f"{field}: {value.isoformat()} carries a time zone; give the user's naive local "
                "time (conversation times have no zone)"
            )
        return value.replace(microsecond=0)
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected a string 'YYYY-MM-DD HH:MM', got {value!r}")
    text = value.strip()
    for fmt in _INPUT_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValidationError(
        f"{field}: {value!r} is not a valid time; expected 'YYYY-MM-DD HH:MM', "
        "for example '2024-03-05 14:30'"
    )


def to_storage(value: datetime) -> str:
    return value.strftime(STORAGE_FORMAT)


def to_storage_or_none(value: datetime | None) -> str | None:
    """to_storage for optional times (valid_to, snapshots): None stays None."""
    return None if value is None else to_storage(value)


def from_storage(value: str) -> datetime:
    return datetime.strptime(value, STORAGE_FORMAT)


def display_time(value: datetime) -> str:
    """'2024-03-05 14:30 (Tuesday)': the shape the paper's prompts use."""
    return f"{value:%Y-%m-%d %H:%M} ({value:%A})"


def utc_now() -> datetime:
    """Wall-clock time for audit columns (created_at, event time), naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def local_now() -> datetime:
    """'Now' on the conversation clock: naive local time, like every turn's time. Used when a
    caller gives no time for a memory, so it sorts and filters with the turns around it."""
    return datetime.now().replace(microsecond=0)
