"""A user's update jobs: listing them (dead ones above all), retrying or dropping a dead one.

The update phase dead-letters a job that failed `max_attempts` times (agent/worker.py): it
leaves the user's queue with every reply it got, so their later updates run, and waits here
for a person to retry it (after fixing the model) or drop it (its turn is then marked
skipped in the audit log). The admin key and the user's own key may do both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from personavlm.agent.jobs import drop_job
from personavlm.server import schemas
from personavlm.server.auth import PathUser
from personavlm.server.pagination import stored_id
from personavlm.server.schemas import error_responses, ok
from personavlm.server.service import ServiceDep

__all__ = ["router"]

router = APIRouter(prefix="/v1")
USER_ERRORS = (400, 403, 404)
JobStatus = Literal["pending", "done", "dead", "dropped"]


@router.get(
    "/users/{user_id}/jobs",
    tags=["jobs"],
    summary="The user's update jobs, newest first (dead ones to retry or drop)",
    operation_id="listJobs",
    response_model=None,
    responses={**ok(schemas.JobList), **error_responses(*USER_ERRORS, 422)},
)
def list_jobs(
    user_id: PathUser,
    service: ServiceDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs of this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> dict[str, Any]:
    jobs = service.store.jobs(user_id, status=status, limit=limit)
    return {"data": [job.to_dict() for job in jobs]}


@router.post(
    "/users/{user_id}/jobs/{job_id}/retry",
    tags=["jobs"],
    summary="Put a dead job back in the user's queue",
    operation_id="retryJob",
    response_model=None,
    responses={
        **ok(schemas.JobOut, "The job, pending again"),
        **error_responses(*USER_ERRORS, 409),
    },
)
def retry_job(user_id: PathUser, job_id: int, service: ServiceDep) -> dict[str, Any]:
    job_id = stored_id(job_id, "job", user_id)
    job = service.store.retry_job(user_id, job_id).to_dict()
    service.wake_worker()
    return job


@router.post(
    "/users/{user_id}/jobs/{job_id}/drop",
    tags=["jobs"],
    summary="Give a dead job up (a turn job's turn is marked skipped in the audit log)",
    operation_id="dropJob",
    response_model=None,
    responses={**ok(schemas.JobOut, "The job, dropped"), **error_responses(*USER_ERRORS, 409)},
)
def drop(user_id: PathUser, job_id: int, service: ServiceDep) -> dict[str, Any]:
    job_id = stored_id(job_id, "job", user_id)
    return drop_job(service.store, user_id, job_id, actor="api").to_dict()
