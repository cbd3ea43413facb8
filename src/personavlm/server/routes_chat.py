"""The personalised model behind the OpenAI API: `POST /v1/chat/completions`, `GET /v1/models`.

The request's `user` picks whose memory answers. Only the last user message is new: its text
and its pictures (data URLs) become the turn; earlier messages are not replayed, because the
memory already holds what was said here. The agent produces the whole answer at once after
its think/retrieve loop, so a stream sends the role chunk at once, then the answer in word
chunks when it exists: honest about when the text arrives, and an OpenAI client reads it
unchanged. A failure before the first byte is a JSON error; after it, an SSE `error` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from personavlm.agent import Assistant
from personavlm.agent import Response as Response_
from personavlm.errors import PersonaVLMError, ValidationError
from personavlm.media.blobs import image_bytes, sniff_mime
from personavlm.server import schemas
from personavlm.server.auth import AnyCaller, Caller, check_addressable_user_id
from personavlm.server.chat_runner import ChatRunner
from personavlm.server.config import MIB
from personavlm.server.errors import (
    ApiError,
    error_body,
    forbidden,
    library_error,
    library_message,
    model_not_configured,
)
from personavlm.server.errors import payload_too_large as too_large
from personavlm.server.service import ServiceDep

__all__ = ["ChatTurn", "read_chat_turn", "router"]

log = logging.getLogger("personavlm.server")
router = APIRouter(prefix="/v1")

KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
STARTED = int(time.time())


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """What a chat request asks of the agent, checked."""

    user_id: str
    text: str
    images: tuple[bytes, ...]
    stream: bool
    include_usage: bool


@router.get(
    "/models",
    tags=["chat"],
    summary="The personalised model (OpenAI list shape)",
    operation_id="listModels",
    response_model=None,
    responses={
        200: {"model": schemas.ModelList, "description": "Success"},
        503: {"model": schemas.ErrorOut, "description": "No model attached (model_not_configured)"},
        **schemas.error_responses(),
    },
)
def list_models(_caller: AnyCaller, service: ServiceDep) -> dict[str, Any]:
    if not service.has_model:  # listing a model that cannot answer would mislead clients
        raise model_not_configured()
    model = {
        "id": service.config.served_model,
        "object": "model",
        "created": STARTED,
        "owned_by": "personavlm",
    }
    return {"object": "list", "data": [model]}


@router.post(
    "/chat/completions",
    tags=["chat"],
    summary="Chat with the personalised model (OpenAI-compatible, streaming or not)",
    operation_id="createChatCompletion",
    response_model=None,
    responses={
        200: {
            "model": schemas.ChatCompletionOut,
            "description": "A chat.completion, or with stream=true server-sent "
            "chat.completion.chunk events ending in `data: [DONE]`",
            "content": {"text/event-stream": {}},
        },
        410: {"model": schemas.ErrorOut, "description": "The user was deleted meanwhile"},
        413: {"model": schemas.ErrorOut, "description": "A picture or the body is too large"},
        429: {"model": schemas.ErrorOut, "description": "Every chat slot is busy (model_busy)"},
        502: {"model": schemas.ErrorOut, "description": "The chat model failed (model_error)"},
        503: {"model": schemas.ErrorOut, "description": "No model attached (model_not_configured)"},
        **schemas.error_responses(400, 403, 409, 422),
    },
)
async def chat_completions(
    body: schemas.ChatCompletionRequest, caller: AnyCaller, service: ServiceDep, request: Request
) -> Response:
    limit = service.config.max_image_bytes
    # A turn finding every slot busy was refused before its body was read
    # (ChatAdmissionMiddleware); the runner checks again when the turn takes its slot.
    turn = await run_in_threadpool(read_chat_turn, body, caller, limit)  # decodes pictures
    assistant = service.assistant  # 503 model_not_configured when no model is attached
    completion = Completion(service.config.served_model, turn.user_id)
    runner = service.chat_runner
    if turn.stream:
        return StreamingResponse(
            stream_events(runner, assistant, turn, completion),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        response = await runner.run(_respond(assistant, turn), disconnected=request.is_disconnected)
    except asyncio.CancelledError:
        # The client left: its turn was cancelled (its message kept as a failed turn) and
        # nobody is there to read an answer (499, as nginx logs a closed request).
        return Response(status_code=499)
    return JSONResponse(completion.whole(response))


def _respond(assistant: Assistant, turn: ChatTurn) -> Callable[[], Response_]:
    return lambda: assistant.respond(turn.user_id, turn.text, list(turn.images))


# ------------------------------------------------------------------ reading the request


def read_chat_turn(
    body: schemas.ChatCompletionRequest, caller: Caller, max_image_bytes: int
) -> ChatTurn:
    """The checked turn, or ApiError / ValidationError saying what to fix."""
    user_id = _chat_user(body.user, caller)
    for index, message in enumerate(body.messages):
        if message.role not in KNOWN_ROLES:
            raise ValidationError(
                f"messages[{index}].role {message.role!r} is unknown; "
                f"use one of: {', '.join(sorted(KNOWN_ROLES))}"
            )
    last = next((m for m in reversed(body.messages) if m.role == "user"), None)
    if last is None:
        raise ValidationError("messages has no user message: the last one is the new turn")
    text, images = _parts(last, max_image_bytes)
    if not text.strip() and not images:
        raise ValidationError("the last user message is empty: send some text or a picture")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ChatTurn(user_id, text, tuple(images), body.stream, include_usage)


def _chat_user(requested: str | None, caller: Caller) -> str:
    if requested is None:
        if caller.user_id is None:
            raise ValidationError(
                "pass `user` (whose memory to use): the admin key speaks for no user"
            )
        return caller.user_id
    check_addressable_user_id(requested)
    if caller.user_id is not None and requested != caller.user_id:
        raise forbidden("this key belongs to one user: `user` must be that user or left out")
    return requested


def _parts(message: schemas.ChatMessage, max_image_bytes: int) -> tuple[str, list[bytes]]:
    if message.content is None:
        return "", []
    if isinstance(message.content, str):
        return message.content, []
    texts: list[str] = []
    images: list[bytes] = []
    for index, part in enumerate(message.content):
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url" and part.image_url is not None:
            images.append(_image(part.image_url.url, index, max_image_bytes))
        else:
            raise ValidationError(
                f"content part {index} has type {part.type!r}; this service reads 'text' and "
                "'image_url' parts (an image_url part needs image_url.url)"
            )
    return "\n".join(t for t in texts if t), images


def _image(url: str, index: int, max_image_bytes: int) -> bytes:
    if not url.startswith("data:"):
        raise ValidationError(
            f"content part {index}: image_url must be a data URL "
            "(data:image/png;base64,...); this service fetches nothing from the network"
        )
    # base64 is 4/3 the size: refuse an oversize picture before decoding it.
    if len(url) > max_image_bytes * 4 // 3 + 200:
        raise too_large_image(index, max_image_bytes)
    data, _label = image_bytes(url)
    if len(data) > max_image_bytes:
        raise too_large_image(index, max_image_bytes)
    if sniff_mime(data) is None:
        raise ValidationError(
            f"content part {index}: not a PNG, JPEG, GIF, WebP or BMP image (checked its bytes)"
        )
    return data


def too_large_image(index: int, limit: int) -> ApiError:
    return too_large(
        f"content part {index}: the picture is over the {limit / MIB:g} MiB limit "
        "(--max-image-mb); send it smaller"
    )


# ------------------------------------------------------------------ writing the answer


class Completion:
    """The OpenAI envelope of one answer: id, time, model name, usage."""

    def __init__(self, model: str, user_id: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.user_id = user_id

    def whole(self, response: Response_) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": response.answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(response),
            "personavlm": self.extra(response),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def usage_chunk(self, response: Response_) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(response),
        }

    def extra(self, response: Response_) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_turn_id": response.exchange.user_turn.id,
            "assistant_turn_id": response.exchange.assistant_turn.id,
            "trace": response.trace.to_dict(),
        }


def usage(response: Response_) -> dict[str, int]:
    """Every model call the turn made: each think/retrieve round and the answer, and the
    update phase's calls when it ran inline."""
    calls = response.trace.all_calls()
    prompt = sum(c.prompt_tokens for c in calls)
    completion = sum(c.completion_tokens for c in calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def stream_events(
    runner: ChatRunner, assistant: Assistant, turn: ChatTurn, completion: Completion
) -> AsyncIterator[str]:
    yield _sse(completion.chunk({"role": "assistant", "content": ""}))
    try:
        # A client that leaves cancels this generator, and with it the turn (runner.run).
        response = await runner.run(_respond(assistant, turn))
    except Exception as exc:  # the status line is sent: the error travels as an event
        yield _sse(_stream_error(exc))
        yield "data: [DONE]\n\n"
        return
    for piece in answer_pieces(response.answer):
        yield _sse(completion.chunk({"content": piece}))
    final = completion.chunk({}, finish="stop")
    final["personavlm"] = completion.extra(response)
    yield _sse(final)
    if turn.include_usage:
        yield _sse(completion.usage_chunk(response))
    yield "data: [DONE]\n\n"


def answer_pieces(answer: str) -> Sequence[str]:
    """The answer cut before each word that follows whitespace; joined, they are the answer."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", answer) if piece]


def _stream_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        return error_body(exc.code, exc.message)
    if isinstance(exc, PersonaVLMError):
        status, code = library_error(exc)
        if status >= 500:
            log.warning("chat stream failed: %s: %s", type(exc).__name__, exc)
        return error_body(code, library_message(exc))
    log.exception("chat stream failed")
    return error_body("internal_error", f"internal error ({type(exc).__name__}); see the log")


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
