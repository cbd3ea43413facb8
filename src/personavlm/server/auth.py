"""API keys: who is calling, and which user's data they may reach.

Every `/v1` request (and `/metrics`) is authenticated once, by `AuthMiddleware`, before
routing and before its body is read, so a request without a valid key learns nothing (not
even whether its body or its route is right): 401. The key found is put on the request; the
dependencies below then check the route:

- `require_admin`: the admin key only (403 for a user key).
- `path_user`: the `{user_id}` of the path, checked for shape (400) and then against a user
  key's own user (403). The comparison needs no lookup, so a user key gets the same 403 for
  another user whether that user exists or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from personavlm.errors import PersonaVLMError, ValidationError
from personavlm.memory.validate import check_user_id
from personavlm.server.errors import error_response, forbidden, library_error, unauthorized
from personavlm.server.service import Service

__all__ = [
    "AdminCaller",
    "AnyCaller",
    "AuthMiddleware",
    "Caller",
    "PathUser",
    "check_addressable_user_id",
    "current_caller",
    "path_user",
    "require_admin",
]

PROTECTED_PREFIX = "/v1/"
# Keyed paths outside /v1: the metrics (admin only: they show user counts and errors) and
# the MCP endpoint (mcp_http.py: its tools reach users' memory, scoped like /v1).
# Public without a key: /healthz, the page, /openapi.json, /docs and /docs/assets/.
PROTECTED_PATHS = frozenset({"/metrics", "/mcp"})
NO_KEY = "no API key: send the header `Authorization: Bearer <key>`"
BAD_KEY = "unknown or revoked API key"
# Threads of auth's own: its lookups are short, and in the shared pool of 40 they queued behind
# memory routes busy embedding (every request, a refusal or /metrics included, waited).
AUTH_THREADS = 8
OTHER_USER = "this key belongs to one user and reaches only that user's data"
ADMIN_ONLY = "this route needs the admin key"

# Declares the scheme in the OpenAPI schema (and lets /docs send a key); the check itself is
# the middleware's.
_bearer = HTTPBearer(auto_error=False, description="An admin key or a user's key.")


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: int
    user_id: str | None  # None: the admin key

    @property
    def is_admin(self) -> bool:
        return self.user_id is None


class AuthMiddleware:
    """Resolves the bearer key of every /v1 request (one store lookup, off the event loop);
    answers 401 itself, else records the Caller in `scope["state"]`."""

    def __init__(self, app: ASGIApp, *, service: Service) -> None:
        self.app = app
        self.service = service
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        secret = _bearer_secret(scope)
        if secret is None:
            await error_response(401, "unauthorized", NO_KEY)(scope, receive, send)
            return
        try:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(AUTH_THREADS)
            key = await anyio.to_thread.run_sync(
                self.service.store.authenticate, secret, limiter=self._limiter
            )
        except PersonaVLMError as exc:
            status, code = library_error(exc)
            await error_response(status, code, str(exc))(scope, receive, send)
            return
        if key is None:
            await error_response(401, "unauthorized", BAD_KEY)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = Caller(key.id, key.user_id)
        await self.app(scope, receive, send)


def needs_key(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIX) or path in PROTECTED_PATHS


def _bearer_secret(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, secret = bytes(value).decode("latin-1").partition(" ")
            secret = secret.strip()
            return secret if scheme.lower() == "bearer" and secret else None
    return None


def current_caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Caller):  # only reachable for a route the middleware skips
        raise unauthorized(NO_KEY)
    return caller


AnyCaller = Annotated[Caller, Depends(current_caller)]


def require_admin(caller: AnyCaller) -> Caller:
    if not caller.is_admin:
        raise forbidden(ADMIN_ONLY)
    return caller


AdminCaller = Annotated[Caller, Depends(require_admin)]


def check_addressable_user_id(value: str) -> str:
    """A user id the service can serve: the store's rules, and no `/` (it could not be
    written in a `/v1/users/{id}` path)."""
    check_user_id(value)
    if "/" in value:
        raise ValidationError(f"user id: {value!r} contains '/'; user ids cannot hold a slash")
    return value


def path_user(
    user_id: Annotated[str, Path(description="The user's id.")],
    caller: AnyCaller,
) -> str:
    check_addressable_user_id(user_id)
    if not caller.is_admin and user_id != caller.user_id:
        raise forbidden(OTHER_USER)
    return user_id


PathUser = Annotated[str, Depends(path_user)]
