"""SFT samples: the reference format on disk, the agent's messages in memory.

A dataset is a folder:

    <dir>/sft.json        the samples, in the reference SFT format (a JSON list):
                          [{"id", "kind", "source",
                            "conversations": [{"from": "system"|"human"|"gpt", "value": ...}],
                            "image": ["images/<sha256>.png", ...]}]
    <dir>/images/         the pictures, named by content
    <dir>/manifest.json   {"format": 1, "counts": {kind: n}, "mix": {...}, ...}

`<image>` in a value marks where the next picture of `image` goes, so pictures stay
interleaved where the conversation had them. `id`, `kind` and `source` are ours; readers of
the reference format ignore them, and `load_samples` reads files without them (kind
"imported"). The same list is what the reference code and LLaVA-style trainers read.

    writer = SampleWriter(out_dir)
    writer.add(sample_from_messages(messages, reply, kind="semantic", source="oracle"))
    writer.finish({"seed": 1})
    dataset = load_samples(out_dir)           # or a bare reference-format JSON file
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personavlm.errors import NotFoundError, ValidationError
from personavlm.models.base import ImagePart, Message, Role, TextPart

__all__ = [
    "IMAGE_MARKER",
    "KINDS",
    "MEMORY_KINDS",
    "SAMPLES_FORMAT",
    "Sample",
    "SampleDataset",
    "SampleTurn",
    "SampleWriter",
    "copy_dataset",
    "load_samples",
    "sample_from_messages",
    "write_text_atomic",
]

SAMPLES_FORMAT = 1
IMAGE_MARKER = "<image>"
# What a sample teaches. The first six are the paper's SFT mix (PAPER.md section 5); the
# json protocol's combined calls get their own names; files without kinds are "imported".
KINDS = (
    "reasoning",
    "personality",
    "semantic",
    "episodic",
    "core",
    "procedural",
    "update",
    "consolidate",
    "imported",
)
MEMORY_KINDS = ("semantic", "episodic", "core", "procedural", "update", "consolidate")

_FROM: dict[str, Role] = {"system": "system", "human": "user", "gpt": "assistant"}
_TO: dict[str, str] = {role: name for name, role in _FROM.items()}
_MIME_SUFFIX = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
}


@dataclass(frozen=True, slots=True)
class SampleTurn:
    role: Role
    text: str  # with IMAGE_MARKER where a picture goes


@dataclass(frozen=True, slots=True)
class Sample:
    """One training conversation. `images` are paths relative to the dataset folder (or
    absolute), in the order of the markers."""

    id: str
    kind: str
    turns: tuple[SampleTurn, ...]
    images: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        _check_sample(self)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "conversations": [{"from": _TO[t.role], "value": t.text} for t in self.turns],
            "image": list(self.images),
        }


def _check_sample(sample: Sample) -> None:
    where = f"sample {sample.id!r}"
    if sample.kind not in KINDS:
        raise ValidationError(f"{where}: kind {sample.kind!r} is not one of {', '.join(KINDS)}")
    roles = [t.role for t in sample.turns if t.role != "system"]
    if not roles or roles[-1] != "assistant":
        raise ValidationError(f"{where}: the conversation must end with a gpt (assistant) turn")
    if "assistant" not in roles or roles[0] != "user":
        raise ValidationError(f"{where}: the conversation must start with a human (user) turn")
    markers = sum(t.text.count(IMAGE_MARKER) for t in sample.turns)
    if markers != len(sample.images):
        raise ValidationError(
            f"{where}: {markers} {IMAGE_MARKER} markers but {len(sample.images)} images; "
            "each picture needs one marker where it goes"
        )


@dataclass(frozen=True)
class SampleDataset:
    """Samples read from disk, with the folder their image paths are relative to."""

    samples: list[Sample]
    base: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    def image_path(self, image: str) -> Path:
        path = Path(image)
        return path if path.is_absolute() else self.base / path

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.samples))


def sample_from_messages(
    messages: Sequence[Message],
    reply: str,
    *,
    kind: str,
    source: str,
    images_dir: Path,
    sample_id: str,
) -> Sample:
    """A sample from what the agent sent (`messages`) and the reply it should learn.

    Pictures are written once into `images_dir` (named by their sha256) and replaced by
    markers where they stood."""
    turns: list[SampleTurn] = []
    images: list[str] = []
    for message in [*messages, Message.text("assistant", reply)]:
        pieces: list[str] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                pieces.append(part.text)
            else:
                images.append(_save_image(part, images_dir))
                pieces.append(IMAGE_MARKER)
        turns.append(SampleTurn(message.role, "".join(pieces)))
    return Sample(sample_id, kind, tuple(turns), tuple(images), source)


def _save_image(part: ImagePart, images_dir: Path) -> str:
    name = hashlib.sha256(part.data).hexdigest() + _MIME_SUFFIX[part.mime]
    path = images_dir / name
    if not path.exists():
        images_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(part.data)
        os.replace(tmp, path)
    return f"{images_dir.name}/{name}"


class SampleWriter:
    """Builds a dataset folder: samples are kept in memory, pictures written as they come,
    and `finish` writes sft.json and manifest.json (each via a temporary file and rename,
    so a crash never leaves half a file)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.images_dir = self.out_dir / "images"
        self.samples: list[Sample] = []

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{len(self.samples):06d}"

    def finish(self, info: Mapping[str, Any]) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        counts = Counter(s.kind for s in self.samples)
        manifest = {
            "format": SAMPLES_FORMAT,
            "samples": len(self.samples),
            "counts": dict(sorted(counts.items())),
            "images": len({i for s in self.samples for i in s.images}),
            **info,
        }
        _write_json(self.out_dir / "sft.json", [s.to_record() for s in self.samples])
        _write_json(self.out_dir / "manifest.json", manifest)
        return manifest


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file and a rename: never half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def load_samples(path: Path) -> SampleDataset:
    """A dataset folder (with sft.json) or a reference-format JSON file. Every record is
    checked before any is returned; the error names the record and what to fix."""
    path = Path(path)
    file = path / "sft.json" if path.is_dir() else path
    if not file.exists():
        raise NotFoundError(f"no SFT samples at {file}; build them with `personavlm train data`")
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{file} is not readable JSON: {exc}") from exc
    manifest = _manifest(file.parent / "manifest.json") if path.is_dir() else {}
    if not isinstance(records, list):
        raise ValidationError(
            f"{file}: expected a JSON list of samples, got {type(records).__name__}"
        )
    samples = [_from_record(record, index, file) for index, record in enumerate(records)]
    dataset = SampleDataset(samples, file.parent, manifest)
    _check_images(dataset, file)
    return dataset


