"""The OpenAI-compatible model client against a real HTTP server on loopback.

Every test talks HTTP to `ScriptedOpenAIServer`; nothing is mocked below the socket. Backoff
waits go to a recorder instead of time.sleep, so retries cost no time.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from personavlm.errors import (
    ConfigError,
    ModelConnectionError,
    ModelError,
    ModelResponseError,
    PersonaVLMError,
    ValidationError,
)
from personavlm.models import (
    ChatModel,
    ImagePart,
    Message,
    OpenAIChatModel,
    TextPart,
    Usage,
    load,
)
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse, scripted

# Not real images: the client never decodes them, it only has to carry the bytes exactly.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
JPEG = b"\xff\xd8\xff\xe0" + bytes(reversed(range(256)))
KEY = "sk-test-5ecret-key-0123456789"


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def make_model(
    server: ScriptedOpenAIServer, sleeps: SleepRecorder, **options: Any
) -> OpenAIChatModel:
    options.setdefault("timeout_s", 5.0)
    return OpenAIChatModel("test/model:7b", server.base_url, sleep=sleeps, **options)


def hello() -> list[Message]:
    return [Message.text("system", "You are terse."), Message.text("user", "Say hello to Ann")]


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bind to learn a free port, then close: nothing listens there while the test runs.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


# -- replies and requests ------------------------------------------------------------------


def test_text_reply_carries_usage_model_and_latency(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(scripted("Hello there, Ann!")) as server:
        with make_model(server, sleeps) as model:
            reply = model.generate(hello(), max_tokens=64, temperature=0.3)
        request = server.requests[0]
    assert reply.text == "Hello there, Ann!"
    # Words of all text parts: "You are terse." (3) + "Say hello to Ann" (4); reply 3 words.
    assert reply.usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert reply.model == "test/model:7b"
    assert reply.finish_reason == "stop"
    assert 0 < reply.latency_s < 5
    assert request == {
        "model": "test/model:7b",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to Ann"},
        ],
        "max_tokens": 64,
        "temperature": 0.3,
    }
    assert "response_format" not in request
    assert sleeps.delays == []


def test_model_satisfies_the_protocol_and_names_its_spec() -> None:
    model = OpenAIChatModel("m", "http://127.0.0.1:9/v1/")
    assert isinstance(model, ChatModel)
    assert model.name == "openai:m@http://127.0.0.1:9/v1"
    model.close()


def test_image_parts_arrive_as_data_urls_in_place(sleeps: SleepRecorder) -> None:
    message = Message(
        "user",
        (
            TextPart("first this"),
            ImagePart(PNG, "image/png"),
            TextPart("then that"),
            ImagePart(JPEG, "image/jpeg"),
        ),
    )
    with ScriptedOpenAIServer(scripted("two pictures")) as server:
        reply = make_model(server, sleeps).generate([message])
        content = server.requests[0]["messages"][0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "text", "image_url"]
    assert content[0] == {"type": "text", "text": "first this"}
    assert content[2] == {"type": "text", "text": "then that"}
    for part, (mime, data) in zip(
        (content[1], content[3]), (("image/png", PNG), ("image/jpeg", JPEG)), strict=True
    ):
        header, _, payload = part["image_url"]["url"].partition(",")
        assert header == f"data:{mime};base64"
        assert base64.b64decode(payload, validate=True) == data
    assert reply.usage.prompt_tokens == 4  # images count nothing in the fake


def test_schema_becomes_a_strict_json_schema_response_format(sleeps: SleepRecorder) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    with ScriptedOpenAIServer(scripted('{"answer": "Bobby"}')) as server:
        reply = make_model(server, sleeps).generate(hello(), schema=schema)
        request = server.requests[0]
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }
    assert json.loads(reply.text) == {"answer": "Bobby"}


def test_missing_usage_counts_zero(sleeps: SleepRecorder) -> None:
    body = {"model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    with ScriptedOpenAIServer(scripted(ScriptedResponse(body=body))) as server:
        reply = make_model(server, sleeps).generate(hello())
    assert (reply.text, reply.usage, reply.finish_reason) == ("ok", Usage(0, 0), None)


def test_api_key_is_sent_as_a_bearer_header(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(scripted("a", "b")) as server:
        make_model(server, sleeps, api_key=KEY).generate(hello())
        make_model(server, sleeps).generate(hello())
        first, second = server.headers
    assert first["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in second
    assert KEY not in repr(make_model(server, sleeps, api_key=KEY))


# -- retries -------------------------------------------------------------------------------


def test_503_twice_then_200_is_one_reply_after_growing_backoff(sleeps: SleepRecorder) -> None:
    handler = scripted(ScriptedResponse(503), ScriptedResponse(503), "finally")
    with ScriptedOpenAIServer(handler) as server:
        reply = make_model(server, sleeps, backoff_s=0.5).generate(hello())
        assert len(server.requests) == 3
    assert reply.text == "finally"
    assert len(sleeps.delays) == 2
    first, second = sleeps.delays
    assert 0.5 <= first <= 0.5 * 1.25
    assert 1.0 <= second <= 1.0 * 1.25
    assert first < second


def test_retry_after_is_honoured_and_capped(sleeps: SleepRecorder) -> None:
    handler = scripted(
        ScriptedResponse(429, headers={"Retry-After": "2"}),
        ScriptedResponse(503, headers={"Retry-After": "3600"}),
        "ok",
    )
    with ScriptedOpenAIServer(handler) as server:
        reply = make_model(server, sleeps).generate(hello())
    assert reply.text == "ok"
    assert sleeps.delays == [2.0, 30.0]


def test_429_forever_fails_after_all_attempts_naming_the_url(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(lambda request: ScriptedResponse(429)) as server:
        model = make_model(server, sleeps, max_retries=2)
        with pytest.raises(ModelResponseError) as caught:
            model.generate(hello())
        assert len(server.requests) == 3
    message = str(caught.value)
    assert f"{server.base_url}/chat/completions" in message
    assert "3 attempts" in message
    assert "HTTP 429" in message
    assert len(sleeps.delays) == 2  # no pointless wait after the last attempt


def test_unreachable_server_is_a_connection_error(sleeps: SleepRecorder, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1"
    model = OpenAIChatModel("m", url, max_retries=2, sleep=sleeps)
    with pytest.raises(ModelConnectionError) as caught:
        model.generate(hello())
    message = str(caught.value)
    assert f"{url}/chat/completions" in message
    assert "3 attempts" in message
    assert "ConnectError" in message
    assert len(sleeps.delays) == 2
    assert isinstance(caught.value, ModelError)
    assert isinstance(caught.value, PersonaVLMError)


def test_timeouts_are_retried_then_a_connection_error(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(lambda request: ScriptedResponse(delay_s=5.0, text="late")) as s:
        model = make_model(s, sleeps, timeout_s=0.2, max_retries=1)
        with pytest.raises(ModelConnectionError, match=r"2 attempts.*no answer within 0\.2 s"):
            model.generate(hello())
        assert len(s.requests) == 2
    assert len(sleeps.delays) == 1


def test_a_slow_answer_within_the_timeout_succeeds(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(scripted(ScriptedResponse(delay_s=0.3, text="slow"))) as server:
        reply = make_model(server, sleeps, timeout_s=5.0).generate(hello())
    assert reply.text == "slow"
    assert reply.latency_s >= 0.3


# -- errors that are not retried -----------------------------------------------------------


def test_404_names_the_model_and_what_to_check(sleeps: SleepRecorder) -> None:
    body = {"error": {"message": "The model `test/model:7b` does not exist.", "code": 404}}
    with ScriptedOpenAIServer(scripted(ScriptedResponse(404, body=body))) as server:
        with pytest.raises(ModelResponseError) as caught:
            make_model(server, sleeps).generate(hello())
        assert len(server.requests) == 1
    message = str(caught.value)
    assert "'test/model:7b'" in message
    assert "check the model name and the base URL" in message
    assert "does not exist" in message
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_says_so_and_never_leaks_it(sleeps: SleepRecorder, status: int) -> None:
    # A server that echoes the key back must not get it into the message either.
    body = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    with (
        ScriptedOpenAIServer(scripted(ScriptedResponse(status, body=body))) as server,
        pytest.raises(ModelResponseError) as caught,
    ):
        make_model(server, sleeps, api_key=KEY).generate(hello())
    message = str(caught.value)
    assert "API key" in message
    assert f"HTTP {status}" in message
    assert KEY not in message
    assert KEY not in repr(caught.value)


def test_key_never_appears_in_retry_or_connection_errors(
    sleeps: SleepRecorder, closed_port: int
) -> None:
    body = {"error": {"message": f"overloaded (key {KEY})"}}
    with (
        ScriptedOpenAIServer(lambda request: ScriptedResponse(503, body=body)) as server,
        pytest.raises(ModelResponseError) as overloaded,
    ):
        make_model(server, sleeps, api_key=KEY, max_retries=1).generate(hello())
    model = OpenAIChatModel("m", f"http://127.0.0.1:{closed_port}/v1", api_key=KEY, sleep=sleeps)
    with pytest.raises(ModelConnectionError) as unreachable:
        model.generate(hello())
    assert "overloaded" in str(overloaded.value)
    for error in (overloaded.value, unreachable.value):
        assert KEY not in str(error)


def test_other_4xx_quotes_the_servers_message(sleeps: SleepRecorder) -> None:
    body = {"error": {"message": "max_tokens must be at most 4096", "type": "BadRequestError"}}
    with ScriptedOpenAIServer(scripted(ScriptedResponse(400, body=body))) as server:
        with pytest.raises(ModelResponseError, match="HTTP 400: max_tokens must be at most 4096"):
            make_model(server, sleeps).generate(hello())
        assert len(server.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        "<html>Bad Gateway</html>",
        {"object": "chat.completion", "choices": []},
        {"choices": [{"message": {"role": "assistant", "content": None}}]},
        {"id": "x"},
    ],
    ids=["not-json", "no-choices", "null-content", "no-choices-key"],
)
def test_malformed_200_is_an_error_quoting_the_body(
    sleeps: SleepRecorder, body: dict[str, Any] | str
) -> None:
    with (
        ScriptedOpenAIServer(scripted(ScriptedResponse(200, body=body))) as server,
        pytest.raises(ModelResponseError, match="without a chat completion") as caught,
    ):
        make_model(server, sleeps).generate(hello())
    quoted = body if isinstance(body, str) else json.dumps(body)
    assert quoted[:20] in str(caught.value)


def test_long_bodies_are_trimmed_in_messages(sleeps: SleepRecorder) -> None:
    with (
        ScriptedOpenAIServer(scripted(ScriptedResponse(200, body="x" * 10_000))) as server,
        pytest.raises(ModelResponseError) as caught,
    ):
        make_model(server, sleeps).generate(hello())
    assert len(str(caught.value)) < 1000


# -- arguments and specs -------------------------------------------------------------------


def test_bad_arguments_raise_before_any_request(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(scripted()) as server:
        model = make_model(server, sleeps)
        with pytest.raises(ValidationError, match="messages is empty"):
            model.generate([])
        with pytest.raises(ValidationError, match="max_tokens"):
            model.generate(hello(), max_tokens=0)
        with pytest.raises(ValidationError, match="temperature"):
            model.generate(hello(), temperature=-1.0)
        assert server.requests == []


def test_image_part_checks_mime_and_data() -> None:
    with pytest.raises(ValidationError, match="image/tiff"):
        ImagePart(PNG, "image/tiff")
    with pytest.raises(ValidationError, match="empty"):
        ImagePart(b"", "image/png")
    assert "bytes" in repr(ImagePart(PNG, "image/webp"))
    assert str(PNG) not in repr(ImagePart(PNG, "image/webp"))


@pytest.mark.parametrize(
    "base_url", ["", "127.0.0.1:8000/v1", "ftp://host/v1", "http:///v1"], ids=repr
)
def test_bad_base_urls_are_config_errors(base_url: str) -> None:
    with pytest.raises(ConfigError, match="base URL"):
        OpenAIChatModel("m", base_url)


def test_load_splits_on_the_last_at() -> None:
    model = load("openai:my/model:7b@http://h:1/v1", api_key=KEY, max_retries=0)
    assert isinstance(model, OpenAIChatModel)
    assert model.model == "my/model:7b"
    assert model.base_url == "http://h:1/v1"
    assert model.name == "openai:my/model:7b@http://h:1/v1"
    model.close()


def test_load_returns_a_working_model(sleeps: SleepRecorder) -> None:
    with ScriptedOpenAIServer(scripted("hi")) as server:
        model = load(f"openai:qwen2.5-vl-7b@{server.base_url}", sleep=sleeps)
        assert model.generate(hello()).text == "hi"
        assert server.requests[0]["model"] == "qwen2.5-vl-7b"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf:/x", "does not exist"),
        ("nope:x", "known backends: openai"),
        ("qwen", "known backends: openai"),
        ("openai:no-url", "openai:<model>@<base_url>"),
        ("openai:@http://h/v1", "openai:<model>@<base_url>"),
        ("openai:m@", "openai:<model>@<base_url>"),
    ],
)
def test_load_rejects_bad_specs(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(spec)


def test_load_rejects_unknown_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*apikey"):
        load("openai:m@http://h/v1", apikey=KEY)


# -- the scripted server itself -------------------------------------------------------------


def test_scripted_server_lists_models_and_fails_loudly_when_over_called(
    sleeps: SleepRecorder,
) -> None:
    with (
        pytest.raises(AssertionError, match="more times than scripted"),
        ScriptedOpenAIServer(scripted("only one"), models=("a", "b")) as server,
    ):
        listed = httpx.get(f"{server.base_url}/models").json()
        assert [m["id"] for m in listed["data"]] == ["a", "b"]
        model = make_model(server, sleeps, max_retries=0)
        assert model.generate(hello()).text == "only one"
        with pytest.raises(ModelResponseError, match="more times than scripted"):
            model.generate(hello())
