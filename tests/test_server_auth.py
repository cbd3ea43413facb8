"""Keys and isolation, route by route: every /v1 route with no key, a wrong key, another
user's key and a malformed user id; admin-only routes against a user key; keys stored hashed.

The route list is read from the app itself (`app.routes`), and a test fails when a route has
no entry in ROUTES below: a new route cannot skip these checks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from personavlm.memory import TurnInput
from personavlm.server import create_app
from personavlm.server.auth import path_user, require_admin
from server_fixtures import ADMIN_KEY, bearer, error_of, make_config, make_user_key, png_bytes

# Every /v1 route, with a body that is valid for it ({user} is replaced by the target user).
ROUTES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/v1/me"): None,
    ("GET", "/v1/models"): None,
    (
        "POST",
        "/v1/chat/completions",
    ): {"model": "personavlm", "messages": [{"role": "user", "content": "hi"}], "user": "{user}"},
    ("GET", "/v1/users"): None,
    ("POST", "/v1/users"): {"id": "{user}"},
    ("DELETE", "/v1/users/{user_id}"): None,
    ("POST", "/v1/users/{user_id}/keys"): {"label": "phone"},
    ("GET", "/v1/users/{user_id}/keys"): None,
    ("DELETE", "/v1/keys/{key_id}"): None,
    ("GET", "/v1/users/{user_id}/memories"): None,
    ("POST", "/v1/users/{user_id}/memories"): {"type": "semantic", "content": "likes tea"},
    ("GET", "/v1/users/{user_id}/memories/{memory_id}"): None,
    ("PATCH", "/v1/users/{user_id}/memories/{memory_id}"): {"content": "likes green tea"},
    ("DELETE", "/v1/users/{user_id}/memories/{memory_id}"): None,
    ("POST", "/v1/users/{user_id}/memories/{memory_id}/invalidate"): {},
    ("GET", "/v1/users/{user_id}/memories/{memory_id}/history"): None,
    ("GET", "/v1/users/{user_id}/memories/{memory_id}/timeline"): None,
    ("POST", "/v1/users/{user_id}/events/{event_id}/undo"): None,
    ("POST", "/v1/users/{user_id}/search"): {"query": "tea"},
    ("GET", "/v1/users/{user_id}/personality"): None,
    ("GET", "/v1/users/{user_id}/turns"): None,
    ("GET", "/v1/users/{user_id}/images/{image_id}"): None,
    ("GET", "/v1/users/{user_id}/export"): None,
    ("GET", "/v1/users/{user_id}/jobs"): None,
    ("POST", "/v1/users/{user_id}/jobs/{job_id}/retry"): None,
    ("POST", "/v1/users/{user_id}/jobs/{job_id}/drop"): None,
}
# Routes whose user is named in the body instead of the path.
BODY_USER_ROUTES = [("POST", "/v1/chat/completions"), ("POST", "/v1/users")]
USER_ROUTES = [route for route in ROUTES if "{user_id}" in route[1]] + BODY_USER_ROUTES
# Checked against the routes' dependencies by test_the_admin_routes_are_the_documented_ones.
ADMIN_ROUTES = [
    ("GET", "/v1/users"),
    ("POST", "/v1/users"),
    ("POST", "/v1/users/{user_id}/keys"),
    ("GET", "/v1/users/{user_id}/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
]
ANN_SECRET = "Ann's secret: her locker code is 4711"
MALFORMED_IDS = [" ", "x" * 129, "bad\x07id"]


@dataclass
class World:
    app: FastAPI
    client: TestClient
    db: Path
    ann_key: str
    bob_key: str
    ann_key_id: int
    memory_id: int
    event_id: int
    image_id: str
    job_id: int

    def call(
        self, route: tuple[str, str], *, user: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        method, template = route
        path = template.format(
            user_id=_quoted(user),
            memory_id=self.memory_id,
            event_id=self.event_id,
            image_id=self.image_id,
            key_id=self.ann_key_id,
            job_id=self.job_id,
        )
        sample = ROUTES[route]
        body = None if sample is None else _fill(sample, user)
        return self.client.request(method, path, json=body, headers=headers or {})


def _quoted(user: str) -> str:
    return quote(user, safe="")


def _fill(sample: dict[str, Any], user: str) -> dict[str, Any]:
    return {k: (user if v == "{user}" else v) for k, v in sample.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("auth")
    app = create_app(make_config(tmp))
    with TestClient(app) as client:
        ann_key_id, ann_key = make_user_key(client, "ann")
        _bob_key_id, bob_key = make_user_key(client, "bob")
        made = client.post(
            "/v1/users/ann/memories",
            headers=bearer(ann_key),
            json={"type": "semantic", "content": ANN_SECRET},
        )
        assert made.status_code == 201, made.text
        memory_id = made.json()["id"]
        history = client.get(f"/v1/users/ann/memories/{memory_id}/history", headers=bearer(ann_key))
        store = app.state.service.store
        image = store.store_image(png_bytes())
        turn = TurnInput.create(
            time="2024-03-02 10:00", role="user", text=ANN_SECRET, image_ids=(image.id,)
        )
        store.append_turns("ann", [turn])
        with store.transaction("ann") as tx:  # a dead job of ann's, to retry or drop
            job_id = tx.queue.enqueue("ann", "turn", {"v": 1, "user_turn": 1, "assistant_turn": 1})
        claimed = store.claim_job("auth-test")
        assert claimed is not None and claimed.id == job_id
        store.fail_job(claimed, f"{ANN_SECRET} broke the model", max_attempts=1)
        yield World(
            app=app,
            client=client,
            db=tmp / "memory.db",
            ann_key=ann_key,
            bob_key=bob_key,
            ann_key_id=ann_key_id,
            memory_id=memory_id,
            event_id=history.json()["data"][0]["id"],
            image_id=image.id,
            job_id=job_id,
        )


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    found: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _calls(sub)
    return found


def _v1_routes(world: World) -> dict[tuple[str, str], APIRoute]:
    return {
        (method, route.path): route
        for route in api_routes(world.app.routes)
        if route.path.startswith("/v1")
        for method in route.methods
    }


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI >= 0.16x keeps an included
    router as one node; our routers carry their full paths, so no prefix is added here)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def _admin_only(world: World, route: tuple[str, str]) -> bool:
    return require_admin in _calls(_v1_routes(world)[route].dependant)


def _user_in_path(world: World, route: tuple[str, str]) -> bool:
    return path_user in _calls(_v1_routes(world)[route].dependant)


def test_every_v1_route_is_in_the_matrix(world: World) -> None:
    assert set(_v1_routes(world)) == set(ROUTES), (
        "a /v1 route was added or removed: give ROUTES an entry with a valid sample body"
    )
    for route in ROUTES:
        if "{user_id}" in route[1]:
            assert _user_in_path(world, route), f"{route} does not check its {{user_id}}"


@pytest.mark.parametrize("route", list(ROUTES), ids=" ".join)
def test_no_key_is_401(world: World, route: tuple[str, str]) -> None:
    answer = world.call(route, user="ann")
    assert answer.status_code == 401, answer.text
    assert error_of(answer)["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert ANN_SECRET not in answer.text


@pytest.mark.parametrize("route", list(ROUTES), ids=" ".join)
@pytest.mark.parametrize(
    "header",
    ["Bearer pvk_not-a-key-of-this-store-000000", "Basic YWRtaW46YWRtaW4=", "Bearer ", "pvk_x"],
)
def test_wrong_key_is_401(world: World, route: tuple[str, str], header: str) -> None:
    answer = world.call(route, user="ann", headers={"Authorization": header})
    assert answer.status_code == 401, answer.text
    assert error_of(answer)["code"] == "unauthorized"


def test_401_comes_before_a_malformed_body(world: World) -> None:
    answer = world.client.post(
        "/v1/users/ann/memories", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 401
    unknown = world.client.get("/v1/no/such/route")
    assert unknown.status_code == 401


@pytest.mark.parametrize("route", list(ROUTES), ids=" ".join)
def test_another_users_key_learns_nothing(world: World, route: tuple[str, str]) -> None:
    """Bob's key on Ann's routes: 403, and the same answer for a user who does not exist."""
    key = bearer(world.bob_key)
    on_ann = world.call(route, user="ann", headers=key)
    on_ghost = world.call(route, user="nobody-at-all", headers=key)
    assert ANN_SECRET not in on_ann.text
    if route in {("GET", "/v1/me"), ("GET", "/v1/models")}:
        # any key may ask these; they name no other user (this world has no model: 503)
        assert on_ann.status_code == (200 if route[1] == "/v1/me" else 503)
        assert "ann" not in on_ann.text
        return
    assert on_ann.status_code == 403, on_ann.text
    assert error_of(on_ann)["code"] == "forbidden"
    assert (on_ghost.status_code, on_ghost.json()) == (on_ann.status_code, on_ann.json())


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=" ".join)
def test_admin_only_routes_refuse_a_user_key(world: World, route: tuple[str, str]) -> None:
    answer = world.call(route, user="ann", headers=bearer(world.ann_key))  # even its own user
    assert answer.status_code == 403, answer.text
    assert error_of(answer)["code"] == "forbidden"
    assert "admin key" in error_of(answer)["message"]


def test_the_admin_routes_are_the_documented_ones(world: World) -> None:
    admin = {route for route in ROUTES if _admin_only(world, route)}
    assert admin == set(ADMIN_ROUTES)


@pytest.mark.parametrize("route", USER_ROUTES, ids=" ".join)
@pytest.mark.parametrize("bad_id", MALFORMED_IDS, ids=["blank", "too-long", "control-char"])
@pytest.mark.parametrize("who", ["admin", "user"])
def test_malformed_user_id_is_400(
    world: World, route: tuple[str, str], bad_id: str, who: str
) -> None:
    key = ADMIN_KEY if who == "admin" else world.ann_key
    answer = world.call(route, user=bad_id, headers=bearer(key))
    if who == "user" and route in ADMIN_ROUTES:
        assert answer.status_code == 403  # the admin check comes first on admin routes
        return
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["code"] == "validation_error"
    assert "user id" in error_of(answer)["message"]


def test_a_slash_in_a_user_id_is_refused_where_ids_are_made(world: World) -> None:
    answer = world.client.post("/v1/users", json={"id": "a/b"}, headers=bearer(ADMIN_KEY))
    assert answer.status_code == 400
    assert "slash" in error_of(answer)["message"]


def test_a_user_key_reaches_its_own_user_and_chat_defaults_to_it(world: World) -> None:
    key = bearer(world.ann_key)
    me = world.client.get("/v1/me", headers=key).json()
    assert me == {"user_id": "ann", "admin": False, "key_id": world.ann_key_id}
    listed = world.client.get("/v1/users/ann/memories", headers=key)
    assert listed.status_code == 200
    assert ANN_SECRET in listed.text
    admin = world.client.get("/v1/me", headers=bearer(ADMIN_KEY)).json()
    assert admin["admin"] is True and admin["user_id"] is None


def test_ids_of_another_user_are_not_found_under_ones_own_user(world: World) -> None:
    """Bob naming Ann's memory, event or picture under his own user: 404, nothing of Ann's."""
    key = bearer(world.bob_key)
    for path in (
        f"/v1/users/bob/memories/{world.memory_id}",
        f"/v1/users/bob/memories/{world.memory_id}/history",
        f"/v1/users/bob/images/{world.image_id}",
    ):
        answer = world.client.get(path, headers=key)
        assert answer.status_code == 404, (path, answer.text)
        assert ANN_SECRET not in answer.text
    undo = world.client.post(f"/v1/users/bob/events/{world.event_id}/undo", headers=key)
    assert undo.status_code == 404
    assert ANN_SECRET not in undo.text


def test_keys_are_stored_hashed(world: World) -> None:
    stored = b"".join(
        path.read_bytes()
        for path in world.db.parent.iterdir()
        if path.name.startswith(world.db.name) and path.is_file()
    )
    for secret in (ADMIN_KEY, world.ann_key, world.bob_key):
        assert secret.encode() not in stored
    with sqlite3.connect(world.db) as conn:
        prefixes = [row[0] for row in conn.execute("SELECT prefix FROM api_keys")]
    # a listing can still tell keys apart, from 4 characters after the scheme and no more
    assert world.ann_key[:8] in prefixes and all(len(p) <= 8 for p in prefixes)


def test_a_revoked_key_is_401(tmp_path: Path) -> None:
    with TestClient(create_app(make_config(tmp_path))) as client:
        key_id, key = make_user_key(client, "carol")
        assert client.get("/v1/me", headers=bearer(key)).status_code == 200
        revoked = client.delete(f"/v1/keys/{key_id}", headers=bearer(ADMIN_KEY))
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        answer = client.get("/v1/users/carol/memories", headers=bearer(key))
        assert answer.status_code == 401
        listed = client.get("/v1/users/carol/keys", headers=bearer(ADMIN_KEY)).json()["data"]
        assert [k["id"] for k in listed] == [key_id]
        assert "key" not in listed[0]  # no secret in a listing
        again = client.delete(f"/v1/keys/{key_id}", headers=bearer(ADMIN_KEY))
        assert again.status_code == 404


def test_an_admin_key_is_generated_once_and_announced(tmp_path: Path) -> None:
    announced: list[str] = []
    config = make_config(tmp_path, admin_key=None, announce_admin_key=announced.append)
    with TestClient(create_app(config)) as client:
        assert len(announced) == 1
        assert client.get("/v1/users", headers=bearer(announced[0])).status_code == 200
    with TestClient(create_app(config)):
        assert len(announced) == 1  # the store has one now: nothing new to print
