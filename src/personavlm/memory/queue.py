"""A durable per-user job queue (table `update_jobs`): what still has to be done, written in
the same transaction as what it is about, so neither a crash nor a restart nor a failing
model loses it.

The queue knows nothing of what a job means: a job is a `kind` (a name the caller chose), a
JSON payload and, optionally, a `dedupe_key` unique per user (a second job with the same key
is not queued). The agent's update phase is its client (agent/jobs.py defines the kinds and
their typed payloads).

Jobs of one user run in order: a user's next job is claimable only when every earlier one is
done, because a job may depend on what the earlier ones wrote. A claim is a lease
(`claimed_until`); a worker that dies loses it when the lease runs out. A failed job stays
pending with its error and a `retry_after` time (exponential backoff, capped), until it has
failed `max_attempts` times: then it is dead, out of the user's queue (their later jobs run
at once) with every reply it got, until it is retried or dropped by hand. A job is finished
inside the transaction that applies its result, so it takes effect exactly once.
Queue mechanics use UTC wall-clock time; conversation times stay the user's local times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from personavlm.errors import ConflictError, NotFoundError, StoreError
from personavlm.memory.engine import Conn
from personavlm.timeutil import from_storage, to_storage, utc_now

__all__ = ["JOB_STATUSES", "JobRecord", "QueueRepo", "QueueStatus", "QueuedJob", "retry_delay"]

JOB_STATUSES = ("pending", "done", "dead", "dropped")

# Backoff after the n-th failed attempt: 5 s, 10 s, 20 s, ... capped at 10 minutes, so a model
# server that is down for an hour is tried a few times an hour, not thousands.
_FIRST_RETRY_S = 5.0
_MAX_RETRY_S = 600.0
_JOB_COLUMNS = "id, user_id, kind, dedupe_key, payload, attempts, last_error, created_at"


@dataclass(frozen=True, slots=True)
class QueuedJob:
    id: int
    user_id: str
    kind: str
    dedupe_key: str | None
    payload: dict[str, Any]
    attempts: int  # including the claim that returned this job
    last_error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the queue keeps it, for listings (status, attempts, error, replies)."""

    id: int
    user_id: str
    kind: str
    status: str  # pending, done, dead, dropped
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    replies: tuple[str, ...]
    created_at: datetime
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "kind": self.kind,
            "status": self.status,
            "payload": dict(self.payload),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "replies": list(self.replies),
            "created_at": to_storage(self.created_at),
            "finished_at": None if self.finished_at is None else to_storage(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class QueueStatus:
    pending: int  # not done yet, failed ones included
    failed: int  # pending jobs whose last attempt failed
    done: int
    last_errors: tuple[tuple[int, str, str], ...]  # (job id, user id, error) of failed jobs
    dead: int = 0  # failed too often: out of the queue until retried or dropped
    dead_jobs: tuple[tuple[int, str, str], ...] = ()  # (job id, user id, error), newest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "failed": self.failed,
            "done": self.done,
            "dead": self.dead,
            "failures": [
                {"job_id": job_id, "user_id": user_id, "error": error}
                for job_id, user_id, error in self.last_errors
            ],
            "dead_jobs": [
                {"job_id": job_id, "user_id": user_id, "error": error}
                for job_id, user_id, error in self.dead_jobs
            ],
        }


