"""The MCP server through the SDK's own client: over streamable HTTP at /mcp of a live service
on loopback, and over stdio against a `personavlm mcp` subprocess.

Each transport: list the tools, add, search, change, read the history, undo. Then isolation,
tool by tool (the REST matrix of test_server_auth.py): another user's key naming Ann gets
REST's 403 `forbidden` (the same answer for a user who does not exist), Ann's ids under one's
own user are REST's 404, and no answer carries Ann's text. Errors carry REST's code and
message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from personavlm.cli.mcp_cmd import resolve_user
from personavlm.errors import ConfigError
from server_fixtures import ADMIN_KEY, bearer, error_of, make_config, make_user_key, served

ANN_SECRET = "Ann keeps her spare key under the blue flowerpot"
TOOLS = {
    "add_memory",
    "search_memories",
    "get_memory",
    "list_memories",
    "update_memory",
    "delete_memory",
    "memory_history",
    "undo_change",
    "memory_timeline",
    "get_personality",
    "ingest_conversation",
}
TURN = {"id": "t1", "time": "2024-03-02 10:00", "role": "user", "text": "hello"}


def sample_arguments(memory_id: int, event_id: int) -> dict[str, dict[str, Any]]:
    """A valid call of every tool, with ids of Ann's."""
    return {
        "add_memory": {"type": "semantic", "content": "something new"},
        "search_memories": {"query": "flowerpot"},
        "get_memory": {"memory_id": memory_id},
        "list_memories": {},
        "update_memory": {"memory_id": memory_id, "content": "changed"},
        "delete_memory": {"memory_id": memory_id},
        "memory_history": {"memory_id": memory_id},
        "undo_change": {"event_id": event_id},
        "memory_timeline": {"memory_id": memory_id},
        "get_personality": {},
        "ingest_conversation": {"turns": [TURN]},
    }


@dataclass
class World:
    url: str
    db: Path
    ann_key: str
    bob_key: str
    memory_id: int
    event_id: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("mcp")
    with served(make_config(tmp)) as url, httpx.Client(base_url=url) as rest:
        _, ann_key = make_user_key(rest, "ann")
        _, bob_key = make_user_key(rest, "bob")
        made = rest.post(
            "/v1/users/ann/memories",
            headers=bearer(ann_key),
            json={"type": "semantic", "content": ANN_SECRET},
        )
        assert made.status_code == 201, made.text
        memory_id = made.json()["id"]
        history = rest.get(f"/v1/users/ann/memories/{memory_id}/history", headers=bearer(ann_key))
        yield World(
            url=url,
            db=tmp / "memory.db",
            ann_key=ann_key,
            bob_key=bob_key,
            memory_id=memory_id,
            event_id=history.json()["data"][0]["id"],
        )


@asynccontextmanager
async def http_session(url: str, key: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=bearer(key)) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), cache=None) as client,
    ):
        yield client


def stdio_parameters(db: Path, *args: str) -> StdioServerParameters:
    # The console script of this venv, so the subprocess runs this checkout.
    script = str(Path(sys.executable).with_name("personavlm"))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(db.parent),
        "PERSONAVLM_HOME": str(db.parent / "home"),
    }
    return StdioServerParameters(
        command=script, args=["mcp", "--db", str(db), "--embedder", "hashing", *args], env=env
    )


def run(body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body)


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error(result: CallToolResult) -> dict[str, Any]:
    """The REST error object a failed tool call carries (structured, and as its text)."""
    assert result.is_error, result.structured_content
    body = result.structured_content
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == body["error"]["type"]
    text = result.content[0]
    assert getattr(text, "text", "").startswith('{"error"')
    return dict(body["error"])


async def add_search_change_undo(client: Client, user: dict[str, str]) -> None:
    """The round trip every transport must make: list, add, search, update, history, undo."""
    listed = await client.list_tools()
    assert {tool.name for tool in listed.tools} == TOOLS
    for tool in listed.tools:  # typed schemas a model can read
        assert tool.description and len(tool.description) > 30, tool.name
        assert tool.input_schema["type"] == "object"
    added = data(
        await client.call_tool(
            "add_memory",
            {"type": "semantic", "content": "Ann's dog is called Biscuit", **user},
        )
    )
    found = data(await client.call_tool("search_memories", {"query": "dog name", **user}))
    assert found["data"][0]["memory"]["id"] == added["id"]
    changed = data(
        await client.call_tool(
            "update_memory",
            {"memory_id": added["id"], "content": "Ann's dog is called Pretzel", **user},
        )
    )
    assert changed["version"] == 2 and changed["supersedes"] == added["id"]
    history = data(await client.call_tool("memory_history", {"memory_id": changed["id"], **user}))
    event_of_update = history["data"][-1]["id"]
    data(await client.call_tool("undo_change", {"event_id": event_of_update, **user}))
    again = data(await client.call_tool("get_memory", {"memory_id": added["id"], **user}))
    assert again["status"] == "active" and again["content"] == "Ann's dog is called Biscuit"
    timeline = data(await client.call_tool("memory_timeline", {"memory_id": added["id"], **user}))
    assert [m["id"] for m in timeline["data"]] == [added["id"], changed["id"]]


