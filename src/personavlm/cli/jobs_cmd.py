"""`personavlm jobs ...`: a user's update jobs; retry or drop a dead one.

A job that failed `max_attempts` times is dead (agent/worker.py): out of the user's queue,
kept with every reply it got. Fix the model, then retry it; or drop it (a turn job's turn is
then marked skipped in the audit log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from personavlm.cli.common import (
    DbOption,
    EmbedderOption,
    JsonOption,
    emit,
    fail_on_errors,
    open_store,
    stored_id,
)

if TYPE_CHECKING:
    from personavlm.memory.queue import JobRecord

__all__ = ["app"]

app = typer.Typer(help="Update jobs: list them, retry or drop a dead one.", no_args_is_help=True)
UserOption = typer.Option(..., "--user", help="Whose jobs.")


@app.command("list")
def list_jobs(
    user: str = UserOption,
    status: str | None = typer.Option(
        None, "--status", help="pending, done, dead or dropped (default: every status)."
    ),
    limit: int = typer.Option(100, "--limit", help="At most this many, newest first."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """The user's jobs, newest first.

    Example: personavlm jobs list --user ann --status dead
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        jobs = store.jobs(user, status=status, limit=limit)
        emit([j.to_dict() for j in jobs], as_json=as_json, text=_table(jobs))


@app.command()
def retry(
    job_id: int = typer.Argument(..., help="The dead job's id."),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Put a dead job back in the user's queue (a running worker picks it up).

    Example: personavlm jobs retry 12 --user ann
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        job = store.retry_job(user, stored_id(job_id, "job"))
        emit(job.to_dict(), as_json=as_json, text=f"job {job.id} is pending again")


@app.command()
def drop(
    job_id: int = typer.Argument(..., help="The dead job's id."),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Give a dead job up for good; a turn job's turn is marked skipped in the audit log.

    Example: personavlm jobs drop 12 --user ann
    """
    from personavlm.agent.jobs import drop_job

    with fail_on_errors(), open_store(db, embedder) as store:
        job = drop_job(store, user, stored_id(job_id, "job"), actor="cli")
        emit(job.to_dict(), as_json=as_json, text=f"job {job.id} dropped")


def _table(jobs: list[JobRecord]) -> str:
    if not jobs:
        return "(no jobs)"
    lines = []
    for job in jobs:
        error = (job.last_error or "").splitlines()[0][:80] if job.last_error else ""
        line = f"{job.id:>6}  {job.kind:<8} {job.status:<8} attempts {job.attempts}"
        lines.append(f"{line}  {error}".rstrip())
    return "\n".join(lines)
