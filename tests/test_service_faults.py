"""The service against slow, hostile and failing models, and against users deleted mid-way.

Each test is one defect found by trying the service as an attacker and a busy user would
(issue 14); each fails on the code before the fix. Real HTTP on loopback: uvicorn in a
thread, the scripted OpenAI-compatible server as the model, scripted to be slow, to drip
bytes, to fail, or to answer with text a store must not take as it is.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_script import AgentScript, Req, answer
from personavlm.agent import AgentConfig, Assistant
from personavlm.agent.worker import BackgroundWorker, Claimant, Worker, release_orphaned_claims
from personavlm.embed import HashingEmbedder
from personavlm.errors import ConflictError, ModelError, UserGoneError
from personavlm.memory import MemoryStore
from personavlm.models.openai import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse
from server_fixtures import (
    ADMIN_KEY,
    bearer,
    error_of,
    make_config,
    make_user_key,
    png_bytes,
    served,
)

# A client timeout far above what any answer here should take: a route that is blocked
# shows up as a timeout (a failure), never as a slow pass.
PATIENCE_S = 20.0


@contextmanager
def chat_service(
    tmp_path: Path, server: ScriptedOpenAIServer, **overrides: Any
) -> Iterator[tuple[httpx.Client, str]]:
    """The service with the scripted model; yields (client, Ann's key)."""
    values: dict[str, Any] = {"model": f"openai:scripted@{server.base_url}", "update": "inline"}
    values.update(overrides)
    with (
        served(make_config(tmp_path, **values)) as url,
        httpx.Client(base_url=url, timeout=PATIENCE_S) as http,
    ):
        _key_id, key = make_user_key(http, "ann")
        yield http, key


def say(http: httpx.Client, key: str, text: str, user: str = "ann") -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        headers=bearer(key),
        json={"model": "personavlm", "user": user, "messages": [{"role": "user", "content": text}]},
    )


def in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(work()), daemon=True)
    thread.start()
    return thread, results


# --------------------------------------------------------------------- 1. never stalls