# ------------------------------------------------------------------ HTTP


def test_a_user_key_round_trips_over_http(world: World) -> None:
    async def body() -> None:
        async with http_session(world.url, world.ann_key) as client:
            await add_search_change_undo(client, {})

    run(body)


def test_the_admin_key_names_the_user_and_must(world: World) -> None:
    async def body() -> None:
        async with http_session(world.url, ADMIN_KEY) as client:
            unnamed = error(await client.call_tool("get_personality", {}))
            assert unnamed["code"] == "validation_error" and "admin key" in unnamed["message"]
            named = data(
                await client.call_tool(
                    "get_memory", {"memory_id": world.memory_id, "user_id": "ann"}
                )
            )
            assert named["content"] == ANN_SECRET

    run(body)


def test_another_users_key_learns_nothing_through_any_tool(world: World) -> None:
    """Bob's key: naming Ann is REST's 403 for every tool, the same for a user who does not
    exist; Ann's ids under Bob's own user are REST's 404; nothing of Ann's comes back."""
    samples = sample_arguments(world.memory_id, world.event_id)
    rest_403 = _rest_error("GET", "/v1/users/ann/memories", world, world.bob_key)

    async def body() -> None:
        async with http_session(world.url, world.bob_key) as client:
            for name, arguments in samples.items():
                on_ann = await client.call_tool(name, {**arguments, "user_id": "ann"})
                on_ghost = await client.call_tool(name, {**arguments, "user_id": "nobody"})
                assert error(on_ann) == rest_403, name
                assert on_ghost.structured_content == on_ann.structured_content, name
                own = await client.call_tool(name, arguments)
                assert ANN_SECRET not in str(own.structured_content), name
                if "memory_id" in arguments or "event_id" in arguments:
                    assert error(own)["code"] == "not_found", name
            with pytest.raises(MCPError) as refused:
                await client.read_resource("personavlm://users/ann/profile")
            assert refused.value.error.data == {"error": rest_403}

    run(body)
    # Ann's memory is as it was: none of Bob's calls reached it.
    with httpx.Client(base_url=world.url) as rest:
        kept = rest.get(f"/v1/users/ann/memories/{world.memory_id}", headers=bearer(world.ann_key))
    assert kept.json()["content"] == ANN_SECRET and kept.json()["status"] == "active"


def test_errors_carry_the_rest_code_and_message(world: World) -> None:
    missing = 987654
    rest_404 = _rest_error("GET", f"/v1/users/ann/memories/{missing}", world, world.ann_key)

    async def body() -> None:
        async with http_session(world.url, world.ann_key) as client:
            assert error(await client.call_tool("get_memory", {"memory_id": missing})) == rest_404
            bad_time = error(
                await client.call_tool(
                    "list_memories", {"start": "2024-05-01 10:00", "end": "2024-01-01 10:00"}
                )
            )
            assert bad_time["code"] == "validation_error"
            assert "start is after end" in bad_time["message"]

    run(body)


def test_mcp_needs_a_valid_key_like_v1(world: World) -> None:
    with httpx.Client(base_url=world.url) as rest:
        for headers in ({}, bearer("pvk_not-a-key")):
            answer = rest.post(
                "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers
            )
            assert answer.status_code == 401
            assert error_of(answer)["code"] == "unauthorized"


def test_ingest_and_the_profile_resource(world: World) -> None:
    turns = [
        {"id": "c1", "time": "2024-04-01 09:00", "role": "user", "text": "I moved to Lyon"},
        {"id": "c2", "time": "2024-04-01 09:01", "role": "assistant", "text": "Welcome!"},
    ]

    async def body() -> None:
        async with http_session(world.url, world.ann_key) as client:
            first = data(await client.call_tool("ingest_conversation", {"turns": turns}))
            again = data(await client.call_tool("ingest_conversation", {"turns": turns}))
            assert (first["added"], again["added"], again["skipped"]) == (2, 0, 2)
            found = data(
                await client.call_tool("search_memories", {"query": "Lyon", "types": ["episodic"]})
            )
            assert "Lyon" in found["data"][0]["memory"]["content"]
            data(
                await client.call_tool(
                    "add_memory", {"type": "core", "key": "city", "content": "Lives in Lyon"}
                )
            )
            read = await client.read_resource("personavlm://users/ann/profile")
            text = getattr(read.contents[0], "text", "")
            assert '"key": "city"' in text and '"personality"' in text

    run(body)


