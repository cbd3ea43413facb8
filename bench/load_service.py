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

Two more scenarios (`--scenario`; the one above is `mixed`, the default):

    # a model that takes 30 s per answer: 200 chat clients and 20 memory clients for 60 s
    .venv/bin/python bench/load_service.py --scenario slow-model --engines sqlite

    # kill -9 during the mixed load, restart on the same store, count what was lost
    .venv/bin/python bench/load_service.py --scenario kill --engines sqlite postgres

slow-model: the scripted model waits --model-delay seconds before every response-phase
answer. --chat-clients threads (in a process of their own, so their Python work does not
share the memory clients' interpreter lock) each ask for a chat turn as their own user: 429
-> sleep Retry-After and ask again, 200 -> ask again, until --duration is over (a turn
accepted before then is waited for). --memory-clients threads each add a memory, search,
list and GET /healthz, in turn, without pauses, for the same time. Reported: latency of the
memory routes and /healthz, errors, stalls (any of them over 1 s), chats accepted and
refused, the time a refusal took, and the server's CPU seconds, threads and RSS.

kill: the mixed load of --clients threads, the scripted update phase --update-delay seconds
per call (the background worker holds a claim most of the time), --ops operations each at
most. After --kill-after seconds the server gets SIGKILL; each client stops at its first
connection error, and everything the server acknowledged is recorded (201 memory ids with
their content, 200 chats with their turn ids). `serve` is started again at once on the same
store (a fresh port); measured: seconds to a healthy /healthz, seconds from healthy until
the first update job finishes (the store's queue polled read-only, with plain SQL) and until
the job the killed worker held finishes. Then the update delay drops to 0, the queue is
drained, the server stopped, and every acknowledged write is looked up: each memory with its
content, each chat's two turns, each chat's update memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
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
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse  # noqa: E402

ADMIN_KEY = "pvk_load-benchmark-admin-key-0123456789"
MIX = (("add", 0.35), ("search", 0.30), ("list", 0.20), ("chat", 0.15))
STALL_S = 1.0  # a memory route or /healthz slower than this is a stall (slow-model)
REFUSAL_GOAL_MS = 50.0
MEMORY_P95_GOAL_MS = 100.0
QUEUE_GOAL_S = 5.0
# Every loop is bounded in count as well as time.
MAX_REQUESTS_PER_CLIENT = 20_000
HEALTHY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 600.0


@dataclass
class ClientLog:
    user: str
    created: dict[int, str] = field(default_factory=dict)  # memory id -> content
    chats: int = 0
    calls: list[tuple[str, float, int]] = field(default_factory=list)  # route, s, status
    errors: list[str] = field(default_factory=list)
    refused: int = 0  # chats answered 429 model_busy (retried after Retry-After)
    # Acknowledged chats: (user turn id, assistant turn id, the message's marker)
    chat_turns: list[tuple[int, int, str]] = field(default_factory=list)
    connection_lost: bool = False  # stopped at its first connection error (kill)


@dataclass
class Delays:
    """The scripted model's latencies, changeable while it serves."""

    respond_s: float = 0.0
    update_s: float = 0.0


def scripted_model(delays: Delays | None = None) -> AgentScript:
    """Answers after `delays.respond_s` (at once by default); each exchange's update adds one
    semantic memory naming the turn, after `delays.update_s`."""
    delays = delays or Delays()

    def respond(_: Req) -> str | ScriptedResponse:
        if delays.respond_s > 0:
            return ScriptedResponse(delay_s=delays.respond_s, text=answer("Noted."))
        return answer("Noted.")

    def remember(req: Req) -> str | ScriptedResponse:
        said = req.all_text.rsplit("load-chat-", 1)[-1].split()[0]
        text = update([op("add", f"update memory load-chat-{said}")])
        if delays.update_s > 0:
            return ScriptedResponse(delay_s=delays.update_s, text=text)
        return text

    return AgentScript(respond=respond, update=remember)


# ------------------------------------------------------------------ the server process


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    started: float  # perf_counter at Popen
    healthy_s: float = 0.0  # Popen -> /healthz 200 with status "ok"


def start_serve(
    location: str, model_url: str, embedder: str, blobs: Path, flags: Sequence[str], tag: str
) -> Served:
    port = _free_port()
    env = {**os.environ, "PERSONAVLM_ADMIN_KEY": ADMIN_KEY, "PERSONAVLM_BLOBS": str(blobs)}
    command = [
        str(ROOT / ".venv" / "bin" / "personavlm"), "serve", "--db", location,
        "--embedder", embedder, "--model", f"openai:scripted@{model_url}",
        "--port", str(port), "--update", "background", *flags,
    ]  # fmt: skip
    log_path = blobs.parent / f"{blobs.name}.{tag}.serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as server_log:
        # A file, not a pipe: an unread pipe would fill up and stall the server.
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=server_log, stderr=server_log)
    served = Served(process, f"http://127.0.0.1:{port}", log_path, started)
    try:
        _wait_healthy(served)
    except BaseException:
        stop_serve(served)
        raise
    return served


def stop_serve(served: Served) -> None:
    if served.process.poll() is not None:
        return
    served.process.send_signal(signal.SIGINT)
    try:
        served.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait(timeout=30)


@contextmanager
def service(
    location: str, model_url: str, embedder: str, blobs: Path, flags: Sequence[str] = ()
) -> Iterator[str]:
    served = start_serve(location, model_url, embedder, blobs, flags, "mixed")
    try:
        yield served.url
    finally:
        stop_serve(served)


def _wait_healthy(served: Served) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if served.process.poll() is not None:
                raise SystemExit(f"personavlm serve exited:\n{served.log_path.read_text()}")
            try:
                reply = http.get(f"{served.url}/healthz")
                if reply.status_code == 200 and reply.json().get("status") == "ok":
                    served.healthy_s = time.perf_counter() - served.started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise SystemExit(f"personavlm serve did not become healthy in {HEALTHY_TIMEOUT_S:.0f} s")


def server_flags(args: argparse.Namespace) -> list[str]:
    return ["--max-inflight", str(args.max_inflight), "--model-timeout", str(args.model_timeout)]


class ProcessWatch:
    """Samples the server process once a second: threads and RSS (highest seen), and its CPU
    seconds between start() and stop()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_threads = 0
        self.max_rss_mib = 0.0
        self._cpu0 = self._cpu_s()
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ProcessWatch:
        self._cpu0 = self._cpu_s()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        self.cpu_s = self._cpu_s() - self._cpu0
        return {
            "server_cpu_s": self.cpu_s,
            "server_max_threads": self.max_threads,
            "server_max_rss_mib": self.max_rss_mib,
        }

    def _run(self) -> None:
        for _ in range(24 * 3600):  # bounded: a day of samples at most
            self._sample()
            if self._stop.wait(1.0):
                return

    def _sample(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("Threads:"):
                self.max_threads = max(self.max_threads, int(line.split()[1]))
            elif line.startswith("VmRSS:"):
                self.max_rss_mib = max(self.max_rss_mib, int(line.split()[1]) / 1024)

    def _cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the mixed clients


def make_users(url: str, clients: int, prefix: str = "load-user") -> dict[str, str]:
    keys = {}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=url, headers=admin, timeout=60) as http:
        for index in range(clients):
            user = f"{prefix}-{index:03d}"
            reply = http.post(f"/v1/users/{user}/keys", json={"label": "load"})
            reply.raise_for_status()
            keys[user] = reply.json()["key"]
    return keys


def run_client(
    url: str,
    user: str,
    key: str,
    ops: int,
    seed: int,
    start: threading.Event,
    *,
    stop_at_connection_error: bool = False,
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
            except httpx.TransportError as exc:
                log.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                if stop_at_connection_error:
                    log.connection_lost = True
                    break
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
        marker = f"load-chat-{log.user}-{step}"
        body = {
            "model": "personavlm",
            "user": log.user,
            "messages": [{"role": "user", "content": f"{marker} how are you?"}],
        }
        reply = http.post("/v1/chat/completions", json=body)
        for _ in range(MAX_REQUESTS_PER_CLIENT):  # every chat slot busy: as OpenAI clients do
            if reply.status_code != 429:
                break
            log.refused += 1
            time.sleep(float(reply.headers.get("Retry-After", "1")))
            reply = http.post("/v1/chat/completions", json=body)
        if reply.status_code == 200:
            log.chats += 1
            extra = reply.json()["personavlm"]
            log.chat_turns.append((extra["user_turn_id"], extra["assistant_turn_id"], marker))
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


def _stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    return {
        "n": len(seconds),
        "p50_ms": float(np.percentile(seconds, 50) * 1000),
        "p95_ms": float(np.percentile(seconds, 95) * 1000),
        "max_ms": float(max(seconds) * 1000),
    }


def summarise(logs: list[ClientLog], wall_s: float) -> dict[str, Any]:
    by_route: dict[str, list[float]] = defaultdict(list)
    for log in logs:
        for kind, seconds, _ in log.calls:
            by_route[kind].append(seconds)
    routes = {kind: _stats_ms(times) for kind, times in sorted(by_route.items())}
    calls = sum(len(log.calls) for log in logs)
    return {
        "calls": calls,
        "errors": sum(len(log.errors) for log in logs),
        "refused_then_retried": sum(log.refused for log in logs),
        "error_samples": [e for log in logs for e in log.errors][:10],
        "wall_s": wall_s,
        "throughput_per_s": calls / wall_s,
        "routes": routes,
    }


def _start_clients(
    url: str, keys: dict[str, str], args: argparse.Namespace, start: threading.Event, **options: Any
) -> tuple[list[threading.Thread], list[ClientLog]]:
    logs: list[ClientLog] = []
    threads = []
    for index, (user, key) in enumerate(keys.items()):
        thread = threading.Thread(
            target=lambda u=user, k=key, i=index: logs.append(
                run_client(url, u, k, args.ops, args.seed + i, start, **options)
            )
        )
        thread.start()
        threads.append(thread)
    return threads, logs


def run_engine(
    engine: str, args: argparse.Namespace, model_url: str, scratch: Path
) -> dict[str, Any]:
    with _location(engine, scratch) as location:
        blobs = scratch / f"{engine}-blobs"
        with service(location, model_url, args.embedder, blobs, server_flags(args)) as url:
            keys = make_users(url, args.clients)
            start = threading.Event()
            threads, logs = _start_clients(url, keys, args, start)
            began = time.perf_counter()
            start.set()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
            # Let the background worker finish the queued updates before the server stops.
            _drain(location)
        result = summarise(logs, wall)
        result.update(count_afterwards(location, args.embedder, blobs, logs))
        result["engine"] = engine
        return result


# ------------------------------------------------------------------ the queue, read-only


class QueueProbe:
    """The update queue's counts read with plain SQL (SQLite read-only, or a PostgreSQL
    connection in autocommit): no MemoryStore, so no encoder and no writes. One thread only."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._conn: Any = None

    def __enter__(self) -> QueueProbe:
        if self.location.startswith("postgresql://"):
            import psycopg

            self._conn = psycopg.connect(self.location, autocommit=True)
        else:
            uri = f"file:{Path(self.location).resolve()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        self._conn.close()

    def _one(self, sql: str) -> Any:
        return self._conn.execute(sql).fetchone()

    def counts(self) -> tuple[int, int]:
        """(pending, done)"""
        row = self._one(
            "SELECT count(CASE WHEN status = 'pending' THEN 1 END), "
            "count(CASE WHEN status = 'done' THEN 1 END) FROM update_jobs"
        )
        return int(row[0]), int(row[1])

    def claimed(self) -> list[tuple[int, str]]:
        """(job id, claimant) of every pending job with a claim on it, lease run out or not."""
        rows = self._conn.execute(
            "SELECT id, claimed_by FROM update_jobs WHERE status = 'pending' "
            "AND claimed_by IS NOT NULL ORDER BY id"
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def is_done(self, job_id: int) -> bool:
        row = self._one(f"SELECT status FROM update_jobs WHERE id = {int(job_id)}")
        return row is not None and row[0] == "done"


def _drain(location: str, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    with QueueProbe(location) as probe:
        deadline = time.monotonic() + timeout_s
        while probe.counts()[0] and time.monotonic() < deadline:
            time.sleep(0.5)


@contextmanager
def _location(engine: str, scratch: Path) -> Iterator[str]:
    if engine == "sqlite":
        yield str(scratch / "load.db")
        return
    from pg_cluster import running_cluster

    with running_cluster() as cluster, cluster.database() as url:
        yield url


# ------------------------------------------------------------------ slow-model


def _memory_loop(
    url: str, user: str, key: str, clock: dict[str, float], start: threading.Event
) -> list[tuple[str, float, float, int]]:
    """add, search, list, /healthz in turn until clock["deadline"] (perf_counter, set before
    `start`); each call as (route, seconds since clock["t0"], seconds it took, status; -1 for
    a transport error)."""
    calls: list[tuple[str, float, float, int]] = []
    base = f"/v1/users/{user}"
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        start.wait(600)
        deadline, t0 = clock["deadline"], clock["t0"]
        for step in range(MAX_REQUESTS_PER_CLIENT):
            if time.perf_counter() >= deadline:
                break
            route = ("add", "search", "list", "healthz")[step % 4]
            began = time.perf_counter()
            try:
                if route == "add":
                    content = f"{user} note {step}: likes {('tea', 'jazz', 'chess')[step % 3]}"
                    body = {"type": "semantic", "content": content}
                    reply = http.post(f"{base}/memories", json=body)
                elif route == "search":
                    reply = http.post(f"{base}/search", json={"query": "what do I like?"})
                elif route == "list":
                    reply = http.get(f"{base}/memories", params={"limit": 20})
                else:
                    reply = http.get("/healthz")
                status = reply.status_code
            except httpx.HTTPError:
                status = -1
            calls.append((route, began - t0, time.perf_counter() - began, status))
    return calls


def _chat_loop(
    url: str, user: str, key: str, clock: dict[str, float], timeout_s: float, start: threading.Event
) -> list[tuple[float, float, int]]:
    """Chat turns until clock["deadline"] (time.time(), set before `start`): 429 -> sleep
    Retry-After and ask again, 200 -> ask again. Each call as (wall time it began, seconds it
    took, status; -1 for a transport error)."""
    calls: list[tuple[float, float, int]] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as http:
        start.wait(600)
        deadline = clock["deadline"]
        for step in range(MAX_REQUESTS_PER_CLIENT):
            if time.time() >= deadline:
                break
            body = {
                "model": "personavlm",
                "user": user,
                "messages": [{"role": "user", "content": f"slow-chat-{user}-{step} hello?"}],
            }
            at, began = time.time(), time.perf_counter()
            try:
                reply = http.post("/v1/chat/completions", json=body)
                status = reply.status_code
            except httpx.HTTPError:
                status = -1
            calls.append((at, time.perf_counter() - began, status))
            if status == 429:
                time.sleep(min(float(reply.headers.get("Retry-After", "1")), 10.0))
            elif status != 200:
                time.sleep(1.0)  # an error: do not spin on it
    return calls


def chat_clients_process(
    url: str,
    keys: list[tuple[str, str]],
    duration_s: float,
    timeout_s: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """The chat clients, in a process of their own (spawned): one thread per user, asking
    for `duration_s` from `go`."""
    start = threading.Event()
    clock: dict[str, float] = {}
    out: dict[str, list[tuple[float, float, int]]] = {}
    threads = [
        threading.Thread(
            target=lambda u=user, k=key: out.__setitem__(
                u, _chat_loop(url, u, k, clock, timeout_s, start)
            ),
            daemon=True,
        )
        for user, key in keys
    ]
    for thread in threads:
        thread.start()
    ready.set()
    if not go.wait(600):
        return
    clock["deadline"] = time.time() + duration_s
    start.set()
    for thread in threads:  # a turn accepted before the deadline is waited for
        thread.join(max(0.0, clock["deadline"] - time.time()) + timeout_s + 30)
    results.put(out)


def run_slow_model(
    engine: str, args: argparse.Namespace, model_url: str, scratch: Path
) -> dict[str, Any]:
    with _location(engine, scratch) as location:
        blobs = scratch / f"{engine}-slow-blobs"
        served = start_serve(
            location, model_url, args.embedder, blobs, server_flags(args), "slow-model"
        )
        try:
            memory_keys = make_users(served.url, args.memory_clients, "mem-user")
            chat_keys = make_users(served.url, args.chat_clients, "chat-user")
            warm_up(served.url, next(iter(memory_keys.items())))  # the encoder loads lazily
            context = multiprocessing.get_context("spawn")
            ready, go, results = context.Event(), context.Event(), context.Queue()
            duration = args.duration
            chat_timeout = args.model_timeout + 30
            child = context.Process(
                target=chat_clients_process,
                args=(served.url, list(chat_keys.items()), duration, chat_timeout, ready, go,
                      results),
                daemon=True,
            )  # fmt: skip
            child.start()
            if not ready.wait(120):
                child.kill()
                raise SystemExit("the chat client process did not start in 120 s")
            start = threading.Event()
            clock: dict[str, float] = {}
            out: dict[str, list[tuple[str, float, float, int]]] = {}
            threads = [
                threading.Thread(
                    target=lambda u=user, k=key: out.__setitem__(
                        u, _memory_loop(served.url, u, k, clock, start)
                    )
                )
                for user, key in memory_keys.items()
            ]
            for thread in threads:
                thread.start()
            time.sleep(1.0)  # every memory client has its connection pool ready
            watch = ProcessWatch(served.process.pid).start()
            load_before = os.getloadavg()
            # Both groups start now and stop `duration` seconds later.
            clock["t0"] = time.perf_counter()
            clock["deadline"] = clock["t0"] + duration
            wall0 = time.time()
            go.set()
            start.set()
            for thread in threads:
                thread.join(duration + 120)
            memory_wall = time.perf_counter() - clock["t0"]
            try:
                chat_calls = results.get(timeout=duration + chat_timeout + 120)
            except queue.Empty:
                chat_calls = {}
            child.join(30)
            load_after = os.getloadavg()
            server = watch.stop()
            metrics = _scrape(served.url)
        finally:
            stop_serve(served)
        stored_turns = _chat_turns_stored(location, args.embedder, blobs, list(chat_keys))
    result = slow_model_summary(out, chat_calls, wall0, memory_wall)
    result.update(server)
    result.update(
        engine=engine,
        load_before=load_before,
        load_after=load_after,
        server_metrics=metrics,
        chat_turns_stored=stored_turns,
    )
    return result


def warm_up(url: str, user_key: tuple[str, str]) -> float:
    """One search, so the server loads its encoder (on first use); the seconds it took."""
    user, key = user_key
    began = time.perf_counter()
    reply = httpx.post(
        f"{url}/v1/users/{user}/search",
        json={"query": "warm up"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    reply.raise_for_status()
    return time.perf_counter() - began


def _scrape(url: str) -> dict[str, float]:
    """A few of the server's own counters from /metrics."""
    wanted = ("personavlm_chat_rejected_total", "personavlm_model_call_duration_seconds_count")
    found: dict[str, float] = {}
    try:
        text = httpx.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        ).text
    except httpx.HTTPError as exc:
        return {"error": str(exc)}  # type: ignore[dict-item]
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def _chat_turns_stored(location: str, embedder: str, blobs: Path, users: list[str]) -> dict:
    store = MemoryStore.open(location, embedder=embed.load(embedder), blob_dir=blobs, create=False)
    with store:
        turns = [t for user in users for t in store.turns(user, limit=100_000)]
    return {
        "turns": len(turns),
        "failed": sum(t.status == "failed" for t in turns),
        "assistant": sum(t.role == "assistant" for t in turns),
    }


def slow_model_summary(
    memory: dict[str, list[tuple[str, float, float, int]]],
    chats: dict[str, list[tuple[float, float, int]]],
    wall0: float,
    wall_s: float,
) -> dict[str, Any]:
    memory_calls = [call for calls in memory.values() for call in calls]
    by_route: dict[str, list[float]] = defaultdict(list)
    for route, _, seconds, _status in memory_calls:
        by_route[route].append(seconds)
    routes = {route: _stats_ms(by_route[route]) for route in ("add", "search", "list", "healthz")}
    routes["all memory routes + healthz"] = _stats_ms([c[2] for c in memory_calls])
    memory_errors = [c for c in memory_calls if not 200 <= c[3] < 300]
    stalls = sorted((round(c[1], 2), c[0], round(c[2], 3)) for c in memory_calls if c[2] > STALL_S)
    chat_calls = [call for calls in chats.values() for call in calls]
    refused = [c for c in chat_calls if c[2] == 429]
    accepted = [c for c in chat_calls if c[2] == 200]
    other = [c for c in chat_calls if c[2] not in (200, 429)]
    refusal_s = [c[1] for c in refused]
    # Refusals by second of the run: does refusal latency drift?
    by_second: dict[int, list[float]] = defaultdict(list)
    for at, seconds, _ in refused:
        by_second[int(at - wall0)].append(seconds)
    return {
        "memory_wall_s": wall_s,
        "memory_calls": len(memory_calls),
        "memory_errors": len(memory_errors),
        "memory_error_samples": memory_errors[:10],
        "memory_throughput_per_s": len(memory_calls) / wall_s,
        "routes": routes,
        "stalls": len(stalls),
        "stall_samples": stalls[:20],  # (seconds into the run, route, seconds it took)
        "chat_clients_reported": len(chats),
        "chat_requests": len(chat_calls),
        "chats_accepted": len(accepted),
        "chats_refused": len(refused),
        "chats_other": len(other),
        "chat_other_statuses": sorted({c[2] for c in other}),
        "accepted_latency": _stats_ms([c[1] for c in accepted]),
        "refusal_latency": _stats_ms(refusal_s),
        "refusals_within_goal": sum(s * 1000 <= REFUSAL_GOAL_MS for s in refusal_s),
        "refusal_p95_ms_by_10s": {
            f"{start}-{start + 10}": _stats_ms(
                [s for sec, vals in by_second.items() if start <= sec < start + 10 for s in vals]
            )["p95_ms"]
            for start in range(0, int(wall_s) + 1, 10)
        },
    }


# ------------------------------------------------------------------ kill -9


def run_kill(
    engine: str, args: argparse.Namespace, model_url: str, delays: Delays, scratch: Path
) -> dict[str, Any]:
    delays.update_s = args.update_delay
    with _location(engine, scratch) as location:
        blobs = scratch / f"{engine}-kill-blobs"
        first = start_serve(location, model_url, args.embedder, blobs, server_flags(args), "first")
        try:
            keys = make_users(first.url, args.clients)
            warm_up(first.url, next(iter(keys.items())))  # the encoder loads on first use
            start = threading.Event()
            threads, logs = _start_clients(
                first.url, keys, args, start, stop_at_connection_error=True
            )
            began = time.perf_counter()
            start.set()
            for thread in threads:  # wait out --kill-after (or every client finishing first)
                thread.join(max(0.0, began + args.kill_after - time.perf_counter()))
            still_running = sum(thread.is_alive() for thread in threads)
            first.process.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter() - began
            first.process.wait(timeout=30)
            for thread in threads:
                thread.join(150)  # each stops at its first connection error
        finally:
            stop_serve(first)
        with QueueProbe(location) as probe:
            claimed = probe.claimed()
            pending_at_kill, done_at_kill = probe.counts()
        # Restart at once, on the same store; a thread watches the queue from before Popen.
        watch = _QueueWatch(location, done_at_kill, [job for job, _ in claimed]).start()
        second = start_serve(
            location, model_url, args.embedder, blobs, server_flags(args), "restart"
        )
        try:
            # The first memory request after healthy: the encoder loads on first use.
            first_search_s = warm_up(second.url, next(iter(keys.items())))
            watch.wait(120)
            delays.update_s = 0.0  # measured: now drain quickly
            drain_began = time.perf_counter()
            _drain(location)
            drain_s = time.perf_counter() - drain_began
        finally:
            watch.stop()
            stop_serve(second)
        lost = count_acknowledged(location, args.embedder, blobs, logs)
    healthy = second.started + second.healthy_s  # perf_counter when /healthz said ok

    def after_healthy(moment: float | None) -> float | None:
        return None if moment is None else moment - healthy

    result = summarise(logs, killed_at)
    result.update(lost)
    result.update(
        engine=engine,
        killed_at_s=killed_at,
        clients_running_at_kill=still_running,
        clients_stopped_by_connection_error=sum(log.connection_lost for log in logs),
        acknowledged_memories=sum(len(log.created) for log in logs),
        acknowledged_chats=sum(log.chats for log in logs),
        claims_at_kill=claimed,
        pending_at_kill=pending_at_kill,
        done_at_kill=done_at_kill,
        restart_to_healthy_s=second.healthy_s,
        healthy_to_first_job_done_s=after_healthy(watch.first_done),
        restart_to_first_job_done_s=(
            None if watch.first_done is None else watch.first_done - second.started
        ),
        healthy_to_orphaned_job_done_s=after_healthy(watch.orphans_done),
        drain_s=drain_s,
        first_search_after_healthy_s=first_search_s,
        update_delay_s=args.update_delay,
    )
    return result


class _QueueWatch:
    """Polls the queue every 50 ms in a thread: when the first job finishes after `done0`, and
    when every job in `orphans` (the killed worker's claims) is done (perf_counter times)."""

    def __init__(self, location: str, done0: int, orphans: list[int]) -> None:
        self.location = location
        self.done0 = done0
        self.orphans = orphans
        self.first_done: float | None = None
        self.orphans_done: float | None = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _QueueWatch:
        self._thread.start()
        return self

    def wait(self, timeout_s: float) -> None:
        self._finished.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with QueueProbe(self.location) as probe:
            for _ in range(int(DRAIN_TIMEOUT_S / 0.05)):
                now = time.perf_counter()
                if self.first_done is None and probe.counts()[1] > self.done0:
                    self.first_done = now
                if (
                    self.orphans
                    and self.orphans_done is None
                    and all(probe.is_done(j) for j in self.orphans)
                ):
                    self.orphans_done = now
                if self.first_done is not None and (self.orphans_done or not self.orphans):
                    break
                if self.first_done is None and probe.counts()[0] == 0:
                    break  # nothing was pending: nothing to wait for
                if self._stop.wait(0.05):
                    break
        self._finished.set()


def count_acknowledged(
    location: str, embedder: str, blobs: Path, logs: list[ClientLog]
) -> dict[str, Any]:
    """Every acknowledged write looked up: lost memories (missing or other content), lost chat
    turns (either turn missing, or not what was said), missing update memories; and what the
    store holds that nobody was told of (committed, answer lost in the kill)."""
    lost_memories = lost_turns = missing_updates = 0
    unacknowledged_turns = failed_turns = 0
    store = MemoryStore.open(location, embedder=embed.load(embedder), blob_dir=blobs, create=False)
    with store:
        pending = store.queue_status().pending
        for log in logs:
            held = {m.id: m.content for m in store.list(log.user, status=None, limit=100_000)}
            lost_memories += sum(held.get(mid) != content for mid, content in log.created.items())
            turns = {t.id: t for t in store.turns(log.user, limit=100_000)}
            acknowledged: set[int] = set()
            for user_turn, reply_turn, marker in log.chat_turns:
                said, answered = turns.get(user_turn), turns.get(reply_turn)
                ok = (
                    said is not None
                    and answered is not None
                    and marker in said.text
                    and said.role == "user"
                    and answered.role == "assistant"
                    and said.status == answered.status == "ok"
                )
                lost_turns += not ok
                acknowledged |= {user_turn, reply_turn}
                missing_updates += f"update memory {marker}" not in held.values()
            unacknowledged_turns += len(set(turns) - acknowledged)
            failed_turns += sum(t.status == "failed" for t in turns.values())
    return {
        "lost_memories": lost_memories,
        "lost_turns": lost_turns,
        "missing_update_memories": missing_updates,
        "pending_update_jobs": pending,
        "unacknowledged_turns_stored": unacknowledged_turns,
        "failed_turns_stored": failed_turns,
    }


# ------------------------------------------------------------------ reports


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; 1-minute load "
        f"average {load[0]:.2f} when the report was written."
    )


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.clients} clients x {args.ops} operations each, encoder {args.embedder}, "
        f"seed {args.seed}, --max-inflight {args.max_inflight}; {machine_line()}",
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
    lines.append("")
    for result in results:
        lines.append(
            f"- {result['engine']}: {result['refused_then_retried']} chat requests refused "
            "with 429 model_busy and retried after Retry-After (counted in the chat latency)."
        )
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown_slow_model(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.chat_clients} chat clients + {args.memory_clients} memory clients for "
        f"{args.duration:.0f} s, model delay {args.model_delay:.0f} s per response call, "
        f"--max-inflight {args.max_inflight}, --model-timeout {args.model_timeout:.0f}, "
        f"encoder {args.embedder}; {machine_line()}",
        "",
    ]
    for r in results:
        allm = r["routes"]["all memory routes + healthz"]
        refusal = r["refusal_latency"]
        lines += [
            f"**{r['engine']}** (1-minute load average {r['load_before'][0]:.2f} before, "
            f"{r['load_after'][0]:.2f} after; server process: {r['server_cpu_s']:.0f} CPU s "
            f"in the run, at most {r['server_max_threads']} threads, "
            f"{r['server_max_rss_mib']:.0f} MiB RSS)",
            "",
            "| route | n | p50 ms | p95 ms | max ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for route, stats in r["routes"].items():
            lines.append(
                f"| {route} | {stats['n']} | {stats['p50_ms']:.0f} | {stats['p95_ms']:.0f} | "
                f"{stats['max_ms']:.0f} |"
            )
        lines.append(
            f"| chat refused (429) | {refusal['n']} | {refusal['p50_ms']:.1f} | "
            f"{refusal['p95_ms']:.1f} | {refusal['max_ms']:.1f} |"
        )
        acc = r["accepted_latency"]
        lines.append(
            f"| chat accepted (200) | {acc['n']} | {acc['p50_ms']:.0f} | {acc['p95_ms']:.0f} | "
            f"{acc['max_ms']:.0f} |"
        )
        share = r["refusals_within_goal"] / max(refusal["n"], 1)
        lines += [
            "",
            f"- memory routes + /healthz: {r['memory_calls']} requests "
            f"({r['memory_throughput_per_s']:.0f}/s), {r['memory_errors']} errors; p95 "
            f"{allm['p95_ms']:.0f} ms (goal <= {MEMORY_P95_GOAL_MS:.0f} ms: "
            f"{_met(allm['p95_ms'] <= MEMORY_P95_GOAL_MS)}; 0 errors: "
            f"{_met(r['memory_errors'] == 0)})",
            f"- stalls (a memory route or /healthz over {STALL_S:.0f} s): {r['stalls']} "
            f"(goal 0: {_met(r['stalls'] == 0)})",
            f"- chats: {r['chats_accepted']} accepted, {r['chats_refused']} refused, "
            f"{r['chats_other']} other ({r['chat_other_statuses']}); refusals p95 "
            f"{refusal['p95_ms']:.1f} ms, {share:.1%} within {REFUSAL_GOAL_MS:.0f} ms (goal: "
            f"refused within {REFUSAL_GOAL_MS:.0f} ms: {_met(refusal['max_ms'] <= REFUSAL_GOAL_MS)}"
            f" at the maximum, {_met(refusal['p95_ms'] <= REFUSAL_GOAL_MS)} at p95)",
            f"- the server's counters: {r['server_metrics']}; chat users' stored turns: "
            f"{r['chat_turns_stored']}",
            "",
        ]
    return "\n".join(lines)


def markdown_kill(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.clients} clients of the mixed load (at most {args.ops} operations each), update "
        f"phase {args.update_delay:g} s per model call, SIGKILL after {args.kill_after:g} s, "
        f"encoder {args.embedder}; {machine_line()}",
        "",
        "| engine | killed at s | acknowledged memories / chats | claims at kill | pending "
        "at kill | restart -> healthy s | healthy -> first search answered s | healthy -> "
        "first job done s | healthy -> orphaned job done s | restart -> first job done s "
        "| lost memories | lost chat turns | missing update memories |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def seconds(value: float | None) -> str:
        return "none / never" if value is None else f"{value:.2f}"

    for r in results:
        lines.append(
            f"| {r['engine']} | {r['killed_at_s']:.1f} | {r['acknowledged_memories']} / "
            f"{r['acknowledged_chats']} | {len(r['claims_at_kill'])} | {r['pending_at_kill']} | "
            f"{r['restart_to_healthy_s']:.2f} | {r['first_search_after_healthy_s']:.2f} | "
            f"{seconds(r['healthy_to_first_job_done_s'])} | "
            f"{seconds(r['healthy_to_orphaned_job_done_s'])} | "
            f"{seconds(r['restart_to_first_job_done_s'])} | {r['lost_memories']} | "
            f"{r['lost_turns']} | {r['missing_update_memories']} |"
        )
    lines.append("")
    for r in results:
        queue_s = r["healthy_to_first_job_done_s"]
        lost = r["lost_memories"] + r["lost_turns"] + r["missing_update_memories"]
        lines.append(
            f"- {r['engine']}: clients running at the kill {r['clients_running_at_kill']}, "
            f"stopped by a connection error {r['clients_stopped_by_connection_error']}; "
            f"queue moving again < {QUEUE_GOAL_S:.0f} s after healthy: "
            f"{_met(queue_s is not None and queue_s < QUEUE_GOAL_S)}; acknowledged writes lost "
            f"0: {_met(lost == 0)}; drained in {r['drain_s']:.1f} s, "
            f"{r['pending_update_jobs']} jobs left; stored but never acknowledged: "
            f"{r['unacknowledged_turns_stored']} turns ({r['failed_turns_stored']} failed)."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("mixed", "slow-model", "kill"), default="mixed")
    parser.add_argument("--clients", type=int, default=50, help="mixed and kill")
    parser.add_argument("--ops", type=int, default=40, help="operations per client")
    parser.add_argument(
        "--engines", nargs="+", help="default: sqlite postgres (mixed), sqlite (the others)"
    )
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-inflight", type=int, default=8, help="serve's flag")
    parser.add_argument("--model-timeout", type=float, default=120.0, help="serve's flag")
    parser.add_argument("--duration", type=float, default=60.0, help="slow-model: seconds")
    parser.add_argument("--chat-clients", type=int, default=200, help="slow-model")
    parser.add_argument("--memory-clients", type=int, default=20, help="slow-model")
    parser.add_argument(
        "--model-delay", type=float, default=30.0, help="slow-model: s per response call"
    )
    parser.add_argument("--kill-after", type=float, default=20.0, help="kill: seconds")
    parser.add_argument(
        "--update-delay", type=float, default=2.0, help="kill: s per update-phase call"
    )
    parser.add_argument("--out", type=Path, help="default: bench/results/load_service[_X].json")
    args = parser.parse_args()
    if args.engines is None:
        args.engines = ["sqlite", "postgres"] if args.scenario == "mixed" else ["sqlite"]
    if args.out is None:
        suffix = "" if args.scenario == "mixed" else "_" + args.scenario.replace("-", "_")
        args.out = ROOT / "bench" / "results" / f"load_service{suffix}.json"
    delays = Delays(respond_s=args.model_delay if args.scenario == "slow-model" else 0.0)
    results = []
    with ScriptedOpenAIServer(scripted_model(delays)) as model, TemporaryDirectory() as scratch:
        for engine in args.engines:
            if args.scenario == "slow-model":
                result = run_slow_model(engine, args, model.base_url, Path(scratch))
            elif args.scenario == "kill":
                result = run_kill(engine, args, model.base_url, delays, Path(scratch))
            else:
                result = run_engine(engine, args, model.base_url, Path(scratch))
            results.append(result)
            print(json.dumps(result, indent=2), file=sys.stderr)
        # The server logs (each start's stdout and stderr) next to the JSON, for reading later.
        logs = args.out.with_suffix(".logs")
        logs.mkdir(parents=True, exist_ok=True)
        for log_file in Path(scratch).glob("*.serve.log"):
            shutil.copy(log_file, logs / log_file.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {"out": str(args.out)}
    args.out.write_text(json.dumps({"args": settings, "results": results}, indent=2))
    report = {"slow-model": markdown_slow_model, "kill": markdown_kill}.get(args.scenario, markdown)
    print(report(results, args))
    failed = [
        r["engine"]
        for r in results
        if (r.get("errors", 0) and args.scenario == "mixed")
        or r.get("memory_errors", 0)
        or r.get("lost_memories", 0)
        or r.get("lost_turns", 0)
        or r.get("missing_update_memories", 0)
    ]
    if failed:
        raise SystemExit(f"errors or lost writes on: {failed}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
