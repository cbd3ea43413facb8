"""Client: the service's REST API for blocking callers (httpx.Client).

Method for method the twin of aio.py (tests/test_client.py checks both have the same
methods): every REST route of docs/service.md, typed results (the library's records), the
project's exceptions by the server's error code, retries only where safe (calls.py says which).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx

from personavlm.client import calls, transport
from personavlm.client.calls import Call, Page, T
from personavlm.memory.keys import ApiKey
from personavlm.memory.queue import JobRecord
from personavlm.memory.records import Hit, Memory, MemoryEvent, Turn

__all__ = ["Client"]

DEFAULT_TIMEOUT_S = 120.0  # a chat turn runs a model; reads are far quicker


def _present(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left out (None), so server defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}


class Client:
    """The personavlm service over HTTP. `Client(base_url, api_key)`; close it, or use `with`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        transport_: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport_,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        response = self._send(call)
        if response.status_code >= 400:
            raise transport.error_for(response)
        return call.read(transport.read_body(response, call.read))

    def _send(self, call: Call[T]) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.body
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries or not transport.may_resend_after(
                    exc, retry_safe=call.retry_safe
                ):
                    raise transport.unreachable(self.base_url, exc) from exc
                delay = transport.backoff(attempt)
            else:
                wait = transport.retry_delay(response, retry_safe=call.retry_safe, attempt=attempt)
                if wait is None or attempt >= self.retries:
                    return response
                delay = wait
            attempt += 1
            time.sleep(delay)

    def iter_memories(self, user_id: str, **filters: Any) -> Iterator[Memory]:
        """Every memory matching the filters (as for memories()), page after page."""
        cursor = None
        while True:
            page = self.memories(user_id, cursor=cursor, **filters)
            yield from page.data
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def iter_turns(self, user_id: str, **filters: Any) -> Iterator[Turn]:
        """Every turn matching the filters (as for turns()), page after page."""
        cursor = None
        while True:
            page = self.turns(user_id, cursor=cursor, **filters)
            yield from page.data
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def me(self) -> dict[str, Any]:
        """Who the key belongs to."""
        return self._run(calls.me())

    def users(self) -> list[dict[str, Any]]:
        """Every user (admin key)."""
        return self._run(calls.users())

    def create_user(self, user_id: str) -> dict[str, Any]:
        """Register a user (admin key)."""
        return self._run(calls.create_user(user_id))

    def delete_user(self, user_id: str) -> dict[str, Any]:
        """Forget a user and everything of theirs."""
        return self._run(calls.delete_user(user_id))

    def create_key(self, user_id: str, *, label: str = "") -> tuple[ApiKey, str]:
        """A new key for the user and its secret, shown only now (admin key)."""
        return self._run(calls.create_key(user_id, label))

    def keys(self, user_id: str) -> list[ApiKey]:
        """The user's keys, without secrets (admin key)."""
        return self._run(calls.keys(user_id))

    def revoke_key(self, key_id: int) -> ApiKey:
        """Revoke a key (admin key)."""
        return self._run(calls.revoke_key(key_id))

    def memories(
        self,
        user_id: str,
        *,
        types: list[str] | None = None,
        status: str = "active",
        start: str | None = None,
        end: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        order: str = "asc",
    ) -> Page[Memory]:
        """One page of the user's memories; iter_memories walks them all."""
        return self._run(
            calls.memories(
                user_id,
                types=types,
                status=status,
                start=start,
                end=end,
                limit=limit,
                cursor=cursor,
                order=order,
            )
        )

    def add_memory(
        self,
        user_id: str,
        memory_type: str,
        content: str,
        *,
        key: str | None = None,
        keywords: list[str] | None = None,
        time: str | None = None,
    ) -> Memory:
        """Add a memory (never retried: it would be added twice)."""
        return self._run(
            calls.add_memory(
                user_id, memory_type, content, key=key, keywords=keywords or [], time=time
            )
        )

    def memory(self, user_id: str, memory_id: int) -> Memory:
        """One memory."""
        return self._run(calls.memory(user_id, memory_id))

    def update_memory(
        self,
        user_id: str,
        memory_id: int,
        *,
        content: str | None = None,
        keywords: list[str] | None = None,
        time: str | None = None,
    ) -> Memory:
        """A new version of the memory with the given fields changed."""
        return self._run(
            calls.update_memory(
                user_id, memory_id, _present(content=content, keywords=keywords, time=time)
            )
        )

    def delete_memory(self, user_id: str, memory_id: int) -> Memory:
        """Delete a memory (undoable)."""
        return self._run(calls.delete_memory(user_id, memory_id))

    def invalidate_memory(self, user_id: str, memory_id: int, *, time: str | None = None) -> Memory:
        """Mark a memory no longer true from `time` (default now)."""
        return self._run(calls.invalidate_memory(user_id, memory_id, time))

    def history(self, user_id: str, memory_id: int) -> list[MemoryEvent]:
        """The events that changed the memory."""
        return self._run(calls.history(user_id, memory_id))

    def timeline(self, user_id: str, memory_id: int) -> list[Memory]:
        """The memory's versions, oldest first."""
        return self._run(calls.timeline(user_id, memory_id))

    def undo(self, user_id: str, event_id: int) -> MemoryEvent:
        """Undo one event."""
        return self._run(calls.undo(user_id, event_id))

    def search(
        self,
        user_id: str,
        query: str,
        *,
        types: list[str] | None = None,
        k: int | dict[str, int] | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> list[Hit]:
        """Retrieve memories for a query."""
        return self._run(
            calls.search(user_id, _present(query=query, types=types, k=k, start=start, end=end))
        )

    def personality(self, user_id: str) -> dict[str, Any]:
        """The user's personality state."""
        return self._run(calls.personality(user_id))

    def turns(
        self,
        user_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        session: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Turn]:
        """One page of the conversation log; iter_turns walks it all."""
        return self._run(
            calls.turns(user_id, start=start, end=end, session=session, limit=limit, cursor=cursor)
        )

    def image(self, user_id: str, image_id: str) -> bytes:
        """A stored picture's bytes."""
        return self._run(calls.image(user_id, image_id))

    def export(self, user_id: str) -> dict[str, Any]:
        """Everything of the user as one document."""
        return self._run(calls.export(user_id))

    def jobs(self, user_id: str, *, status: str | None = None, limit: int = 100) -> list[JobRecord]:
        """The user's update jobs, newest first."""
        return self._run(calls.jobs(user_id, status, limit))

    def retry_job(self, user_id: str, job_id: int) -> JobRecord:
        """Queue a dead job again."""
        return self._run(calls.retry_job(user_id, job_id))

    def drop_job(self, user_id: str, job_id: int) -> JobRecord:
        """Give up on a dead job."""
        return self._run(calls.drop_job(user_id, job_id))

    def models(self) -> list[dict[str, Any]]:
        """The chat model the service answers with."""
        return self._run(calls.models())

    def chat_completion(
        self, messages: list[dict[str, Any]], *, user: str | None = None, model: str | None = None
    ) -> dict[str, Any]:
        """One chat turn (OpenAI shape, not streamed; never retried but after a 429)."""
        return self._run(calls.chat(_present(messages=messages, user=user, model=model)))

    def metrics(self) -> str:
        """The Prometheus text (admin key)."""
        return self._run(calls.metrics())

    def health(self) -> dict[str, Any]:
        """/healthz: ok or degraded, with the problems."""
        return self._run(calls.health())
