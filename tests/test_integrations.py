"""docs/integrations.md's snippets, run as written against a live service on loopback (the
scripted model server answering chat): each is read from the page by its `<!-- snippet: NAME
-->` marker, and only the page's two placeholders change, the service's URL and the key.

The Claude Desktop and Cursor configs are JSON, not code: their command, arguments,
environment, URL and headers are what the tests start or connect with. The LlamaIndex snippet
cannot run here (its package would downgrade the openai SDK); its request is sent with the
openai SDK instead, and the page says so.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import openai
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from agent_script import AgentScript, Req, answer
from personavlm.testing import ScriptedOpenAIServer
from server_fixtures import bearer, make_config, make_user_key, served

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
DOC_URL = "http://127.0.0.1:8420"
DOC_KEY = "pvk_YOUR_KEY"
ANSWER = "Your dog is called Biscuit."
QUESTION = "What is my dog called?"


def snippet(name: str) -> str:
    """The fenced block right after `<!-- snippet: name -->` in docs/integrations.md."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```\w+\n(.*?)\n```", text, re.S)
    assert found is not None, f"docs/integrations.md has no snippet {name!r}"
    return found.group(1)


@dataclass
class Service:
    url: str
    key: str
    db: Path
    script: AgentScript

    def fill(self, text: str) -> str:
        """The snippet with this service's URL and Ann's key in place of the page's."""
        assert DOC_KEY in text, "the snippet lost its key placeholder"
        return text.replace(DOC_URL, self.url).replace(DOC_KEY, self.key)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("integrations")
    script = AgentScript()

    def respond(req: Req) -> str:
        return answer(ANSWER if QUESTION in req.query else "I do not know.")

    script.respond = respond
    with ScriptedOpenAIServer(script) as model:
        config = make_config(tmp, model=f"openai:scripted@{model.base_url}", update="inline")
        with served(config) as url, httpx.Client(base_url=url) as rest:
            _, key = make_user_key(rest, "ann")
            yield Service(url=url, key=key, db=tmp / "memory.db", script=script)


def run_python(service: Service, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    exec(compile(service.fill(snippet(name)), f"integrations.md:{name}", "exec"), {})
    return capsys.readouterr().out


def turns_of_ann(service: Service) -> list[tuple[str, str]]:
    with httpx.Client(base_url=service.url, headers=bearer(service.key)) as rest:
        turns = rest.get("/v1/users/ann/turns", params={"limit": 500}).json()["data"]
    return [(t["role"], t["text"]) for t in turns]


# ------------------------------------------------------------------ the chat endpoint


@pytest.mark.parametrize("name", ["openai-sdk", "langchain"])
def test_chat_snippet_runs_as_written(
    service: Service, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(turns_of_ann(service))
    printed = run_python(service, name, capsys)
    assert printed.strip() == ANSWER
    # A personal turn of the key's user: stored in Ann's log, question and answer.
    assert turns_of_ann(service)[before:] == [("user", QUESTION), ("assistant", ANSWER)]


def test_llamaindex_request_shape_with_the_openai_sdk(service: Service) -> None:
    """What OpenAILike sends (it is the openai SDK's chat call with its defaults), at the
    api_base, model and key the page's snippet gives it."""
    text = snippet("llamaindex")
    api_base = re.search(r'api_base="([^"]+)"', service.fill(text))
    assert api_base is not None and 'model="personavlm"' in text
    client = openai.OpenAI(base_url=api_base.group(1), api_key=service.key, max_retries=0)
    reply = client.chat.completions.create(
        model="personavlm",
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0.1,  # OpenAILike's default
        stream=False,
    )
    assert reply.choices[0].message.content == ANSWER


# ------------------------------------------------------------------ MCP


def test_mcp_python_snippet_runs_as_written(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = run_python(service, "mcp-python", capsys).splitlines()
    assert "search_memories" in printed[0] and "add_memory" in printed[0]
    assert printed[1] == "Ann's dog is called Biscuit"


def test_cursor_http_config_reaches_the_users_memory(service: Service) -> None:
    entry = json.loads(service.fill(snippet("cursor-http")))["mcpServers"]["personavlm"]

    async def body() -> None:
        async with (
            httpx2.AsyncClient(headers=entry["headers"]) as http,
            Client(streamable_http_client(entry["url"], http_client=http), cache=None) as client,
        ):
            listed = await client.list_tools()
            assert "search_memories" in {tool.name for tool in listed.tools}
            personality = await client.call_tool("get_personality", {})
            assert not personality.is_error, personality.content

    anyio.run(body)


def test_claude_desktop_config_starts_the_stdio_server(service: Service) -> None:
    """The config's command, arguments and environment, with the test's store in place of
    the example path and this venv's script for `personavlm`; the store's encoder is named
    in the environment, as a user's shell profile would."""
    entry = json.loads(service.fill(snippet("claude-desktop")))["mcpServers"]["personavlm"]
    assert entry["command"] == "personavlm"
    args = list(entry["args"])
    args[args.index("--db") + 1] = str(service.db)
    env = {
        **entry["env"],
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(service.db.parent),
        "PERSONAVLM_EMBEDDER": "hashing",
    }
    script = str(Path(sys.executable).with_name("personavlm"))
    params = StdioServerParameters(command=script, args=args, env=env)

    async def body() -> None:
        async with Client(params, cache=None) as client:
            added = await client.call_tool(
                "add_memory", {"type": "semantic", "content": "Ann swims on Tuesdays"}
            )
            assert not added.is_error, added.content
            found = await client.call_tool("search_memories", {"query": "swimming Tuesday"})
            hits: Any = found.structured_content
            assert hits["data"][0]["memory"]["user_id"] == "ann"

    anyio.run(body)
