"""What the MCP tools do, with no MCP in it: each operation is the REST route's library call
(routes_memory.py) on one user already chosen, returning the same JSON the route answers.

mcp_server.py registers these as tools; the transports (stdio in `personavlm mcp`, streamable
HTTP at /mcp of `personavlm serve`, mcp_http.py) only decide which user a call may reach
(`UserAccess`). Errors are the library's own exceptions, or an `ApiError` for a key naming
another user, so mcp_server.py turns them into the REST API's codes and messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from personavlm.errors import ValidationError
from personavlm.memory import Hit, MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.server.auth import OTHER_USER, check_addressable_user_id
from personavlm.server.errors import forbidden
from personavlm.server.pagination import (
    MAX_LIMIT,
    memory_page,
    stored_id,
)
from personavlm.server.routes_memory import image_url

__all__ = [
    "ACTOR",
    "ADMIN_NAMES_USER",
    "ConversationTurn",
    "add_memory",
    "delete_memory",
    "get_memory",
    "ingest_conversation",
    "list_memories",
    "memory_history",
    "memory_timeline",
    "personality",
    "profile",
    "scoped_user",
    "search_memories",
    "undo_change",
    "update_memory",
]

# The audit log's actor of every change made through MCP (the REST API writes "api").
ACTOR = "mcp"
ADMIN_NAMES_USER = "this is the admin key: name the user whose memory to use (the user_id argument)"


def scoped_user(own_user: str | None, requested: str | None) -> str:
    """The user a call reaches: `own_user` is the key's user (None: the admin key, which must
    name one). A user key naming another user gets REST's 403 `forbidden`, the same answer
    whether that user exists or not; a malformed id is REST's 400 first."""
    if requested is not None:
        check_addressable_user_id(requested)
    if own_user is None:
        if requested is None:
            raise ValidationError(ADMIN_NAMES_USER)
        return requested
    if requested is not None and requested != own_user:
        raise forbidden(OTHER_USER)
    return own_user


# ------------------------------------------------------------------ memories


def add_memory(
    store: MemoryStore,
    user_id: str,
    memory_type: str,
    content: str,
    *,
    key: str | None,
    keywords: Sequence[str],
    time: str | None,
) -> dict[str, Any]:
    memory = store.add(
        user_id, memory_type, content, key=key, keywords=list(keywords), time=time, actor=ACTOR
    )
    return memory.to_dict()


def get_memory(store: MemoryStore, user_id: str, memory_id: int) -> dict[str, Any]:
    return store.get(user_id, _memory_id(memory_id, user_id)).to_dict()


def list_memories(
    store: MemoryStore,
    user_id: str,
    *,
    types: Sequence[str] | None,
    status: str,
    start: str | None,
    end: str | None,
    limit: int,
    cursor: str | None,
    order: Literal["asc", "desc"],
) -> dict[str, Any]:
    return memory_page(
        store,
        user_id,
        types=types,
        status=status,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
        order=order,
    )


def update_memory(
    store: MemoryStore,
    user_id: str,
    memory_id: int,
    *,
    content: str | None,
    keywords: Sequence[str] | None,
    time: str | None,
) -> dict[str, Any]:
    memory = store.update(
        user_id,
        _memory_id(memory_id, user_id),
        content=content,
        keywords=None if keywords is None else list(keywords),
        time=time,
        actor=ACTOR,
    )
    return memory.to_dict()


def delete_memory(store: MemoryStore, user_id: str, memory_id: int) -> dict[str, Any]:
    return store.delete(user_id, _memory_id(memory_id, user_id), actor=ACTOR).to_dict()


def memory_history(store: MemoryStore, user_id: str, memory_id: int) -> dict[str, Any]:
    events = store.history(user_id, _memory_id(memory_id, user_id))
    return {"data": [e.to_dict() for e in events]}


