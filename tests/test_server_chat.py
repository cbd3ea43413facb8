"""The personalised model over real HTTP: the official `openai` client against the service
(uvicorn on loopback), the service against the scripted model server. Non-streaming and
streaming, pictures as data URLs, usage summed over every model call of the turn, the turns
and the picture stored, failures before and after the first byte, chat without a model.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from agent_script import AgentScript, Req, answer
from personavlm.server import create_app, schemas
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse
from server_fixtures import (
    ADMIN_KEY,
    bearer,
    data_url,
    error_of,
    make_config,
    make_user_key,
    png_bytes,
    served,
)

ANSWER = "Your dog Bobby is a beagle, and he looks happy in this photo."
PICTURE = png_bytes((120, 80, 40), size=16)


@contextmanager
def chat_service(
    tmp_path: Path, server: ScriptedOpenAIServer, **overrides: Any
) -> Iterator[tuple[str, str]]:
    """The service with the scripted model attached; yields (base URL, Ann's key)."""
    values: dict[str, Any] = {"model": f"openai:scripted@{server.base_url}", "update": "inline"}
    values.update(overrides)
    with served(make_config(tmp_path, **values)) as url:
        with httpx.Client(base_url=url) as http:
            _key_id, key = make_user_key(http, "ann")
        yield url, key


def client_for(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def picture_message(text: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": data_url(PICTURE)}},
            ],
        }
    ]


def usage_of_calls(extra: dict[str, Any]) -> tuple[int, int]:
    trace = extra["trace"]
    calls = trace["calls"] + [c for u in trace["updates"] for c in u["calls"]]
    return sum(c["prompt_tokens"] for c in calls), sum(c["completion_tokens"] for c in calls)


def test_openai_client_gets_a_personal_answer_with_a_picture(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    seen: list[Req] = []

    def respond(req: Req) -> str:
        seen.append(req)
        return answer(ANSWER)

    script.respond = respond
    with chat_service(tmp_path, server) as (url, key):
        earlier = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "an earlier message, not replayed"},
            {"role": "assistant", "content": "an earlier answer"},
        ]
        reply = client_for(url, key).chat.completions.create(
            model="personavlm",
            messages=[*earlier, *picture_message("What breed is my dog?")],
            user="ann",
        )
        assert reply.choices[0].message.content == ANSWER
        assert reply.choices[0].finish_reason == "stop"
        extra = (reply.model_extra or {})["personavlm"]
        schemas.PersonaVLMOut.model_validate(extra)

        # usage counts every call of the turn: the answer and, inline, the update phase
        phases = [c["phase"] for c in extra["trace"]["calls"]] + [
            c["phase"] for u in extra["trace"]["updates"] for c in u["calls"]
        ]
        assert "response" in phases and "update" in phases
        assert len(phases) == len(server.requests)
        assert reply.usage is not None
        prompt, completion = usage_of_calls(extra)
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
        assert reply.usage.total_tokens == prompt + completion
        assert completion >= len(ANSWER.split())

        # the model saw the picture and only the new message
        assert seen[0].images() == [data_url(PICTURE)]
        assert "What breed is my dog?" in seen[0].query
        assert "not replayed" not in seen[0].all_text

        # the store got both turns and the picture
        with httpx.Client(base_url=url, headers=bearer(key)) as http:
            turns = http.get("/v1/users/ann/turns").json()["data"]
            assert [(t["role"], t["text"]) for t in turns] == [
                ("user", "What breed is my dog?"),
                ("assistant", ANSWER),
            ]
            assert [t["id"] for t in turns] == [extra["user_turn_id"], extra["assistant_turn_id"]]
            digest = hashlib.sha256(PICTURE).hexdigest()
            assert turns[0]["image_ids"] == [digest]
            assert http.get(f"/v1/users/ann/images/{digest}").content == PICTURE
    assert (tmp_path / "memory.db.blobs" / digest[:2] / digest).read_bytes() == PICTURE


