"""Persona-MME user histories: one JSON file per user, loaded and checked as a whole.

The benchmark's layout (PAPER.md section 6):

    {"profile": {...},
     "sessions": [[{"time": "YYYY-MM-DD HH:MM", "user": "...", "assistant": "..."}, ...], ...],
     "imgs": ["photo1.jpg", ...]}

Every `<img>` in a user text consumes the next name of `imgs`, in order across the whole
history (one turn may hold several markers). An `imgs` entry is found by its base name in an
images directory, as the reference harness finds it (the released files hold paths of the
authors' machine, e.g. `./data/.../3.png`): the history file's own directory unless the caller
passes another one (`--images DIR` on the command line). Nothing else is guessed: a missing
image is an error naming the path it looked at. Times may end in the weekday the released
questions write after them (`2024-09-23 20:08 (Monday)`); it is checked against the date and
dropped.

The `profile` is the user's starting profile: `profile_entries` flattens it into core-memory
`key: value` pairs the way the reference agent seeds its profile (a nested object's fields
become keys of their own; lists are joined with ", "), and `seed_profile` (interop/replay.py)
writes them before the first exchange.

Usage:

    from personavlm.interop import load_history

    history = load_history("users/u017.json", image_dir="users/imgs")
    print(history.session_count, history.turn_count, history.image_count)
    for turn in history.turns():
        for segment in turn.segments:  # text and image paths, interleaved as written
            ...

The whole file is checked before anything is returned, and every problem raises
`ValidationError` naming the file and the place, e.g. `sessions[1][3].time` (session 1, turn 3,
both 0-based). Checked: the JSON shape; each turn's "time", "user" and "assistant" strings (an
empty assistant reply is allowed; an empty user text only when the turn carries an image);
times that parse and never go backwards; as many images as `<img>` markers; and each image file
exists, is at most `MAX_IMAGE_BYTES` and decodes whole as the image its first bytes name, in
at most the store's default pixel limit (media/blobs.py `verify_picture`), so a damaged
picture fails the load, not the replay half-way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from personavlm.errors import ValidationError
from personavlm.media.blobs import (
    DEFAULT_MAX_PIXELS,
    MAX_IMAGE_BYTES,
    sniff_mime,
    verify_picture,
)
from personavlm.memory.validate import MAX_ID_CHARS
from personavlm.timeutil import parse_time

__all__ = [
    "IMAGE_MARKER",
    "History",
    "HistoryTurn",
    "load_history",
    "parse_history",
    "parse_mme_time",
    "profile_entries",
]

IMAGE_MARKER = "<img>"

# No space goes before these once the marker in front of them is gone ("look <img>, ..." reads
# "look, ...").
_CLOSING_PUNCTUATION = frozenset(",.;:!?)]}")
_SNIFF_BYTES = 16
_IMAGES_HINT = (
    "pass the directory that holds the images with --images DIR "
    "(default: the history file's directory)"
)


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One exchange: the user's turn (text and images) and the stored assistant reply."""

    time: datetime  # naive local time, as the history gives it
    user: str  # the user text with every <img> marker removed
    assistant: str
    images: tuple[Path, ...]  # the files this turn's markers consumed, in order
    segments: tuple[str | Path, ...]  # user text split at the markers, images in their place
    session_index: int
    turn_index: int  # 0-based within its session


@dataclass(frozen=True, slots=True)
class History:
    """A user's whole history; `sessions` hold the turns, `source` is the file read."""

    profile: dict[str, Any]
    sessions: tuple[tuple[HistoryTurn, ...], ...]
    source: Path
    profile_entries: tuple[tuple[str, str], ...] = ()  # core memory seeded from `profile`

    def turns(self) -> Iterator[HistoryTurn]:
        """Every turn, in order across sessions."""
        for session in self.sessions:
            yield from session

    @property
    def session_count(self) -> int:
        return len(self.sessions)

    @property
    def turn_count(self) -> int:
        return sum(len(session) for session in self.sessions)

    @property
    def image_count(self) -> int:
        return sum(len(turn.images) for turn in self.turns())


