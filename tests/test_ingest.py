"""Raw ingestion and the turn log: JSONL parsing, idempotence, sessions, images, and bad input
that must leave the store untouched."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import table_counts, write_png
from personavlm.errors import ConflictError, NotFoundError, ValidationError
from personavlm.memory import MemoryStore, MemoryType, TurnInput
from personavlm.memory.ingest import ingest_file
from personavlm.memory.validate import MAX_TEXT_CHARS

# The store contract: every test here runs on SQLite and on PostgreSQL (conftest.py).
STORE_CONTRACT = True


def _jsonl(path: Path, turns: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(t) for t in turns) + "\n", encoding="utf-8")
    return path


def _turns(n: int, start_minute: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"t{i}",
            "time": f"2024-03-01 10:{start_minute + i:02d}",
            "role": "user" if i % 2 == 0 else "assistant",
            "text": f"message number {i}",
        }
        for i in range(n)
    ]


def test_ingest_makes_every_turn_retrievable(store: MemoryStore, tmp_path: Path) -> None:
    report = ingest_file(store, "ann", _jsonl(tmp_path / "t.jsonl", _turns(5)))
    assert (report.added, report.skipped, report.sessions) == (5, 0, 1)
    memories = store.list("ann", types=["episodic"])
    assert len(memories) == 5
    turns = store.turns("ann")
    assert [m.source_turn_ids for m in memories] == [(t.id,) for t in turns]
    assert memories[0].content == "user: message number 0"
    hits = store.search("ann", "message number 3", types=["episodic"], k=1)
    assert [t.ext_id for t in hits[0].turns] == ["t3"]


def test_ingest_is_idempotent_by_turn_id(store: MemoryStore, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", _turns(4))
    ingest_file(store, "ann", path)
    counts = table_counts(store)
    again = ingest_file(store, "ann", path)
    assert (again.added, again.skipped) == (0, 4)
    assert table_counts(store) == counts
    longer = ingest_file(store, "ann", _jsonl(tmp_path / "more.jsonl", _turns(6)))
    assert (longer.added, longer.skipped) == (2, 4)


def test_a_reused_turn_id_with_other_text_conflicts_and_writes_nothing(
    store: MemoryStore, tmp_path: Path
) -> None:
    ingest_file(store, "ann", _jsonl(tmp_path / "a.jsonl", _turns(3)))
    counts = table_counts(store)
    changed = _turns(5)
    changed[1]["text"] = "rewritten history"
    with pytest.raises(ConflictError, match=r"'t1' is already stored .* other content"):
        ingest_file(store, "ann", _jsonl(tmp_path / "b.jsonl", changed))
    assert table_counts(store) == counts


def test_out_of_order_turns_fail_before_any_write(store: MemoryStore, tmp_path: Path) -> None:
    turns = _turns(600)  # more than one ingest batch, so a late failure would be visible
    for i, turn in enumerate(turns):
        turn["time"] = f"2024-03-01 {10 + i // 60:02d}:{i % 60:02d}"
    turns[550]["time"] = "2024-01-01 00:00"
    counts = table_counts(store)
    with pytest.raises(ConflictError, match="earlier than the turn before it"):
        ingest_file(store, "ann", _jsonl(tmp_path / "t.jsonl", turns))
    assert table_counts(store) == counts


def test_sessions_split_after_sixty_minutes(store: MemoryStore) -> None:
    times = ["2024-03-01 10:00", "2024-03-01 11:00", "2024-03-01 12:01", "2024-03-02 09:00"]
    report = store.append_turns(
        "ann",
        [
            TurnInput.create(time=t, role="user", text=f"hi {i}", ext_id=str(i))
            for i, t in enumerate(times)
        ],
    )
    sessions = [t.session_id for t in store.turns("ann")]
    # 60 minutes exactly continues the session; 61 minutes starts a new one.
    assert sessions[0] == sessions[1] != sessions[2] != sessions[3]
    assert report.sessions == 3


def test_images_are_stored_once_by_content(store: MemoryStore, tmp_path: Path) -> None:
    write_png(tmp_path / "dog.png")
    write_png(tmp_path / "same-dog.png")  # same bytes, other name
    turns = [
        {
            "id": "a",
            "time": "2024-03-01 10:00",
            "role": "user",
            "text": "",
            "images": ["dog.png"],
            "caption": "a beagle on a rug",
        },
        {
            "id": "b",
            "time": "2024-03-01 10:01",
            "role": "user",
            "text": "again!",
            "images": ["same-dog.png"],
        },
    ]
    ingest_file(store, "ann", _jsonl(tmp_path / "t.jsonl", turns))
    stored = store.turns("ann")
    assert stored[0].image_ids == stored[1].image_ids and len(stored[0].image_ids) == 1
    assert store.list("ann")[0].content == "user:\n[image: a beagle on a rug]"
    blobs = [p for p in store.blobs.root.rglob("*") if p.is_file()]
    assert len(blobs) == 1


def test_bad_lines_name_file_and_line_and_write_nothing(store: MemoryStore, tmp_path: Path) -> None:
    good = json.dumps(_turns(1)[0])
    head = b'{"id": "x", "time": "2024-03-01 10:00", "role": "user", '
    cases = {
        b"not json": "not a JSON object",
        b'{"id": "x", "time": "2024-03-01 10:00", "role": "user"}': "missing field 'text'",
        b'{"id": "x", "time": "01/03/2024", "role": "user", "text": "hi"}': "not a valid time",
        b'{"id": "x", "time": "2024-03-01 10:00", "role": "bot", "text": "hi"}': "role 'bot'",
        b'{"id": "x", "time": "2024-03-01 10:00", "role": "user", "text": "  "}': "is empty",
        head + b'"text": "hi", "mood": 1}': "unknown fields",
        head + b'"text": "caf\xe9"}': "not valid UTF-8",
        head + b'"text": "\\ud800"}': "unpaired surrogate",
        b'{"id": 7, "time": "2024-03-01 10:00", "role": "user", "text": "hi"}': "'id' must be",
    }
    counts = table_counts(store)
    for line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_bytes(good.encode() + b"\n" + line + b"\n")
        with pytest.raises(ValidationError, match=message) as caught:
            ingest_file(store, "ann", path)
        assert f"{path}:2" in str(caught.value)
        assert table_counts(store) == counts


def test_over_long_text_is_refused(store: MemoryStore) -> None:
    with pytest.raises(ValidationError, match=f"the limit is {MAX_TEXT_CHARS}"):
        store.add("ann", "semantic", "x" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(ValidationError, match="limit"):
        TurnInput.create(time="2024-03-01 10:00", role="user", text="y" * (MAX_TEXT_CHARS + 1))


def test_missing_or_fake_image_fails_before_any_write(store: MemoryStore, tmp_path: Path) -> None:
    counts = table_counts(store)
    turns = _turns(2)
    turns[1]["images"] = ["nowhere.png"]
    with pytest.raises(ValidationError, match=r"image file not found: .*nowhere\.png"):
        ingest_file(store, "ann", _jsonl(tmp_path / "t.jsonl", turns))
    (tmp_path / "fake.png").write_text("not an image")
    turns[1]["images"] = ["fake.png"]
    with pytest.raises(ValidationError, match="is not a PNG, JPEG"):
        ingest_file(store, "ann", _jsonl(tmp_path / "t.jsonl", turns))
    assert table_counts(store) == counts
    assert not store.blobs.root.exists() or not any(store.blobs.root.rglob("*"))


def test_unknown_image_id_in_turn_is_not_found(store: MemoryStore) -> None:
    turn = TurnInput.create(
        time="2024-03-01 10:00", role="user", text="hi", ext_id="a", image_ids=("f" * 64,)
    )
    with pytest.raises(NotFoundError, match="is not stored"):
        store.append_turns("ann", [turn])
    assert store.users() == []


def test_ingest_of_an_empty_or_unreadable_file(store: MemoryStore, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValidationError, match="holds no turns"):
        ingest_file(store, "ann", tmp_path / "empty.jsonl")
    with pytest.raises(ValidationError, match="cannot read"):
        ingest_file(store, "ann", tmp_path / "absent.jsonl")


def test_turn_times_keep_their_minutes_and_weekday_shape(store: MemoryStore) -> None:
    store.append_turns(
        "ann", [TurnInput.create(time="2024-03-05T14:30", role="user", text="hello", ext_id="a")]
    )
    turn = store.turns("ann")[0]
    assert turn.time == datetime(2024, 3, 5, 14, 30)
    memory = store.list("ann", types=[MemoryType.EPISODIC])[0]
    assert memory.event_start == turn.time and memory.valid_from == turn.time
