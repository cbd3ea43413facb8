"""create_app(config): the FastAPI app of `personavlm serve`.

    app = create_app(ServiceConfig(location="memory.db", embedder="hashing"))
    uvicorn.run(app, host="127.0.0.1", port=8420)

The lifespan opens the store (and the model and Assistant, when a model is configured) and
closes them, and around serving runs the MCP session manager. Middleware, outermost first:
the security headers of every answer (headers.py), the request metrics (metrics.py: outside
the key check, so refused requests count too), the key check of every /v1 request, of /mcp
and of /metrics (auth.py), then the body size limit (limits.py). Routes: /healthz, /metrics
(routes_metrics.py), /v1 (routes_chat.py, routes_memory.py), /mcp (the MCP server over
streamable HTTP: mcp_http.py), /docs with its assets (docs_ui.py), and the web page's files
at / (static/).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from personavlm import __version__, models
from personavlm.errors import ConfigError
from personavlm.server import routes_chat, routes_jobs, routes_memory, routes_metrics, schemas
from personavlm.server.auth import AuthMiddleware
from personavlm.server.chat_runner import ChatAdmissionMiddleware
from personavlm.server.config import ServiceConfig
from personavlm.server.docs_ui import install_docs
from personavlm.server.errors import install_error_handlers
from personavlm.server.headers import SecurityHeadersMiddleware
from personavlm.server.limits import BodyLimitMiddleware
from personavlm.server.mcp_http import mcp_endpoint
from personavlm.server.metrics import MetricsMiddleware, RouteLabels
from personavlm.server.service import Service

__all__ = ["create_app"]

TAGS = [
    {"name": "chat", "description": "The personalised model, OpenAI-compatible."},
    {"name": "users", "description": "Users (admin key), and deleting one's own data."},
    {"name": "keys", "description": "API keys: the admin key manages per-user keys."},
    {"name": "memories", "description": "A user's memories, their history and undo."},
    {"name": "search", "description": "Hybrid, time-aware search over a user's memories."},
    {"name": "personality", "description": "The user's Big Five state and its trajectory."},
    {"name": "turns", "description": "The conversation log."},
    {"name": "images", "description": "Pictures of the user's turns and memories."},
    {"name": "export", "description": "Everything of a user as one JSON document."},
    {"name": "jobs", "description": "A user's update jobs; retry or drop a dead one."},
    {"name": "service", "description": "Health and metrics."},
]


def create_app(config: ServiceConfig) -> FastAPI:
    """The app for `config`; nothing is opened until the app starts (its lifespan)."""
    index = config.static_dir / "index.html"
    if not index.is_file():
        raise ConfigError(
            f"the web page is missing ({index} not found): this personavlm installation is "
            "incomplete; reinstall it"
        )
    service = Service(config)
    mcp = mcp_endpoint(service, max_body_bytes=config.max_body_bytes)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.open)
        try:
            async with mcp.running():
                yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="personavlm",
        version=__version__,
        summary="Long-term memory and personality for any chat model, as a service.",
        description="The personalised OpenAI-compatible endpoint, the memory REST API and "
        "API keys. Every /v1 route needs `Authorization: Bearer <key>`. See docs/service.md.",
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # docs_ui.py serves /docs from this app instead of a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = service.metrics
    install_error_handlers(app)

    @app.get(
        "/healthz",
        tags=["service"],
        summary="Is the service up, on which engine, with a model?",
        operation_id="health",
        response_model=None,
        responses={200: {"model": schemas.HealthOut, "description": "Up"}},
    )
    async def health() -> dict[str, object]:  # on the event loop: no pool thread to wait for
        status, problems = service.health()
        return {
            "status": status,
            "problems": problems,
            "engine": service.store.engine_kind,
            "model": service.has_model,
            # Which model answers, as the page shows it: the spec without paths or URLs.
            "backend": models.public_spec(config.model),
        }

    app.include_router(routes_metrics.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_memory.router)
    app.include_router(routes_jobs.router)
    install_docs(app)
    app.router.routes.extend(mcp.routes)  # before the page, which takes every other path
    # Last: the page takes every path no route above claimed.
    app.mount("/", StaticFiles(directory=config.static_dir, html=True), name="page")
    _add_middleware(app, config, service)
    return app


def _add_middleware(app: FastAPI, config: ServiceConfig, service: Service) -> None:
    # Each add_middleware wraps the ones before: the last added runs first.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    # A busy chat is refused after the key is checked, before its body is read.
    app.add_middleware(
        ChatAdmissionMiddleware, runner=service.chat_runner, has_model=service.has_model
    )
    app.add_middleware(AuthMiddleware, service=service)  # before the body limit: 401 first
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=RouteLabels(app))
    # On every answer, 401, 413 and the 500 of an unexpected exception included.
    app.add_middleware(SecurityHeadersMiddleware, on_error=app.exception_handlers[Exception])
