"""Calling the model with accounting, and reading its reply with one retry.

Every call is recorded as a `ModelCall` (phase, purpose, tokens, latency). `call_parsed` reads
a reply with a parser; when the parser raises ProtocolError, the model sees its reply and the
error once and tries again (DESIGN.md: parsers never guess; a malformed reply is retried once
with the error). A second failure raises ProtocolError carrying the last reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from personavlm.agent.formats import without_surrogates
from personavlm.agent.trace import ModelCall, Phase
from personavlm.errors import ProtocolError
from personavlm.models import deadline
from personavlm.models.base import ChatModel, Message, Reply

__all__ = ["CallSettings", "call", "call_parsed"]

T = TypeVar("T")

_RETRY_PROMPT = (
    "Your reply could not be read: {error}. Reply again with the whole answer, following "
    "the required format exactly."
)


@dataclass(frozen=True, slots=True)
class CallSettings:
    max_tokens: int = 1024
    temperature: float = 0.0


def call(
    model: ChatModel,
    messages: Sequence[Message],
    *,
    phase: Phase,
    purpose: str,
    settings: CallSettings,
    calls: list[ModelCall],
    schema: Mapping[str, Any] | None = None,
) -> Reply:
    budget = deadline.current()
    if budget is not None:  # a cancelled or spent request makes no further calls
        budget.check()
    reply = model.generate(
        messages,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        schema=schema,
    )
    # A reply is text from outside: an unpaired surrogate in it (a server's JSON may say
    # "\ud800") could be neither stored nor sent on; it becomes U+FFFD here, once.
    text = without_surrogates(reply.text)
    if text != reply.text:
        reply = replace(reply, text=text)
    calls.append(
        ModelCall(
            phase,
            purpose,
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
            reply.latency_s,
        )
    )
    return reply


def call_parsed(
    model: ChatModel,
    messages: Sequence[Message],
    parse: Callable[[str], T],
    *,
    phase: Phase,
    purpose: str,
    settings: CallSettings,
    calls: list[ModelCall],
    schema: Mapping[str, Any] | None = None,
) -> tuple[T, str]:
    """The parsed reply and its text; retried once with the parse error."""
    reply = call(
        model,
        messages,
        phase=phase,
        purpose=purpose,
        settings=settings,
        calls=calls,
        schema=schema,
    )
    try:
        return parse(reply.text), reply.text
    except ProtocolError as first:
        first_reply = reply.text
        _mark_error(calls, str(first))
        retry = [
            *messages,
            Message.text("assistant", reply.text),
            Message.text("user", _RETRY_PROMPT.format(error=first)),
        ]
    reply = call(
        model,
        retry,
        phase=phase,
        purpose=f"{purpose} retry",
        settings=settings,
        calls=calls,
        schema=schema,
    )
    try:
        return parse(reply.text), reply.text
    except ProtocolError as second:
        _mark_error(calls, str(second))
        raise ProtocolError(
            f"{purpose}: the model broke the protocol twice; last error: {second}",
            reply=reply.text,
            replies=(first_reply, reply.text),
        ) from second


def _mark_error(calls: list[ModelCall], error: str) -> None:
    last = calls[-1]
    calls[-1] = ModelCall(
        last.phase,
        last.purpose,
        last.prompt_tokens,
        last.completion_tokens,
        last.latency_s,
        error,
    )
