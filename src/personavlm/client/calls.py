"""Every REST route as a `Call`: the request to send and how to read its answer.

Client and AsyncClient share these, so the two differ only in how they send. `retry_safe`
says whether the call may be sent again after a failure that leaves open whether the server
applied it (a dropped connection, a 502/503/504): true for reads and for deletes and revokes
(applying them twice ends in the same state); never for chat or an add, which would happen
twice. Any call is retried after a 429: the service refused it before doing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from personavlm.client import records
from personavlm.memory.keys import ApiKey
from personavlm.memory.queue import JobRecord
from personavlm.memory.records import Hit, Memory, MemoryEvent, Turn

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    retry_safe: bool
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_cursor` (None on the last page) asks for the next."""

    data: list[T]
    next_cursor: str | None


def _user(user_id: str) -> str:
    return "/v1/users/" + quote(user_id, safe="")


def _get(path: str, read: Callable[[Any], T], **params: Any) -> Call[T]:
    kept = {k: v for k, v in params.items() if v is not None}
    return Call("GET", path, read, retry_safe=True, params=kept)


def _as_dict(data: Any) -> dict[str, Any]:
    assert isinstance(data, dict)
    return data


def _listing(read: Callable[[dict[str, Any]], T]) -> Callable[[Any], list[T]]:
    return lambda data: [read(row) for row in data["data"]]


def _page(read: Callable[[dict[str, Any]], T]) -> Callable[[Any], Page[T]]:
    return lambda data: Page([read(row) for row in data["data"]], data["next_cursor"])


def me() -> Call[dict[str, Any]]:
    return _get("/v1/me", _as_dict)


def users() -> Call[list[dict[str, Any]]]:
    return _get("/v1/users", _listing(_as_dict))


def create_user(user_id: str) -> Call[dict[str, Any]]:
    # Creating a user that exists answers the user: sending it again changes nothing.
    return Call("POST", "/v1/users", _as_dict, retry_safe=True, body={"id": user_id})


def delete_user(user_id: str) -> Call[dict[str, Any]]:
    return Call("DELETE", _user(user_id), _as_dict, retry_safe=True)


def create_key(user_id: str, label: str) -> Call[tuple[ApiKey, str]]:
    def read(data: Any) -> tuple[ApiKey, str]:
        return records.api_key(data), str(data["key"])

    return Call("POST", _user(user_id) + "/keys", read, retry_safe=False, body={"label": label})


def keys(user_id: str) -> Call[list[ApiKey]]:
    return _get(_user(user_id) + "/keys", _listing(records.api_key))


def revoke_key(key_id: int) -> Call[ApiKey]:
    return Call("DELETE", f"/v1/keys/{key_id}", records.api_key, retry_safe=True)


def memories(
    user_id: str,
    *,
    types: list[str] | None,
    status: str,
    start: str | None,
    end: str | None,
    limit: int,
    cursor: str | None,
    order: str,
) -> Call[Page[Memory]]:
    return _get(
        _user(user_id) + "/memories",
        _page(records.memory),
        type=types,
        status=status,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
        order=order,
    )


def add_memory(
    user_id: str,
    memory_type: str,
    content: str,
    *,
    key: str | None,
    keywords: list[str],
    time: str | None,
) -> Call[Memory]:
    body = {"type": memory_type, "content": content, "key": key, "keywords": keywords}
    if time is not None:
        body["time"] = time
    return Call("POST", _user(user_id) + "/memories", records.memory, False, body=body)


def _memory(user_id: str, memory_id: int) -> str:
    return f"{_user(user_id)}/memories/{memory_id}"


def memory(user_id: str, memory_id: int) -> Call[Memory]:
    return _get(_memory(user_id, memory_id), records.memory)


def update_memory(user_id: str, memory_id: int, body: dict[str, Any]) -> Call[Memory]:
    # An update makes a new version each time it is applied: not retried.
    return Call("PATCH", _memory(user_id, memory_id), records.memory, False, body=body)


def delete_memory(user_id: str, memory_id: int) -> Call[Memory]:
    return Call("DELETE", _memory(user_id, memory_id), records.memory, retry_safe=False)


def invalidate_memory(user_id: str, memory_id: int, time: str | None) -> Call[Memory]:
    body = {} if time is None else {"time": time}
    path = _memory(user_id, memory_id) + "/invalidate"
    return Call("POST", path, records.memory, retry_safe=False, body=body)


def history(user_id: str, memory_id: int) -> Call[list[MemoryEvent]]:
    return _get(_memory(user_id, memory_id) + "/history", _listing(records.event))


def timeline(user_id: str, memory_id: int) -> Call[list[Memory]]:
    return _get(_memory(user_id, memory_id) + "/timeline", _listing(records.memory))


def undo(user_id: str, event_id: int) -> Call[MemoryEvent]:
    path = f"{_user(user_id)}/events/{event_id}/undo"
    return Call("POST", path, records.event, retry_safe=False)


def search(user_id: str, body: dict[str, Any]) -> Call[list[Hit]]:
    # A search writes nothing: safe to send again.
    return Call("POST", _user(user_id) + "/search", _listing(records.hit), True, body=body)


def personality(user_id: str) -> Call[dict[str, Any]]:
    return _get(_user(user_id) + "/personality", _as_dict)


def turns(
    user_id: str,
    *,
    start: str | None,
    end: str | None,
    session: int | None,
    limit: int,
    cursor: str | None,
) -> Call[Page[Turn]]:
    return _get(
        _user(user_id) + "/turns",
        _page(records.turn),
        start=start,
        end=end,
        session=session,
        limit=limit,
        cursor=cursor,
    )


def image(user_id: str, image_id: str) -> Call[bytes]:
    # Read by the sender from the raw body (the one route that answers bytes, not JSON).
    return _get(f"{_user(user_id)}/images/{quote(image_id, safe='')}", bytes)


def export(user_id: str) -> Call[dict[str, Any]]:
    return _get(_user(user_id) + "/export", _as_dict)


def jobs(user_id: str, status: str | None, limit: int) -> Call[list[JobRecord]]:
    return _get(_user(user_id) + "/jobs", _listing(records.job), status=status, limit=limit)


def retry_job(user_id: str, job_id: int) -> Call[JobRecord]:
    path = f"{_user(user_id)}/jobs/{job_id}/retry"
    return Call("POST", path, records.job, retry_safe=False)


def drop_job(user_id: str, job_id: int) -> Call[JobRecord]:
    path = f"{_user(user_id)}/jobs/{job_id}/drop"
    return Call("POST", path, records.job, retry_safe=False)


def models() -> Call[list[dict[str, Any]]]:
    return _get("/v1/models", _listing(_as_dict))


def chat(body: dict[str, Any]) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/chat/completions", _as_dict, retry_safe=False, body=body)


def metrics() -> Call[str]:
    return _get("/metrics", str)


def health() -> Call[dict[str, Any]]:
    return _get("/healthz", _as_dict)
