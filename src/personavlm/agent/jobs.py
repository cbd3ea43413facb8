"""The agent's update jobs: their kinds, typed payloads, and what a finished job writes.

The store's queue (memory/queue.py) is generic: a kind name, a JSON payload, a dedupe key.
What those mean is the agent's:

- `turn` (`TurnJob`): analyse one exchange, its personality reading and semantic memory;
- `session` (`SessionJob`): summarise a closed session (episodic topics, core and
  procedural memory), queued once per session (dedupe key `session:<id>`).

Payloads are versioned (`"v"`); a payload of a version this code does not read is a
StoreError naming the upgrade, and every version ever written keeps loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from personavlm.errors import StoreError
from personavlm.memory.queue import JobRecord, QueuedJob, QueueRepo
from personavlm.memory.records import Memory
from personavlm.memory.store import MemoryStore
from personavlm.memory.writes import MemoryOp
from personavlm.personality import Reading, SkipRule

__all__ = [
    "PAYLOAD_VERSION",
    "AgentJob",
    "SessionJob",
    "TurnJob",
    "TurnReading",
    "decode",
    "drop_job",
    "enqueue",
    "finish",
]

PAYLOAD_VERSION = 1


@dataclass(frozen=True, slots=True)
class TurnJob:
    """Analyse the exchange of these two turns."""

    kind = "turn"
    user_turn: int
    assistant_turn: int

    def payload(self) -> dict[str, Any]:
        return {"user_turn": self.user_turn, "assistant_turn": self.assistant_turn}

    def dedupe_key(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class SessionJob:
    """Summarise this closed session (once)."""

    kind = "session"
    session_id: int

    def payload(self) -> dict[str, Any]:
        return {"session_id": self.session_id}

    def dedupe_key(self) -> str | None:
        return f"session:{self.session_id}"


AgentJob = TurnJob | SessionJob


def enqueue(queue: QueueRepo, user_id: str, job: AgentJob) -> int | None:
    """Queue `job` inside the caller's transaction; None when it is queued already."""
    payload = {"v": PAYLOAD_VERSION, **job.payload()}
    return queue.enqueue(user_id, job.kind, payload, dedupe_key=job.dedupe_key())


def drop_job(store: MemoryStore, user_id: str, job_id: int, *, actor: str = "api") -> JobRecord:
    """Give a dead job up for good. A turn job's turn is marked skipped in the audit log (an
    event `skip` naming the turn), so the memory's history says why nothing came of it."""
    with store.transaction(user_id) as tx:
        tx.users.require(user_id)
        dropped = tx.queue.drop(user_id, job_id)
        if dropped.kind == TurnJob.kind:
            turn = dropped.payload.get("user_turn")
            if isinstance(turn, int):
                tx.memories.record_skip(user_id, turn, actor)
    return dropped


def decode(job: QueuedJob | JobRecord) -> AgentJob:
    """The typed job of a queued one; StoreError for a kind or version this code can't read."""
    payload = dict(job.payload)
    version = payload.pop("v", None)
    if version != PAYLOAD_VERSION:
        raise StoreError(
            f"update job {job.id} has payload version {version!r}; this personavlm reads "
            f"version {PAYLOAD_VERSION}: upgrade personavlm"
        )
    try:
        if job.kind == TurnJob.kind:
            return TurnJob(int(payload["user_turn"]), int(payload["assistant_turn"]))
        if job.kind == SessionJob.kind:
            return SessionJob(int(payload["session_id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"update job {job.id} has a malformed {job.kind} payload: {exc}") from exc
    raise StoreError(f"update job {job.id} has kind {job.kind!r}, which this agent does not run")


@dataclass(frozen=True, slots=True)
class TurnReading:
    """A personality reading with the turn it came from (absorbed once per turn)."""

    reading: Reading
    turn_id: int
    time: datetime


def finish(
    store: MemoryStore,
    job: QueuedJob,
    ops: Sequence[MemoryOp],
    reading: TurnReading | None = None,
    *,
    skip_rule: SkipRule | None = None,
) -> list[Memory]:
    """What a finished job writes, in one unit of work: its memory operations (one audit
    event each, actor `agent`), the turn's personality reading (absorbed once per turn), and
    the job's completion. A crash leaves all of it or none."""
    prepared = store.prepare(job.user_id, ops)
    with store.transaction(job.user_id) as tx:
        tx.users.require(job.user_id)  # a user deleted meanwhile is not brought back
        applied = tx.memories.apply(job.user_id, prepared, "agent")
        if reading is not None and not tx.personality.has_reading_for(job.user_id, reading.turn_id):
            tx.personality.record(
                job.user_id, reading.reading, reading.turn_id, reading.time, skip_rule
            )
        tx.queue.finish(job.id)
    return applied