def _rest_error(method: str, path: str, world: World, key: str) -> dict[str, Any]:
    with httpx.Client(base_url=world.url) as rest:
        return error_of(rest.request(method, path, headers=bearer(key)))


# ------------------------------------------------------------------ stdio


def test_stdio_round_trip_and_scope(world: World, tmp_path: Path) -> None:
    db = tmp_path / "stdio.db"

    async def body() -> None:
        async with Client(stdio_parameters(db, "--user", "ann"), cache=None) as client:
            await add_search_change_undo(client, {})
            other = error(await client.call_tool("list_memories", {"user_id": "bob"}))
            assert other["code"] == "forbidden"
            listed = await client.list_resources()
            assert [str(r.uri) for r in listed.resources] == ["personavlm://users/ann/profile"]
            read = await client.read_resource("personavlm://users/ann/profile")
            assert '"user_id": "ann"' in getattr(read.contents[0], "text", "")

    run(body)


def test_stdio_checks_the_key_before_serving(world: World) -> None:
    """Ann's key with --user bob stops at once (exit 3, nothing on stdout); her key alone
    serves her; an unknown key is refused."""
    script = str(Path(sys.executable).with_name("personavlm"))
    base = [script, "mcp", "--db", str(world.db), "--embedder", "hashing"]
    wrong_user = subprocess.run(
        [*base, "--user", "bob", "--key", world.ann_key],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert wrong_user.returncode == 3, wrong_user.stderr
    assert "reaches only that user's data" in wrong_user.stderr and wrong_user.stdout == ""
    unknown = subprocess.run(
        [*base, "--key", "pvk_not-a-key"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert unknown.returncode == 3 and "unknown or revoked" in unknown.stderr

    async def body() -> None:
        params = stdio_parameters(world.db, "--key", world.ann_key)
        async with Client(params, cache=None) as client:
            mine = data(await client.call_tool("get_memory", {"memory_id": world.memory_id}))
            assert mine["content"] == ANN_SECRET

    run(body)


def test_arguments_off_the_schema_are_validation_errors(world: World) -> None:
    async def body() -> None:
        async with http_session(world.url, world.ann_key) as client:
            wrong = error(await client.call_tool("get_memory", {"memory_id": "twelve"}))
            assert wrong["code"] == "validation_error" and "memory_id" in wrong["message"]
            kind = error(await client.call_tool("add_memory", {"type": "gossip", "content": "x"}))
            assert kind["code"] == "validation_error" and "'semantic'" in kind["message"]
            unknown = error(await client.call_tool("forget_everything", {}))
            assert unknown["code"] == "not_found"

    run(body)


def test_mcp_has_the_services_body_limit_and_metrics(world: World) -> None:
    """An oversize body is REST's 413 (after the key check), and /mcp requests are counted
    under their own route label."""
    with httpx.Client(base_url=world.url) as rest:
        oversize = rest.post(
            "/mcp",
            content=b"x" * (20 * 1024 * 1024 + 1),  # the default --max-body-mb 20, plus one
            headers={**bearer(world.ann_key), "content-type": "application/json"},
        )
        assert oversize.status_code == 413
        assert error_of(oversize)["code"] == "payload_too_large"
        metrics = rest.get("/metrics", headers=bearer(ADMIN_KEY)).text
    assert 'route="/mcp"' in metrics


@pytest.mark.parametrize(
    ("user", "owner", "expected"),
    [
        ("ann", None, "ann"),  # no key: --user
        (None, ("ann",), "ann"),  # a user's key alone names its user
        ("ann", ("ann",), "ann"),
        ("ann", (None,), "ann"),  # the admin key with --user
    ],
)
def test_the_stdio_user_comes_from_flag_and_key(
    user: str | None, owner: tuple[str | None] | None, expected: str
) -> None:
    assert resolve_user(user, owner) == expected


@pytest.mark.parametrize(("user", "owner"), [(None, None), (None, (None,)), ("bob", ("ann",))])
def test_the_stdio_user_must_be_named_and_match_the_key(
    user: str | None, owner: tuple[str | None] | None
) -> None:
    with pytest.raises(ConfigError):
        resolve_user(user, owner)
