"""Load on the service: 50 concurrent clients over loopback, mixed memory writes, searches,
listings and chat turns, on both engines; zero errors and zero lost writes, p50/p95 per route.

    # both engines (PostgreSQL: a throw-away cluster, as the tests start one)
    .venv/bin/python bench/load_service.py

    # a quick look
    .venv/bin/python bench/load_service.py --clients 10 --ops 10 --engines sqlite

What runs. `personavlm serve` as its own process (uvicorn, one worker process, the bundled
MiniLM encoder unless --embedder says otherwise, update phase in the background worker)
against the scripted OpenAI-compatible model server of personavlm.testing, which answers
every response-phase call at once and, in the update phase, adds one semantic memory per
exchange (so chat turns write memory too). The store is a fresh SQLite file, or a fresh
database of a throw-away PostgreSQL 15 + pgvector cluster (tests/pg_cluster.py).

Each client is one thread with its own user and that user's key (made with the admin key
before the clock starts) and does --ops operations in a seeded random mix: 35 % add a memory
(POST /memories), 30 % search, 20 % list (GET /memories), 15 % a chat turn
(POST /v1/chat/completions). Every request's latency and status are recorded.

Counted afterwards, with the server stopped and the store opened directly: every memory a
client was told it created (201 and an id) exists with its content; every chat turn left its
two turns; once the update queue is drained, every exchange's update memory exists. Output:
a Markdown section on stdout (for docs/benchmarks.md) and the raw numbers as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the scripted agent and the throw-away cluster

from agent_script import AgentScript, Req, answer, op, update  # noqa: E402
from personavlm import embed  # noqa: E402
from personavlm.memory import MemoryStore  # noqa: E402
from personavlm.testing import ScriptedOpenAIServer  # noqa: E402

ADMIN_KEY = "pvk_load-benchmark-admin-key-0123456789"
MIX = (("add", 0.35), ("search", 0.30), ("list", 0.20), ("chat", 0.15))


@dataclass
class ClientLog:
    user: str
    created: dict[int, str] = field(default_factory=dict)  # memory id -> content
    chats: int = 0
    calls: list[tuple[str, float, int]] = field(default_factory=list)  # route, s, status
    errors: list[str] = field(default_factory=list)


def scripted_model() -> AgentScript:
    """Answers at once; each exchange's update adds one semantic memory naming the turn."""

    def remember(req: Req) -> str:
        said = req.all_text.rsplit("load-chat-", 1)[-1].split()[0]
        return update([op("add", f"update memory load-chat-{said}")])

    script = AgentScript(respond=lambda _: answer("Noted."), update=remember)
    return script


