"""The update phase and its queue: failures stay queued and are reported, a restart loses
nothing, background mode keeps updates off the response path, the tags protocol's reference
calls, session-close consolidation, undo of what the agent changed, image inputs."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest

from agent_script import TRAITS, AgentScript, Req, answer, op, update
from bad_pictures import huge_png, picture, truncated
from helpers import write_png
from personavlm.agent import AgentConfig, Assistant, RetrieveStep, Worker
from personavlm.agent.calls import CallSettings
from personavlm.agent.protocol import Protocol
from personavlm.agent.update import UpdatePhase
from personavlm.embed import HashingEmbedder
from personavlm.errors import ConfigError, ValidationError
from personavlm.memory import MemoryStore
from personavlm.memory.records import MemoryStatus
from personavlm.models import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse


def refusing(_: Req) -> ScriptedResponse:
    return ScriptedResponse(status=400, body={"error": {"message": "model overloaded"}})


def test_failed_update_stays_queued_is_reported_and_catches_up(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    script.update = refusing
    assistant = Assistant(store, model)
    first = assistant.respond("ann", "I drink Sprite.", time="2024-03-04 10:00")
    assert first.answer == "OK."  # the turn is answered and stored all the same
    [failed] = first.trace.updates
    assert failed.status == "failed" and "model overloaded" in (failed.error or "")
    status = store.queue_status("ann")
    assert (status.pending, status.failed) == (1, 1)
    assert "model overloaded" in status.last_errors[0][2]

    second = assistant.respond("ann", "And tea.", time="2024-03-04 10:01")
    assert [u.status for u in second.trace.updates] == ["failed", "queued"]
    assert "waits behind failed job" in (second.trace.updates[1].error or "")

    def recovered(req: Req) -> str:
        exchange = req.all_text.split("## The exchange")[-1]
        drink = "Sprite" if "Sprite" in exchange else "tea"
        return update([op("ADD", f"The user drinks {drink}.")])

    script.update = recovered
    reports = assistant.run_pending("ann", ignore_backoff=True)
    assert [(r.job_id, r.status) for r in reports] == [(1, "applied"), (2, "applied")]
    assert store.queue_status("ann").pending == 0
    assert [m.content for m in store.list("ann", types=["semantic"])] == [
        "The user drinks Sprite.",
        "The user drinks tea.",
    ]


def test_pending_update_survives_a_restart(tmp_path: Path, model: OpenAIChatModel) -> None:
    path = tmp_path / "memory.db"
    with MemoryStore.open(path, embedder=HashingEmbedder()) as store:
        worker_free = Assistant(store, model, AgentConfig(update="background"))
        worker_free.close()  # stop the worker before it could run anything
        worker_free.respond("ann", "I drink Sprite.", time="2024-03-04 10:00")
    with MemoryStore.open(path, embedder=HashingEmbedder()) as store:
        assert store.queue_status("ann").pending == 1
        [report] = Assistant(store, model).run_pending()
        assert report.status == "applied"
        assert store.personality_readings("ann")[0].turn_id == store.turns("ann")[0].id


def test_a_dead_workers_claim_expires_and_another_worker_takes_the_job(
    store: MemoryStore, model: OpenAIChatModel
) -> None:
    assistant = Assistant(store, model, AgentConfig(update="background"))
    assistant.close()
    assistant.respond("ann", "hello", time="2024-03-04 10:00")
    phase = UpdatePhase(store, model, Protocol.JSON, CallSettings())
    dead = store.claim_job("dead-worker", lease_s=0.2)  # claimed, then its process "died"
    assert dead is not None
    live = Worker(store, phase, name="live")
    assert live.run_once() is None  # the lease still holds
    time.sleep(1.1)  # storage times have one-second resolution
    report = live.run_once()
    assert report is not None and report.status == "applied" and report.job_id == dead.id


def test_background_updates_stay_off_the_response_path(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    release = threading.Event()

    def slow_update(req: Req) -> str:
        release.wait(10)
        return update([op("ADD", "The user drinks Sprite.")])

    script.update = slow_update
    with Assistant(store, model, AgentConfig(update="background")) as assistant:
        result = assistant.respond("ann", "I drink Sprite.", time="2024-03-04 10:00")
        assert [(u.kind, u.status) for u in result.trace.updates] == [("turn", "queued")]
        assert store.list("ann", types=["semantic"]) == []  # respond did not wait
        release.set()
        deadline = time.monotonic() + 10
        while store.queue_status("ann").pending and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.queue_status("ann").pending == 0
    assert [m.content for m in store.list("ann", types=["semantic"])] == ["The user drinks Sprite."]


def test_agent_changes_are_in_history_and_can_be_undone(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    script.update = lambda req: (
        update([op("UPDATE", "The user drinks Coca-Cola.", req.memory_id("Sprite"))])
        if "Coca-Cola" in req.all_text
        else update([op("ADD", "The user drinks Sprite.")])
    )
    assistant = Assistant(store, model)
    assistant.respond("ann", "I drink Sprite.", time="2024-03-04 10:00")
    [sprite] = store.list("ann", types=["semantic"])
    assistant.respond("ann", "Now I drink Coca-Cola.", time="2024-03-18 10:00")
    change = store.history("ann", sprite.id)[-1]
    assert change.actor == "agent" and change.op.value == "update"
    store.undo("ann", change.id)
    assert store.get("ann", sprite.id).status is MemoryStatus.ACTIVE
    assert [m.content for m in store.list("ann", types=["semantic"])] == ["The user drinks Sprite."]


# --------------------------------------------------------------------- tags protocol


def tags_respond(req: Req) -> str:
    if req.steps_so_far == 0 and "What is my dog" in req.query:
        return (
            "<think>I need the dog's name.</think><retrieve>\n"
            '"keywords": "dog name"\n"start_time": null\n"end_time": "2024-03-31 23:59"\n'
            "</retrieve>"
        )
    return "<think>Known.</think><answer>Your dog is Bobby.</answer>"


def test_tags_protocol_uses_the_reference_calls(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    script.respond = tags_respond
    script.personality = lambda req: "\n".join(
        f'"{t}": {4 if t == "openness" else 3}' for t in TRAITS
    )
    script.semantic = lambda req: (
        '"reason": a durable fact\n"decision": true\n'
        '"content": The user\'s dog is called Bobby\n"keywords": dog, Bobby'
        if "Bobby" in req.all_text
        else '"reason": small talk\n"decision": false\n"content": \n"keywords": '
    )
    script.episodic = lambda req: (
        '"topic_summary": The user talked about her dog Bobby.\n'
        '"keywords": dog, Bobby\n"source_dialog_indices": 0'
    )
    script.core = lambda req: '"name": "Ann"\n"pet": "dog Bobby"'
    script.procedural = lambda req: '"walk": "Every morning, the user walks Bobby."'
    assistant = Assistant(store, model, AgentConfig(protocol="tags"))

    first = assistant.respond("ann", "My dog is called Bobby.", time="2024-03-04 10:00")
    assert [c.purpose for c in first.trace.all_calls()] == ["step", "personality", "semantic"]
    assert store.personality("ann").traits.openness > 3
    closed = assistant.close_session("ann")
    assert [c.purpose for c in closed[0].calls] == ["episodic", "core", "procedural"]
    assert {(m.key, m.content) for m in store.list("ann", types=["core"])} == {
        ("name", "Ann"),
        ("pet", "dog Bobby"),
    }
    [walk] = store.list("ann", types=["procedural"])
    assert walk.content == "Every morning, the user walks Bobby."

    second = assistant.respond("ann", "What is my dog called?", time="2024-03-05 10:00")
    assert second.answer == "Your dog is Bobby."
    step = next(s for s in second.trace.steps if isinstance(s, RetrieveStep))
    assert step.keywords == "dog name" and step.end == "2024-03-31 23:59:00"
    assert any("Bobby" in h.content for h in step.hits)
    retrieval_turn = [r for k, r in script.seen if k == "respond"][-1].last
    assert "\nRetrieved Semantic Memory:\nTime: 2024-03-04 10:00 (Monday)\n" in retrieval_turn
    assert "Memory: The user's dog is called Bobby" in retrieval_turn


def test_session_close_removes_and_keeps_keys(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    store.add("ann", "core", "Paris", key="city", time="2024-03-01 09:00")
    store.add("ann", "core", "nurse", key="job", time="2024-03-01 09:00")
    script.consolidate = lambda req: json.dumps(
        {
            "core": [{"key": "city", "value": None}, {"key": "job", "value": "nurse"}],
            "procedural": [],
        }
    )
    assistant = Assistant(store, model)
    assistant.respond("ann", "I moved out of Paris.", time="2024-03-04 10:00")
    [report] = assistant.close_session("ann")
    assert [(c.op, c.memory_type) for c in report.changes] == [("invalidate", "core")]
    assert [m.key for m in store.list("ann", types=["core"])] == ["job"]
    assert assistant.close_session("ann") == []  # a session is closed once


# --------------------------------------------------------------------- images


def test_images_as_path_bytes_and_data_url_are_one_stored_image(
    store: MemoryStore, model: OpenAIChatModel, tmp_path: Path
) -> None:
    photo = write_png(tmp_path / "bobby.png")
    data = photo.read_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    result = Assistant(store, model).respond(
        "ann", "Look!", images=[photo, data, url], time="2024-03-04 10:00"
    )
    ids = result.exchange.user_turn.image_ids
    assert len(ids) == 3 and len(set(ids)) == 1
    assert store.images(ids[:1])[0].size == len(data)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"GIF? no, plain text", "not a PNG"),
        ("data:text/plain;base64,aGVsbG8=", "not an image type"),
        ("data:image/png;base64,@@@", "invalid base64"),
        ("/no/such/picture.png", "image file not found"),
        pytest.param(
            truncated(picture("PNG", size=(64, 64))), "not a valid PNG picture", id="cut-png"
        ),
        pytest.param(huge_png(7_000, 7_000), "the limit is 40,000,000 pixels", id="49-megapixels"),
    ],
)
def test_bad_images_are_refused_before_any_model_call(
    store: MemoryStore,
    model: OpenAIChatModel,
    server: ScriptedOpenAIServer,
    source: object,
    message: str,
) -> None:
    with pytest.raises(ValidationError, match=message):
        Assistant(store, model).respond("ann", "Look!", images=[source], time="2024-03-04 10:00")  # type: ignore[list-item]
    assert server.requests == []
    assert not store.has_user("ann")


def test_time_going_backwards_is_refused_before_any_model_call(
    store: MemoryStore, model: OpenAIChatModel, server: ScriptedOpenAIServer
) -> None:
    assistant = Assistant(store, model)
    assistant.respond("ann", "hi", time="2024-03-04 10:00")
    calls = len(server.requests)
    with pytest.raises(Exception, match="conversation time only moves forward"):
        assistant.respond("ann", "earlier", time="2024-03-01 10:00")
    assert len(server.requests) == calls


def test_first_message_needs_no_memory(
    model: OpenAIChatModel, script: AgentScript, store: MemoryStore
) -> None:
    script.respond = lambda req: (
        json.dumps(
            {
                "think": "t",
                "action": "retrieve",
                "answer": None,
                "keywords": "anything",
                "start_time": None,
                "end_time": None,
            }
        )
        if req.steps_so_far == 0
        else answer("Hello!")
    )
    result = Assistant(store, model).respond("new", "Hi there", time="2024-03-04 10:00")
    step = next(s for s in result.trace.steps if isinstance(s, RetrieveStep))
    assert step.hits == ()
    assert result.answer == "Hello!"


def test_one_users_failing_update_does_not_hold_up_other_users(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    script.update = lambda req: refusing(req) if "ann" in req.all_text else update()
    assistant = Assistant(store, model, AgentConfig(update="queue"))
    assistant.respond("ann", "I am ann", time="2024-03-04 10:00")
    assistant.respond("ann", "still ann", time="2024-03-04 10:01")
    assistant.respond("bo", "I am bo", time="2024-03-04 10:00")
    reports = assistant.run_pending()
    assert [(r.user_id, r.status) for r in reports] == [("ann", "failed"), ("bo", "applied")]
    assert store.queue_status("ann").pending == 2  # the second waits behind the first


def test_imported_exchange_with_an_empty_reply_is_recorded(
    store: MemoryStore, model: OpenAIChatModel
) -> None:
    exchange, reports = Assistant(store, model).record(
        "ann", "Here is my dog.", "", time="2024-03-04 10:00", ext_id="s0t0"
    )
    assert exchange is not None and exchange.assistant_turn.text == ""
    assert [r.status for r in reports] == ["applied"]
    again, _ = Assistant(store, model).record(
        "ann", "Here is my dog.", "", time="2024-03-04 10:00", ext_id="s0t0"
    )
    assert again is None  # idempotent by id


# --------------------------------------------------------------------- limits per job


def test_a_turn_update_writes_at_most_16_operations_of_at_most_2000_characters(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    flood = [op("ADD", f"The user owns stamp number {i}.") for i in range(20)]
    flood[3] = op("ADD", "The user " + "really " * 400 + "likes stamps.")  # 2,822 characters
    script.update = lambda req: update(flood)
    result = Assistant(store, model).respond("ann", "I collect stamps.", time="2024-03-04 10:00")
    [report] = result.trace.updates
    assert report.status == "applied"
    stored = [m.content for m in store.list("ann", types=["semantic"], limit=100)]
    assert stored == [f"The user owns stamp number {i}." for i in range(16) if i != 3]
    adds = [c for c in report.changes if c.op == "add"]
    assert [c.memory_id for c in adds] == [m.id for m in store.list("ann", types=["semantic"])]
    [too_long] = [c for c in report.changes if "per memory" in (c.note or "")]
    assert too_long.op == "noop"
    assert too_long.note == "content is 2,822 characters; the limit is 2,000 per memory; dropped"
    assert too_long.content is not None and len(too_long.content) == 2_003  # cut, with "..."
    over = [c for c in report.changes if "per turn update" in (c.note or "")]
    assert [c.content for c in over] == [f"The user owns stamp number {i}." for i in range(16, 20)]
    assert {(c.op, c.note) for c in over} == {
        ("noop", "over the limit of 16 operations per turn update; dropped")
    }
    assert len(report.changes) == 20  # every proposal accounted for


def test_the_turn_limits_are_parameters_and_noops_do_not_count(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    proposals = [op("NOOP"), op("ADD", "The user has a cat."), op("NOOP"),
                 op("ADD", "The user has a dog."), op("ADD", "The user has a fish.")]  # fmt: skip
    script.update = lambda req: update(proposals)
    Assistant(store, model, AgentConfig(update="queue")).respond(
        "ann", "Pets!", time="2024-03-04 10:00"
    )
    phase = UpdatePhase(store, model, Protocol.JSON, CallSettings(), max_turn_ops=2)
    report = Worker(store, phase, name="w").run_once()
    assert report is not None and report.status == "applied"
    assert [m.content for m in store.list("ann", types=["semantic"])] == [
        "The user has a cat.",
        "The user has a dog.",
    ]
    assert [(c.op, c.content) for c in report.changes if "limit of 2" in (c.note or "")] == [
        ("noop", "The user has a fish.")
    ]
    for bad in ({"max_turn_ops": 0}, {"max_session_ops": 0}, {"max_memory_chars": -1}):
        with pytest.raises(ConfigError, match="must be at least 1"):
            UpdatePhase(store, model, Protocol.JSON, CallSettings(), **bad)


def test_a_session_update_is_capped_and_drops_long_summaries_and_values(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    script.episodic = lambda req: json.dumps(
        {
            "topics": [{"summary": f"Topic {i}.", "keywords": [], "turns": [0]} for i in range(3)]
            + [{"summary": "Long " * 30, "keywords": [], "turns": [0]}]
        }
    )
    script.consolidate = lambda req: json.dumps(
        {
            "core": [{"key": f"fact {i}", "value": f"value {i}"} for i in range(3)]
            + [{"key": "essay", "value": "word " * 30}],
            "procedural": [{"key": f"habit {i}", "value": f"Habit {i}."} for i in range(7)],
        }
    )
    assistant = Assistant(store, model, AgentConfig(update="queue"))
    assistant.respond("ann", "Let me tell you things.", time="2024-03-04 10:00")
    assistant.close_session("ann")
    phase = UpdatePhase(
        store, model, Protocol.JSON, CallSettings(), max_session_ops=8, max_memory_chars=100
    )
    worker = Worker(store, phase, name="w")
    assert worker.run_once() is not None  # the turn job
    report = worker.run_once()
    assert report is not None and (report.kind, report.status) == ("session", "applied")
    notes = [(c.memory_type, c.note) for c in report.changes if c.op == "noop"]
    assert ("episodic", "content is 149 characters; the limit is 100 per memory; dropped") in notes
    assert ("core", "content is 149 characters; the limit is 100 per memory; dropped") in notes
    # Procedural keeps 5 per close (habits 5 and 6 dropped, now with a note), and the job
    # writes 8 of the 3 + 3 + 5 operations left: habits 2, 3 and 4 go over the limit.
    kept = [c for c in report.changes if c.op != "noop"]
    assert [c.content for c in kept] == [
        "Topic 0.", "Topic 1.", "Topic 2.", "fact 0: value 0", "fact 1: value 1",
        "fact 2: value 2", "habit 0: Habit 0.", "habit 1: Habit 1.",
    ]  # fmt: skip
    over = [c.content for c in report.changes if "per session update" in (c.note or "")]
    assert over == ["habit 2: Habit 2.", "habit 3: Habit 3.", "habit 4: Habit 4."]
    kept_5 = [c.content for c in report.changes if "entries kept per session" in (c.note or "")]
    assert kept_5 == ["habit 5: Habit 5.", "habit 6: Habit 6."]
    episodic = [m.content for m in store.list("ann", types=["episodic"], limit=100)]
    assert [c for c in episodic if c.startswith("Topic")] == ["Topic 0.", "Topic 1.", "Topic 2."]
    assert len(store.list("ann", types=["procedural"])) == 2
