"""Raw ingestion: a JSONL file of turns into the store, with no model involved.

One JSON object per line:
    {"id": "t1", "time": "YYYY-MM-DD HH:MM", "role": "user" | "assistant",
     "speaker": "Ann"?, "text": "...", "images": ["photo.jpg"]?, "caption": "..."?}
Image paths are relative to the file. The whole file is read and checked before anything is
written, so a bad line 900 leaves the store untouched; the error names the line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from personavlm.errors import ValidationError
from personavlm.memory.records import IngestReport
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import TurnInput

__all__ = ["ParsedTurn", "ingest_file", "read_turns_file"]

_FIELDS = {"id", "time", "role", "speaker", "text", "images", "caption"}

ParsedTurn = tuple[dict[str, Any], list[Path]]


def read_turns_file(path: Path) -> list[ParsedTurn]:
    """Parse and check every line; returns (fields, image paths) per turn."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
    parsed = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        parsed.append(_parse_line(path, number, line))
    if not parsed:
        raise ValidationError(f"{path} holds no turns (one JSON object per line expected)")
    counts = Counter(fields["id"] for fields, _ in parsed)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise ValidationError(f"{path}: turn ids used more than once: {duplicates[:5]}")
    return parsed


def ingest_file(
    store: MemoryStore,
    user_id: str,
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    parsed = read_turns_file(path)
    # Images are content-addressed: hash them first, so the turns can be checked against the
    # log (ids, time order) before a single blob or row is written.
    digests = [[store.blobs.describe(image)[0].id for image in images] for _, images in parsed]
    turns = [_turn(fields, ids) for (fields, _), ids in zip(parsed, digests, strict=True)]
    pending = {t.ext_id for t in store.check_turns(user_id, turns)}
    for (fields, images), turn in zip(parsed, turns, strict=True):
        if turn.ext_id in pending:
            for image in images:
                store.store_image(image, caption=fields.get("caption"))
    return store.append_turns(user_id, turns, progress=progress)


def _parse_line(path: Path, number: int, line: bytes) -> ParsedTurn:
    where = f"{path}:{number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{where}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from exc
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{where}: not a JSON object: {exc.msg} at column {exc.colno}"
        ) from exc
    if not isinstance(fields, dict):
        raise ValidationError(f"{where}: expected a JSON object per line")
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValidationError(
            f"{where}: unknown fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}"
        )
    for name in ("id", "time", "role", "text"):
        if name not in fields:
            raise ValidationError(f"{where}: missing field {name!r}")
    if not isinstance(fields["id"], str):
        raise ValidationError(f"{where}: field 'id' must be a string")
    images = fields.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValidationError(f"{where}: 'images' must be a list of file paths")
    try:  # validate every field now, so a bad line fails before any write
        _turn(fields, images)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc
    return fields, [(path.parent / image) for image in images]


def _turn(fields: dict[str, Any], image_ids: Sequence[str]) -> TurnInput:
    return TurnInput.create(
        time=fields["time"],
        role=fields["role"],
        text=fields["text"],
        ext_id=fields["id"],
        speaker=fields.get("speaker"),
        caption=fields.get("caption"),
        image_ids=tuple(image_ids),
    )