@contextmanager
def service(location: str, model_url: str, embedder: str, blobs: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PERSONAVLM_ADMIN_KEY": ADMIN_KEY, "PERSONAVLM_BLOBS": str(blobs)}
    command = [
        str(ROOT / ".venv" / "bin" / "personavlm"), "serve", "--db", location,
        "--embedder", embedder, "--model", f"openai:scripted@{model_url}",
        "--port", str(port), "--update", "background",
    ]  # fmt: skip
    log_path = blobs.with_suffix(".serve.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as server_log:
        # A file, not a pipe: an unread pipe would fill up and stall the server.
        process = subprocess.Popen(command, env=env, stdout=server_log, stderr=server_log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"personavlm serve exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("personavlm serve did not become healthy in 120 s")


def make_users(url: str, clients: int) -> dict[str, str]:
    keys = {}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=url, headers=admin, timeout=60) as http:
        for index in range(clients):
            user = f"load-user-{index:03d}"
            reply = http.post(f"/v1/users/{user}/keys", json={"label": "load"})
            reply.raise_for_status()
            keys[user] = reply.json()["key"]
    return keys


def run_client(
    url: str, user: str, key: str, ops: int, seed: int, start: threading.Event
) -> ClientLog:
    log = ClientLog(user)
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        start.wait()
        for step in range(ops):
            kind = rng.choices(kinds, weights)[0]
            try:
                _one_call(http, log, kind, step, rng)
            except httpx.HTTPError as exc:
                log.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
    return log


def _one_call(http: httpx.Client, log: ClientLog, kind: str, step: int, rng: random.Random) -> None:
    base = f"/v1/users/{log.user}"
    began = time.perf_counter()
    if kind == "add":
        content = f"{log.user} fact {step}: likes {rng.choice(['tea', 'jazz', 'hiking', 'chess'])}"
        reply = http.post(f"{base}/memories", json={"type": "semantic", "content": content})
        if reply.status_code == 201:
            log.created[int(reply.json()["id"])] = content
    elif kind == "search":
        reply = http.post(
            f"{base}/search", json={"query": rng.choice(["tea", "what do I like?", "chess"])}
        )
    elif kind == "list":
        reply = http.get(f"{base}/memories", params={"limit": 20})
    else:
        body = {
            "model": "personavlm",
            "user": log.user,
            "messages": [{"role": "user", "content": f"load-chat-{log.user}-{step} how are you?"}],
        }
        reply = http.post("/v1/chat/completions", json=body)
        log.chats += reply.status_code == 200
    elapsed = time.perf_counter() - began
    log.calls.append((kind, elapsed, reply.status_code))
    if reply.status_code >= 400:
        log.errors.append(f"{kind}: HTTP {reply.status_code}: {reply.text[:300]}")


def count_afterwards(
    location: str, embedder: str, blobs: Path, logs: list[ClientLog]
) -> dict[str, Any]:
    lost_memories = lost_turns = lost_updates = 0
    store = MemoryStore.open(location, embedder=embed.load(embedder), blob_dir=blobs, create=False)
    with store:
        pending = store.queue_status().pending
        for log in logs:
            held = {m.id: m.content for m in store.list(log.user, status=None, limit=100_000)}
            lost_memories += sum(held.get(mid) != content for mid, content in log.created.items())
            lost_turns += abs(2 * log.chats - len(store.turns(log.user, limit=100_000)))
            updates = sum(c.startswith("update memory load-chat-") for c in held.values())
            lost_updates += log.chats - updates
    return {
        "lost_memories": lost_memories,
        "lost_turns": lost_turns,
        "missing_update_memories": lost_updates,
        "pending_update_jobs": pending,
    }


def summarise(logs: list[ClientLog], wall_s: float) -> dict[str, Any]:
    by_route: dict[str, list[float]] = defaultdict(list)
    for log in logs:
        for kind, seconds, _ in log.calls:
            by_route[kind].append(seconds)
    routes = {
        kind: {
            "n": len(times),
            "p50_ms": float(np.percentile(times, 50) * 1000),
            "p95_ms": float(np.percentile(times, 95) * 1000),
            "max_ms": float(max(times) * 1000),
        }
        for kind, times in sorted(by_route.items())
    }
    calls = sum(len(log.calls) for log in logs)
    return {
        "calls": calls,
        "errors": sum(len(log.errors) for log in logs),
        "error_samples": [e for log in logs for e in log.errors][:10],
        "wall_s": wall_s,
        "throughput_per_s": calls / wall_s,
        "routes": routes,
    }


def run_engine(
    engine: str, args: argparse.Namespace, model_url: str, scratch: Path
) -> dict[str, Any]:
    with _location(engine, scratch) as location:
        blobs = scratch / f"{engine}-blobs"
        with service(location, model_url, args.embedder, blobs) as url:
            keys = make_users(url, args.clients)
            start = threading.Event()
            logs: list[ClientLog] = []
            threads = []
            for index, (user, key) in enumerate(keys.items()):
                thread = threading.Thread(
                    target=lambda u=user, k=key, i=index: logs.append(
                        run_client(url, u, k, args.ops, args.seed + i, start)
                    )
                )
                thread.start()
                threads.append(thread)
            began = time.perf_counter()
            start.set()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
            # Let the background worker finish the queued updates before the server stops.
            _drain(location, args.embedder, blobs)
        result = summarise(logs, wall)
        result.update(count_afterwards(location, args.embedder, blobs, logs))
        result["engine"] = engine
        return result


def _drain(location: str, embedder: str, blobs: Path, timeout_s: float = 600) -> None:
    store = MemoryStore.open(location, embedder=embed.load(embedder), blob_dir=blobs, create=False)
    with store:
        deadline = time.monotonic() + timeout_s
        while store.queue_status().pending and time.monotonic() < deadline:
            time.sleep(0.5)


@contextmanager
def _location(engine: str, scratch: Path) -> Iterator[str]:
    if engine == "sqlite":
        yield str(scratch / "load.db")
        return
    from pg_cluster import running_cluster

    with running_cluster() as cluster, cluster.database() as url:
        yield url


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.clients} clients x {args.ops} operations each, encoder {args.embedder}, "
        f"seed {args.seed}; machine: {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| engine | calls | errors | lost writes | wall s | calls/s "
        "| route | n | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lost = result["lost_memories"] + result["lost_turns"] + result["missing_update_memories"]
        head = (
            f"| {result['engine']} | {result['calls']} | {result['errors']} | {lost} | "
            f"{result['wall_s']:.1f} | {result['throughput_per_s']:.1f} |"
        )
        for index, (route, stats) in enumerate(result["routes"].items()):
            prefix = head if index == 0 else "| | | | | | |"
            lines.append(
                f"{prefix} {route} | {stats['n']} | {stats['p50_ms']:.0f} | "
                f"{stats['p95_ms']:.0f} | {stats['max_ms']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--ops", type=int, default=40, help="operations per client")
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "load_service.json"
    )
    args = parser.parse_args()
    results = []
    with ScriptedOpenAIServer(scripted_model()) as model, TemporaryDirectory() as scratch:
        for engine in args.engines:
            results.append(run_engine(engine, args, model.base_url, Path(scratch)))
            print(json.dumps(results[-1], indent=2), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2)
    )
    print(markdown(results, args))
    failed = [
        r["engine"]
        for r in results
        if r["errors"] or r["lost_memories"] or r["lost_turns"] or r["missing_update_memories"]
    ]
    if failed:
        raise SystemExit(f"errors or lost writes on: {failed}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