def load_history(path: str | Path, *, image_dir: str | Path | None = None) -> History:
    """Read and check one history file; images are looked up in `image_dir` (default: the
    file's own directory)."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read history file {source}: {exc.strerror}") from exc
    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{source}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{source}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            "a history file is one JSON object"
        ) from exc
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"{source}: expected a JSON object with 'sessions' (and optional 'profile', 'imgs'), "
            f"got a JSON {_json_type(data)}"
        )
    images = source.parent if image_dir is None else Path(image_dir)
    return parse_history(data, source=source, image_dir=images)


def parse_history(data: Mapping[str, Any], *, source: Path, image_dir: Path) -> History:
    """Check an already-decoded history. `source` names the file in messages and is kept on
    the result; image names are resolved against `image_dir`."""
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"{source}: expected a JSON object with 'sessions', got a JSON {_json_type(data)}"
        )
    profile = _profile(data, source)
    entries = profile_entries(profile, where=f"{source}: profile")
    names = _image_names(data, source)
    parsed = _parsed_sessions(data, source)
    _check_marker_count(parsed, names, source)
    # Files last, so a malformed turn 400 is reported without touching the disk. Each image
    # is labelled with the turn that shows it, so a bad file's message says where it is used.
    shown_in = [
        f"sessions[{s}][{t}]"
        for s, session in enumerate(parsed)
        for t, (_, user, _) in enumerate(session)
        for _ in range(user.count(IMAGE_MARKER))
    ]
    _check_image_files(names, shown_in, source, image_dir)

    paths = [image_dir / base_name(name) for name in names]
    next_image = 0
    sessions = []
    for s, session in enumerate(parsed):
        turns = []
        for t, (time, user, assistant) in enumerate(session):
            markers = user.count(IMAGE_MARKER)
            images = tuple(paths[next_image : next_image + markers])
            next_image += markers
            turns.append(
                HistoryTurn(
                    time=time,
                    user=_strip_markers(user),
                    assistant=assistant,
                    images=images,
                    segments=_segments(user, images),
                    session_index=s,
                    turn_index=t,
                )
            )
        sessions.append(tuple(turns))
    return History(
        profile=profile, sessions=tuple(sessions), source=source, profile_entries=entries
    )


# (time, user text as written, assistant text)
_RawTurn = tuple[datetime, str, str]


def _profile(data: Mapping[str, Any], source: Path) -> dict[str, Any]:
    profile = data.get("profile", {})
    if not isinstance(profile, Mapping):
        raise ValidationError(
            f"{source}: 'profile' must be a JSON object of key: value pairs, got a JSON "
            f"{_json_type(profile)}; fix it or leave the key out"
        )
    return dict(profile)


def base_name(entry: str) -> str:
    """The file name of an `imgs` entry, whichever separator its path used."""
    return PurePosixPath(entry.replace("\\", "/")).name


_WEEKDAY_SUFFIX = re.compile(r"^(?P<time>.*?)\s*\((?P<day>[A-Za-z]+)\)\s*$")


def parse_mme_time(text: str, *, field: str) -> datetime:
    """A Persona-MME time: `YYYY-MM-DD HH:MM`, optionally followed by ` (Weekday)` as the
    released questions write it. The weekday must be the date's: a wrong one means the time
    was mistyped, and which of the two is right cannot be told."""
    match = _WEEKDAY_SUFFIX.match(text)
    if match is None:
        return parse_time(text, field=field)
    when = parse_time(match["time"], field=field)
    day = match["day"].capitalize()
    if day not in _WEEKDAYS:
        raise ValidationError(f"{field}: {text!r} ends in ({match['day']}), which is no weekday")
    if _WEEKDAYS[when.weekday()] != day:
        raise ValidationError(
            f"{field}: {text!r} says {day} but {when:%Y-%m-%d} is a {_WEEKDAYS[when.weekday()]}; "
            "fix the date or the weekday"
        )
    return when


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def profile_entries(profile: Mapping[str, Any], *, where: str) -> tuple[tuple[str, str], ...]:
    """Core-memory (key, value) pairs from a profile object, in its order: a nested object's
    fields become keys of their own (the reference agent's flattening, one level), lists are
    joined with ", ", deeper structures are written as JSON. Empty values say nothing and
    are left out; a key too long to be a memory key is an error naming it."""
    entries: dict[str, str] = {}
    for key, value in profile.items():
        fields = value.items() if isinstance(value, Mapping) else [(key, value)]
        for name, item in fields:
            text = _profile_value(item)
            if not text:
                continue
            name = str(name).strip()
            if not name or len(name) > MAX_ID_CHARS:
                raise ValidationError(
                    f"{where}.{key}: key {name[:40]!r} must be 1..{MAX_ID_CHARS} characters"
                )
            entries[name] = text
    return tuple(entries.items())


def _profile_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(not isinstance(v, Mapping | list) for v in value):
        return ", ".join(str(v).strip() for v in value if v is not None and str(v).strip())
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _image_names(data: Mapping[str, Any], source: Path) -> list[str]:
    names = data.get("imgs", [])
    if not isinstance(names, list):
        raise ValidationError(
            f"{source}: 'imgs' must be a list of image file names, got a JSON {_json_type(names)}"
        )
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(
                f"{source}: imgs[{i}] must be an image file name (a non-empty string), got {name!r}"
            )
    return names


def _parsed_sessions(data: Mapping[str, Any], source: Path) -> list[list[_RawTurn]]:
    """Shape, fields and time order of every turn."""
    if "sessions" not in data:
        raise ValidationError(
            f"{source}: missing key 'sessions' (a list of sessions, each a list of "
            "{'time', 'user', 'assistant'} objects)"
        )
    raw_sessions = data["sessions"]
    if not isinstance(raw_sessions, list):
        raise ValidationError(
            f"{source}: 'sessions' must be a list of sessions (lists of turns), got a JSON "
            f"{_json_type(raw_sessions)}"
        )
    if not raw_sessions:
        raise ValidationError(f"{source}: 'sessions' is empty; a history needs at least one turn")
    parsed: list[list[_RawTurn]] = []
    previous: tuple[datetime, str] | None = None  # (time, place) of the turn before
    for s, raw_session in enumerate(raw_sessions):
        if not isinstance(raw_session, list):
            raise ValidationError(
                f"{source}: sessions[{s}] must be a list of turns, got a JSON "
                f"{_json_type(raw_session)}"
            )
        if not raw_session:
            raise ValidationError(
                f"{source}: sessions[{s}] is an empty session; remove it or give its turns"
            )
        session = []
        for t, raw_turn in enumerate(raw_session):
            place = f"sessions[{s}][{t}]"
            turn = _parse_turn(raw_turn, f"{source}: {place}")
            if previous is not None and turn[0] < previous[0]:
                raise ValidationError(
                    f"{source}: {place}.time: {raw_turn['time']!r} is earlier than the turn "
                    f"before it ({previous[1]}, {previous[0]:%Y-%m-%d %H:%M:%S}); turns must "
                    "be in time order across the whole history: fix the time or move the turn"
                )
            previous = (turn[0], place)
            session.append(turn)
        parsed.append(session)
    return parsed


def _parse_turn(raw: object, where: str) -> _RawTurn:
    if not isinstance(raw, Mapping):
        raise ValidationError(
            f"{where}: a turn must be a JSON object with 'time', 'user' and 'assistant', "
            f"got a JSON {_json_type(raw)}"
        )
    for key in ("time", "user", "assistant"):
        if key not in raw:
            raise ValidationError(f"{where}: missing field {key!r}; every turn needs it")
        if not isinstance(raw[key], str):
            raise ValidationError(
                f"{where}.{key}: must be a string, got a JSON {_json_type(raw[key])}"
            )
    # parse_time's message says what shape is expected; prefix it with the place.
    time = parse_mme_time(raw["time"], field=f"{where}.time")
    user: str = raw["user"]
    if IMAGE_MARKER not in user and not user.strip():
        raise ValidationError(
            f"{where}.user: is empty and holds no {IMAGE_MARKER}; give the user's text or an image"
        )
    return time, user, raw["assistant"]


def _check_marker_count(parsed: list[list[_RawTurn]], names: list[str], source: Path) -> None:
    markers = sum(user.count(IMAGE_MARKER) for session in parsed for _, user, _ in session)
    if markers == len(names):
        return
    if markers > len(names):
        raise ValidationError(
            f"{source}: the user turns hold {markers} {IMAGE_MARKER} markers but 'imgs' lists "
            f"{len(names)} images; {_first_without_image(parsed, len(names))}.user holds the "
            "first marker without an image: add the missing file names to 'imgs' or remove "
            "the extra markers"
        )
    raise ValidationError(
        f"{source}: 'imgs' lists {len(names)} images but the user turns hold {markers} "
        f"{IMAGE_MARKER} markers; imgs[{markers}] ({names[markers]!r}) is the first never "
        "used: remove the extra names from 'imgs' or add the markers where they were shown"
    )


def _first_without_image(parsed: list[list[_RawTurn]], available: int) -> str:
    """The place of the turn whose marker runs past the end of 'imgs': where to look first."""
    seen = 0
    for s, session in enumerate(parsed):
        for t, (_, user, _) in enumerate(session):
            seen += user.count(IMAGE_MARKER)
            if seen > available:
                return f"sessions[{s}][{t}]"
    raise AssertionError("called only when the markers outnumber the images")


def _check_image_files(
    names: Sequence[str], shown_in: Sequence[str], source: Path, image_dir: Path
) -> None:
    if names and not image_dir.is_dir():
        raise ValidationError(
            f"{source}: image directory {image_dir} does not exist or is not a directory; "
            f"{_IMAGES_HINT}"
        )
    checked: set[Path] = set()  # a history may show the same picture twice
    for i, name in enumerate(names):
        path = image_dir / base_name(name)
        if path in checked:
            continue
        where = f"{source}: imgs[{i}] (shown in {shown_in[i]}.user)"
        if not path.is_file():
            raise ValidationError(f"{where}: image file not found: {path}; {_IMAGES_HINT}")
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                head = handle.read(_SNIFF_BYTES)
        except OSError as exc:
            raise ValidationError(f"{where}: cannot read image {path}: {exc.strerror}") from exc
        if size > MAX_IMAGE_BYTES:
            raise ValidationError(
                f"{where}: image {path} is {size} bytes; the limit is {MAX_IMAGE_BYTES} bytes: "
                "shrink or recompress it"
            )
        mime = sniff_mime(head)
        if mime is None:
            raise ValidationError(
                f"{where}: {path} is not a PNG, JPEG, GIF, WebP or BMP image (checked its "
                "first bytes); replace it with the real image file"
            )
        # Decoded whole now, as the store will when the replay stores it: a damaged picture
        # must fail the load, not the replay after earlier exchanges were written.
        verify_picture(path.read_bytes(), mime, f"{where}: {path}", max_pixels=DEFAULT_MAX_PIXELS)
        checked.add(path)


def _strip_markers(user: str) -> str:
    """The user text without markers, with no doubled whitespace where they were."""
    out: list[str] = []
    gap = ""  # the whitespace removed since the last kept text
    for text, before, after in _pieces(user):
        gap += before
        if text:
            if out:
                out.append(_separator(gap, text))
            out.append(text)
            gap = ""
        gap += after
    return "".join(out)


def _separator(gap: str, following: str) -> str:
    if following[0] in _CLOSING_PUNCTUATION:
        return ""
    # Keep a line break that surrounded the image; otherwise one space.
    return "\n" if "\n" in gap else " "


def _segments(user: str, images: tuple[Path, ...]) -> tuple[str | Path, ...]:
    """Text pieces and image paths in the order written; whitespace next to a marker and
    pieces left empty are dropped."""
    segments: list[str | Path] = []
    for i, (text, _, _) in enumerate(_pieces(user)):
        if text:
            segments.append(text)
        if i < len(images):
            segments.append(images[i])
    return tuple(segments)


def _pieces(user: str) -> list[tuple[str, str, str]]:
    """The text between markers as (text, whitespace cut before, whitespace cut after): only
    whitespace touching a marker is cut; the text's own outer whitespace stays. (Plain string
    methods, not a regex with \\s* around the marker, which backtracks quadratically on long
    runs of spaces.)"""
    parts = user.split(IMAGE_MARKER)
    pieces = []
    for i, text in enumerate(parts):
        before = after = ""
        if i > 0:
            kept = text.lstrip()
            before, text = text[: len(text) - len(kept)], kept
        if i < len(parts) - 1:
            kept = text.rstrip()
            text, after = kept, text[len(kept) :]
        pieces.append((text, before, after))
    return pieces


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
