"""Request bodies (validated by FastAPI: a body of another shape is a 422) and the shapes of
the answers, for the OpenAPI schema.

Answers are built from the records' own `to_dict()`; the `*Out` models here only document
them (routes name them in `responses=`, so nothing is re-validated on the way out). The tests
check real answers against these models, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionOut",
    "ChatCompletionRequest",
    "ChatMessage",
    "ContentPart",
    "DeletionOut",
    "ErrorOut",
    "EventList",
    "EventOut",
    "HealthOut",
    "HitList",
    "ImageURL",
    "InvalidateBody",
    "KeyList",
    "KeyOut",
    "MeOut",
    "MemoryList",
    "MemoryOut",
    "MemoryPage",
    "MemoryPatch",
    "ModelList",
    "NewKey",
    "NewKeyOut",
    "NewMemory",
    "NewUser",
    "PersonalityOut",
    "SearchBody",
    "StreamOptions",
    "TurnPage",
    "UserList",
    "UserOut",
    "error_responses",
    "ok",
]

Time = str  # "YYYY-MM-DD HH:MM:SS", the user's local time


class _Body(BaseModel):
    # A misspelt field in a REST body is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ chat (OpenAI shapes)


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(description="A data URL: data:image/png;base64,... (no http URLs).")
    detail: str | None = None


class ContentPart(BaseModel):
    """`{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url": ...}}`."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(description="system, developer, user, assistant or tool.")
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI body. Fields this service does not use (temperature, max_tokens, ...) are
    accepted and ignored: the agent's own settings apply."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage]
    user: str | None = Field(
        None, description="Whose memory to use; a user key may leave it out (its own user)."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None


class UsageOut(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChoiceMessageOut(_Out):
    role: str
    content: str


class ChoiceOut(_Out):
    index: int
    message: ChoiceMessageOut
    finish_reason: str


class PersonaVLMOut(_Out):
    user_id: str
    user_turn_id: int
    assistant_turn_id: int
    trace: dict[str, Any] = Field(description="The turn's trace (agent/trace.py, format 1).")


class ChatCompletionOut(_Out):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut
    personavlm: PersonaVLMOut


class ModelOut(_Out):
    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelList(_Out):
    object: str = "list"
    data: list[ModelOut]


class HealthOut(_Out):
    status: str  # "ok", or "degraded" with the reasons in `problems`
    problems: list[str]
    engine: str
    model: bool
    backend: str | None = Field(
        description="The chat model's spec without paths or addresses (local:smollm2, "
        "hf:<checkpoint name>, openai:<model>); null when the service runs without one."
    )


class ErrorDetail(_Out):
    code: str
    message: str
    type: str


class ErrorOut(_Out):
    error: ErrorDetail


# ------------------------------------------------------------------ users and keys


class NewUser(_Body):
    id: str = Field(description="The new user's id (1..128 characters, no control characters).")


class UserOut(_Out):
    id: str
    created_at: Time
    memories: dict[str, int] = Field(description="Active memories per type.")


class UserList(_Out):
    data: list[UserOut]


class NewKey(_Body):
    label: str = Field("", max_length=200, description="A note for you: who the key is for.")


class KeyOut(_Out):
    id: int
    user_id: str | None
    admin: bool
    label: str
    prefix: str = Field(description="The first characters of the secret, to recognise it.")
    created_at: Time
    revoked_at: Time | None


class NewKeyOut(_Out):
    id: int
    key: str = Field(description="The secret; shown only in this answer.")
    user_id: str | None
    admin: bool
    label: str
    prefix: str
    created_at: Time


class KeyList(_Out):
    data: list[KeyOut]


class MeOut(_Out):
    user_id: str | None = Field(description="The key's user; null for the admin key.")
    admin: bool
    key_id: int


class DeletionOut(_Out):
    """How many of each kind of thing the deletion removed."""

    user_id: str
    memories: int
    turns: int
    events: int
    images: int
    blobs: int
    keys: int


# ------------------------------------------------------------------ memories


class NewMemory(_Body):
    type: str = Field(description="core, semantic, episodic or procedural.")
    content: str
    key: str | None = Field(None, description="The slot, for core and procedural memory.")
    keywords: list[str] = Field(default_factory=list)
    time: str | None = Field(None, description="When it became true, 'YYYY-MM-DD HH:MM'.")


class MemoryPatch(_Body):
    content: str | None = None
    keywords: list[str] | None = None
    time: str | None = Field(None, description="When the new version became true.")


class InvalidateBody(_Body):
    time: str | None = Field(None, description="When it stopped being true (default: now).")


class SearchBody(_Body):
    query: str
    types: list[str] | None = Field(
        None, description="Memory types to search (default semantic, episodic, procedural)."
    )
    k: int | dict[str, int] | None = Field(
        None, description="Hits per type: one number, or per type (default 4/2/2)."
    )
    start: str | None = None
    end: str | None = None


class MemoryOut(_Out):
    id: int
    user_id: str
    type: str
    key: str | None
    content: str
    keywords: list[str]
    image_ids: list[str]
    source_turn_ids: list[int]
    event_start: Time
    event_end: Time
    valid_from: Time
    valid_to: Time | None
    status: str
    version: int
    supersedes: int | None
    created_at: Time


class MemoryPage(_Out):
    data: list[MemoryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class MemoryList(_Out):
    data: list[MemoryOut]


class ChangeOut(_Out):
    memory_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class EventOut(_Out):
    id: int
    user_id: str
    op: str
    actor: str
    time: Time
    turn_id: int | None
    undoes: int | None
    changes: list[ChangeOut]


class EventList(_Out):
    data: list[EventOut]


class TurnOut(_Out):
    id: int
    user_id: str
    ext_id: str | None
    session_id: int
    time: Time
    role: str
    speaker: str | None
    text: str
    caption: str | None
    image_ids: list[str]
    status: str  # "ok", or "failed": a message the model never answered (kept, not lost)


class JobOut(_Out):
    id: int
    user_id: str
    kind: str
    status: str  # pending, done, dead (failed too often), dropped
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    replies: list[str] = Field(description="The raw replies of the failed attempts.")
    created_at: Time
    finished_at: Time | None


class JobList(_Out):
    data: list[JobOut]


class TurnPage(_Out):
    data: list[TurnOut]
    next_cursor: str | None


class HitImageOut(_Out):
    id: str
    mime: str
    size: int
    caption: str | None
    url: str = Field(description="Where the picture's bytes are served (same key).")


class HitOut(_Out):
    memory: MemoryOut
    score: float
    ranks: dict[str, int]
    turns: list[TurnOut]
    images: list[HitImageOut]


class HitList(_Out):
    data: list[HitOut]


class StateOut(_Out):
    traits: dict[str, float]
    step: int


class ReadingOut(_Out):
    id: int
    turn_id: int | None
    time: Time
    reading: dict[str, int]
    absorbed: bool
    traits_after: dict[str, float]
    step_after: int


class PersonalityOut(_Out):
    current: StateOut
    trajectory: list[ReadingOut]


# ------------------------------------------------------------------ OpenAPI helpers

_ERROR_TEXT = {
    400: "Malformed input (validation_error)",
    401: "No key, or an unknown or revoked key (unauthorized)",
    403: "The key may not reach this route or user (forbidden)",
    404: "No such user, memory, event, image or key (not_found)",
    409: "The request contradicts what is stored (conflict)",
    422: "The body does not have the documented shape (validation_error)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents: 401 always, and `statuses`."""
    return {
        status: {"model": ErrorOut, "description": _ERROR_TEXT[status]}
        for status in sorted({401, *statuses})
    }


def ok(model: type[Any], description: str = "Success") -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description}}
