"""The immutable turn log: appending turns, splitting them into sessions.

A session ends when the next turn comes more than SESSION_GAP after the previous one
(t_s = 60 minutes, PAPER.md section 2). Turns are appended in time order per user; a turn id
already stored with the same content is skipped, with other content it is a conflict (the log
is the source of truth and never rewritten).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from personavlm.errors import ConflictError, ValidationError
from personavlm.memory.engine import Conn
from personavlm.memory.records import Turn
from personavlm.memory.rows import TURN_COLUMNS, turn_from_row
from personavlm.memory.validate import check_text
from personavlm.timeutil import TimeWindow, parse_time, to_storage, utc_now

__all__ = ["ROLES", "SESSION_GAP", "TurnInput", "TurnRepo"]

SESSION_GAP = timedelta(minutes=60)
ROLES = ("user", "assistant")
TURN_STATUSES = ("ok", "failed")


@dataclass(frozen=True, slots=True)
class TurnInput:
    """A turn as a caller gives it; `images` are files to store, by path."""

    time: datetime
    role: str
    text: str
    ext_id: str | None = None
    speaker: str | None = None
    caption: str | None = None
    image_ids: tuple[str, ...] = ()
    # "failed": a user's message the model never answered (stored so it is not lost)
    status: str = "ok"

    def __post_init__(self) -> None:
        if self.status not in TURN_STATUSES:
            raise ValidationError(f"turn status {self.status!r} must be one of {TURN_STATUSES}")
        if self.status == "failed" and self.role != "user":
            raise ValidationError("only a user's turn can be failed (unanswered)")

    @classmethod
    def create(
        cls,
        *,
        time: str | datetime,
        role: str,
        text: str,
        ext_id: str | None = None,
        speaker: str | None = None,
        caption: str | None = None,
        image_ids: tuple[str, ...] = (),
    ) -> TurnInput:
        """Validate every field; raises ValidationError naming the turn and the field."""
        label = f"turn {ext_id!r}" if ext_id is not None else "turn"
        if role not in ROLES:
            raise ValidationError(f"{label}: role {role!r} must be 'user' or 'assistant'")
        if ext_id is not None:
            check_text(ext_id, field=f"{label} id")
        if speaker is not None:
            check_text(speaker, field=f"{label} speaker")
        if caption is not None:
            check_text(caption, field=f"{label} caption")
        has_picture = bool(image_ids) or caption is not None
        # An assistant may reply with nothing (imported histories have such turns); a user
        # turn needs text or a picture.
        allow_empty = has_picture or role == "assistant"
        check_text(text, field=f"{label} text", allow_empty=allow_empty)
        return cls(
            time=parse_time(time, field=f"{label} time"),
            role=role,
            text=text,
            ext_id=ext_id,
            speaker=speaker,
            caption=caption,
            image_ids=tuple(image_ids),
        )

    def same_as(self, turn: Turn) -> bool:
        return (
            self.time == turn.time
            and self.role == turn.role
            and self.text == turn.text
            and self.speaker == turn.speaker
            and self.caption == turn.caption
            and self.image_ids == turn.image_ids
            and self.status == turn.status
        )


class TurnRepo:
    """The turn log and its sessions inside one transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def existing(self, user_id: str, ext_id: str) -> Turn | None:
        conn = self._conn
        row = conn.execute(
            f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ? AND ext_id = ?", (user_id, ext_id)
        ).fetchone()
        return None if row is None else turn_from_row(row)

    def latest(self, user_id: str) -> Turn | None:
        conn = self._conn
        row = conn.execute(
            f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ? "
            "ORDER BY time DESC, id DESC LIMIT 1",
            (user_id,),
        ).fetchone()
        return None if row is None else turn_from_row(row)

    def new_turns(self, user_id: str, turns: Sequence[TurnInput]) -> list[TurnInput]:
        """The turns not stored yet, after checking all of them against the log: a stored id
        with other content, or a new turn earlier than the one before it, is a ConflictError."""
        pending: list[TurnInput] = []
        seen: set[str] = set()
        for turn in turns:
            if turn.ext_id is not None:
                if turn.ext_id in seen:
                    raise ConflictError(f"turn id {turn.ext_id!r} is given twice")
                seen.add(turn.ext_id)
                found = self.existing(user_id, turn.ext_id)
                if found is not None:
                    if not turn.same_as(found):
                        raise ConflictError(
                            f"turn id {turn.ext_id!r} is already stored for user {user_id!r} with "
                            "other content; the turn log is immutable: give the new turn a new id"
                        )
                    continue
            pending.append(turn)
        latest = self.latest(user_id)
        previous_time = None if latest is None else latest.time
        for turn in pending:
            if previous_time is not None and turn.time < previous_time:
                raise ConflictError(
                    f"turn {turn.ext_id or ''} at {to_storage(turn.time)} is earlier than the turn "
                    f"before it ({to_storage(previous_time)}); turns are appended in time order: "
                    "sort them by time"
                )
            previous_time = turn.time
        return pending

    def append(self, user_id: str, turn: TurnInput) -> Turn | None:
        """Append one turn (already checked by new_turns) inside the caller's transaction; None
        when it is stored already (another process ingesting the same turns got there first)."""
        conn = self._conn
        if turn.ext_id is not None and (found := self.existing(user_id, turn.ext_id)):
            if turn.same_as(found):
                return None
            raise ConflictError(
                f"turn id {turn.ext_id!r} was stored for user {user_id!r} with other content "
                "while this ingest ran"
            )
        previous = self.latest(user_id)
        if previous is not None and turn.time < previous.time:  # another writer got in between
            raise ConflictError(
                f"turn {turn.ext_id or ''} at {to_storage(turn.time)} is earlier than user "
                f"{user_id!r}'s latest turn at {to_storage(previous.time)}"
            )
        session_id = _session_for(conn, user_id, turn.time, previous)
        cursor = conn.execute(
            "INSERT INTO turns(user_id, ext_id, session_id, time, role, speaker, text, caption, "
            "image_ids, created_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                user_id,
                turn.ext_id,
                session_id,
                to_storage(turn.time),
                turn.role,
                turn.speaker,
                turn.text,
                turn.caption,
                json.dumps(list(turn.image_ids)),
                to_storage(utc_now()),
                turn.status,
            ),
        )
        turn_id = int(cursor.fetchone()[0])
        return Turn(
            id=turn_id,
            user_id=user_id,
            ext_id=turn.ext_id,
            session_id=session_id,
            time=turn.time,
            role=turn.role,
            speaker=turn.speaker,
            text=turn.text,
            caption=turn.caption,
            image_ids=turn.image_ids,
            status=turn.status,
        )

    def page(
        self,
        user_id: str,
        *,
        window: TimeWindow = TimeWindow(),
        session_id: int | None = None,
        limit: int = 1000,
        after: tuple[datetime, int] | None = None,
    ) -> list[Turn]:
        """The user's turns in time order within `window` (or one session); `after` = (time,
        id) of the last turn of the previous page."""
        if limit < 1:
            raise ValidationError(f"limit must be >= 1, got {limit}")
        sql = f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ?"
        params: list[object] = [user_id]
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        clauses, bounds = window.sql("time", "time")
        sql += clauses
        params.extend(bounds)
        if after is not None:
            sql += " AND (time > ? OR (time = ? AND id > ?))"
            stamp = to_storage(after[0])
            params.extend([stamp, stamp, int(after[1])])
        sql += " ORDER BY time, id LIMIT ?"
        params.append(limit)
        return [turn_from_row(row) for row in self._conn.execute(sql, params)]

    def every(self, user_id: str) -> list[Turn]:
        """Every turn of the user in time order (exports)."""
        rows = self._conn.execute(
            f"SELECT {TURN_COLUMNS} FROM turns WHERE user_id = ? ORDER BY time, id", (user_id,)
        )
        return [turn_from_row(row) for row in rows]

    def session_count(self, user_id: str) -> int:
        conn = self._conn
        row = conn.execute("SELECT count(*) FROM sessions WHERE user_id = ?", (user_id,)).fetchone()
        return int(row[0])

    def by_ids(self, ids: list[int]) -> dict[int, Turn]:
        conn = self._conn
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT {TURN_COLUMNS} FROM turns WHERE id IN ({marks})", ids)
        return {row[0]: turn_from_row(row) for row in rows}


def _session_for(conn: Conn, user_id: str, time: datetime, previous: Turn | None) -> int:
    stamp = to_storage(time)
    if previous is not None and time - previous.time <= SESSION_GAP:
        conn.execute("UPDATE sessions SET end_time = ? WHERE id = ?", (stamp, previous.session_id))
        return previous.session_id
    cursor = conn.execute(
        "INSERT INTO sessions(user_id, start_time, end_time) VALUES (?, ?, ?) RETURNING id",
        (user_id, stamp, stamp),
    )
    return int(cursor.fetchone()[0])