class QueueRepo:
    """The queue's rows inside one transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def enqueue(
        self,
        user_id: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        dedupe_key: str | None = None,
    ) -> int | None:
        """Queue a job; None when a job with this `dedupe_key` is queued already."""
        cursor = self._conn.execute(
            "INSERT INTO update_jobs(user_id, kind, dedupe_key, payload, status, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING RETURNING id",
            (user_id, kind, dedupe_key, json.dumps(dict(payload)), to_storage(utc_now())),
        )
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def claim(
        self,
        worker: str,
        *,
        lease_s: float,
        user_id: str | None = None,
        ignore_backoff: bool = False,
        skip_users: frozenset[str] = frozenset(),
    ) -> QueuedJob | None:
        """Take the next runnable job (oldest first, each user's jobs in order); None when
        nothing is runnable now."""
        now = to_storage(utc_now())
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM update_jobs AS j WHERE j.status = 'pending' "
            "AND j.id = (SELECT min(id) FROM update_jobs WHERE user_id = j.user_id "
            "AND status = 'pending') "
            "AND (j.claimed_until IS NULL OR j.claimed_until < ?)"
        )
        params: list[object] = [now]
        if not ignore_backoff:
            sql += " AND (j.retry_after IS NULL OR j.retry_after <= ?)"
            params.append(now)
        if user_id is not None:
            sql += " AND j.user_id = ?"
            params.append(user_id)
        if skip_users:
            sql += f" AND j.user_id NOT IN ({','.join('?' * len(skip_users))})"
            params.extend(sorted(skip_users))
        row = self._conn.execute(sql + " ORDER BY j.id LIMIT 1", params).fetchone()
        if row is None:
            return None
        until = to_storage(utc_now() + timedelta(seconds=lease_s))
        self._conn.execute(
            "UPDATE update_jobs SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1 "
            "WHERE id = ?",
            (worker, until, row[0]),
        )
        return _job_from_row(row, attempts=row[5] + 1)

    def held_claims(self) -> list[tuple[int, str]]:
        """(job id, claimant) of every pending job whose lease has not run out."""
        rows = self._conn.execute(
            "SELECT id, claimed_by FROM update_jobs WHERE status = 'pending' "
            "AND claimed_by IS NOT NULL AND claimed_until >= ? ORDER BY id",
            (to_storage(utc_now()),),
        )
        return [(int(row[0]), str(row[1])) for row in rows]

    def release(self, job_ids: list[int]) -> int:
        """End these claims now (their claimants are gone); the jobs are claimable again."""
        released = 0
        for job_id in job_ids:
            cursor = self._conn.execute(
                "UPDATE update_jobs SET claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ? AND status = 'pending'",
                (job_id,),
            )
            released += cursor.rowcount
        return released

    def finish(self, job_id: int) -> None:
        """Mark a job done, inside the transaction that applied its result."""
        cursor = self._conn.execute(
            "UPDATE update_jobs SET status = 'done', finished_at = ?, claimed_by = NULL, "
            "claimed_until = NULL, last_error = NULL, retry_after = NULL "
            "WHERE id = ? AND status = 'pending'",
            (to_storage(utc_now()), job_id),
        )
        if cursor.rowcount != 1:
            # Another worker finished it after our lease ran out: applying twice would
            # duplicate the result, so this transaction must roll back.
            raise StoreError(f"job {job_id} is not pending any more (finished elsewhere)")

    def fail(
        self,
        job_id: int,
        error: str,
        attempts: int,
        *,
        replies: Sequence[str] = (),
        max_attempts: int | None = None,
        strike: bool = True,
    ) -> bool:
        """Record a failed attempt and the replies it got. The job is retried after a
        backoff, or, once `max_attempts` attempts failed by the job's own fault (`strike`;
        an outage is no strike), dead-lettered: it leaves the user's queue (their later
        jobs run at once) and waits to be retried or dropped by hand. True when it went
        dead."""
        row = self._conn.execute(
            "SELECT replies, strikes FROM update_jobs WHERE id = ? AND status = 'pending'",
            (job_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no pending job {job_id}")
        strikes = int(row[1]) + strike
        dead = max_attempts is not None and strikes >= max_attempts
        kept = json.dumps([*json.loads(row[0]), *replies], ensure_ascii=False)
        retry_at = utc_now() + timedelta(seconds=retry_delay(attempts))
        self._conn.execute(
            "UPDATE update_jobs SET last_error = ?, retry_after = ?, claimed_by = NULL, "
            "claimed_until = NULL, replies = ?, strikes = ?, status = ?, finished_at = ? "
            "WHERE id = ?",
            (
                error,
                None if dead else to_storage(retry_at),
                kept,
                strikes,
                "dead" if dead else "pending",
                to_storage(utc_now()) if dead else None,
                job_id,
            ),
        )
        return dead

    def jobs(self, user_id: str, *, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """The user's jobs, newest first (of one status, when given)."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM update_jobs WHERE user_id = ?"
        params: list[object] = [user_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_record_from_row(row) for row in rows]

    def job(self, user_id: str, job_id: int) -> JobRecord:
        row = self._conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM update_jobs WHERE id = ? AND user_id = ?",
            (job_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id} for user {user_id!r}")
        return _record_from_row(row)

    def retry(self, user_id: str, job_id: int) -> JobRecord:
        """Put a dead job back in its user's queue, with its attempts counted afresh."""
        self._require_dead(user_id, job_id, "retry")
        self._conn.execute(
            "UPDATE update_jobs SET status = 'pending', attempts = 0, strikes = 0, "
            "retry_after = NULL, finished_at = NULL WHERE id = ?",
            (job_id,),
        )
        return self.job(user_id, job_id)

    def drop(self, user_id: str, job_id: int) -> JobRecord:
        """Give a dead job up for good (its record stays, status dropped)."""
        self._require_dead(user_id, job_id, "drop")
        self._conn.execute(
            "UPDATE update_jobs SET status = 'dropped', finished_at = ? WHERE id = ?",
            (to_storage(utc_now()), job_id),
        )
        return self.job(user_id, job_id)

    def _require_dead(self, user_id: str, job_id: int, verb: str) -> None:
        found = self.job(user_id, job_id)
        if found.status != "dead":
            raise ConflictError(
                f"cannot {verb} job {job_id}: it is {found.status}; only dead jobs are "
                "retried or dropped by hand"
            )

    def status(self, user_id: str | None = None) -> QueueStatus:
        where, params = ("WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
        counts = self._conn.execute(
            "SELECT count(CASE WHEN status = 'pending' THEN 1 END), "
            "count(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 END), "
            "count(CASE WHEN status = 'done' THEN 1 END), "
            f"count(CASE WHEN status = 'dead' THEN 1 END) FROM update_jobs {where}",
            params,
        ).fetchone()
        dead = self._conn.execute(
            "SELECT id, user_id, last_error FROM update_jobs WHERE status = 'dead' "
            f"{'AND user_id = ?' if user_id is not None else ''} ORDER BY id DESC LIMIT 20",
            params,
        ).fetchall()
        failures = self._conn.execute(
            "SELECT id, user_id, last_error FROM update_jobs WHERE status = 'pending' "
            f"AND last_error IS NOT NULL {'AND user_id = ?' if user_id is not None else ''} "
            "ORDER BY id LIMIT 20",
            params,
        ).fetchall()
        return QueueStatus(
            pending=int(counts[0]),
            failed=int(counts[1]),
            done=int(counts[2]),
            last_errors=tuple((int(r[0]), str(r[1]), str(r[2])) for r in failures),
            dead=int(counts[3]),
            dead_jobs=tuple((int(r[0]), str(r[1]), str(r[2])) for r in dead),
        )


def retry_delay(attempts: int) -> float:
    return float(min(_FIRST_RETRY_S * 2 ** max(attempts - 1, 0), _MAX_RETRY_S))


_RECORD_COLUMNS = (
    "id, user_id, kind, status, payload, attempts, last_error, replies, created_at, finished_at"
)


def _record_from_row(row: Any) -> JobRecord:
    return JobRecord(
        id=int(row[0]),
        user_id=str(row[1]),
        kind=str(row[2]),
        status=str(row[3]),
        payload=dict(json.loads(row[4])),
        attempts=int(row[5]),
        last_error=row[6],
        replies=tuple(json.loads(row[7])),
        created_at=from_storage(row[8]),
        finished_at=None if row[9] is None else from_storage(row[9]),
    )


def _job_from_row(row: tuple[Any, ...], *, attempts: int) -> QueuedJob:
    return QueuedJob(
        id=int(row[0]),
        user_id=str(row[1]),
        kind=str(row[2]),
        dedupe_key=row[3],
        payload=dict(json.loads(row[4])),
        attempts=attempts,
        last_error=row[6],
        created_at=from_storage(row[7]),
    )
