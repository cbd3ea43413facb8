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
pending with its error and a `retry_after` time (exponential backoff, capped). A job is
finished inside the transaction that applies its result, so it takes effect exactly once.
Queue mechanics use UTC wall-clock time; conversation times stay the user's local times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from personavlm.errors import NotFoundError, StoreError
from personavlm.memory.engine import Conn
from personavlm.timeutil import from_storage, to_storage, utc_now

__all__ = ["QueueRepo", "QueueStatus", "QueuedJob", "retry_delay"]

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
class QueueStatus:
    pending: int  # not done yet, failed ones included
    failed: int  # pending jobs whose last attempt failed
    done: int
    last_errors: tuple[tuple[int, str, str], ...]  # (job id, user id, error) of failed jobs

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "failed": self.failed,
            "done": self.done,
            "failures": [
                {"job_id": job_id, "user_id": user_id, "error": error}
                for job_id, user_id, error in self.last_errors
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

    def fail(self, job_id: int, error: str, attempts: int) -> None:
        """Record a failed attempt; the job stays pending and is retried after a backoff."""
        retry_at = utc_now() + timedelta(seconds=retry_delay(attempts))
        cursor = self._conn.execute(
            "UPDATE update_jobs SET last_error = ?, retry_after = ?, claimed_by = NULL, "
            "claimed_until = NULL WHERE id = ? AND status = 'pending'",
            (error, to_storage(retry_at), job_id),
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"no pending job {job_id}")

    def status(self, user_id: str | None = None) -> QueueStatus:
        where, params = ("WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
        counts = self._conn.execute(
            "SELECT count(CASE WHEN status = 'pending' THEN 1 END), "
            "count(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 END), "
            f"count(CASE WHEN status = 'done' THEN 1 END) FROM update_jobs {where}",
            params,
        ).fetchone()
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
        )


def retry_delay(attempts: int) -> float:
    return float(min(_FIRST_RETRY_S * 2 ** max(attempts - 1, 0), _MAX_RETRY_S))


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
