"""Storing an exchange and deciding which update jobs it starts.

An exchange (the user's turn and the assistant's reply) is appended to the log and its
`turn` job queued in one unit of work. The session-close rule lives here: when the user's
turn opened a new session (the turn log splits sessions at a 60-minute gap, SESSION_GAP),
the previous session's `session` job is queued first, in the same transaction, so a session
is summarised exactly once and never before it ended.

Two guarantees for a service under load:
- `stamp_now`: the turns take their time when they are stored (never before the user's
  latest turn), so overlapping requests of one user are appended in the order they finish
  instead of the later one failing after its model answered;
- `epoch`: the user's epoch when the request began (UserRepo.epoch); a user forgotten in
  the meantime stays forgotten (UserGoneError), nothing of the request is stored.
A message the model never answered is kept as a `failed` user turn (`record_unanswered`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from personavlm.agent.jobs import SessionJob, TurnJob, enqueue
from personavlm.errors import ConflictError
from personavlm.memory.records import Turn
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.memory.unit import IndexedTurn, Tx
from personavlm.memory.validate import MAX_TEXT_CHARS, check_user_id
from personavlm.timeutil import local_now

__all__ = ["Exchange", "close_session", "fit_reply", "record_exchange", "record_unanswered"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """What record_exchange stored: the two turns, the session their arrival closed (if
    any), and the update job queued for them."""

    user_turn: Turn
    assistant_turn: Turn
    closed_session: int | None
    job_id: int


def record_exchange(
    store: MemoryStore,
    user_id: str,
    user_turn: TurnInput,
    assistant_turn: TurnInput,
    *,
    epoch: int | None = None,
    stamp_now: bool = False,
) -> Exchange | None:
    """Append a user turn and the assistant's reply and queue their update job, in one
    transaction (after the previous session's close job when this turn opened a new
    session). None when both turns are stored already (a replayed exchange)."""
    check_user_id(user_id)
    indexed = store.index_turns([user_turn, assistant_turn])
    with store.transaction(user_id) as tx:
        stored, closed = _append(tx, user_id, indexed, epoch=epoch, stamp_now=stamp_now)
        asked, answered = stored
        if asked is None and answered is None:
            return None
        if asked is None or answered is None:
            raise ConflictError(
                "only one of the exchange's two turns is stored already; "
                "give both turns new ids or replay them unchanged"
            )
        job_id = enqueue(tx.queue, user_id, TurnJob(asked.id, answered.id))
    assert job_id is not None  # turn jobs have no dedupe key
    return Exchange(asked, answered, closed, job_id)


def record_unanswered(
    store: MemoryStore,
    user_id: str,
    user_turn: TurnInput,
    *,
    epoch: int | None = None,
    stamp_now: bool = False,
) -> Turn:
    """Keep a message the model never answered, as a `failed` user turn (searchable through
    its turn entry; no update job reads it as an exchange)."""
    indexed = store.index_turns([replace(user_turn, status="failed")])
    with store.transaction(user_id) as tx:
        (kept,), _closed = _append(tx, user_id, indexed, epoch=epoch, stamp_now=stamp_now)
    assert kept is not None  # a new turn without an id is always stored
    return kept


def close_session(store: MemoryStore, user_id: str) -> int | None:
    """Queue the close of the user's latest session now (instead of waiting for the
    60-minute gap); the job id, or None when it is queued already or there is none."""
    with store.transaction(user_id) as tx:
        tx.users.require(user_id)
        latest = tx.turns.latest(user_id)
        if latest is None:
            return None
        return enqueue(tx.queue, user_id, SessionJob(latest.session_id))


def fit_reply(answer: str) -> tuple[str, list[str]]:
    """The model's answer made storable, and what was changed: NUL characters dropped, an
    answer over the text limit cut (a note each). Unpaired surrogates never get this far
    (agent/calls.py replaces them in every reply)."""
    notes = []
    if "\x00" in answer:
        answer = answer.replace("\x00", "")
        notes.append("the model's answer held NUL characters; they were removed")
    if len(answer) > MAX_TEXT_CHARS:
        notes.append(
            f"the model's answer was {len(answer)} characters; it was cut to {MAX_TEXT_CHARS}"
        )
        answer = answer[:MAX_TEXT_CHARS]
    return answer, notes


def _append(
    tx: Tx,
    user_id: str,
    indexed: Sequence[IndexedTurn],
    *,
    epoch: int | None,
    stamp_now: bool,
) -> tuple[list[Turn | None], int | None]:
    """Append turns inside `tx`; queue the previous session's close when they open a new
    one. Returns the stored turns (None: stored already) and the closed session."""
    tx.users.ensure(user_id, epoch=epoch)
    previous = tx.turns.latest(user_id)
    if stamp_now:
        when = local_now() if previous is None else max(local_now(), previous.time)
        indexed = [replace(i, turn=replace(i.turn, time=when)) for i in indexed]
    stored = [tx.append_turn(user_id, turn, "agent") for turn in indexed]
    first = next((t for t in stored if t is not None), None)
    closed = None
    if previous is not None and first is not None and previous.session_id != first.session_id:
        closed = previous.session_id
        enqueue(tx.queue, user_id, SessionJob(closed))
    return stored, closed
