"""Conversation time: naive local datetimes, parsed strictly and stored as sortable text.

The paper's histories carry wall-clock times without a zone ("2024-03-05 14:30"), and its
prompts show them with the weekday. We keep them naive: a memory's time is the user's local
time of the turn that produced it. Stored form is 'YYYY-MM-DD HH:MM:SS', which sorts as text
in SQLite and compares as text in SQL filters. That holds for four-digit years only, so
`parse_time` accepts years MIN_YEAR..MAX_YEAR and nothing else (datetime itself allows 1..9999,
and `strftime('%Y')` writes year 999 as '999', which sorts after '2024' and does not parse
back).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from personavlm.errors import ValidationError

__all__ = [
    "MAX_YEAR",
    "MIN_YEAR",
    "STORAGE_FORMAT",
    "TimeWindow",
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
# The years a stored time can have: four digits, so the text form sorts and parses back.
MIN_YEAR = 1000
MAX_YEAR = 9999


def parse_time(value: str | datetime, *, field: str = "time") -> datetime:
    """Parse 'YYYY-MM-DD HH:MM' (seconds and a 'T' separator are accepted too); a datetime
    is checked the same way. Years outside MIN_YEAR..MAX_YEAR are refused."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValidationError(
                f"{field}: {value.isoformat()} carries a time zone; give the user's naive local "
                "time (conversation times have no zone)"
            )
        return _in_year_range(value.replace(microsecond=0), field)
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected a string 'YYYY-MM-DD HH:MM', got {value!r}")
    text = value.strip()
    for fmt in _INPUT_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _in_year_range(parsed, field)
    raise ValidationError(
        f"{field}: {value!r} is not a valid time; expected 'YYYY-MM-DD HH:MM', "
        "for example '2024-03-05 14:30'"
    )


def _in_year_range(value: datetime, field: str) -> datetime:
    # strptime's %Y takes '0999' (year 999): refused here with the datetime branch, once.
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValidationError(
            f"{field}: year {value.year} is out of range; times must fall in the years "
            f"{MIN_YEAR}..{MAX_YEAR}"
        )
    return value


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


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A closed interval of conversation time; either bound may be open (None).

    The one form a time filter takes from where it is parsed (the protocol, a route, a CLI
    flag) to where it is applied (SQL, the dense index). A reversed window is refused here,
    once, for every caller. Something with a time span [first, last] (a memory's event time,
    a turn's time twice) is in the window when the spans overlap: last >= start and
    first <= end (`conditions`, the only place this rule is written).
    """

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValidationError(
                f"start is after end ({to_storage(self.start)} > {to_storage(self.end)}); swap them"
            )

    @classmethod
    def parse(
        cls,
        start: str | datetime | None,
        end: str | datetime | None,
        *,
        names: tuple[str, str] = ("start", "end"),
    ) -> TimeWindow:
        """Both bounds parsed strictly; ValidationError names the bad one."""
        return cls(
            None if start is None else parse_time(start, field=names[0]),
            None if end is None else parse_time(end, field=names[1]),
        )

    @property
    def is_open(self) -> bool:
        return self.start is None and self.end is None

    def conditions(self) -> list[tuple[str, Callable[[Any, Any], Any], datetime]]:
        """The overlap rule: (which side of the span, comparison, bound) per given bound."""
        found: list[tuple[str, Callable[[Any, Any], Any], datetime]] = []
        if self.start is not None:
            found.append(("last", operator.ge, self.start))
        if self.end is not None:
            found.append(("first", operator.le, self.end))
        return found

    def sql(self, first: str, last: str) -> tuple[str, list[object]]:
        """` AND ...` clauses keeping rows whose [first, last] columns overlap the window."""
        symbols = {operator.ge: ">=", operator.le: "<="}
        columns = {"first": first, "last": last}
        clauses = [f" AND {columns[side]} {symbols[cmp]} ?" for side, cmp, _ in self.conditions()]
        return "".join(clauses), [to_storage(bound) for _, _, bound in self.conditions()]

    def mask(self, firsts: Any, lasts: Any, stamp: Callable[[datetime], Any]) -> Any:
        """Element-wise overlap for arrays of span bounds (numpy), bounds converted by
        `stamp` into the arrays' unit; True where nothing constrains."""
        keep: Any = True
        sides = {"first": firsts, "last": lasts}
        for side, cmp, bound in self.conditions():
            keep = cmp(sides[side], stamp(bound)) & keep
        return keep
