"""The service against hostile input, over real HTTP on loopback: ids outside 1..2^63-1 in
paths (404), query values and cursors (400), years outside 1000..9999 and reversed windows
on every route that takes a time (400), pictures that do not decode or are too large (400),
each answer in the one error shape, and nothing written by any of them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bad_pictures import huge_png, picture, truncated
from personavlm.cli.serve_cmd import service_config
from personavlm.errors import ConfigError
from personavlm.testing import ScriptedOpenAIServer
from server_fixtures import ADMIN_KEY, bearer, data_url, error_of, make_config, served

ADMIN = bearer(ADMIN_KEY)
BEYOND = 2**63  # one past the largest id either engine can hold
OUT_OF_RANGE = [BEYOND, 10**30, 0, -1]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One service for the module, Ann with two memories (ids 1 and 2) and two turns."""
    config = make_config(tmp_path_factory.mktemp("bounds"))
    with served(config) as url, httpx.Client(base_url=url, headers=ADMIN) as client:
        for content, time in (("Ann likes tea", "2024-01-05 10:00"), ("Ann has a cat", None)):
            body = {"type": "semantic", "content": content, "time": time}
            assert client.post("/v1/users/ann/memories", json=body).status_code == 201
        yield client


def snapshot(http: httpx.Client) -> Any:
    """What Ann holds: every memory of any status and the audit history of both."""
    memories = http.get("/v1/users/ann/memories", params={"status": "any"}).json()
    events = [http.get(f"/v1/users/ann/memories/{i}/history").json() for i in (1, 2)]
    return memories, events


def expect(answer: httpx.Response, status: int, code: str, *words: str) -> str:
    assert answer.status_code == status, answer.text
    error = error_of(answer)
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]
    return str(error["message"])


def cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ------------------------------------------------------------------ integers outside int64


ID_ROUTES = [
    ("GET", "/v1/users/ann/memories/{id}", None),
    ("PATCH", "/v1/users/ann/memories/{id}", {"content": "changed"}),
    ("DELETE", "/v1/users/ann/memories/{id}", None),
    ("POST", "/v1/users/ann/memories/{id}/invalidate", None),
    ("GET", "/v1/users/ann/memories/{id}/history", None),
    ("GET", "/v1/users/ann/memories/{id}/timeline", None),
    ("POST", "/v1/users/ann/events/{id}/undo", None),
    ("DELETE", "/v1/keys/{id}", None),
]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize(("method", "path", "body"), ID_ROUTES)
def test_an_id_outside_int64_names_nothing(
    http: httpx.Client, method: str, path: str, body: dict[str, Any] | None, value: int
) -> None:
    before = snapshot(http)
    answer = http.request(method, path.format(id=value), json=body)
    expect(answer, 404, "not_found", str(value))
    assert snapshot(http) == before


@pytest.mark.parametrize(
    ("path", "query", "named"),
    [
        ("/v1/users/ann/turns", {"session": BEYOND}, "session"),
        ("/v1/users/ann/turns", {"session": 0}, "session"),
        ("/v1/users/ann/turns", {"limit": BEYOND}, "limit"),
        ("/v1/users/ann/memories", {"limit": 10**30}, "limit"),
    ],
)
def test_a_query_value_outside_int64_is_400(
    http: httpx.Client, path: str, query: dict[str, int], named: str
) -> None:
    expect(http.get(path, params=query), 400, "validation_error", named)


@pytest.mark.parametrize("route", ["memories", "turns"])
@pytest.mark.parametrize(
    "payload",
    [
        {"t": "2024-01-05 10:00:00", "id": BEYOND},
        {"t": "2024-01-05 10:00:00", "id": -3},
        {"t": "2024-01-05 10:00:00", "id": 0},
        {"t": "0999-01-05 10:00:00", "id": 1},
    ],
    ids=["id-past-int64", "id-negative", "id-zero", "year-999"],
)
def test_a_cursor_decoding_to_out_of_range_values_is_400(
    http: httpx.Client, route: str, payload: dict[str, Any]
) -> None:
    answer = http.get(f"/v1/users/ann/{route}", params={"cursor": cursor(payload)})
    expect(answer, 400, "validation_error", "cursor")


