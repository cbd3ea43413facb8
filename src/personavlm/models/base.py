"""The chat-model seam: message types, the reply, and the `ChatModel` protocol.

A message is a role and an ordered tuple of parts; text and images interleave in the order the
user gave them, because vision-language models read an image where it stands in the text.
Backends (`models/openai.py`, later a local one) turn these into their wire format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from personavlm.errors import ValidationError

__all__ = [
    "IMAGE_MIMES",
    "ChatModel",
    "ImagePart",
    "Message",
    "Part",
    "Reply",
    "Role",
    "TextPart",
    "Usage",
]

Role = Literal["system", "user", "assistant"]

# What OpenAI-compatible servers (vLLM, SGLang, OpenAI) accept as image data URLs.
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})

_ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class TextPart:
    """A run of text inside a message."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image inside a message: its encoded bytes and their MIME type."""

    data: bytes
    mime: str

    def __post_init__(self) -> None:
        if self.mime not in IMAGE_MIMES:
            raise ValidationError(
                f"image mime {self.mime!r} is not supported; use one of: "
                + ", ".join(sorted(IMAGE_MIMES))
            )
        if not self.data:
            raise ValidationError("image data is empty; pass the encoded image file's bytes")

    def __repr__(self) -> str:
        # The default repr would dump the whole image into logs and tracebacks.
        return f"ImagePart(mime={self.mime!r}, {len(self.data)} bytes)"


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: a role and its parts, in order."""

    role: Role
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValidationError(
                f"message role {self.role!r} is not one of: system, user, assistant"
            )
        for part in self.parts:
            if not isinstance(part, TextPart | ImagePart):
                raise ValidationError(
                    f"message part {part!r} is neither a TextPart nor an ImagePart"
                )

    @classmethod
    def text(cls, role: Role, text: str) -> Message:
        """A message holding a single text part."""
        return cls(role, (TextPart(text),))


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the server counted for one call (0 where the server did not say)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Reply:
    """What a model answered, with how it was produced."""

    text: str
    usage: Usage
    model: str
    latency_s: float
    finish_reason: str | None


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers a conversation.

    `schema`, when given, is a JSON Schema the reply text must satisfy (structured output);
    backends pass it to the server's constrained decoding. Failures raise `ModelError`
    subclasses; a backend never returns an empty reply in place of an error.
    """

    @property
    def name(self) -> str: ...

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply: ...
