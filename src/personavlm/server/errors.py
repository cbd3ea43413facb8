"""Every error the service answers, as JSON in the OpenAI shape with a stable code:

    {"error": {"code": "not_found", "message": "no memory 12 for user 'ann'", "type": "not_found"}}

personavlm's exceptions map by class (the blame groups of personavlm/errors.py) to a status and
a code; FastAPI's own errors (a body of the wrong shape, an unknown route) use the same shape,
so a client handles one format. The codes are the contract in docs/service.md.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from personavlm.errors import (
    LIBRARY_ERROR_CODES,
    ModelError,
    PersonaVLMError,
)

__all__ = [
    "ApiError",
    "error_body",
    "error_response",
    "forbidden",
    "install_error_handlers",
    "library_message",
    "model_not_configured",
    "payload_too_large",
    "unauthorized",
]

log = logging.getLogger("personavlm.server")

# One table for both directions (personavlm/errors.py): the client maps codes back with it.
LIBRARY_ERRORS = LIBRARY_ERROR_CODES

HTTP_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
}


class ApiError(Exception):
    """An answer the service itself decides on (no key, wrong user, too large, no model)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def payload_too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def model_not_configured() -> ApiError:
    return ApiError(
        503,
        "model_not_configured",
        "no chat model is attached to this service (it runs with --model none): restart it "
        "with --model openai:<model>@<base_url> (any OpenAI-compatible server), --model "
        "hf:<checkpoint dir or .gguf>, or without --model for the bundled local:smollm2, or "
        "set PERSONAVLM_MODEL; the memory API works without one",
    )


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": code}}


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    sent = dict(headers or {})
    if status == 401:
        sent["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(code, message), status_code=status, headers=sent or None)


def library_error(exc: PersonaVLMError) -> tuple[int, str]:
    """The status and code of a personavlm exception."""
    for kind, status, code in LIBRARY_ERRORS:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal_error"


def library_message(exc: PersonaVLMError) -> str:
    """The exception's message, plus where the user's message went when a model failed."""
    message = str(exc)
    if isinstance(exc, ModelError) and exc.kept_turn_id is not None:
        message += (
            f" (your message was kept as turn {exc.kept_turn_id}, marked failed; "
            "send it again to get an answer)"
        )
    return message


def validation_message(exc: RequestValidationError) -> str:
    """One line per problem, each naming where it is: `body.messages: Field required`."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "the request does not have the documented shape: " + "; ".join(problems)


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers)


async def _on_library_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PersonaVLMError)
    status, code = library_error(exc)
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    return error_response(status, code, library_message(exc))


async def _on_request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", validation_message(exc))


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route or file; the routes are listed at /openapi.json"
    return error_response(exc.status_code, code, message)


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # A bug: the client gets a stable answer, the log gets the traceback (Starlette logs it).
    return error_response(
        500, "internal_error", f"internal error ({type(exc).__name__}); see the server log"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(PersonaVLMError, _on_library_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
