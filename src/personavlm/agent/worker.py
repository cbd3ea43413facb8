"""Running queued update jobs: inline after an answer, in a background thread, or in a
separate process (`personavlm worker`).

A worker claims the next runnable job (each user's jobs in order), runs the update phase and
finishes the job in the transaction that writes its result. Any failure — the model server
down, a reply that breaks the protocol twice, a conflicting edit — is recorded on the job,
which stays queued and is retried after a backoff; after `max_attempts` (default 3) it is
dead-lettered with every reply it got, and the user's later jobs run at once. Dead jobs are
listed by `personavlm status`, `personavlm jobs` and the API, and retried or dropped by hand
(agent/jobs.py `drop_job`). Nothing is dropped silently, and a crashed worker's claims are
freed when a worker starts on the same host (or when their lease runs out).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from personavlm.agent.trace import UpdateReport
from personavlm.agent.update import UpdatePhase
from personavlm.errors import (
    ConfigError,
    ModelError,
    NotFoundError,
    PersonaVLMError,
    ProtocolError,
    StoreError,
)
from personavlm.memory.queue import QueuedJob
from personavlm.memory.store import MemoryStore

__all__ = ["BackgroundWorker", "Claimant", "Worker", "release_orphaned_claims"]

log = logging.getLogger("personavlm.worker")

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:  # not Linux: only the pid tells whether a claimant is gone
        return "unknown"


class Claimant:
    """Who holds a claim: `host|boot id|pid|nonce`. A claim made on this host, before its
    last boot or by a process that is gone, belongs to nobody: a worker starting up frees it
    at once instead of waiting out the lease (release_orphaned_claims)."""

    @staticmethod
    def name() -> str:
        return f"{socket.gethostname()}|{_boot_id()}|{os.getpid()}|{uuid.uuid4().hex[:6]}"

    @staticmethod
    def is_gone(name: str) -> bool:
        parts = name.split("|")
        if len(parts) != 4 or parts[0] != socket.gethostname():
            return False  # another host's (or an older personavlm's) claim: its lease decides
        _host, boot, pid, _nonce = parts
        if boot != _boot_id():
            return True
        return not pid.isdigit() or not _process_alive(int(pid))


def _outage(exc: PersonaVLMError) -> bool:
    """A failure that says nothing about the job: the model server unreachable, slow or
    overloaded, the database failing. Such a job waits (with backoff) however long the
    outage lasts; only failures of its own (unreadable replies, a request the model
    refuses, memory it cannot write) count towards dead-lettering it."""
    return isinstance(exc, StoreError) or (isinstance(exc, ModelError) and exc.transient)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def release_orphaned_claims(store: MemoryStore) -> int:
    """Free the claims of workers that died on this host (kill -9, a crash, a reboot);
    their jobs run again now. How many were freed."""
    freed = store.release_claims(Claimant.is_gone)
    if freed:
        log.warning("freed %d update job claim(s) of workers that are gone", freed)
    return freed


class Worker:
    def __init__(
        self,
        store: MemoryStore,
        phase: UpdatePhase,
        *,
        name: str | None = None,
        lease_s: float = 600.0,
        max_attempts: int = 3,
    ) -> None:
        self.store = store
        self.phase = phase
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self.name = name or Claimant.name()
        self.lease_s = lease_s
        # Attempts before a job is dead-lettered: a reply that cannot be read twice in a row
        # (each attempt already retries once) will not be read on the third either, and
        # the user's later updates must not wait behind it.
        self.max_attempts = max_attempts
        # Told of every failed job (the service counts them for /metrics).
        self.on_failure: Callable[[UpdateReport], None] | None = None

    def run_once(
        self,
        user_id: str | None = None,
        *,
        ignore_backoff: bool = False,
        skip_users: frozenset[str] = frozenset(),
    ) -> UpdateReport | None:
        """Run the next runnable job (not of `skip_users`); None when there is none."""
        job = self.store.claim_job(
            self.name,
            lease_s=self.lease_s,
            user_id=user_id,
            ignore_backoff=ignore_backoff,
            skip_users=skip_users,
        )
        if job is None:
            return None
        replies: tuple[str, ...] = ()
        # Filled as the job runs: a failed job's report keeps the calls it made.
        report = UpdateReport(job.id, job.user_id, job.kind, "applied")
        try:
            return self.phase.run(job, report)
        except PersonaVLMError as exc:
            error = f"{type(exc).__name__}: {exc}"
            replies = exc.replies if isinstance(exc, ProtocolError) else ()
            strike = not _outage(exc)
        except Exception as exc:  # a bug must not lose the job either: record it, retry later
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            strike = True
        report.changes, report.personality, report.reading = [], None, None  # none applied
        report.error = error
        return self._failed(job, report, replies, strike=strike)

    def _failed(
        self, job: QueuedJob, report: UpdateReport, replies: tuple[str, ...], *, strike: bool
    ) -> UpdateReport:
        error = report.error or ""
        try:
            dead = self.store.fail_job(
                job, error, replies=replies, max_attempts=self.max_attempts, strike=strike
            )
        except NotFoundError:  # the user was deleted meanwhile: the job went with them
            report.status = "dropped"
            return report
        log.warning(
            "update job %d (%s) of user %r failed (attempt %d, %s): %s",
            job.id, job.kind, job.user_id, job.attempts,
            "dead: retry or drop it by hand" if dead
            else f"dead after {self.max_attempts} failures of its own" if strike
            else "an outage: no strike, retried after a backoff",
            error.splitlines()[0],
        )  # fmt: skip
        report.status = "dead" if dead else "failed"
        if self.on_failure is not None:
            self.on_failure(report)
        return report

    def drain(
        self, user_id: str | None = None, *, ignore_backoff: bool = False
    ) -> list[UpdateReport]:
        """Run jobs until none is runnable. A user whose job fails is skipped for the rest of
        the drain (their later jobs wait behind the failed one); other users go on."""
        reports: list[UpdateReport] = []
        failed: set[str] = set()
        while True:
            report = self.run_once(
                user_id, ignore_backoff=ignore_backoff, skip_users=frozenset(failed)
            )
            if report is None:
                return reports
            reports.append(report)
            if report.status == "failed":
                failed.add(report.user_id)

    def serve(
        self,
        stop: threading.Event,
        *,
        wake: threading.Event,
        poll_s: float = 2.0,
        on_report: Callable[[UpdateReport], None] | None = None,
        user_id: str | None = None,
    ) -> None:
        """Run jobs (of all users, or one) until `stop` is set; sleep `poll_s` (or until
        `wake`) when idle. Each job's report goes to `on_report` (a CLI prints it)."""
        while not stop.is_set():
            report = self.run_once(user_id)
            if report is None:
                wake.wait(poll_s)
                wake.clear()
            elif on_report is not None:
                on_report(report)


