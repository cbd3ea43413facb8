"""The memory REST API end to end over the ASGI app (and real HTTP where HTTP is the point):
users, memories with filters and cursor pages, change/history/undo, search, personality,
turns, pictures, export, deleting a user (rows and blobs), errors, size limits, the page.

Answers are checked against the documented shapes in personavlm.server.schemas.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from personavlm.errors import ConfigError
from personavlm.memory import TurnInput
from personavlm.memory.store import MemoryStore
from personavlm.personality import Reading
from personavlm.server import create_app, schemas
from personavlm.server.config import MIB
from server_fixtures import (
    ADMIN_KEY,
    bearer,
    data_url,
    error_of,
    make_config,
    make_user_key,
    noisy_png,
    png_bytes,
    served,
)

ADMIN = bearer(ADMIN_KEY)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_config(tmp_path))) as opened:
        yield opened


def store_of(client: TestClient) -> MemoryStore:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    assert isinstance(store, MemoryStore)
    return store


def shaped(model: type[BaseModel], body: Any) -> Any:
    """`body`, after checking it has exactly the documented shape."""
    model.model_validate(body)
    return body


def add(client: TestClient, user: str, content: str, **fields: Any) -> dict[str, Any]:
    answer = client.post(
        f"/v1/users/{user}/memories",
        headers=ADMIN,
        json={"type": fields.pop("type", "semantic"), "content": content, **fields},
    )
    assert answer.status_code == 201, answer.text
    return shaped(schemas.MemoryOut, answer.json())


# ------------------------------------------------------------------ service basics


def test_health_page_and_schema_need_no_key(client: TestClient) -> None:
    health = client.get("/healthz")
    assert shaped(schemas.HealthOut, health.json()) == {
        "status": "ok",
        "problems": [],
        "engine": "sqlite",
        "model": False,
        "backend": None,
    }
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
    assert client.get("/openapi.json").status_code == 200


def test_a_missing_page_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"index\.html"):
        create_app(make_config(tmp_path, static_dir=tmp_path / "no-page"))


def test_users_are_created_listed_and_counted(client: TestClient) -> None:
    made = client.post("/v1/users", headers=ADMIN, json={"id": "ann"})
    assert made.status_code == 201
    assert shaped(schemas.UserOut, made.json())["memories"]["semantic"] == 0
    again = client.post("/v1/users", headers=ADMIN, json={"id": "ann"})
    assert again.status_code == 200
    add(client, "ann", "Ann has a beagle called Bobby")
    add(client, "bob", "Bob plays the cello")  # adding for a new user creates it
    listed = shaped(schemas.UserList, client.get("/v1/users", headers=ADMIN).json())
    assert [u["id"] for u in listed["data"]] == ["ann", "bob"]
    assert listed["data"][0]["memories"] == {
        "core": 0,
        "semantic": 1,
        "episodic": 0,
        "procedural": 0,
    }


def test_keys_are_made_for_a_user_and_listed_without_secrets(client: TestClient) -> None:
    answer = client.post("/v1/users/ann/keys", headers=ADMIN, json={"label": "phone"})
    assert answer.status_code == 201
    made = shaped(schemas.NewKeyOut, answer.json())
    assert made["user_id"] == "ann" and made["label"] == "phone"
    assert made["key"].startswith(made["prefix"])
    listed = shaped(schemas.KeyList, client.get("/v1/users/ann/keys", headers=ADMIN).json())
    assert [k["id"] for k in listed["data"]] == [made["id"]]
    assert made["key"] not in str(listed)
    missing = client.get("/v1/users/nobody/keys", headers=ADMIN)
    assert missing.status_code == 404


# ------------------------------------------------------------------ memories


def test_memory_lifecycle_change_history_undo(client: TestClient) -> None:
    first = add(client, "ann", "Ann drinks Sprite", keywords=["drink"], time="2024-01-05 10:00")
    url = f"/v1/users/ann/memories/{first['id']}"
    assert client.get(url, headers=ADMIN).json() == first

    changed = client.patch(
        url, headers=ADMIN, json={"content": "Ann drinks Coca-Cola", "time": "2024-03-01 09:00"}
    )
    assert changed.status_code == 200
    second = shaped(schemas.MemoryOut, changed.json())
    assert (second["version"], second["supersedes"]) == (2, first["id"])
    assert client.get(url, headers=ADMIN).json()["status"] == "superseded"

    timeline = client.get(f"{url}/timeline", headers=ADMIN).json()
    assert [m["content"] for m in shaped(schemas.MemoryList, timeline)["data"]] == [
        "Ann drinks Sprite",
        "Ann drinks Coca-Cola",
    ]
    history = shaped(schemas.EventList, client.get(f"{url}/history", headers=ADMIN).json())
    assert [e["op"] for e in history["data"]] == ["add", "update"]

    # The add event touched a memory that changed since: undo refuses, naming why.
    conflict = client.post(f"/v1/users/ann/events/{history['data'][0]['id']}/undo", headers=ADMIN)
    assert conflict.status_code == 409
    assert error_of(conflict)["code"] == "conflict"

    undone = client.post(f"/v1/users/ann/events/{history['data'][1]['id']}/undo", headers=ADMIN)
    assert undone.status_code == 200
    assert shaped(schemas.EventOut, undone.json())["op"] == "undo"
    assert client.get(url, headers=ADMIN).json()["status"] == "active"


def test_invalidate_and_delete(client: TestClient) -> None:
    memory = add(client, "ann", "Ann is training for a marathon", time="2024-01-01 10:00")
    url = f"/v1/users/ann/memories/{memory['id']}"
    gone = client.post(f"{url}/invalidate", headers=ADMIN, json={"time": "2024-06-01 08:00"})
    assert gone.status_code == 200
    assert gone.json()["status"] == "invalidated"
    assert gone.json()["valid_to"] == "2024-06-01 08:00:00"
    other = add(client, "ann", "Ann collects stamps")
    deleted = client.delete(f"/v1/users/ann/memories/{other['id']}", headers=ADMIN)
    assert deleted.json()["status"] == "deleted"
    active = client.get("/v1/users/ann/memories", headers=ADMIN).json()["data"]
    assert active == []
    everything = client.get("/v1/users/ann/memories?status=any", headers=ADMIN).json()["data"]
    assert {m["status"] for m in everything} == {"invalidated", "deleted"}


def test_memories_filter_by_type_and_time(client: TestClient) -> None:
    add(client, "ann", "Ann likes jazz", time="2024-01-10 10:00")
    add(client, "ann", "Ann went to Lisbon", type="episodic", time="2024-02-10 10:00")
    add(client, "ann", "Ann", type="core", key="name", time="2024-03-10 10:00")

    def contents(query: str) -> list[str]:
        answer = client.get(f"/v1/users/ann/memories?{query}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return [m["content"] for m in shaped(schemas.MemoryPage, answer.json())["data"]]

    assert contents("type=semantic") == ["Ann likes jazz"]
    assert contents("type=semantic&type=core") == ["Ann likes jazz", "Ann"]
    assert contents("start=2024-02-01 00:00&end=2024-02-28 00:00") == ["Ann went to Lisbon"]
    bad_type = client.get("/v1/users/ann/memories?type=dreams", headers=ADMIN)
    assert bad_type.status_code == 400
    assert "dreams" in error_of(bad_type)["message"]
    bad_time = client.get("/v1/users/ann/memories?start=yesterday", headers=ADMIN)
    assert bad_time.status_code == 400


def test_memory_pages_follow_the_cursor_without_gaps_or_repeats(client: TestClient) -> None:
    made = [
        add(client, "ann", f"fact number {i}", time=f"2024-01-{1 + i // 2:02d} 10:00")["id"]
        for i in range(7)
    ]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/users/ann/memories?{query}", headers=ADMIN).json()
        seen += [m["id"] for m in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        add(client, "ann", "written between pages", time="2023-12-01 10:00")  # before the cursor
    assert seen == made
    assert pages == 3


def test_memory_pages_newest_first(client: TestClient) -> None:
    made = [
        add(client, "ann", f"fact number {i}", time=f"2024-01-{1 + i:02d} 10:00")["id"]
        for i in range(5)
    ]
    first = client.get("/v1/users/ann/memories?limit=3&order=desc", headers=ADMIN).json()
    assert [m["id"] for m in first["data"]] == made[:1:-1]
    query = f"limit=3&order=desc&cursor={first['next_cursor']}"
    rest = client.get(f"/v1/users/ann/memories?{query}", headers=ADMIN).json()
    assert [m["id"] for m in rest["data"]] == made[1::-1]
    assert rest["next_cursor"] is None
    wrong = client.get("/v1/users/ann/memories?order=sideways", headers=ADMIN)
    assert wrong.status_code == 422


@pytest.mark.parametrize(
    "cursor", ["garbage!", "e30", base64.urlsafe_b64encode(b'{"t":1}').decode()]
)
def test_a_garbled_cursor_is_400(client: TestClient, cursor: str) -> None:
    add(client, "ann", "something")
    answer = client.get(f"/v1/users/ann/memories?cursor={cursor}", headers=ADMIN)
    assert answer.status_code == 400
    assert "cursor" in error_of(answer)["message"]


@pytest.mark.parametrize("limit", [0, 501])
def test_a_limit_out_of_range_is_400(client: TestClient, limit: int) -> None:
    add(client, "ann", "something")
    answer = client.get(f"/v1/users/ann/memories?limit={limit}", headers=ADMIN)
    assert answer.status_code == 400


def test_search_returns_hits_with_picture_urls(client: TestClient) -> None:
    store = store_of(client)
    picture = store.store_image(png_bytes())
    store.add("ann", "semantic", "Ann's dog Bobby is a beagle", image_ids=[picture.id])
    add(client, "ann", "Ann works as a nurse")
    answer = client.post(
        "/v1/users/ann/search", headers=ADMIN, json={"query": "dog beagle", "types": ["semantic"]}
    )
    assert answer.status_code == 200, answer.text
    hits = shaped(schemas.HitList, answer.json())["data"]
    assert hits[0]["memory"]["content"] == "Ann's dog Bobby is a beagle"
    image = hits[0]["images"][0]
    assert image["url"] == f"/v1/users/ann/images/{picture.id}"
    assert "path" not in image  # server paths stay on the server
    assert client.get(image["url"], headers=ADMIN).content == png_bytes()
    wrong = client.post("/v1/users/ann/search", headers=ADMIN, json={"query": "x", "k": 0})
    assert wrong.status_code == 400


def test_personality_current_and_trajectory(client: TestClient) -> None:
    store = store_of(client)
    store.record_personality("ann", Reading(5, 3, 2, 4, 1), time="2024-01-01 10:00")
    store.record_personality("ann", Reading(4, 3, 2, 4, 2), time="2024-01-02 10:00")
    body = shaped(
        schemas.PersonalityOut, client.get("/v1/users/ann/personality", headers=ADMIN).json()
    )
    assert [r["reading"]["openness"] for r in body["trajectory"]] == [5, 4]
    assert body["current"]["step"] == body["trajectory"][-1]["step_after"]
    assert body["current"]["traits"] == body["trajectory"][-1]["traits_after"]


def _turns(store: MemoryStore, user: str, count: int, image_id: str | None = None) -> None:
    turns = [
        TurnInput.create(
            time=f"2024-02-01 10:{i:02d}",
            role="user" if i % 2 == 0 else "assistant",
            text=f"turn {i}",
            image_ids=(image_id,) if image_id and i == 0 else (),
        )
        for i in range(count)
    ]
    store.append_turns(user, turns)


def test_turns_pages_and_pictures(client: TestClient) -> None:
    store = store_of(client)
    picture = store.store_image(png_bytes((10, 200, 10)))
    _turns(store, "ann", 5, picture.id)
    first = client.get("/v1/users/ann/turns?limit=2", headers=ADMIN).json()
    assert [t["text"] for t in shaped(schemas.TurnPage, first)["data"]] == ["turn 0", "turn 1"]
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/v1/users/ann/turns?limit=2&cursor={cursor}", headers=ADMIN).json()
        rest += [t["text"] for t in page["data"]]
        cursor = page["next_cursor"]
    assert rest == ["turn 2", "turn 3", "turn 4"]
    windowed = client.get(
        "/v1/users/ann/turns?start=2024-02-01 10:01&end=2024-02-01 10:02", headers=ADMIN
    ).json()
    assert [t["text"] for t in windowed["data"]] == ["turn 1", "turn 2"]

    image = client.get(f"/v1/users/ann/images/{picture.id}", headers=ADMIN)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert hashlib.sha256(image.content).hexdigest() == picture.id
    store.create_user("bob")
    not_bobs = client.get(f"/v1/users/bob/images/{picture.id}", headers=ADMIN)
    assert not_bobs.status_code == 404


def test_export_holds_everything_of_the_user(client: TestClient) -> None:
    store = store_of(client)
    picture = store.store_image(png_bytes((1, 2, 3)))
    _turns(store, "ann", 2, picture.id)
    add(client, "ann", "Ann likes tea")
    _key_id, secret = make_user_key(client, "ann")
    add(client, "bob", "Bob likes coffee")
    export = client.get("/v1/users/ann/export", headers=ADMIN).json()
    assert (export["format"], export["version"], export["user"]["id"]) == (
        "personavlm.export",
        1,
        "ann",
    )
    contents = {m["content"] for m in export["memories"]}
    assert "Ann likes tea" in contents and "Bob likes coffee" not in contents
    assert [t["text"] for t in export["turns"]] == ["turn 0", "turn 1"]
    assert base64.b64decode(export["images"][0]["data_base64"]) == png_bytes((1, 2, 3))
    assert secret not in json.dumps(export)  # the key is listed, its secret is not
    assert [k["prefix"] for k in export["keys"]] == [secret[:8]]


# ------------------------------------------------------------------ deleting a user


def _rows_of(db: Path, user: str) -> dict[str, int]:
    """Rows naming `user` in every table with a user column (and the users table)."""
    counts: dict[str, int] = {}
    with sqlite3.connect(db) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info('{table}')")}
            if "user_id" in columns:
                counts[table] = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE user_id = ?", (user,)
                ).fetchone()[0]
        counts["users"] = conn.execute(
            "SELECT count(*) FROM users WHERE id = ?", (user,)
        ).fetchone()[0]
        fts = conn.execute(
            "SELECT count(*) FROM memory_fts WHERE memory_fts MATCH ?", ('"annsecretword"',)
        ).fetchone()[0]
        counts["memory_fts"] = fts
        # Tables keyed by a memory or an event: no row may outlive what it belongs to.
        counts["orphan vectors"] = conn.execute(
            "SELECT count(*) FROM memory_vectors WHERE memory_id NOT IN (SELECT id FROM memories)"
        ).fetchone()[0]
        counts["orphan changes"] = conn.execute(
            "SELECT count(*) FROM memory_event_changes "
            "WHERE event_id NOT IN (SELECT id FROM memory_events)"
        ).fetchone()[0]
    return counts


def _image_rows(db: Path, image_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT count(*) FROM images WHERE id = ?", (image_id,)).fetchone()[0]
        )


def test_deleting_a_user_removes_rows_and_unshared_blobs(tmp_path: Path) -> None:
    with TestClient(create_app(make_config(tmp_path))) as client:
        store = store_of(client)
        own = store.store_image(png_bytes((9, 9, 9)))
        shared = store.store_image(png_bytes((7, 7, 7)))
        turns = [
            TurnInput.create(
                time="2024-02-01 10:00",
                role="user",
                text="annsecretword one",
                image_ids=(own.id, shared.id),
            ),
            TurnInput.create(time="2024-02-01 10:01", role="assistant", text="annsecretword two"),
        ]
        store.append_turns("ann", turns)
        store.add("ann", "semantic", "annsecretword memory", image_ids=[own.id])
        store.record_personality("ann", Reading(3, 3, 3, 3, 3), time="2024-02-01 10:02")
        store.append_turns(
            "bob",
            [
                TurnInput.create(
                    time="2024-02-01 10:00", role="user", text="bob's", image_ids=(shared.id,)
                )
            ],
        )
        _key_id, ann_key = make_user_key(client, "ann")
        before = _rows_of(tmp_path / "memory.db", "ann")
        assert before["turns"] == 2 and before["api_keys"] == 1 and before["memory_fts"] == 3

        answer = client.delete("/v1/users/ann", headers=bearer(ann_key))  # her own key may
        assert answer.status_code == 200, answer.text
        counts = shaped(schemas.DeletionOut, answer.json())
        assert (counts["turns"], counts["memories"], counts["keys"], counts["blobs"]) == (
            2,
            3,
            1,
            1,
        )

        after = _rows_of(tmp_path / "memory.db", "ann")
        assert set(after.values()) == {0}, after
        blobs = tmp_path / "memory.db.blobs"
        assert not (blobs / own.id[:2] / own.id).exists()
        assert (blobs / shared.id[:2] / shared.id).exists()  # Bob's turn still shows it
        db = tmp_path / "memory.db"
        assert (_image_rows(db, own.id), _image_rows(db, shared.id)) == (0, 1)
        assert _rows_of(db, "bob")["turns"] == 1
        assert client.get(f"/v1/users/bob/images/{shared.id}", headers=ADMIN).status_code == 200
        assert client.get("/v1/me", headers=bearer(ann_key)).status_code == 401  # key gone
        assert client.get("/v1/users/ann/turns", headers=ADMIN).status_code == 404
        assert client.delete("/v1/users/ann", headers=ADMIN).status_code == 404
        assert [u["id"] for u in client.get("/v1/users", headers=ADMIN).json()["data"]] == ["bob"]


# ------------------------------------------------------------------ errors and limits


def test_errors_have_one_shape(client: TestClient) -> None:
    missing = client.get("/v1/users/ann/memories/999", headers=ADMIN)
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    typo = client.post(
        "/v1/users/ann/memories", headers=ADMIN, json={"type": "semantic", "contnet": "x"}
    )
    assert typo.status_code == 422
    assert "content" in error_of(typo)["message"]
    not_int = client.get("/v1/users/ann/memories/twelve", headers=ADMIN)
    assert not_int.status_code == 422
    assert error_of(not_int)["code"] == "validation_error"
    wrong_method = client.put("/v1/users", headers=ADMIN)
    assert error_of(wrong_method)["code"] == "method_not_allowed"
    no_route = client.get("/v1/nothing/here", headers=ADMIN)
    assert no_route.status_code == 404 and error_of(no_route)["code"] == "not_found"
    empty = client.post(
        "/v1/users/ann/memories", headers=ADMIN, json={"type": "semantic", "content": " "}
    )
    assert empty.status_code == 400 and error_of(empty)["code"] == "validation_error"


def test_bodies_over_the_limit_are_413_even_without_content_length(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_body_bytes=64 * 1024)
    big = b'{"type": "semantic", "content": "' + b"x" * (100 * 1024) + b'"}'
    with served(config) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        declared = http.post(
            "/v1/users/ann/memories", content=big, headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413
        assert error_of(declared)["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        streamed = http.post(
            "/v1/users/ann/memories", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert error_of(streamed)["code"] == "payload_too_large"
        small = http.post("/v1/users/ann/memories", json={"type": "semantic", "content": "ok"})
        assert small.status_code == 201
        listed = http.get("/v1/users/ann/memories").json()["data"]
        assert [m["content"] for m in listed] == ["ok"]  # nothing of the refused bodies


def test_the_image_limit_applies_to_chat_pictures(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_image_bytes=MIB // 64)
    picture = noisy_png(128)  # ~49 KB of incompressible pixels, over 16 KiB
    body = {
        "user": "ann",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": data_url(picture)}},
                ],
            }
        ],
    }
    with TestClient(create_app(config)) as client:
        answer = client.post("/v1/chat/completions", headers=ADMIN, json=body)
    assert answer.status_code == 413
    assert "--max-image-mb" in error_of(answer)["message"]