def memory_timeline(store: MemoryStore, user_id: str, memory_id: int) -> dict[str, Any]:
    chain = store.timeline(user_id, _memory_id(memory_id, user_id))
    return {"data": [m.to_dict() for m in chain]}


def undo_change(store: MemoryStore, user_id: str, event_id: int) -> dict[str, Any]:
    event_id = stored_id(event_id, "memory event", user_id)
    return store.undo(user_id, event_id, actor=ACTOR).to_dict()


# ------------------------------------------------------------------ search, personality, log


def search_memories(
    store: MemoryStore,
    user_id: str,
    query: str,
    *,
    types: Sequence[str] | None,
    k: int | dict[str, int] | None,
    start: str | None,
    end: str | None,
) -> dict[str, Any]:
    hits = store.search(
        user_id, query, types=list(types) if types else None, k=k, start=start, end=end
    )
    return {"data": [_hit_dict(user_id, hit) for hit in hits]}


def personality(store: MemoryStore, user_id: str) -> dict[str, Any]:
    state = store.personality(user_id)
    readings = store.personality_readings(user_id)
    return {"current": state.to_dict(), "trajectory": [r.to_dict() for r in readings]}


def profile(store: MemoryStore, user_id: str) -> dict[str, Any]:
    """The user at a glance, for clients that read resources: every active core memory (the
    slots the assistant keeps about them) and the Big Five state now."""
    core: list[dict[str, Any]] = []
    after = None
    while True:  # core memory is one row per slot: a few pages at most
        rows = store.list(user_id, types=["core"], status="active", limit=MAX_LIMIT, after=after)
        core.extend(m.to_dict() for m in rows)
        if len(rows) < MAX_LIMIT:
            break
        after = (rows[-1].event_start, rows[-1].id)
    return {
        "user_id": user_id,
        "core": core,
        "personality": store.personality(user_id).to_dict(),
    }


class ConversationTurn(BaseModel):
    """One turn of a conversation to ingest: the fields of a `personavlm ingest` JSONL line,
    without pictures (a line's picture is a file path, which an MCP client cannot give)."""

    id: str = Field(
        description="The turn's id in the caller's system; ingesting it again is a no-op."
    )
    time: str = Field(description="When it was said, 'YYYY-MM-DD HH:MM' (local time).")
    role: Literal["user", "assistant"] = Field(description="Who spoke: user or assistant.")
    text: str = Field(description="What was said.")
    speaker: str | None = Field(None, description="The speaker's name, if known.")


def ingest_conversation(
    store: MemoryStore, user_id: str, turns: Sequence[ConversationTurn]
) -> dict[str, Any]:
    """Append the turns to the user's log, each retrievable at once (`personavlm ingest`)."""
    if not turns:
        raise ValidationError("turns: give at least one turn")
    inputs = []
    for index, turn in enumerate(turns):
        try:
            inputs.append(
                TurnInput.create(
                    time=turn.time,
                    role=turn.role,
                    text=turn.text,
                    ext_id=turn.id,
                    speaker=turn.speaker,
                )
            )
        except ValidationError as exc:  # say which turn, as the JSONL reader names the line
            raise ValidationError(f"turns[{index}]: {exc}") from exc
    return store.append_turns(user_id, inputs, actor=ACTOR).to_dict()


# ------------------------------------------------------------------ helpers


def _memory_id(memory_id: int, user_id: str) -> int:
    return stored_id(memory_id, "memory", user_id)


def _hit_dict(user_id: str, hit: Hit) -> dict[str, Any]:
    # The REST search's hit: pictures by URL (GET it on the service with the same key).
    return {
        "memory": hit.memory.to_dict(),
        "score": hit.score,
        "ranks": dict(hit.ranks),
        "turns": [t.to_dict() for t in hit.turns],
        "images": [
            {
                "id": ref.id,
                "mime": ref.mime,
                "size": ref.size,
                "caption": ref.caption,
                "url": image_url(user_id, ref.id),
            }
            for ref in hit.images
        ],
    }