class BackgroundWorker:
    """A Worker in a daemon thread, for `respond` calls that should not wait for updates.

    Supervised: whatever escapes the worker's loop (a bug, the database gone for a while) is
    logged and the loop starts again after a pause (1 s, doubling to 60 s), so one bad moment
    never leaves every user's updates pending for good. `problem` says why it is not
    healthy, for /healthz."""

    _FIRST_PAUSE_S = 1.0
    _MAX_PAUSE_S = 60.0

    def __init__(self, worker: Worker, *, poll_s: float = 2.0) -> None:
        self.worker = worker
        self.poll_s = poll_s
        self.restarts = 0
        self.last_crash: str | None = None
        self._crashed_at = float("-inf")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._supervise, name=f"personavlm-update-{worker.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def problem(self) -> str | None:
        """None while healthy; otherwise what is wrong, in words."""
        if not self._thread.is_alive() and not self._stop.is_set():
            return "the update worker thread is not running"
        if self.last_crash is not None and self._crashed_recently():
            return f"the update worker restarted after: {self.last_crash}"
        return None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the job in hand (a job cut off here is retried: its lease runs out)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _supervise(self) -> None:
        pause = self._FIRST_PAUSE_S
        while not self._stop.is_set():
            try:
                self.worker.serve(self._stop, wake=self._wake, poll_s=self.poll_s)
            except Exception as exc:
                self.restarts += 1
                self.last_crash = f"{type(exc).__name__}: {exc}"
                self._crashed_at = time.monotonic()
                log.exception("the update worker crashed; restarting in %.0f s", pause)
                self._stop.wait(pause)
                pause = min(pause * 2, self._MAX_PAUSE_S)
            else:
                return

    def _crashed_recently(self) -> bool:
        return time.monotonic() - self._crashed_at < self._MAX_PAUSE_S
