"""Storing an exchange and deciding which update jobs it starts.

An exchange (the user's turn and the assistant's reply) is appended to the log and its
`turn` job queued in one unit of work. The session-close rule lives here: when the user's
turn opened a new session (the turn log splits sessions at a 60-minute gap, SESSION_GAP),
the previous session's `session` job is queued first, in the same transaction, so a session
is summarised exactly once and never before it ended.
"""

from __future__ import annotations

from dataclasses import dataclass

from personavlm.agent.jobs import SessionJob, TurnJob, enqueue
from personavlm.errors import ConflictError
from personavlm.memory.records import Turn
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.memory.validate import check_user_id

__all__ = ["Exchange", "close_session", "record_exchange"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """What record_exchange stored: the two turns, the session their arrival closed (if
    any), and the update job queued for them."""

    user_turn: Turn
    assistant_turn: Turn
    closed_session: int | None
    job_id: int


def record_exchange(
    store: MemoryStore, user_id: str, user_turn: TurnInput, assistant_turn: TurnInput
) -> Exchange | None:
    """Append a user turn and the assistant's reply and queue their update job, in one
    transaction (after the previous session's close job when this turn opened a new
    session). None when both turns are stored already (a replayed exchange)."""
    check_user_id(user_id)
    indexed = store.index_turns([user_turn, assistant_turn])
    with store.transaction(user_id) as tx:
        tx.users.ensure(user_id)
        previous = tx.turns.latest(user_id)
        asked, answered = (tx.append_turn(user_id, turn, "agent") for turn in indexed)
        if asked is None and answered is None:
            return None
        if asked is None or answered is None:
            raise ConflictError(
                "only one of the exchange's two turns is stored already; "
                "give both turns new ids or replay them unchanged"
            )
        closed = None
        if previous is not None and previous.session_id != asked.session_id:
            closed = previous.session_id
            enqueue(tx.queue, user_id, SessionJob(closed))
        job_id = enqueue(tx.queue, user_id, TurnJob(asked.id, answered.id))
    assert job_id is not None  # turn jobs have no dedupe key
    return Exchange(asked, answered, closed, job_id)


def close_session(store: MemoryStore, user_id: str) -> int | None:
    """Queue the close of the user's latest session now (instead of waiting for the
    60-minute gap); the job id, or None when it is queued already or there is none."""
    with store.transaction(user_id) as tx:
        tx.users.require(user_id)
        latest = tx.turns.latest(user_id)
        if latest is None:
            return None
        return enqueue(tx.queue, user_id, SessionJob(latest.session_id))
