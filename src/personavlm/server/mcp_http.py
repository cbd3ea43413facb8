"""/mcp: the MCP server (mcp_server.py) over streamable HTTP inside `personavlm serve`.

The route sits behind the app's middleware like /v1: the key check (auth.py: 401 before
anything else, the Caller put on the request), the body limit (--max-body-mb), the metrics
and the security headers. Each tool call reads the Caller of its own HTTP request, so a key
reaches exactly what it reaches over REST: a user key its own user, the admin key any user.

Stateless (no MCP session between requests): every request carries its key and is checked
on its own, any process behind a balancer can answer it, and nothing is held per client.
JSON answers rather than an event stream: no tool streams progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import BaseRoute

from personavlm.memory import MemoryStore
from personavlm.server.auth import NO_KEY, Caller
from personavlm.server.errors import unauthorized
from personavlm.server.mcp_server import build_mcp_server
from personavlm.server.service import Service

__all__ = ["MCP_PATH", "CallerAccess", "McpEndpoint", "mcp_endpoint"]

MCP_PATH = "/mcp"


class CallerAccess:
    """The service's store; the user of the key that sent the call's HTTP request."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def store(self) -> MemoryStore:
        return self.service.store

    def own_user(self, ctx: Context) -> str | None:
        request = ctx.request_context.request
        scope = getattr(request, "scope", None)
        caller = scope.get("state", {}).get("caller") if isinstance(scope, dict) else None
        if not isinstance(caller, Caller):  # only reachable were /mcp left out of the key check
            raise unauthorized(NO_KEY)
        return caller.user_id


@dataclass(frozen=True, slots=True)
class McpEndpoint:
    """The /mcp route to add to the app, and what the app's lifespan runs around serving (the
    SDK's session manager: it owns the task group the MCP requests run in)."""

    routes: Sequence[BaseRoute]
    running: Callable[[], AbstractAsyncContextManager[None]]


def mcp_endpoint(service: Service, *, max_body_bytes: int) -> McpEndpoint:
    server = build_mcp_server(CallerAccess(service))
    http_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=max_body_bytes,
        # The SDK's DNS-rebinding guard allows only localhost Host headers, which would refuse
        # a service on a LAN address. It guards servers that trust any local caller; every
        # /mcp request here needs a Bearer key, which a rebinding page cannot have (as /v1).
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return McpEndpoint(routes=list(http_app.routes), running=server.session_manager.run)
