"""The MCP server's costs as a client sees them: how long `personavlm mcp` (stdio) takes from
spawn to its first answer, and a search tool call's latency over stdio and over /mcp.

    .venv/bin/python bench/mcp_latency.py    # about 30 s

What runs. The SDK's own client (mcp.Client). stdio: `personavlm mcp --user ann` on a fresh
SQLite store, spawned three times, timed from spawn to the first `list_tools` answer, for the
hashing encoder and the bundled MiniLM (the command line's numpy MiniLM). Then 20
`add_memory` calls and 50 `search_memories` calls, each timed. HTTP: the same 20 + 50 calls
against `/mcp` of a service on loopback (tests/server_fixtures.py: uvicorn in a thread, hashing
encoder), with a user's key. Output: one line per measurement, for docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_fixtures import make_config, make_user_key, served

FACTS = 20
SEARCHES = 50
SPAWNS = 3


def stdio_parameters(db: Path, embedder: str) -> StdioServerParameters:
    script = str(Path(sys.executable).with_name("personavlm"))
    return StdioServerParameters(
        command=script,
        args=["mcp", "--db", str(db), "--embedder", embedder, "--user", "ann"],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "")},
    )


async def search_latency(client: Client) -> tuple[float, float]:
    """(p50, p95) of a search call in ms, after FACTS memories were added."""
    for i in range(FACTS):
        content = f"fact number {i} about ann's hobby {i}"
        await client.call_tool("add_memory", {"type": "semantic", "content": content})
    times = []
    for i in range(SEARCHES):
        started = time.perf_counter()
        result = await client.call_tool("search_memories", {"query": f"hobby {i % FACTS}"})
        times.append(time.perf_counter() - started)
        if result.is_error:
            raise RuntimeError(f"search failed: {result.structured_content}")
    times.sort()
    return statistics.median(times) * 1000, times[int(0.95 * len(times))] * 1000


async def stdio(embedder: str) -> None:
    db = Path(tempfile.mkdtemp()) / "memory.db"
    starts = []
    for _ in range(SPAWNS):
        started = time.perf_counter()
        async with Client(stdio_parameters(db, embedder), cache=None) as client:
            await client.list_tools()
            starts.append(time.perf_counter() - started)
    async with Client(stdio_parameters(db, embedder), cache=None) as client:
        p50, p95 = await search_latency(client)
    print(
        f"stdio, {embedder}: spawn to first list_tools {min(starts):.2f}-{max(starts):.2f} s; "
        f"search p50 {p50:.1f} ms, p95 {p95:.1f} ms"
    )


async def http(url: str, key: str) -> None:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as session,
        Client(streamable_http_client(f"{url}/mcp", http_client=session), cache=None) as client,
    ):
        p50, p95 = await search_latency(client)
    print(f"/mcp, hashing: search p50 {p50:.1f} ms, p95 {p95:.1f} ms")


def main() -> None:
    anyio.run(stdio, "hashing")
    anyio.run(stdio, "minilm")
    with served(make_config(Path(tempfile.mkdtemp()))) as url, httpx.Client(base_url=url) as rest:
        _, key = make_user_key(rest, "ann")
        anyio.run(http, url, key)


if __name__ == "__main__":
    main()