# ------------------------------------------------------------------ years and windows


OLD = "0999-12-31 10:00"


NEW_MEMORY = {"type": "semantic", "content": "x", "time": OLD}
PATCH = {"content": "Ann likes green tea", "time": OLD}


@pytest.mark.parametrize(
    ("method", "path", "options"),
    [
        ("POST", "/v1/users/ann/memories", {"json": NEW_MEMORY}),
        ("PATCH", "/v1/users/ann/memories/1", {"json": PATCH}),
        ("POST", "/v1/users/ann/memories/1/invalidate", {"json": {"time": OLD}}),
        ("GET", "/v1/users/ann/memories", {"params": {"start": OLD}}),
        ("GET", "/v1/users/ann/memories", {"params": {"end": OLD}}),
        ("GET", "/v1/users/ann/turns", {"params": {"start": OLD}}),
        ("GET", "/v1/users/ann/turns", {"params": {"end": OLD}}),
        ("POST", "/v1/users/ann/search", {"json": {"query": "tea", "start": OLD}}),
        ("POST", "/v1/users/ann/search", {"json": {"query": "tea", "end": OLD}}),
    ],
)
def test_every_route_with_a_time_refuses_years_before_1000(
    http: httpx.Client, method: str, path: str, options: dict[str, Any]
) -> None:
    before = snapshot(http)
    answer = http.request(method, path, **options)
    expect(answer, 400, "validation_error", "year 999", "1000..9999")
    assert snapshot(http) == before


LATE, EARLY = "2024-03-01 00:00", "2024-01-01 00:00"


@pytest.mark.parametrize(
    ("method", "path", "options"),
    [
        ("GET", "/v1/users/ann/memories", {"params": {"start": LATE, "end": EARLY}}),
        ("GET", "/v1/users/ann/turns", {"params": {"start": LATE, "end": EARLY}}),
        ("POST", "/v1/users/ann/search", {"json": {"query": "tea", "start": LATE, "end": EARLY}}),
    ],
)
def test_every_route_with_a_window_refuses_a_reversed_one(
    http: httpx.Client, method: str, path: str, options: dict[str, Any]
) -> None:
    answer = http.request(method, path, **options)
    expect(answer, 400, "validation_error", "start is after end")


# ------------------------------------------------------------------ pictures


def chat_body(picture_bytes: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {
        "user": "ann",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at this"},
                    {"type": "image_url", "image_url": {"url": data_url(picture_bytes, mime)}},
                ],
            }
        ],
    }


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (truncated(picture("PNG", size=(64, 64))), ["not a valid PNG picture"]),
        (truncated(picture("JPEG", size=(64, 64))), ["not a valid JPEG picture"]),
        (huge_png(20_000, 20_000), ["too large a picture", "40,000,000 pixels"]),
        (huge_png(7_000, 7_000), ["7000x7000", "the limit is 40,000,000 pixels"]),
    ],
    ids=["truncated-png", "truncated-jpeg", "bomb-400MP", "over-limit-49MP"],
)
def test_chat_refuses_a_picture_that_does_not_decode_or_is_too_large(
    tmp_path: Path, server: ScriptedOpenAIServer, bad: bytes, words: list[str]
) -> None:
    config = make_config(tmp_path, model=f"openai:scripted@{server.base_url}", update="inline")
    with served(config) as url, httpx.Client(base_url=url, headers=ADMIN) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(bad))
        expect(answer, 400, "validation_error", *words)
        assert client.get("/v1/users/ann/turns").status_code == 404  # no user, no turn
    assert server.requests == []  # refused before any model call
    assert stored_files(tmp_path / "memory.db.blobs") == []


