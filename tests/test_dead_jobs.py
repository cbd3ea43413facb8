"""An update phase that never jams: a job that fails `max_attempts` times is dead-lettered
with every reply it got, the user's later updates run at once, and a person retries or drops
it (library, CLI and REST API). Before this, one unreadable reply froze the user's memory:
the job was retried with backoff for ever and every later job waited behind it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agent_script import AgentScript, Req, op, update
from personavlm.agent import AgentConfig, Assistant
from personavlm.agent.jobs import drop_job
from personavlm.errors import ConflictError
from personavlm.memory import MemoryStore
from personavlm.models import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer
from server_fixtures import ADMIN_KEY, bearer, error_of, make_config, make_user_key, served

GARBAGE = "I am sorry, I cannot produce JSON today."


def poisoned(req: Req) -> str:
    """Update replies: garbage for the exchange that says 'poison', a memory otherwise."""
    if "poison" in req.all_text:
        return GARBAGE
    said = req.all_text.rsplit("turn-", 1)[-1].split()[0]
    return update([op("add", f"remembered turn-{said}")])


def talk(assistant: Assistant, user: str, count: int, *, first: int = 0) -> None:
    for index in range(first, first + count):
        text = "poison pill" if index == 1 else f"hello turn-{index}"
        assistant.respond(user, text, time=f"2024-03-02 10:{index:02d}")


def drain(assistant: Assistant, rounds: int = 5) -> None:
    for _ in range(rounds):  # each round is one more attempt of a failing job
        assistant.run_pending(ignore_backoff=True)


def test_a_job_failing_too_often_is_dead_and_the_queue_moves_on(
    store: MemoryStore, script: AgentScript, model: OpenAIChatModel
) -> None:
    script.update = poisoned
    with Assistant(store, model, AgentConfig(update="queue", max_attempts=3)) as assistant:
        talk(assistant, "ann", 6)
        drain(assistant)
        status = store.queue_status("ann")
        assert (status.pending, status.dead, status.done) == (0, 1, 5)
        [dead] = store.jobs("ann", status="dead")
        assert dead.attempts == 3 and "broke the protocol twice" in (dead.last_error or "")
        assert list(dead.replies) == [GARBAGE] * 6  # each attempt: the reply and its retry
        remembered = {m.content for m in store.list("ann", types=["semantic"])}
        assert remembered == {f"remembered turn-{i}" for i in (0, 2, 3, 4, 5)}
        # three attempts, no more: the dead job is not claimed again
        calls = len([k for k, _ in script.seen if k == "update"])
        drain(assistant)
        assert len([k for k, _ in script.seen if k == "update"]) == calls


def test_a_failed_jobs_report_keeps_the_calls_it_made(
    store: MemoryStore, script: AgentScript, model: OpenAIChatModel
) -> None:
    script.update = poisoned
    with Assistant(store, model, AgentConfig(update="queue", max_attempts=3)) as assistant:
        talk(assistant, "ann", 2)
        reports = assistant.run_pending(ignore_backoff=True)
    applied, failed = reports  # the turn before the poison, then the poison
    assert (applied.status, failed.status) == ("applied", "failed")
    # the reply and its one retry, both unreadable, each with its error and token counts
    assert [c.purpose for c in failed.calls] == ["update", "update retry"]
    assert all(c.error and c.completion_tokens > 0 for c in failed.calls)
    assert failed.changes == [] and failed.error and "broke the protocol" in failed.error


def test_a_dead_job_retried_after_the_model_is_fixed_applies(
    store: MemoryStore, script: AgentScript, model: OpenAIChatModel
) -> None:
    script.update = poisoned
    with Assistant(store, model, AgentConfig(update="queue", max_attempts=2)) as assistant:
        talk(assistant, "ann", 3)
        drain(assistant)
        [dead] = store.jobs("ann", status="dead")
        script.update = lambda req: update([op("add", "Ann was testing poison pills")])
        retried = store.retry_job("ann", dead.id)
        assert (retried.status, retried.attempts) == ("pending", 0)
        drain(assistant)
        assert store.queue_status("ann").dead == 0
        contents = {m.content for m in store.list("ann", types=["semantic"])}
        assert "Ann was testing poison pills" in contents
        with pytest.raises(ConflictError, match="only dead jobs"):
            store.retry_job("ann", dead.id)


def test_a_dropped_turn_job_is_a_skip_in_the_audit_log(
    store: MemoryStore, script: AgentScript, model: OpenAIChatModel
) -> None:
    script.update = poisoned
    with Assistant(store, model, AgentConfig(update="queue", max_attempts=1)) as assistant:
        talk(assistant, "ann", 3)
        drain(assistant)
        [dead] = store.jobs("ann", status="dead")
        dropped = drop_job(store, "ann", dead.id, actor="test")
        assert dropped.status == "dropped"
        skips = [e for e in store.export_user("ann")["events"] if e["op"] == "skip"]
        assert [e["turn_id"] for e in skips] == [dead.payload["user_turn"]]
        with pytest.raises(ConflictError):
            drop_job(store, "ann", dead.id)
        assert store.queue_status("ann").dead == 0


def test_dead_jobs_through_the_api_for_admin_and_own_user_only(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.update = poisoned
    config = make_config(tmp_path, model=f"openai:scripted@{server.base_url}", update="inline")
    with served(config) as url, httpx.Client(base_url=url, timeout=30) as http:
        _id, ann = make_user_key(http, "ann")
        _id, bob = make_user_key(http, "bob")
        for text in ("hello turn-0", "poison pill", "hello turn-2", "hello turn-3"):
            body = {"user": "ann", "messages": [{"role": "user", "content": text}]}
            assert http.post("/v1/chat/completions", json=body, headers=bearer(ann)).is_success
        listed = http.get("/v1/users/ann/jobs", params={"status": "dead"}, headers=bearer(ann))
        assert listed.status_code == 200, listed.text
        [dead] = listed.json()["data"]
        assert dead["kind"] == "turn" and dead["replies"][0] == GARBAGE
        other = http.post(f"/v1/users/ann/jobs/{dead['id']}/drop", headers=bearer(bob))
        assert other.status_code == 403
        dropped = http.post(f"/v1/users/ann/jobs/{dead['id']}/drop", headers=bearer(ADMIN_KEY))
        assert dropped.status_code == 200 and dropped.json()["status"] == "dropped"
        again = http.post(f"/v1/users/ann/jobs/{dead['id']}/retry", headers=bearer(ann))
        assert again.status_code == 409 and error_of(again)["code"] == "conflict"
        wrong = http.get("/v1/users/ann/jobs", params={"status": "zombie"}, headers=bearer(ann))
        assert wrong.status_code == 422


def test_dead_jobs_from_the_command_line(
    tmp_path: Path, script: AgentScript, model: OpenAIChatModel
) -> None:
    from typer.testing import CliRunner

    from personavlm.cli.app import app
    from personavlm.embed import HashingEmbedder

    db = tmp_path / "memory.db"
    script.update = poisoned
    with (
        MemoryStore.open(db, embedder=HashingEmbedder()) as store,
        Assistant(store, model, AgentConfig(update="queue", max_attempts=1)) as assistant,
    ):
        talk(assistant, "ann", 2)
        drain(assistant)
    runner = CliRunner()
    env = {"PERSONAVLM_DB": str(db), "PERSONAVLM_EMBEDDER": "hashing"}
    listed = runner.invoke(app, ["jobs", "list", "--user", "ann", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    dead = [j for j in json.loads(listed.output) if j["status"] == "dead"]
    assert len(dead) == 1
    status = runner.invoke(app, ["status"], env=env)
    assert "1 dead" in status.output and f"dead job {dead[0]['id']}" in status.output
    retried = runner.invoke(app, ["jobs", "retry", str(dead[0]["id"]), "--user", "ann"], env=env)
    assert retried.exit_code == 0 and "pending again" in retried.output
    refused = runner.invoke(app, ["jobs", "drop", str(dead[0]["id"]), "--user", "ann"], env=env)
    assert refused.exit_code == 2 and "only dead jobs" in refused.output


def test_an_outage_is_no_strike_the_job_waits_however_often_it_fails(
    store: MemoryStore, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    from personavlm.testing import ScriptedResponse

    script.update = lambda req: ScriptedResponse(status=503)  # overloaded, every time
    model = OpenAIChatModel("scripted", server.base_url, max_retries=0)
    with model, Assistant(store, model, AgentConfig(update="queue", max_attempts=2)) as assistant:
        talk(assistant, "ann", 1)
        drain(assistant, rounds=4)  # four failed attempts, twice max_attempts
        status = store.queue_status("ann")
        assert (status.pending, status.failed, status.dead) == (1, 1, 0)
        [job] = store.jobs("ann")
        assert job.attempts == 4 and "overloaded" in (job.last_error or "")
