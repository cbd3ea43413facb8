"""Security headers on every answer: the page's, the API's and the errors'.

The page (static/) runs only its own files: module scripts and one stylesheet, no inline
script or style (its charts set colours through the CSSOM, which CSP allows). Its pictures
are `data:` URLs (the picture picked for a chat message, read in the browser) and `blob:`
URLs (stored pictures, fetched with the key and handed to <img> as object URLs): `img-src`
allows exactly those two besides the origin. Nothing is loaded from another origin.

A route that needs a different policy sets its own Content-Security-Policy (/docs, see
docs_ui.py); this middleware only adds the headers an answer lacks.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
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


class SecurityHeadersMiddleware:
    """Adds HEADERS to every HTTP answer that does not carry them already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # optional in ASGI
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