def test_openai_client_streams_the_answer_with_usage(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: answer(ANSWER)
    with chat_service(tmp_path, server) as (url, key):
        stream = client_for(url, key).chat.completions.create(
            model="personavlm",
            messages=picture_message("What breed is my dog?"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == ANSWER
    assert sum(bool(p) for p in pieces) == len(ANSWER.split())  # word by word
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    extra = (chunks[-2].model_extra or {})["personavlm"]
    prompt, completion = usage_of_calls(extra)
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (
        prompt,
        completion,
    )
    assert len({c.id for c in chunks}) == 1


def test_the_stream_is_server_sent_events_ending_in_done(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: answer("Hello Ann.")
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        chat_service(tmp_path, server) as (url, key),
        httpx.Client(base_url=url) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=bearer(key)) as got,
    ):
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("text/event-stream")
        text = got.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello "},
        {"content": "Ann."},
        {},
    ]
    assert all("usage" not in c for c in chunks)  # not asked for


def test_a_model_failure_is_502_before_the_stream_and_an_error_event_in_it(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: ScriptedResponse(status=400, text="", body=None)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    with chat_service(tmp_path, server) as (url, key), httpx.Client(base_url=url) as http:
        whole = http.post("/v1/chat/completions", json=body, headers=bearer(key))
        assert whole.status_code == 502
        assert error_of(whole)["code"] == "model_error"

        raw = http.post("/v1/chat/completions", json={**body, "stream": True}, headers=bearer(key))
        events = [e for e in raw.text.split("\n\n") if e]
        assert raw.status_code == 200  # the status line went out before the model failed
        assert events[-1] == "data: [DONE]"
        failure = json.loads(events[-2].removeprefix("data: "))
        assert failure["error"]["code"] == "model_error"

        with pytest.raises(
            openai.APIError, match=re.escape(failure["error"]["message"][:30])
        ) as raised:
            list(
                client_for(url, key).chat.completions.create(
                    model="personavlm", messages=body["messages"], stream=True
                )
            )
        error = raised.value.body
        assert isinstance(error, dict) and error["code"] == "model_error"
        assert (
            error["message"].split(" (your message")[0]
            == failure["error"]["message"].split(" (your message")[0]
        )
        # each message the model failed is kept (marked failed), never lost
        turns = http.get("/v1/users/ann/turns", headers=bearer(key)).json()["data"]
        assert [(t["role"], t["text"], t["status"]) for t in turns] == [
            ("user", "hi", "failed")
        ] * 3


def test_background_update_runs_after_the_answer(
    tmp_path: Path, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: answer("Noted.")
    with chat_service(tmp_path, server, update="background") as (url, key):
        reply = client_for(url, key).chat.completions.create(
            model="personavlm", messages=[{"role": "user", "content": "I got a new job!"}]
        )
        extra = (reply.model_extra or {})["personavlm"]
        assert [u["status"] for u in extra["trace"]["updates"]] == ["queued"]
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == usage_of_calls(extra)[0]  # the answer's calls only
        with httpx.Client(base_url=url, headers=bearer(key)) as http:
            deadline = time.monotonic() + 10
            while True:
                readings = http.get("/v1/users/ann/personality").json()["trajectory"]
                if readings or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    assert len(readings) == 1
    assert readings[0]["turn_id"] == extra["user_turn_id"]


# ------------------------------------------------------------------ without a model


@pytest.fixture
def modelless(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_config(tmp_path))) as client:
        yield client


def test_without_a_model_chat_is_503_saying_how_to_attach_one(modelless: TestClient) -> None:
    assert modelless.get("/healthz").json()["model"] is False
    answer_ = modelless.post(
        "/v1/chat/completions",
        headers=bearer(ADMIN_KEY),
        json={"user": "ann", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer_.status_code == 503
    error = error_of(answer_)
    assert error["code"] == "model_not_configured"
    assert "--model" in error["message"] and "PERSONAVLM_MODEL" in error["message"]
    # and no model is listed that cannot answer
    models = modelless.get("/v1/models", headers=bearer(ADMIN_KEY))
    assert models.status_code == 503 and error_of(models)["code"] == "model_not_configured"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "pass `user`"),
        ({"user": "ann", "messages": []}, 400, "no user message"),
        ({"user": "ann", "messages": [{"role": "system", "content": "x"}]}, 400, "no user message"),
        ({"user": "ann", "messages": [{"role": "wizard", "content": "x"}]}, 400, "wizard"),
        ({"user": "ann", "messages": [{"role": "user", "content": " "}]}, 400, "empty"),
        (
            {
                "user": "ann",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}
                        ],
                    }
                ],
            },
            400,
            "data URL",
        ),
        (
            {
                "user": "ann",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url(b"not a png")}}
                        ],
                    }
                ],
            },
            400,
            "not a PNG",
        ),
        (
            {
                "user": "ann",
                "messages": [{"role": "user", "content": [{"type": "input_audio", "x": 1}]}],
            },
            400,
            "input_audio",
        ),
        ({"user": "ann"}, 422, "messages"),
    ],
    ids=[
        "admin-without-user",
        "no-messages",
        "no-user-message",
        "unknown-role",
        "empty",
        "http-image",
        "not-an-image",
        "unknown-part",
        "no-messages-field",
    ],
)
def test_chat_requests_are_checked_before_anything_runs(
    modelless: TestClient, body: dict[str, Any], status: int, says: str
) -> None:
    got = modelless.post("/v1/chat/completions", headers=bearer(ADMIN_KEY), json=body)
    assert got.status_code == status, got.text
    assert says in error_of(got)["message"]
