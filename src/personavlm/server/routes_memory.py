"""The memory REST API: users and their keys, memories (list, create, change, history,
undo), search, personality, turns, pictures and export. docs/service.md is the contract.

Endpoints are plain `def`s: FastAPI runs them in its thread pool, so the store's blocking
SQLite work never stalls the event loop. Who may call what is decided by the dependencies
in auth.py before an endpoint runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from personavlm.errors import NotFoundError, StoreError
from personavlm.memory import Hit, ImageRef
from personavlm.server import schemas
from personavlm.server.auth import AdminCaller, AnyCaller, PathUser, check_addressable_user_id
from personavlm.server.pagination import (
    check_limit,
    check_query_id,
    decode_cursor,
    encode_cursor,
    memory_page,
    stored_id,
)
from personavlm.server.schemas import error_responses, ok
from personavlm.server.service import Service, ServiceDep
from personavlm.timeutil import to_storage

__all__ = ["router"]

router = APIRouter(prefix="/v1")

USER_ERRORS = (400, 403, 404)
Limit = Annotated[int, Query(description="Page size, 1..500.")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]
TimeQuery = Annotated[str | None, Query(description="'YYYY-MM-DD HH:MM' (local time).")]


# ------------------------------------------------------------------ users and keys


@router.get(
    "/me",
    tags=["keys"],
    summary="Who this key is",
    operation_id="whoAmI",
    response_model=None,
    responses={**ok(schemas.MeOut), **error_responses()},
)
def who_am_i(caller: AnyCaller) -> dict[str, Any]:
    return {"user_id": caller.user_id, "admin": caller.is_admin, "key_id": caller.key_id}


@router.get(
    "/users",
    tags=["users"],
    summary="List users",
    operation_id="listUsers",
    response_model=None,
    responses={**ok(schemas.UserList), **error_responses(403)},
)
def list_users(_admin: AdminCaller, service: ServiceDep) -> dict[str, Any]:
    store = service.store
    return {"data": [_user_dict(service, user) for user in store.users()]}


@router.post(
    "/users",
    tags=["users"],
    summary="Create a user (200 if it exists)",
    operation_id="createUser",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": schemas.UserOut, "description": "Created"},
        200: {"model": schemas.UserOut, "description": "The user existed already"},
        **error_responses(400, 403, 422),
    },
)
def create_user(body: schemas.NewUser, _admin: AdminCaller, service: ServiceDep) -> JSONResponse:
    user_id = check_addressable_user_id(body.id)
    created = service.store.create_user(user_id)
    return JSONResponse(_user_dict(service, user_id), status_code=201 if created else 200)


@router.delete(
    "/users/{user_id}",
    tags=["users"],
    summary="Delete a user and everything of theirs",
    operation_id="deleteUser",
    response_model=None,
    responses={**ok(schemas.DeletionOut, "What was removed"), **error_responses(*USER_ERRORS)},
)
def delete_user(user_id: PathUser, service: ServiceDep) -> dict[str, Any]:
    return service.store.delete_user(user_id).to_dict()


@router.post(
    "/users/{user_id}/keys",
    tags=["keys"],
    summary="Make a key for a user (the secret is shown once)",
    operation_id="createUserKey",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": schemas.NewKeyOut, "description": "Created"},
        **error_responses(400, 403),
    },
)
def create_key(
    _admin: AdminCaller,
    user_id: PathUser,
    service: ServiceDep,
    body: schemas.NewKey | None = None,
) -> dict[str, Any]:
    key, secret = service.store.create_api_key(user_id, label=body.label if body else "")
    record = key.to_dict()
    del record["revoked_at"]
    return {**record, "key": secret}


@router.get(
    "/users/{user_id}/keys",
    tags=["keys"],
    summary="List a user's keys (no secrets)",
    operation_id="listUserKeys",
    response_model=None,
    responses={**ok(schemas.KeyList), **error_responses(*USER_ERRORS)},
)
def list_keys(_admin: AdminCaller, user_id: PathUser, service: ServiceDep) -> dict[str, Any]:
    store = service.store
    if not store.has_user(user_id):
        raise NotFoundError(f"no user {user_id!r} in this store")
    return {"data": [key.to_dict() for key in store.api_keys(user_id)]}


@router.delete(
    "/keys/{key_id}",
    tags=["keys"],
    summary="Revoke a key",
    operation_id="revokeKey",
    response_model=None,
    responses={**ok(schemas.KeyOut, "The revoked key"), **error_responses(403, 404, 422)},
)
def revoke_key(key_id: int, _admin: AdminCaller, service: ServiceDep) -> dict[str, Any]:
    return service.store.revoke_api_key(stored_id(key_id, "live API key")).to_dict()


# ------------------------------------------------------------------ memories


@router.get(
    "/users/{user_id}/memories",
    tags=["memories"],
    summary="List memories, oldest event first",
    operation_id="listMemories",
    response_model=None,
    responses={**ok(schemas.MemoryPage), **error_responses(*USER_ERRORS)},
)
def list_memories(
    user_id: PathUser,
    service: ServiceDep,
    memory_type: Annotated[
        list[str] | None,
        Query(alias="type", description="core, semantic, episodic, procedural; repeatable."),
    ] = None,
    status: Annotated[
        str, Query(description="active, superseded, invalidated, deleted, or any.")
    ] = "active",
    start: TimeQuery = None,
    end: TimeQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Annotated[
        Literal["asc", "desc"],
        Query(
            description="asc: oldest event first (default); desc: newest first. "
            "Pass the same order with a cursor."
        ),
    ] = "asc",
) -> dict[str, Any]:
    return memory_page(  # the same page rule as the MCP tool's
        service.store,
        user_id,
        types=memory_type,
        status=status,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
        order=order,
    )


@router.post(
    "/users/{user_id}/memories",
    tags=["memories"],
    summary="Add a memory",
    operation_id="createMemory",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": schemas.MemoryOut, "description": "Created"},
        **error_responses(*USER_ERRORS, 409, 422),
    },
)
def create_memory(
    user_id: PathUser, body: schemas.NewMemory, service: ServiceDep
) -> dict[str, Any]:
    memory = service.store.add(
        user_id,
        body.type,
        body.content,
        key=body.key,
        keywords=body.keywords,
        time=body.time,
        actor="api",
    )
    return memory.to_dict()


@router.get(
    "/users/{user_id}/memories/{memory_id}",
    tags=["memories"],
    summary="One memory",
    operation_id="getMemory",
    response_model=None,
    responses={**ok(schemas.MemoryOut), **error_responses(*USER_ERRORS, 422)},
)
def get_memory(user_id: PathUser, memory_id: int, service: ServiceDep) -> dict[str, Any]:
    return service.store.get(user_id, _memory_id(memory_id, user_id)).to_dict()


@router.patch(
    "/users/{user_id}/memories/{memory_id}",
    tags=["memories"],
    summary="Change a memory (writes a new version)",
    operation_id="updateMemory",
    response_model=None,
    responses={
        **ok(schemas.MemoryOut, "The new version"),
        **error_responses(*USER_ERRORS, 409, 422),
    },
)
def update_memory(
    user_id: PathUser, memory_id: int, body: schemas.MemoryPatch, service: ServiceDep
) -> dict[str, Any]:
    memory = service.store.update(
        user_id,
        _memory_id(memory_id, user_id),
        content=body.content,
        keywords=body.keywords,
        time=body.time,
        actor="api",
    )
    return memory.to_dict()


@router.delete(
    "/users/{user_id}/memories/{memory_id}",
    tags=["memories"],
    summary="Delete a memory (undo can bring it back)",
    operation_id="deleteMemory",
    response_model=None,
    responses={
        **ok(schemas.MemoryOut, "The deleted memory"),
        **error_responses(*USER_ERRORS, 409, 422),
    },
)
def delete_memory(user_id: PathUser, memory_id: int, service: ServiceDep) -> dict[str, Any]:
    return service.store.delete(user_id, _memory_id(memory_id, user_id), actor="api").to_dict()


@router.post(
    "/users/{user_id}/memories/{memory_id}/invalidate",
    tags=["memories"],
    summary="Mark a memory no longer true",
    operation_id="invalidateMemory",
    response_model=None,
    responses={**ok(schemas.MemoryOut), **error_responses(*USER_ERRORS, 409, 422)},
)
def invalidate_memory(
    user_id: PathUser,
    memory_id: int,
    service: ServiceDep,
    body: schemas.InvalidateBody | None = None,
) -> dict[str, Any]:
    time = body.time if body else None
    memory_id = _memory_id(memory_id, user_id)
    return service.store.invalidate(user_id, memory_id, time=time, actor="api").to_dict()


@router.get(
    "/users/{user_id}/memories/{memory_id}/history",
    tags=["memories"],
    summary="Every change to a memory, oldest first",
    operation_id="memoryHistory",
    response_model=None,
    responses={**ok(schemas.EventList), **error_responses(*USER_ERRORS, 422)},
)
def memory_history(user_id: PathUser, memory_id: int, service: ServiceDep) -> dict[str, Any]:
    events = service.store.history(user_id, _memory_id(memory_id, user_id))
    return {"data": [e.to_dict() for e in events]}


@router.get(
    "/users/{user_id}/memories/{memory_id}/timeline",
    tags=["memories"],
    summary="The versions of a memory with their validity",
    operation_id="memoryTimeline",
    response_model=None,
    responses={**ok(schemas.MemoryList), **error_responses(*USER_ERRORS, 422)},
)
def memory_timeline(user_id: PathUser, memory_id: int, service: ServiceDep) -> dict[str, Any]:
    chain = service.store.timeline(user_id, _memory_id(memory_id, user_id))
    return {"data": [m.to_dict() for m in chain]}


@router.post(
    "/users/{user_id}/events/{event_id}/undo",
    tags=["memories"],
    summary="Undo one change (the undo is itself an event)",
    operation_id="undoEvent",
    response_model=None,
    responses={**ok(schemas.EventOut, "The undo event"), **error_responses(*USER_ERRORS, 409, 422)},
)
def undo_event(user_id: PathUser, event_id: int, service: ServiceDep) -> dict[str, Any]:
    event_id = stored_id(event_id, "memory event", user_id)
    return service.store.undo(user_id, event_id, actor="api").to_dict()


# ------------------------------------------------------------------ search, personality, log


@router.post(
    "/users/{user_id}/search",
    tags=["search"],
    summary="Hybrid search over a user's memories",
    operation_id="searchMemories",
    response_model=None,
    responses={**ok(schemas.HitList), **error_responses(*USER_ERRORS, 422)},
)
def search(user_id: PathUser, body: schemas.SearchBody, service: ServiceDep) -> dict[str, Any]:
    hits = service.store.search(
        user_id, body.query, types=body.types, k=body.k, start=body.start, end=body.end
    )
    return {"data": [_hit_dict(user_id, hit) for hit in hits]}


@router.get(
    "/users/{user_id}/personality",
    tags=["personality"],
    summary="The Big Five state now and every reading that shaped it",
    operation_id="getPersonality",
    response_model=None,
    responses={**ok(schemas.PersonalityOut), **error_responses(*USER_ERRORS)},
)
def personality(user_id: PathUser, service: ServiceDep) -> dict[str, Any]:
    store = service.store
    state = store.personality(user_id)
    readings = store.personality_readings(user_id)
    return {
        "current": state.to_dict(),
        "trajectory": [r.to_dict() for r in readings],
    }


@router.get(
    "/users/{user_id}/turns",
    tags=["turns"],
    summary="The conversation log, oldest first",
    operation_id="listTurns",
    response_model=None,
    responses={**ok(schemas.TurnPage), **error_responses(*USER_ERRORS, 422)},
)
def list_turns(
    user_id: PathUser,
    service: ServiceDep,
    start: TimeQuery = None,
    end: TimeQuery = None,
    session: Annotated[int | None, Query(description="Only this session's turns.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    check_limit(limit)
    rows = service.store.turns(
        user_id,
        start=start,
        end=end,
        session_id=check_query_id(session, "session"),
        limit=limit + 1,
        after=decode_cursor(cursor),
    )
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "data": [t.to_dict() for t in page],
        "next_cursor": encode_cursor(page[-1].time, page[-1].id) if more else None,
    }


@router.get(
    "/users/{user_id}/images/{image_id}",
    tags=["images"],
    summary="A picture of the user's turns or memories",
    operation_id="getImage",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}, "description": "The picture's bytes"},
        **error_responses(*USER_ERRORS),
    },
)
def get_image(user_id: PathUser, image_id: str, service: ServiceDep) -> Response:
    ref = service.store.user_image(user_id, image_id)
    try:
        data = service.store.blobs.read(ref.id)
    except NotFoundError as exc:  # registered but without bytes: the server's fault, not 404
        raise StoreError(f"image {ref.id} is registered but {exc}") from exc
    return Response(data, media_type=ref.mime)


@router.get(
    "/users/{user_id}/export",
    tags=["export"],
    summary="Everything of the user as one JSON document",
    operation_id="exportUser",
    response_model=None,
    responses={
        200: {"description": "format personavlm.export v1; pictures base64 inside"},
        **error_responses(*USER_ERRORS),
    },
)
def export_user(user_id: PathUser, service: ServiceDep) -> dict[str, Any]:
    return service.store.export_user(user_id)


# ------------------------------------------------------------------ helpers


def _memory_id(memory_id: int, user_id: str) -> int:
    # Outside int64 no memory can exist: 404 here rather than OverflowError in the driver.
    return stored_id(memory_id, "memory", user_id)


def _user_dict(service: Service, user_id: str) -> dict[str, Any]:
    store = service.store
    return {
        "id": user_id,
        "created_at": to_storage(store.user_created_at(user_id)),
        "memories": store.count(user_id),
    }


def image_url(user_id: str, image_id: str) -> str:
    return f"/v1/users/{quote(user_id, safe='')}/images/{image_id}"


def _image_dict(user_id: str, ref: ImageRef) -> dict[str, Any]:
    # The blob's file path stays on the server; clients fetch the bytes by URL.
    return {
        "id": ref.id,
        "mime": ref.mime,
        "size": ref.size,
        "caption": ref.caption,
        "url": image_url(user_id, ref.id),
    }


def _hit_dict(user_id: str, hit: Hit) -> dict[str, Any]:
    return {
        "memory": hit.memory.to_dict(),
        "score": hit.score,
        "ranks": dict(hit.ranks),
        "turns": [t.to_dict() for t in hit.turns],
        "images": [_image_dict(user_id, ref) for ref in hit.images],
    }
