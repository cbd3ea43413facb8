"""Whole users and API keys: creating users, keys stored hashed, export, forgetting a user
(rows and blobs), pictures visible only to users that show them, keyset pagination."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from helpers import connect, table_counts, write_png
from personavlm.errors import NotFoundError, ValidationError
from personavlm.memory import MemoryStore, TurnInput
from personavlm.personality import Reading

# The store contract: every test here runs on SQLite and on PostgreSQL (conftest.py).
STORE_CONTRACT = True


def test_create_user_once(store: MemoryStore) -> None:
    assert store.create_user("ann") is True
    assert store.create_user("ann") is False
    assert store.users() == ["ann"]
    assert store.list("ann") == []
    with pytest.raises(ValidationError):
        store.create_user("")
    with pytest.raises(NotFoundError, match="no user 'bo'"):
        store.user_created_at("bo")


def test_keys_are_stored_hashed_and_revocable(store: MemoryStore, store_location: str) -> None:
    admin, admin_secret = store.create_api_key(None, label="ops")
    ann, ann_secret = store.create_api_key("ann", label="phone")
    assert ann_secret.startswith("pvk_") and len(ann_secret) > 40
    assert store.users() == ["ann"]  # a key for a new user registers the user
    assert admin.is_admin and not ann.is_admin and store.has_admin_key()
    assert store.authenticate(ann_secret) == ann
    assert store.authenticate(admin_secret) == admin
    assert store.authenticate(ann_secret + "x") is None
    assert store.authenticate("") is None
    assert ann.prefix == ann_secret[:8]  # the scheme and 4 characters: nothing guessable
    with connect(store_location) as conn:
        stored = [row[0] for row in conn.execute("SELECT hash FROM api_keys").fetchall()]
    assert ann_secret not in stored and admin_secret not in stored
    assert all(len(h) == 64 for h in stored)

    revoked = store.revoke_api_key(ann.id)
    assert revoked.revoked_at is not None
    assert store.authenticate(ann_secret) is None
    assert [k.id for k in store.api_keys("ann")] == [ann.id]  # the record stays
    with pytest.raises(NotFoundError, match="no live API key"):
        store.revoke_api_key(ann.id)


def test_registering_a_chosen_admin_key_is_idempotent(store: MemoryStore) -> None:
    secret = "a-chosen-admin-key-0123456789"
    first = store.register_api_key(secret, None, label="env")
    assert store.register_api_key(secret, None, label="env") == first
    assert [k.id for k in store.api_keys(None)] == [first.id]
    with pytest.raises(ValidationError, match="another owner"):
        store.register_api_key(secret, "ann")
    with pytest.raises(ValidationError, match="at least 16"):
        store.register_api_key("short", None)
    assert store.users() == []  # the refused registration wrote nothing


def _ann_with_everything(store: MemoryStore, tmp_path: Path) -> dict[str, str]:
    own = store.store_image(write_png(tmp_path / "own.png", (10, 200, 10)), caption="a fern")
    shared = store.store_image(write_png(tmp_path / "shared.png", (10, 10, 200)))
    for user, images in (("ann", [own.id, shared.id]), ("bo", [shared.id])):
        store.append_turns(
            user,
            [
                TurnInput.create(
                    time="2024-03-01 10:00", role="user", text="look", image_ids=images
                ),
                TurnInput.create(time="2024-03-01 10:01", role="assistant", text="nice"),
            ],
        )
    memory = store.add("ann", "semantic", "Ann keeps ferns", time="2024-03-01 10:02")
    store.update("ann", memory.id, content="Ann keeps ferns and a cactus")
    store.add("ann", "core", "Ann", key="name")
    store.record_personality("ann", Reading(4, 3, 2, 4, 3), time="2024-03-01 10:03")
    store.create_api_key("ann", label="phone")
    return {"own": own.id, "shared": shared.id}


def test_export_holds_everything_of_the_user(store: MemoryStore, tmp_path: Path) -> None:
    images = _ann_with_everything(store, tmp_path)
    exported = store.export_user("ann")
    assert json.loads(json.dumps(exported)) == exported  # JSON-ready as it is
    assert (exported["format"], exported["version"]) == ("personavlm.export", 1)
    assert exported["user"]["id"] == "ann"
    statuses = sorted(m["status"] for m in exported["memories"])
    assert statuses == ["active", "active", "active", "active", "superseded"]
    assert {m["user_id"] for m in exported["memories"]} == {"ann"}
    assert [t["text"] for t in exported["turns"]] == ["look", "nice"]
    assert [e["op"] for e in exported["events"]] == ["ingest", "ingest", "add", "update", "add"]
    assert exported["personality"]["current"]["step"] == 1
    assert len(exported["personality"]["readings"]) == 1
    assert [k["label"] for k in exported["keys"]] == ["phone"]
    assert "hash" not in exported["keys"][0]
    pictures = {i["id"]: i for i in exported["images"]}
    assert set(pictures) == {images["own"], images["shared"]}
    data = base64.b64decode(pictures[images["own"]]["data_base64"])
    assert data == (tmp_path / "own.png").read_bytes()
    assert pictures[images["own"]]["caption"] == "a fern"
    bo = store.export_user("bo")
    assert [i["id"] for i in bo["images"]] == [images["shared"]]
    assert bo["memories"] and {m["user_id"] for m in bo["memories"]} == {"bo"}
    with pytest.raises(NotFoundError):
        store.export_user("nobody")


def test_deleting_a_user_removes_rows_and_own_blobs_only(
    store: MemoryStore, tmp_path: Path, store_location: str
) -> None:
    images = _ann_with_everything(store, tmp_path)
    own, shared = (store.user_image("ann", images[name]).id for name in ("own", "shared"))
    assert store.blobs.exists(own) and store.blobs.exists(shared)
    bo_before = store.export_user("bo")

    deletion = store.delete_user("ann")
    assert deletion.to_dict() == {
        "user_id": "ann",
        "memories": 5,  # two turn entries, a fact and its new version, the name
        "turns": 2,
        "events": 5,
        "images": 1,
        "blobs": 1,
        "keys": 1,
    }
    assert not store.blobs.exists(own) and store.blobs.exists(shared)
    assert not any(store.blobs.root.rglob(own))  # the file itself is gone from the folder
    assert store.users() == ["bo"]
    assert store.export_user("bo") == bo_before  # nothing of bo moved
    with connect(store_location) as conn:
        for table in ("memories", "turns", "memory_events", "sessions", "api_keys",
                      "personality_state", "personality_readings", "update_jobs"):  # fmt: skip
            rows = conn.execute(f"SELECT count(*) FROM {table} WHERE user_id = 'ann'").fetchone()
            assert rows[0] == 0, table
        own = conn.execute("SELECT count(*) FROM images WHERE id = ?", (images["own"],))
        assert own.fetchone()[0] == 0
    counts = table_counts(store)
    # No index row outlives its memory (FTS5 takes no foreign keys: deleted by hand).
    assert counts["memory_vectors"] == counts["memories"] == counts["memory_fts"]
    assert store.search("bo", "look") != []
    with pytest.raises(NotFoundError, match="no user 'ann'"):
        store.delete_user("ann")
    with pytest.raises(NotFoundError):
        store.list("ann")


def test_pictures_are_visible_only_to_users_that_show_them(
    store: MemoryStore, tmp_path: Path
) -> None:
    images = _ann_with_everything(store, tmp_path)
    assert store.user_image("ann", images["own"]).caption == "a fern"
    assert store.user_image("bo", images["shared"]).id == images["shared"]
    # bo's answer for ann's picture is the same as for a picture that does not exist.
    with pytest.raises(NotFoundError) as theirs:
        store.user_image("bo", images["own"])
    with pytest.raises(NotFoundError) as nowhere:
        store.user_image("bo", "0" * 64)
    assert str(theirs.value).replace(images["own"], "X") == str(nowhere.value).replace(
        "0" * 64, "X"
    )
    with pytest.raises(ValidationError, match="not an image id"):
        store.user_image("ann", "../../etc/passwd")


def test_keyset_pages_do_not_shift_when_memories_arrive(store: MemoryStore) -> None:
    made = [
        store.add("ann", "semantic", f"fact {i}", time=f"2024-03-{i + 1:02d} 10:00").id
        for i in range(5)
    ]
    first = store.list("ann", limit=2)
    assert [m.id for m in first] == made[:2]
    store.add("ann", "semantic", "an early fact", time="2024-02-01 10:00")  # sorts first
    cursor = (first[-1].event_start, first[-1].id)
    second = store.list("ann", limit=2, after=cursor)
    assert [m.id for m in second] == made[2:4]
    last = store.list("ann", limit=2, after=(second[-1].event_start, second[-1].id))
    assert [m.id for m in last] == made[4:]
    newest = store.list("ann", limit=3, newest_first=True)
    assert [m.id for m in newest] == made[:1:-1]
    older = store.list(
        "ann", limit=3, newest_first=True, after=(newest[-1].event_start, newest[-1].id)
    )
    assert [m.content for m in older] == ["fact 1", "fact 0", "an early fact"]
    turns = store.append_turns(
        "ann",
        [TurnInput.create(time=f"2024-04-01 10:0{i}", role="user", text=f"t{i}") for i in range(3)],
    )
    assert turns.added == 3
    page = store.turns("ann", limit=2)
    rest = store.turns("ann", limit=2, after=(page[-1].time, page[-1].id))
    assert [t.text for t in page + rest] == ["t0", "t1", "t2"]
