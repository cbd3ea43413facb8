"""Running queued update jobs: inline after an answer, in a background thread, or in a
separate process (`personavlm worker`).

A worker claims the next runnable job (each user's jobs in order), runs the update phase and
finishes the job in the transaction that writes its result. Any failure — the model server
down, a reply that breaks the protocol twice, a conflicting edit — is recorded on the job,
which stays queued and is retried after a backoff; `personavlm status` reports it. Nothing is
dropped, and a crashed worker's lease runs out so another worker picks its job up.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable

from personavlm.agent.trace import UpdateReport
from personavlm.agent.update import UpdatePhase
from personavlm.errors import PersonaVLMError
from personavlm.memory.store import MemoryStore

__all__ = ["BackgroundWorker", "Worker"]


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        store: MemoryStore,
        phase: UpdatePhase,
        *,
        name: str | None = None,
        lease_s: float = 600.0,
    ) -> None:
        self.store = store
        self.phase = phase
        self.name = name or _default_name()
        self.lease_s = lease_s

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
        try:
            return self.phase.run(job)
        except PersonaVLMError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not lose the job either: record it, retry later
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        self.store.fail_job(job, error)
        return UpdateReport(job.id, job.user_id, job.kind, "failed", error=error)

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
    """A Worker in a daemon thread, for `respond` calls that should not wait for updates."""

    def __init__(self, worker: Worker, *, poll_s: float = 2.0) -> None:
        self.worker = worker
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=worker.serve,
            args=(self._stop,),
            kwargs={"wake": self._wake, "poll_s": poll_s},
            name=f"personavlm-update-{worker.name}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the job in hand (a job cut off here is retried: its lease runs out)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
