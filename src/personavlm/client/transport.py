"""What both clients share around sending: the retry rule and error answers -> exceptions.

An error answer `{"error": {"code", "message"}}` raises the exception the server mapped to
that code (personavlm/errors.py LIBRARY_ERROR_CODES, the one table both sides read); the
service's own refusals map by blame: a wrong or missing key is the caller's set-up
(ConfigError), a too-large or malformed request is InputError.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from personavlm.errors import (
    LIBRARY_ERROR_CODES,
    ConfigError,
    InputError,
    ModelConnectionError,
    PersonaVLMError,
    StoreError,
    ValidationError,
)

__all__ = ["MAX_RETRY_AFTER_S", "error_for", "retry_delay", "unreachable"]

# The longest Retry-After a client sleeps through; a longer one is raised to the caller.
MAX_RETRY_AFTER_S = 30.0
_SERVICE_CODES: dict[str, type[PersonaVLMError]] = {
    "unauthorized": ConfigError,
    "forbidden": ConfigError,
    "model_not_configured": ConfigError,
    "payload_too_large": ValidationError,
    "method_not_allowed": InputError,
    "internal_error": StoreError,
}
_RETRIED_STATUSES = (502, 503, 504)


def error_for(response: httpx.Response) -> PersonaVLMError:
    """The exception for an error answer, its message the server's, with status and code."""
    code, message = _error_body(response)
    kind = next((k for k, _s, c in LIBRARY_ERROR_CODES if c == code), None)
    if kind is None:
        kind = _SERVICE_CODES.get(code)
    if kind is None:
        kind = InputError if response.status_code < 500 else PersonaVLMError
    return kind(f"{message} (HTTP {response.status_code} {code})")


def _error_body(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (json.JSONDecodeError, KeyError, TypeError):
        # Not the service's shape (a proxy in between): keep what it said.
        return f"http_{response.status_code}", response.text[:500] or response.reason_phrase


def retry_delay(response: httpx.Response, *, retry_safe: bool, attempt: int) -> float | None:
    """Seconds to wait before sending again, or None to raise now."""
    if response.status_code == 429:
        # Refused before anything was done: any call may be sent again, when told.
        after = _retry_after(response)
        return after if after is not None and after <= MAX_RETRY_AFTER_S else None
    if retry_safe and response.status_code in _RETRIED_STATUSES:
        # A service without a model stays without one: asking again cannot help.
        if _error_body(response)[0] == "model_not_configured":
            return None
        return backoff(attempt)
    return None


def backoff(attempt: int) -> float:
    return float(min(0.25 * 2**attempt, 4.0))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def may_resend_after(exc: httpx.TransportError, *, retry_safe: bool) -> bool:
    """A connection never made sent nothing; any other failure may have been applied."""
    return retry_safe or isinstance(exc, httpx.ConnectError)


def unreachable(base_url: str, exc: httpx.TransportError) -> ModelConnectionError:
    return ModelConnectionError(
        f"the personavlm service at {base_url} did not answer ({type(exc).__name__}: {exc}); "
        "check that `personavlm serve` runs there and the URL is right"
    )


def read_body(response: httpx.Response, kind: Any) -> Any:
    """The answer as the call reads it: bytes for images, text for /metrics, else JSON."""
    if kind is bytes:
        return response.content
    if kind is str:
        return response.text
    return response.json()