def _manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ValidationError(f"{path}: expected a JSON object")
    version = manifest.get("format")
    if not isinstance(version, int) or version > SAMPLES_FORMAT:
        raise ValidationError(
            f"{path}: samples format {version!r} is newer than this personavlm reads "
            f"({SAMPLES_FORMAT}); upgrade personavlm"
        )
    return dict(manifest)


def _from_record(record: object, index: int, file: Path) -> Sample:
    where = f"{file} record {index}"
    if not isinstance(record, dict):
        raise ValidationError(f"{where}: expected an object with 'conversations'")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValidationError(f"{where}: 'conversations' must be a non-empty list")
    turns = tuple(_turn(item, f"{where} turn {i}") for i, item in enumerate(conversations))
    images = _image_list(record.get("image", record.get("images")), where)
    kind = record.get("kind", "imported")
    try:
        return Sample(
            str(record.get("id", f"imported-{index:06d}")),
            str(kind),
            turns,
            images,
            str(record.get("source", file.name)),
        )
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc


def _turn(item: object, where: str) -> SampleTurn:
    if not isinstance(item, dict) or not isinstance(item.get("value"), str):
        raise ValidationError(f'{where}: expected {{"from": ..., "value": "<text>"}}')
    speaker = item.get("from")
    if speaker not in _FROM:
        raise ValidationError(f"{where}: 'from' is {speaker!r}; use system, human or gpt")
    return SampleTurn(_FROM[str(speaker)], str(item["value"]))


def _image_list(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValidationError(f"{where}: 'image' must be a path or a list of paths")


def _check_images(dataset: SampleDataset, file: Path) -> None:
    missing = [
        (sample.id, image)
        for sample in dataset.samples
        for image in sample.images
        if not dataset.image_path(image).is_file()
    ]
    if missing:
        sample_id, image = missing[0]
        raise NotFoundError(
            f"{file}: {len(missing)} image(s) missing, first {image!r} of sample {sample_id!r} "
            f"(paths are relative to {dataset.base})"
        )


def copy_dataset(dataset: SampleDataset, out_dir: Path, *, source: str) -> dict[str, Any]:
    """Import: the samples into a new dataset folder, pictures copied under images/ by
    content (so an imported folder is self-contained)."""
    writer = SampleWriter(out_dir)
    for sample in dataset.samples:
        images = tuple(_copy_image(dataset.image_path(i), writer.images_dir) for i in sample.images)
        writer.add(Sample(sample.id, sample.kind, sample.turns, images, sample.source or source))
    return writer.finish({"source": source})


def _copy_image(path: Path, images_dir: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = digest + (path.suffix.lower() or ".png")
    images_dir.mkdir(parents=True, exist_ok=True)
    if not (images_dir / name).exists():
        shutil.copyfile(path, images_dir / name)
    return f"{images_dir.name}/{name}"