def test_the_services_pixel_limit_reaches_the_store(
    tmp_path: Path, server: ScriptedOpenAIServer
) -> None:
    config = make_config(
        tmp_path, model=f"openai:scripted@{server.base_url}", update="inline", max_image_pixels=100
    )
    with served(config) as url, httpx.Client(base_url=url, headers=ADMIN) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(picture("PNG", (16, 16))))
        expect(answer, 400, "validation_error", "16x16 = 256 pixels", "the limit is 100 pixels")
        # The declared type is not trusted: a JPEG sent as image/png is taken as a JPEG.
        fine = client.post(
            "/v1/chat/completions", json=chat_body(picture("JPEG", (10, 10)), "image/png")
        )
        assert fine.status_code == 200, fine.text
        [turn] = [t for t in client.get("/v1/users/ann/turns").json()["data"] if t["image_ids"]]
        image = client.get(f"/v1/users/ann/images/{turn['image_ids'][0]}")
        assert image.headers["content-type"] == "image/jpeg"


def test_serve_takes_the_pixel_limit_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    db = str(tmp_path / "memory.db")
    env = {"PERSONAVLM_HOME": str(tmp_path)}
    assert service_config(db=db, env=env).max_image_pixels == 40_000_000
    from_env = env | {"PERSONAVLM_MAX_IMAGE_PIXELS": "1000"}
    assert service_config(db=db, env=from_env).max_image_pixels == 1000
    assert service_config(db=db, env=from_env, max_image_pixels=5).max_image_pixels == 5
    with pytest.raises(ConfigError, match="PERSONAVLM_MAX_IMAGE_PIXELS must be a whole number"):
        service_config(db=db, env=env | {"PERSONAVLM_MAX_IMAGE_PIXELS": "lots"})
    with pytest.raises(ConfigError, match="--max-image-pixels must be at least 1"):
        service_config(db=db, env=env, max_image_pixels=0)
    with pytest.raises(ConfigError, match="picture limit"):
        make_config(tmp_path, max_image_pixels=0)


def test_serve_keeps_converted_gguf_models_under_personavlm_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from personavlm import models
    from personavlm.server import service as service_module

    config = service_config(
        db=str(tmp_path / "m.db"), model="local:smollm2", env={"PERSONAVLM_HOME": str(tmp_path)}
    )
    assert config.model_cache == tmp_path / "models"
    asked: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(models, "load", lambda spec, **options: asked.append((spec, options)))
    service_module._load_model(config)
    assert asked == [("local:smollm2", {"gguf_cache": tmp_path / "models"})]


def test_chat_keeps_converted_gguf_models_under_personavlm_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from personavlm import models
    from personavlm.cli.chat_cmd import load_model

    monkeypatch.setenv("PERSONAVLM_HOME", str(tmp_path))
    asked: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(models, "load", lambda spec, **options: asked.append((spec, options)))
    load_model("hf:/models/tiny.gguf")
    load_model("openai:m@http://127.0.0.1:9/v1")
    assert asked[0] == ("hf:/models/tiny.gguf", {"gguf_cache": tmp_path / "models"})
    assert "gguf_cache" not in asked[1][1]


def test_serve_checks_its_prompts_before_it_starts(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "response_tags.txt").write_text("{UserQuery} and {Nonsense}", encoding="utf-8")
    env = {"PERSONAVLM_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"unknown placeholder.*\{Nonsense\}"):
        service_config(db=str(tmp_path / "m.db"), prompts=str(folder), env=env)
    (folder / "response_tags.txt").unlink()
    (folder / "core_tags.txt").write_text("{DialogHistory} {UserProfile}", encoding="utf-8")
    config = service_config(db=str(tmp_path / "m.db"), prompts=str(folder), env=env)
    assert config.prompts == str(folder.resolve())
