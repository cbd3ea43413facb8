"""GET /metrics: the service's Prometheus metrics (metrics.py), for the admin key only: they
show how many requests each route got, the queue and the model's failures.

A scrape job sends the key as a bearer token (Prometheus: `authorization: {credentials: ...}`
in the scrape config).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from personavlm.server import schemas
from personavlm.server.auth import AdminCaller
from personavlm.server.metrics import CONTENT_TYPE
from personavlm.server.service import ServiceDep

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/metrics",
    tags=["service"],
    summary="Prometheus metrics (admin key)",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "The text exposition format"},
        **schemas.error_responses(403),
    },
)
def metrics(_admin: AdminCaller, service: ServiceDep) -> Response:
    # A plain def: the scrape reads the queue from the store, off the event loop.
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)
