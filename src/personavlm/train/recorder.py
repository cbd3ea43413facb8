"""Recording what the agent sends a model, so the calls become training samples.

`RecordingModel` wraps any ChatModel and keeps every (messages, reply) pair. Because the
agent itself built the messages, a sample made from a recorded call is exactly what the
agent sends at run time: what is trained is what runs.

    recorder = RecordingModel(teacher)
    assistant = Assistant(store, recorder, config)
    ... assistant.record(...) / assistant.ask(...) ...
    for call in recorder.take():
        kind = call_kind(call.messages)          # "semantic", "reasoning", ... or None
        messages = without_retries(call.messages)

A reply the agent could not parse is sent back once with the error (agent/calls.py); such a
(bad reply, error note) pair is never something to learn, so `without_retries` removes it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from personavlm.agent.templates import SLOT
from personavlm.models.base import ChatModel, Message, Reply, TextPart

__all__ = ["RecordedCall", "RecordingModel", "call_kind", "text_of", "without_retries"]

# agent/calls.py's retry note begins with this.
_RETRY_NOTE = "Your reply could not be read:"

# Agent prompt file -> the sample kind its calls teach (PAPER.md section 5's mix).
_PROMPT_KINDS = {
    "response_tags": "reasoning",
    "response_json": "reasoning",
    "personality_tags": "personality",
    "semantic_tags": "semantic",
    "episodic_tags": "episodic",
    "episodic_json": "episodic",
    "core_tags": "core",
    "procedural_tags": "procedural",
    "update_json": "update",
    "consolidate_json": "consolidate",
}


@dataclass(frozen=True, slots=True)
class RecordedCall:
    messages: tuple[Message, ...]
    reply: str


class RecordingModel:
    """A ChatModel that passes calls to `inner` and records them (thread-safe)."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self._calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply:
        reply = self.inner.generate(
            messages, max_tokens=max_tokens, temperature=temperature, schema=schema
        )
        with self._lock:
            self._calls.append(RecordedCall(tuple(messages), reply.text))
        return reply

    def take(self) -> list[RecordedCall]:
        """The calls recorded since the last take, in call order."""
        with self._lock:
            calls, self._calls = self._calls, []
        return calls


def text_of(message: Message) -> str:
    """A message's text parts, joined (pictures left out)."""
    return "".join(p.text for p in message.parts if isinstance(p, TextPart))


def _opening_text(messages: Sequence[Message]) -> str | None:
    """The text of the message that carries the agent's prompt: the system message (json
    protocol), or the first user message (tags: the whole prompt is one user message)."""
    if not messages or messages[0].role not in ("system", "user"):
        return None
    return text_of(messages[0])


@cache
def _prompt_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    # A template's {Placeholders} (profile, conversation, the retrieval budget) match any
    # filling, over lines too.
    patterns = []
    folder = resources.files("personavlm.agent").joinpath("prompts")
    for name, kind in _PROMPT_KINDS.items():
        text = folder.joinpath(f"{name}.txt").read_text().strip()
        pieces = SLOT.split(text)[::2]  # split keeps the slot names at odd positions
        joined = r"(?s:.*?)".join(re.escape(p) for p in pieces)
        patterns.append((re.compile(joined + r"\Z"), kind))
    return tuple(patterns)


def call_kind(messages: Sequence[Message]) -> str | None:
    """Which agent call this is, by its prompt (the package's templates); None for a call
    the agent did not make (a caller's own prompt)."""
    opening = _opening_text(messages)
    if opening is None:
        return None
    for pattern, kind in _prompt_patterns():
        if pattern.match(opening.strip()):
            return kind
    return None


def is_retry_note(message: Message) -> bool:
    return message.role == "user" and text_of(message).startswith(_RETRY_NOTE)


def without_retries(messages: Sequence[Message]) -> list[Message]:
    """The conversation with every (rejected reply, retry note) pair taken out."""
    kept: list[Message] = []
    for message in messages:
        if is_retry_note(message) and kept and kept[-1].role == "assistant":
            kept.pop()
            continue
        kept.append(message)
    return kept
