"""Security headers on every answer: the page's, the API's and the errors'.

The page (static/) runs only its own files: module scripts and one stylesheet, no inline
script or style (its charts set colours through the CSSOM, which CSP allows). Its pictures
are `data:` URLs (the picture picked for a chat message, read in the browser) and `blob:`
URLs (stored pictures, fetched with the key and handed to <img> as object URLs): `img-src`
allows exactly those two besides the origin. Nothing is loaded from another origin.

A route that needs a different policy sets its own Content-Security-Policy (/docs, see
docs_ui.py); this middleware only adds the headers an answer lacks.

An unexpected exception is answered by Starlette's outermost middleware, outside this one,
so its 500 would go out bare: this middleware answers it instead, with the app's own handler
for `Exception`, and re-raises (the server still logs the traceback; Starlette sees the
answer started and sends no second one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PAGE_CSP", "SecurityHeadersMiddleware", "content_security_policy"]


def content_security_policy(extra: Mapping[str, str] | None = None) -> str:
    """The page's policy, with directives of `extra` added or replaced."""
    directives = {
        "default-src": "'self'",
        "img-src": "'self' data: blob:",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",  # no other site may frame the page (clickjacking)
    }
    directives.update(extra or {})
    return "; ".join(f"{name} {value}" for name, value in directives.items())


PAGE_CSP = content_security_policy()

HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": PAGE_CSP,
    "x-frame-options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "referrer-policy": "no-referrer",
}


# Starlette's shape of an exception handler: sync or async.
ErrorHandler = Callable[[Request, Exception], Response | Awaitable[Response]]


class SecurityHeadersMiddleware:
    """Adds HEADERS to every HTTP answer that does not carry them already; `on_error` answers
    an exception no inner handler took (the app's handler for `Exception`)."""

    def __init__(self, app: ASGIApp, *, on_error: ErrorHandler | None = None) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])  # optional in ASGI
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if not started and self.on_error is not None:
                answer = self.on_error(Request(scope), exc)
                if not isinstance(answer, Response):
                    answer = await answer
                await answer(scope, receive, send_with_headers)
            raise
