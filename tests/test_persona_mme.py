"""Persona-MME history loading: the happy path (images consumed in order, segments, times) and
every malformed history, each rejected with a message naming the file and the place."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import write_png
from personavlm.errors import ValidationError
from personavlm.interop import History, load_history, parse_history, persona_mme


def _history() -> dict[str, Any]:
    """Two sessions, three images: one alone, two in one turn."""
    return {
        "profile": {"name": "Bobby", "age": 34},
        "sessions": [
            [
                {
                    "time": "2024-03-05 14:30",
                    "user": "Look at my dog <img> isn't he cute?",
                    "assistant": "He is adorable!",
                },
                {"time": "2024-03-05 14:31:15", "user": "His name is Max.", "assistant": ""},
            ],
            [
                {
                    "time": "2024-03-09 09:00:00",
                    "user": "Hike today: <img> and the summit <img>",
                    "assistant": "What a view.",
                },
            ],
        ],
        "imgs": ["dog.png", "trail.png", "summit.png"],
    }


def _write(directory: Path, data: Any, *, images: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "user_017.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    names = data.get("imgs") if isinstance(data, dict) else None
    if images and isinstance(names, list):
        for name in names:
            if isinstance(name, str):  # malformed lists are the tests' business
                write_png(directory / name)
    return path


def _load(tmp_path: Path, data: Any) -> History:
    return load_history(_write(tmp_path, data))


# --- the happy path ----------------------------------------------------------------------


def test_loads_sessions_turns_and_times(tmp_path: Path) -> None:
    history = _load(tmp_path, _history())

    assert history.source == tmp_path / "user_017.json"
    assert history.profile == {"name": "Bobby", "age": 34}
    assert (history.session_count, history.turn_count, history.image_count) == (2, 3, 3)
    assert [len(s) for s in history.sessions] == [2, 1]
    turns = list(history.turns())
    assert [(t.session_index, t.turn_index) for t in turns] == [(0, 0), (0, 1), (1, 0)]
    # With and without seconds.
    assert [t.time for t in turns] == [
        datetime(2024, 3, 5, 14, 30),
        datetime(2024, 3, 5, 14, 31, 15),
        datetime(2024, 3, 9, 9, 0),
    ]
    assert turns[0].assistant == "He is adorable!"
    assert turns[1].assistant == ""  # an empty stored reply is allowed


def test_images_are_consumed_in_order_across_turns(tmp_path: Path) -> None:
    history = _load(tmp_path, _history())
    first, second, third = history.turns()

    assert first.images == (tmp_path / "dog.png",)
    assert second.images == ()
    assert third.images == (tmp_path / "trail.png", tmp_path / "summit.png")


def test_user_text_drops_markers_and_segments_interleave(tmp_path: Path) -> None:
    history = _load(tmp_path, _history())
    first, second, third = history.turns()

    assert first.user == "Look at my dog isn't he cute?"
    assert first.segments == ("Look at my dog", tmp_path / "dog.png", "isn't he cute?")
    assert second.user == "His name is Max."
    assert second.segments == ("His name is Max.",)
    assert third.user == "Hike today: and the summit"
    assert third.segments == (
        "Hike today:",
        tmp_path / "trail.png",
        "and the summit",
        tmp_path / "summit.png",
    )


@pytest.mark.parametrize(
    ("text", "user", "texts"),
    [
        ("<img> What breed is this?", "What breed is this?", ["What breed is this?"]),
        ("Here:\n<img>\nWhat is it?", "Here:\nWhat is it?", ["Here:", "What is it?"]),
        ("look <img>, nice", "look, nice", ["look", ", nice"]),
        ("a <img>  <img> b", "a b", ["a", "b"]),
        ("a<img><img>b", "a b", ["a", "b"]),
        ("only pictures: <img> <img>", "only pictures:", ["only pictures:"]),
        ("<img><img>", "", []),
    ],
)
def test_marker_removal_leaves_no_double_whitespace(
    tmp_path: Path, text: str, user: str, texts: list[str]
) -> None:
    markers = text.count("<img>")
    data = {
        "sessions": [[{"time": "2024-03-05 14:30", "user": text, "assistant": "ok"}]],
        "imgs": [f"p{i}.png" for i in range(markers)],
    }
    (turn,) = _load(tmp_path, data).turns()

    assert turn.user == user
    assert [s for s in turn.segments if isinstance(s, str)] == texts
    assert [s for s in turn.segments if isinstance(s, Path)] == list(turn.images)
    assert len(turn.segments) == len(texts) + markers


def test_image_dir_override(tmp_path: Path) -> None:
    data = _history()
    path = _write(tmp_path / "histories", data, images=False)
    (tmp_path / "pictures").mkdir()
    for name in data["imgs"]:
        write_png(tmp_path / "pictures" / name)

    history = load_history(path, image_dir=str(tmp_path / "pictures"))

    assert history.source == path
    assert [p.parent for t in history.turns() for p in t.images] == [tmp_path / "pictures"] * 3


def test_images_are_not_found_next_to_the_file_when_they_live_elsewhere(tmp_path: Path) -> None:
    data = _history()
    path = _write(tmp_path / "histories", data, images=False)

    with pytest.raises(ValidationError) as caught:
        load_history(path)

    message = str(caught.value)
    assert str(path) in message
    assert str(tmp_path / "histories" / "dog.png") in message
    assert "--images DIR" in message


def test_parse_history_takes_decoded_data(tmp_path: Path) -> None:
    for name in _history()["imgs"]:
        write_png(tmp_path / name)

    history = parse_history(_history(), source=Path("u.json"), image_dir=tmp_path)

    assert history.source == Path("u.json")
    assert history.image_count == 3


def test_optional_keys_default_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    data = {
        "sessions": [[{"time": "2024-03-05 14:30", "user": "hi", "assistant": "", "x": 1}]],
        "summary": "not part of the layout",
    }
    history = _load(tmp_path, data)

    assert history.profile == {}
    assert history.image_count == 0


def test_equal_times_and_a_repeated_image_are_allowed(tmp_path: Path) -> None:
    data = {
        "sessions": [
            [
                {"time": "2024-03-05 14:30", "user": "<img>", "assistant": "a"},
                {"time": "2024-03-05T14:30:00", "user": "again <img>", "assistant": "b"},
            ]
        ],
        "imgs": ["same.png", "same.png"],
    }
    first, second = _load(tmp_path, data).turns()

    assert first.images == second.images == (tmp_path / "same.png",)


def test_a_picture_that_does_not_decode_fails_the_load(tmp_path: Path) -> None:
    # A JPEG header followed by junk: the loader decodes every picture as the store will, so
    # a replay never stops half-way at a damaged picture with earlier exchanges written.
    data = {
        "sessions": [[{"time": "2024-03-05 14:30", "user": "<img>", "assistant": "a"}]],
        "imgs": ["photo.jpg"],
    }
    path = _write(tmp_path, data, images=False)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100_000)

    with pytest.raises(ValidationError, match=r"imgs\[0\].*photo\.jpg"):
        load_history(path)


def test_records_are_frozen(tmp_path: Path) -> None:
    history = _load(tmp_path, _history())
    turn = next(history.turns())

    with pytest.raises(dataclasses.FrozenInstanceError):
        turn.user = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        history.source = Path("elsewhere")  # type: ignore[misc]


# --- malformed files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"sessions": [', "not JSON"),
        (b"[1, 2]", "got a JSON array"),
        (b'"text"', "got a JSON string"),
        (b'{"sessions": "\xff"}', "not valid UTF-8"),
    ],
)
def test_rejects_files_that_are_no_json_object(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "user.json"
    path.write_bytes(content)

    with pytest.raises(ValidationError) as caught:
        load_history(path)

    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read history file"):
        load_history(tmp_path / "absent.json")


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


def _append_img(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["imgs"].append(name)


BAD_HISTORIES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("no sessions", _delete(("sessions",)), ["missing key 'sessions'"]),
    ("sessions not a list", _set(("sessions",), {"a": 1}), ["'sessions' must be a list"]),
    ("no session at all", _set(("sessions",), []), ["'sessions' is empty"]),
    ("session not a list", _set(("sessions", 1), {"x": 1}), ["sessions[1] must be a list"]),
    ("empty session", _set(("sessions", 1), []), ["sessions[1] is an empty session"]),
    ("turn not an object", _set(("sessions", 0, 1), "hi"), ["sessions[0][1]", "JSON string"]),
    ("missing time", _delete(("sessions", 0, 1, "time")), ["sessions[0][1]", "'time'"]),
    ("missing user", _delete(("sessions", 0, 1, "user")), ["sessions[0][1]", "'user'"]),
    (
        "missing assistant",
        _delete(("sessions", 1, 0, "assistant")),
        ["sessions[1][0]", "'assistant'"],
    ),
    ("time not a string", _set(("sessions", 0, 1, "time"), 17), ["sessions[0][1].time"]),
    ("user not a string", _set(("sessions", 0, 1, "user"), None), ["sessions[0][1].user"]),
    (
        "assistant not a string",
        _set(("sessions", 0, 1, "assistant"), ["a"]),
        ["sessions[0][1].assistant", "JSON array"],
    ),
    (
        "unparseable time",
        _set(("sessions", 0, 1, "time"), "05/03/2024 14:31"),
        ["sessions[0][1].time", "'05/03/2024 14:31'", "YYYY-MM-DD HH:MM"],
    ),
    (
        "time going backwards across sessions",
        _set(("sessions", 1, 0, "time"), "2024-03-05 14:00"),
        ["sessions[1][0].time", "earlier than", "sessions[0][1]", "2024-03-05 14:31:15"],
    ),
    (
        "time going backwards within a session",
        _set(("sessions", 0, 1, "time"), "2024-03-05 14:29:59"),
        ["sessions[0][1].time", "earlier than", "sessions[0][0]"],
    ),
    (
        "empty user text without an image",
        _set(("sessions", 0, 1, "user"), "  "),
        ["sessions[0][1].user", "is empty"],
    ),
    ("profile not an object", _set(("profile",), ["Bobby"]), ["'profile'", "JSON array"]),
    ("imgs not a list", _set(("imgs",), "dog.png"), ["'imgs' must be a list"]),
    ("imgs item not a string", _set(("imgs", 1), 3), ["imgs[1]", "file name"]),
    (
        "more markers than images",
        _set(("sessions", 0, 1, "user"), "and <img>"),
        ["4 <img> markers", "3 images", "sessions[1][0].user"],
    ),
    (
        "images never used",
        _append_img("extra.png"),
        ["4 images", "3 <img> markers", "imgs[3]", "'extra.png'"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [pytest.param(edit, fragments, id=name) for name, edit, fragments in BAD_HISTORIES],
)
def test_rejects_malformed_histories(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    data = copy.deepcopy(_history())
    edit(data)
    path = _write(tmp_path, data)

    with pytest.raises(ValidationError) as caught:
        load_history(path)

    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_rejects_a_missing_image_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _history())
    (tmp_path / "trail.png").unlink()

    with pytest.raises(ValidationError) as caught:
        load_history(path)

    message = str(caught.value)
    assert str(path) in message
    assert "imgs[1] (shown in sessions[1][0].user)" in message
    assert str(tmp_path / "trail.png") in message
    assert "--images DIR" in message


def test_rejects_a_missing_image_directory(tmp_path: Path) -> None:
    path = _write(tmp_path, _history())

    with pytest.raises(ValidationError) as caught:
        load_history(path, image_dir=tmp_path / "nowhere")

    assert str(tmp_path / "nowhere") in str(caught.value)
    assert "--images DIR" in str(caught.value)


def test_rejects_a_file_that_is_no_image(tmp_path: Path) -> None:
    path = _write(tmp_path, _history())
    (tmp_path / "summit.png").write_text("not a picture")

    with pytest.raises(ValidationError) as caught:
        load_history(path)

    assert "imgs[2]" in str(caught.value)
    assert str(tmp_path / "summit.png") in str(caught.value)
    assert "not a PNG, JPEG" in str(caught.value)


def test_rejects_an_image_over_the_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, _history())
    size = (tmp_path / "dog.png").stat().st_size
    # The real limit is 50 MiB; a lower one keeps the test from writing such a file.
    monkeypatch.setattr(persona_mme, "MAX_IMAGE_BYTES", size - 1)

    with pytest.raises(ValidationError) as caught:
        load_history(path)

    assert "imgs[0]" in str(caught.value)
    assert f"{size} bytes; the limit is {size - 1}" in str(caught.value)


def test_structure_is_checked_before_image_files(tmp_path: Path) -> None:
    # A bad time late in the history is reported even though no image file exists: the
    # cheap checks run before the disk is touched.
    data = _history()
    data["sessions"][1][0]["time"] = "later"
    path = _write(tmp_path, data, images=False)

    with pytest.raises(ValidationError, match=r"sessions\[1\]\[0\]\.time"):
        load_history(path)
