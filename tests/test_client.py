"""personavlm.client against a live service (uvicorn in a thread, hashing encoder, no chat
model): every route through Client and AsyncClient, typed records back, errors as the
library's exceptions; and the retry rule on a scripted transport."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from personavlm.client import AsyncClient, Client
from personavlm.embed import HashingEmbedder
from personavlm.errors import (
    ConfigError,
    ModelConnectionError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from personavlm.memory.ingest import ingest_file
from personavlm.memory.keys import ApiKey
from personavlm.memory.queue import JobRecord
from personavlm.memory.records import Hit, Memory, MemoryEvent, MemoryStatus, Turn
from personavlm.memory.store import MemoryStore
from server_fixtures import ADMIN_KEY, make_config, served

SAMPLE = Path(str(resources.files("personavlm.data").joinpath("sample_conversation.jsonl")))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("client")
    config = make_config(tmp)
    with MemoryStore.open(config.location, embedder=HashingEmbedder(), create=True) as store:
        ingest_file(store, "ann", SAMPLE)  # turns and a picture for the log routes
    with served(config) as base:
        yield base


def test_every_route_sync(url: str) -> None:
    with Client(url, ADMIN_KEY) as api:
        assert api.health()["status"] in ("ok", "degraded")
        assert api.me()["admin"] is True
        assert api.create_user("bob") == api.create_user("bob")  # idempotent
        assert "bob" in {u["id"] for u in api.users()}
        key, secret = api.create_key("bob", label="phone")
        assert isinstance(key, ApiKey) and secret.startswith("pvk_")
        assert [k.id for k in api.keys("bob")] == [key.id]
        with Client(url, secret) as bob:
            assert bob.me()["user_id"] == "bob"
            with pytest.raises(ConfigError):
                bob.users()  # admin only: 403
        assert api.revoke_key(key.id).revoked_at is not None
        with Client(url, secret) as gone, pytest.raises(ConfigError):
            gone.me()  # 401

        made = api.add_memory("bob", "core", "Coca-Cola", key="favourite drink")
        assert isinstance(made, Memory) and made.key == "favourite drink"
        assert api.memory("bob", made.id) == made
        changed = api.update_memory("bob", made.id, content="Pepsi")
        assert changed.content == "Pepsi" and changed.version == 2
        assert [m.id for m in api.timeline("bob", changed.id)] == [made.id, changed.id]
        events = api.history("bob", changed.id)
        assert events and all(isinstance(e, MemoryEvent) for e in events)
        undone = api.undo("bob", events[-1].id)
        assert isinstance(undone, MemoryEvent)
        other = api.add_memory("bob", "semantic", "Bob keeps bees in the garden")
        assert api.invalidate_memory("bob", other.id).status == MemoryStatus.INVALIDATED
        assert api.delete_memory("bob", made.id).status == MemoryStatus.DELETED
        with pytest.raises(NotFoundError):
            api.memory("bob", 10**9)
        with pytest.raises(ValidationError):
            api.add_memory("bob", "no-such-type", "x")

        first = api.memories("ann", limit=2)
        assert len(first.data) == 2 and first.next_cursor is not None
        every = list(api.iter_memories("ann", limit=3))
        assert len(every) > 2 and len({m.id for m in every}) == len(every)
        turns = list(api.iter_turns("ann", limit=5))
        assert len(turns) > 5 and all(isinstance(t, Turn) for t in turns)
        pictured = next(t for t in turns if t.image_ids)
        assert api.image("ann", pictured.image_ids[0])[:4] == b"\x89PNG"
        hits = api.search("ann", "dog hike", k=2)
        assert hits and all(isinstance(h, Hit) for h in hits)
        assert api.personality("ann")
        assert api.export("ann")
        assert all(isinstance(j, JobRecord) for j in api.jobs("ann"))
        with pytest.raises(NotFoundError):
            api.retry_job("ann", 10**9)
        with pytest.raises(NotFoundError):
            api.drop_job("ann", 10**9)
        with pytest.raises(ConfigError, match="model_not_configured"):
            api.models()  # the service runs without a chat model
        with pytest.raises(ConfigError, match="model_not_configured"):
            api.chat_completion([{"role": "user", "content": "hi"}], user="bob")
        assert "personavlm" in api.metrics()
        api.delete_user("bob")
        with pytest.raises(NotFoundError):
            api.memories("bob")


def test_every_route_async(url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(url, ADMIN_KEY) as api:
            assert (await api.health())["status"] in ("ok", "degraded")
            assert (await api.me())["admin"] is True
            await api.create_user("cy")
            assert "cy" in {u["id"] for u in await api.users()}
            key, _secret = await api.create_key("cy")
            assert [k.id for k in await api.keys("cy")] == [key.id]
            assert (await api.revoke_key(key.id)).revoked_at is not None
            made = await api.add_memory("cy", "core", "tea", key="drink")
            assert await api.memory("cy", made.id) == made
            changed = await api.update_memory("cy", made.id, content="coffee")
            assert len(await api.timeline("cy", changed.id)) == 2
            events = await api.history("cy", changed.id)
            await api.undo("cy", events[-1].id)
            other = await api.add_memory("cy", "semantic", "Cy rides a bike")
            await api.invalidate_memory("cy", other.id)
            await api.delete_memory("cy", made.id)
            assert (await api.memories("ann", limit=2)).next_cursor is not None
            every = [m async for m in api.iter_memories("ann", limit=3)]
            turns = [t async for t in api.iter_turns("ann", limit=5)]
            assert len(every) > 2 and len(turns) > 5
            assert (await api.turns("ann", limit=1)).data[0] == turns[0]
            pictured = next(t for t in turns if t.image_ids)
            assert (await api.image("ann", pictured.image_ids[0]))[:4] == b"\x89PNG"
            assert await api.search("ann", "dog hike")
            assert await api.personality("ann")
            assert await api.export("ann")
            await api.jobs("ann")
            with pytest.raises(NotFoundError):
                await api.retry_job("ann", 10**9)
            with pytest.raises(NotFoundError):
                await api.drop_job("ann", 10**9)
            with pytest.raises(ConfigError):
                await api.models()
            with pytest.raises(ConfigError):
                await api.chat_completion([{"role": "user", "content": "hi"}], user="ann")
            assert "personavlm" in await api.metrics()
            await api.delete_user("cy")

    asyncio.run(scenario())


def test_the_two_clients_have_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n, _ in inspect.getmembers(cls, inspect.isfunction) if n[0] != "_"}

    assert public(Client) == public(AsyncClient)


def scripted(answers: list[int], seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        status = answers.pop(0)
        if status >= 400:
            body = {"error": {"code": "store_error", "message": "busy", "type": "store_error"}}
            return httpx.Response(status, json=body, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"id": "x", "admin": True})

    return httpx.MockTransport(handler)


def test_reads_are_retried_after_a_503_but_an_add_is_not() -> None:
    seen: list[str] = []
    with Client("http://t", "k", transport_=scripted([503, 200], seen)) as api:
        assert api.me()["admin"] is True
    assert seen == ["GET", "GET"]
    seen.clear()
    with (
        Client("http://t", "k", transport_=scripted([503, 200], seen)) as api,
        pytest.raises(StoreError, match="busy"),
    ):
        api.add_memory("ann", "semantic", "x")
    assert seen == ["POST"]


def test_a_429_is_retried_for_any_call_when_told_when() -> None:
    seen: list[str] = []
    with Client("http://t", "k", transport_=scripted([429, 200], seen)) as api:
        assert api.chat_completion([{"role": "user", "content": "hi"}])["id"] == "x"
    assert seen == ["POST", "POST"]


def test_an_unreachable_service_raises_after_the_retries() -> None:
    with (
        Client("http://127.0.0.1:9", "k", retries=1, timeout=2) as api,
        pytest.raises(ModelConnectionError, match="did not answer"),
    ):
        api.me()
