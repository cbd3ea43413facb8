"""Persisting the personality: the current state per user and every reading ever taken.

Each reading is kept with its turn id, whether it was absorbed, and the state after it, so the
trajectory can be drawn as is, or replayed from the raw readings with another schedule
(`personavlm.personality.replay`). The skip rule is fixed per user at the first reading, since
mixing rules would make the trajectory impossible to replay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from personavlm.errors import ConflictError, NotFoundError, ValidationError
from personavlm.memory.engine import Conn
from personavlm.personality import PersonalityState, Reading, SkipRule, Traits, update
from personavlm.timeutil import from_storage, to_storage, utc_now

__all__ = ["PersonalityRepo", "ReadingRecord"]


@dataclass(frozen=True, slots=True)
class ReadingRecord:
    id: int
    turn_id: int | None
    time: datetime
    reading: Reading
    absorbed: bool
    state_after: PersonalityState

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "turn_id": self.turn_id,
            "time": to_storage(self.time),
            "reading": self.reading.to_dict(),
            "absorbed": self.absorbed,
            "traits_after": self.state_after.traits.to_dict(),
            "step_after": self.state_after.step,
        }


class PersonalityRepo:
    """The personality_state and personality_readings tables of one transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def current(self, user_id: str) -> PersonalityState:
        conn = self._conn
        row = conn.execute(
            "SELECT traits, step FROM personality_state WHERE user_id = ?", (user_id,)
        ).fetchone()
        if row is None:
            return PersonalityState.initial()
        return PersonalityState(Traits.from_mapping(json.loads(row[0])), row[1])

    def record(
        self,
        user_id: str,
        reading: Reading,
        turn_id: int | None,
        time: datetime,
        skip_rule: SkipRule | str | None,
    ) -> PersonalityState:
        conn = self._conn
        rule = _rule_for(conn, user_id, skip_rule)
        if turn_id is not None:
            _check_turn(conn, user_id, turn_id)
        before = self.current(user_id)
        after = update(before, reading, skip_rule=rule)
        traits = json.dumps(after.traits.to_dict())
        conn.execute(
            "INSERT INTO personality_readings(user_id, turn_id, time, reading, absorbed, "
            "traits_after, step_after) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                user_id,
                turn_id,
                to_storage(time),
                json.dumps(reading.to_dict()),
                int(after.step > before.step),
                traits,
                after.step,
            ),
        )
        conn.execute(
            "INSERT INTO personality_state(user_id, traits, step, skip_rule, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET traits = excluded.traits, "
            "step = excluded.step, updated_at = excluded.updated_at",
            (user_id, traits, after.step, rule.value, to_storage(utc_now())),
        )
        return after

    def has_reading_for(self, user_id: str, turn_id: int) -> bool:
        """Whether a reading of this turn is stored (an update job that ran twice after a
        crash must not absorb the same turn twice)."""
        found = self._conn.execute(
            "SELECT 1 FROM personality_readings WHERE user_id = ? AND turn_id = ?",
            (user_id, turn_id),
        ).fetchone()
        return found is not None

    def readings(self, user_id: str) -> list[ReadingRecord]:
        conn = self._conn
        rows = conn.execute(
            "SELECT id, turn_id, time, reading, absorbed, traits_after, step_after "
            "FROM personality_readings WHERE user_id = ? ORDER BY id",
            (user_id,),
        )
        return [
            ReadingRecord(
                id=row[0],
                turn_id=row[1],
                time=from_storage(row[2]),
                reading=Reading.from_mapping(json.loads(row[3])),
                absorbed=bool(row[4]),
                state_after=PersonalityState(Traits.from_mapping(json.loads(row[5])), row[6]),
            )
            for row in rows
        ]


def _rule_for(conn: Conn, user_id: str, asked: SkipRule | str | None) -> SkipRule:
    row = conn.execute(
        "SELECT skip_rule FROM personality_state WHERE user_id = ?", (user_id,)
    ).fetchone()
    stored = None if row is None else SkipRule(row[0])
    wanted = None if asked is None else _skip_rule(asked)
    if stored is not None and wanted is not None and wanted is not stored:
        raise ConflictError(
            f"user {user_id!r} has personality readings absorbed with skip rule "
            f"{stored.value!r}; one user's trajectory uses one rule (replay() the readings to "
            "compare rules)"
        )
    return stored or wanted or SkipRule.PAPER


def _skip_rule(value: SkipRule | str) -> SkipRule:
    try:
        return SkipRule(value)
    except ValueError:
        raise ValidationError(f"unknown skip rule {value!r}; use 'paper' or 'reference'") from None


def _check_turn(conn: Conn, user_id: str, turn_id: int) -> None:
    row = conn.execute(
        "SELECT 1 FROM turns WHERE id = ? AND user_id = ?", (turn_id, user_id)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"turn {turn_id} is not a turn of user {user_id!r}")