def test_chats_beyond_the_cap_are_refused_at_once_and_other_routes_keep_answering(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    release = threading.Event()
    script.respond = lambda req: (release.wait(PATIENCE_S), answer("late"))[1]
    with chat_service(tmp_path, server, max_inflight=2) as (http, key):
        waiting = [in_thread(lambda: say(http, key, "hi")) for _ in range(2)]
        _wait_until(lambda: len(server.requests) >= 2)  # both slots are on the model now
        refused = say(http, key, "one too many")
        assert refused.status_code == 429, refused.text
        assert error_of(refused)["code"] == "model_busy"
        assert int(refused.headers["Retry-After"]) >= 1
        # refused before the body is read: a body the route would reject (422) is not even
        # looked at; the key still is (401 first)
        unread = http.post("/v1/chat/completions", headers=bearer(key), content=b"{not json")
        assert (unread.status_code, error_of(unread)["code"]) == (429, "model_busy")
        assert say(http, "pvlm_wrong", "hi").status_code == 401
        # everything else still answers while every chat slot waits on the model
        assert http.get("/healthz").json()["status"] == "ok"
        assert http.get("/v1/users/ann/memories", headers=bearer(key)).status_code == 200
        assert http.get("/v1/users", headers=bearer(ADMIN_KEY)).status_code == 200
        release.set()
        for thread, results in waiting:
            thread.join(PATIENCE_S)
            assert results[0].status_code == 200, results[0].text
        assert say(http, key, "room again").status_code == 200


def test_a_client_that_disconnects_frees_its_slot_and_keeps_its_message(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: ScriptedResponse(text=answer("never read"), delay_s=30)
    with chat_service(tmp_path, server, max_inflight=1) as (http, key):
        url = str(http.base_url)
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url, timeout=1.0) as quick:
            say(quick, key, "are you there?")
        # the cancelled turn gives its slot back long before the model's 30 s
        script.respond = lambda req: answer("yes")
        _wait_until(lambda: say(http, key, "again").status_code == 200, timeout_s=10)
        turns = http.get("/v1/users/ann/turns", headers=bearer(key)).json()["data"]
        kept = [t for t in turns if t["text"] == "are you there?"]
        assert [t["status"] for t in kept] == ["failed"]


# --------------------------------------------------------------------- 5. one deadline


@pytest.mark.parametrize(
    "slow",
    [
        pytest.param(ScriptedResponse(text=answer("late"), delay_s=30), id="silent"),
        pytest.param(ScriptedResponse(text=answer("x" * 200), drip_s=0.2), id="drip"),
    ],
)
def test_the_model_deadline_covers_slow_and_dripping_servers_and_keeps_the_message(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer, slow: ScriptedResponse
) -> None:
    script.respond = lambda req: slow
    with chat_service(tmp_path, server, model_timeout_s=2.0) as (http, key):
        started = time.monotonic()
        failed = say(http, key, "what did I say yesterday?")
        took = time.monotonic() - started
        assert failed.status_code == 502, failed.text
        error = error_of(failed)
        assert error["code"] == "model_error" and "budget" in error["message"]
        assert "kept as turn" in error["message"]
        assert took < PATIENCE_S  # the drip alone would take 40 s, the delay 30 s
        turns = http.get("/v1/users/ann/turns", headers=bearer(key)).json()["data"]
        assert [(t["text"], t["status"]) for t in turns] == [
            ("what did I say yesterday?", "failed")
        ]


def test_a_model_failing_outright_is_a_502_and_the_message_is_kept(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: ScriptedResponse(status=400, body={"error": {"message": "no"}})
    with chat_service(tmp_path, server) as (http, key):
        failed = say(http, key, "remember that I like tea")
        assert failed.status_code == 502 and error_of(failed)["code"] == "model_error"
        search = http.post("/v1/users/ann/search", headers=bearer(key), json={"query": "tea"})
        assert any("tea" in h["memory"]["content"] for h in search.json()["data"])


# --------------------------------------------------------------------- 9. model's text


def test_an_answer_too_long_or_with_nul_and_surrogates_is_stored_repaired_with_notes(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    wild = "ok\x00" + "\ud800" + "y" * 25_000
    script.respond = lambda req: ScriptedResponse(
        body=_completion(json.dumps({"think": "t", "action": "answer", "answer": wild}), req)
    )
    with chat_service(tmp_path, server) as (http, key):
        said = say(http, key, "tell me everything")
        assert said.status_code == 200, said.text
        body = said.json()
        content = body["choices"][0]["message"]["content"]
        assert "\x00" not in content and len(content) == 20_000
        notes = body["personavlm"]["trace"]["notes"]
        assert any("NUL" in n for n in notes) and any("cut to 20000" in n for n in notes)
        assert "\ufffd" in content  # the unpaired surrogate, replaced where the reply came in
        turns = http.get("/v1/users/ann/turns", headers=bearer(key)).json()["data"]
        assert [t["role"] for t in turns] == ["user", "assistant"]


def _completion(content: str, req: Req) -> dict[str, Any]:
    from personavlm.testing import chat_completion

    return chat_completion(content, req.body)


# --------------------------------------------------------------------- 4. overlapping chats


def test_overlapping_chats_of_one_user_are_both_answered_and_kept_in_finishing_order(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    first_asked = threading.Event()

    def respond(req: Req) -> str | ScriptedResponse:
        if "slow question" in req.query:
            first_asked.set()
            return ScriptedResponse(text=answer("slow answer"), delay_s=1.5)
        return answer("quick answer")

    script.respond = respond
    with chat_service(tmp_path, server, max_inflight=4) as (http, key):
        thread, results = in_thread(lambda: say(http, key, "slow question"))
        first_asked.wait(PATIENCE_S)
        quick = say(http, key, "quick question")
        thread.join(PATIENCE_S)
        assert quick.status_code == 200, quick.text
        assert results[0].status_code == 200, results[0].text  # no 409 after the answer
        turns = http.get("/v1/users/ann/turns", headers=bearer(key)).json()["data"]
        assert [t["text"] for t in turns] == [
            "quick question",
            "quick answer",
            "slow question",
            "slow answer",
        ]
        times = [t["time"] for t in turns]
        assert times == sorted(times)


def test_with_explicit_times_one_users_turns_run_one_at_a_time(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    inside = threading.Event()

    def respond(req: Req) -> str | ScriptedResponse:
        inside.set()
        return ScriptedResponse(text=answer("done"), delay_s=0.5)

    script.respond = respond
    store = MemoryStore.open(tmp_path / "m.db", embedder=HashingEmbedder())
    model = OpenAIChatModel("scripted", server.base_url)
    with store, model, Assistant(store, model, AgentConfig(update="queue")) as assistant:
        later, results = in_thread(
            lambda: assistant.respond("ann", "later", time="2024-03-02 10:05")
        )
        inside.wait(PATIENCE_S)
        # the earlier time waits for the later one's turn and is then refused before any
        # model call, not after
        calls_before = len(server.requests)
        with pytest.raises(ConflictError, match="before user 'ann'"):
            assistant.respond("ann", "earlier", time="2024-03-02 10:00")
        later.join(PATIENCE_S)
        assert results and len(server.requests) == calls_before


# --------------------------------------------------------------------- 3. deletion is final


def test_a_chat_running_while_its_user_is_deleted_stores_nothing_and_answers_410(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    box: dict[str, Any] = {}

    def respond(req: Req) -> str:
        deleted = box["http"].delete("/v1/users/ann", headers=bearer(ADMIN_KEY))
        assert deleted.status_code == 200, deleted.text
        return answer("too late")

    script.respond = respond
    with chat_service(tmp_path, server) as (http, key):
        box["http"] = http
        gone = say(http, key, "hello", user="ann")
        assert gone.status_code == 410, gone.text
        assert error_of(gone)["code"] == "user_gone"
        admin_try = http.get("/v1/users/ann/turns", headers=bearer(ADMIN_KEY))
        assert admin_try.status_code == 404  # not recreated
    with sqlite3.connect(tmp_path / "memory.db") as db:
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM users WHERE id = 'ann'").fetchone()[0] == 0


@pytest.mark.parametrize(
    "store_location",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_an_assistant_turn_racing_a_deletion_raises_user_gone(
    open_store: Any, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    store = open_store()
    model = OpenAIChatModel("scripted", server.base_url)
    with store, model, Assistant(store, model, AgentConfig(update="queue")) as assistant:
        assistant.respond("ann", "first")

        def respond(req: Req) -> str:
            store.delete_user("ann")
            return answer("too late")

        script.respond = respond
        with pytest.raises(UserGoneError):
            assistant.respond("ann", "second")
        assert not store.has_user("ann")
        script.respond = lambda req: answer("welcome back")
        assistant.respond("ann", "a new start")  # a new request may make the user again
        assert [t.text for t in store.turns("ann")] == ["a new start", "welcome back"]


# --------------------------------------------------------------------- 2. the worker


def test_the_worker_survives_a_user_deleted_during_their_job_and_serves_others(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    store = MemoryStore.open(tmp_path / "m.db", embedder=HashingEmbedder())
    model = OpenAIChatModel("scripted", server.base_url)

    def update(req: Req) -> str:
        if "doomed" in req.all_text:
            store.delete_user("ann")
        from agent_script import update as no_ops

        return no_ops()

    script.update = update
    with store, model, Assistant(store, model, AgentConfig(update="queue")) as assistant:
        assistant.respond("ann", "doomed message")
        assistant.respond("bo", "fine message")
        background = BackgroundWorker(Worker(store, assistant.worker.phase), poll_s=0.05)
        background.start()
        try:
            _wait_until(lambda: store.queue_status().pending == 0)
            assert background.alive and background.problem is None
        finally:
            background.stop()
        assert store.queue_status("bo").done == 1 and not store.has_user("ann")


def test_a_crashing_worker_loop_is_restarted_and_reported(tmp_path: Path) -> None:
    store = MemoryStore.open(tmp_path / "m.db", embedder=HashingEmbedder())
    crashes = iter([RuntimeError("database vanished")])

    class Flaky(Worker):
        def run_once(self, *args: Any, **kwargs: Any) -> Any:
            crash = next(crashes, None)
            if crash is not None:
                raise crash
            return super().run_once(*args, **kwargs)

    with store:
        background = BackgroundWorker(Flaky(store, phase=None), poll_s=0.05)  # type: ignore[arg-type]
        background.start()
        try:
            _wait_until(lambda: background.restarts == 1)
            assert background.alive
            assert "database vanished" in (background.problem or "")
        finally:
            background.stop()


# --------------------------------------------------------------------- 6. leases


def test_claims_of_a_dead_worker_on_this_host_are_freed_at_start(tmp_path: Path) -> None:
    store = MemoryStore.open(tmp_path / "m.db", embedder=HashingEmbedder())
    with store:
        with store.transaction("ann") as tx:
            tx.users.ensure("ann")
            tx.queue.enqueue("ann", "turn", {"v": 1, "user_turn": 1, "assistant_turn": 2})
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        claimant = Claimant.name().split("|")
        claimant[2] = dead.stdout.strip()
        assert store.claim_job("|".join(claimant), lease_s=600) is not None
        assert store.claim_job("another") is None  # held for 10 minutes...
        live = store.claim_job("x", user_id="nobody")
        assert live is None
        assert release_orphaned_claims(store) == 1  # ...unless its claimant is gone
        job = store.claim_job("another")
        assert job is not None and job.attempts == 2


def test_claims_of_live_or_foreign_claimants_are_kept(tmp_path: Path) -> None:
    assert not Claimant.is_gone(Claimant.name())  # this very process
    assert not Claimant.is_gone("other-host|boot|1|abc")  # another host: its lease decides
    assert not Claimant.is_gone("old-style:123:abc")
    here = Claimant.name().split("|")
    assert Claimant.is_gone("|".join([here[0], "another-boot", here[2], here[3]]))


# --------------------------------------------------------------------- 7. ids and caches


def test_a_recreated_user_never_sees_another_handles_stale_vectors(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = MemoryStore.open(path, embedder=HashingEmbedder())
    second = MemoryStore.open(path, embedder=HashingEmbedder())  # another process's cache
    with first, second:
        old = first.add("ann", "semantic", "Ann's cat is called Tom")
        assert [h.memory.id for h in first.search("ann", "cat Tom")] == [old.id]
        second.delete_user("ann")
        new = second.add("ann", "semantic", "Ann likes sailing")
        assert new.id > old.id  # ids are never reused
        hits = first.search("ann", "cat Tom sailing")
        assert [h.memory.id for h in hits] == [new.id]


# --------------------------------------------------------------------- 10. forgetting


def test_forgetting_leaves_nothing_readable_and_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "private" / "m.db"
    store = MemoryStore.open(path, embedder=HashingEmbedder())
    with store:
        store.add("ann", "semantic", "the secret word is zanzibarquux")
        picture = store.store_image(png_bytes((1, 2, 3)))
        blob = store.blobs.root / picture.id[:2] / picture.id
        for made in (store.blobs.root, blob.parent, blob):
            assert stat.S_IMODE(made.stat().st_mode) & 0o077 == 0, made
        store.delete_user("ann")
        for file in path.parent.iterdir():
            if file.is_file():
                assert b"zanzibarquux" not in file.read_bytes(), file.name
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, oct(mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert os.path.getsize(f"{path}-wal") == 0 if os.path.exists(f"{path}-wal") else True


# --------------------------------------------------------------------- 11. keys


def test_keys_keep_only_a_short_prefix_and_the_last_admin_key_stays(tmp_path: Path) -> None:
    with served(make_config(tmp_path)) as url, httpx.Client(base_url=url) as http:
        _key_id, secret = make_user_key(http, "ann")
        listed = http.get("/v1/users/ann/keys", headers=bearer(ADMIN_KEY)).json()["data"]
        assert [k["prefix"] for k in listed] == [secret[:8]]
        with sqlite3.connect(tmp_path / "memory.db") as db:
            stored = [r[0] for r in db.execute("SELECT prefix FROM api_keys")]
            (admin_id,) = db.execute("SELECT id FROM api_keys WHERE user_id IS NULL").fetchone()
        assert all(len(p) <= 8 for p in stored) and ADMIN_KEY[:8] in stored
        refused = http.delete(f"/v1/keys/{admin_id}", headers=bearer(ADMIN_KEY))
        assert refused.status_code == 409, refused.text
        assert "last live admin key" in error_of(refused)["message"]
        assert http.get("/v1/users", headers=bearer(ADMIN_KEY)).status_code == 200


# --------------------------------------------------------------------- helpers


def _wait_until(condition: Any, *, timeout_s: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


def test_model_errors_carry_the_kept_turn() -> None:
    assert ModelError("x").kept_turn_id is None


def test_retry_after_grows_with_the_turns_running_before_any_has_finished() -> None:
    import asyncio

    from personavlm.server.chat_runner import ChatRunner
    from personavlm.server.errors import ApiError

    runner = ChatRunner(max_inflight=1, model_timeout_s=120)
    release = threading.Event()
    started = threading.Event()

    async def one_turn() -> None:
        await runner.run(lambda: (started.set(), release.wait(PATIENCE_S)))

    thread = threading.Thread(target=lambda: asyncio.run(one_turn()), daemon=True)
    thread.start()
    try:
        assert started.wait(PATIENCE_S)
        with pytest.raises(ApiError) as early:
            runner.refuse_if_full()
        assert early.value.headers["Retry-After"] in ("1", "2")  # nothing known yet
        with runner._lock:  # the running turn started 40 s ago (a 30 s model, say)
            (number,) = runner._running_since
            runner._running_since[number] -= 40
        waits = set()
        for _ in range(20):
            with pytest.raises(ApiError) as late:
                runner.refuse_if_full()
            waits.add(int(late.value.headers["Retry-After"]))
        assert min(waits) >= 20 and max(waits) <= 60 and len(waits) > 1  # spread, not lock-step
    finally:
        release.set()
        thread.join(PATIENCE_S)
        runner.close()
