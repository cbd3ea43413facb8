"""RL prompts: the first prompt of a question as the agent builds it, with its reference.

Three kinds of question (PAPER.md section 5): multiple choice and binary (alignment yes/no)
are `"choice"` items scored by letter; `"open"` items (the bare question) are scored by the
judge against the right option's text. Each prompt belongs to a user of a memory store (the
one the training data replay filled) and is asked at a time: rollouts retrieve from that
user's memories up to that time.

On disk, beside the SFT samples: `rl.jsonl` (one prompt per line) and `rl_manifest.json`
(`{"format": 1, "store": "memory.db", "prompts": n, "kinds": {...}}`).

Pictures in a prompt (a recent turn's photo) are written as `[picture not shown]`: GRPO
rollouts here are text-only (see rollout.py for why), and the prompt says so instead of
silently dropping them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personavlm.bench.mcq import Item, prompt_text
from personavlm.errors import NotFoundError, ValidationError
from personavlm.models.base import Message, TextPart
from personavlm.timeutil import parse_time, to_storage
from personavlm.train.samples import write_text_atomic

__all__ = [
    "PICTURE_PLACEHOLDER",
    "RL_FORMAT",
    "RLData",
    "RLPrompt",
    "load_rl_prompts",
    "message_text",
    "write_rl_prompts",
]

RL_FORMAT = 1
PICTURE_PLACEHOLDER = "[picture not shown]"
_KINDS = ("choice", "open")


def message_text(message: Message) -> str:
    return "".join(
        p.text if isinstance(p, TextPart) else PICTURE_PLACEHOLDER for p in message.parts
    )


@dataclass(frozen=True, slots=True)
class RLPrompt:
    id: str
    user: str
    time: str  # storage time text; rollouts search memories up to it
    task: str
    kind: str  # "choice" | "open"
    question: str  # the question as asked (what the judge reads)
    reference: str  # choice: the right letter; open: the right answer's text
    choices: Mapping[str, str]
    prompt: tuple[Mapping[str, str], ...]  # chat messages: role, content (text)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"RL prompt {self.id!r}"
        if self.kind not in _KINDS:
            raise ValidationError(f"{where}: kind {self.kind!r} is not choice or open")
        if self.kind == "choice" and self.reference not in self.choices:
            raise ValidationError(f"{where}: reference {self.reference!r} is not a choice letter")
        if not self.reference.strip():
            raise ValidationError(f"{where}: the reference answer is empty")
        roles = [m.get("role") for m in self.prompt]
        if not roles or roles[-1] != "user" or any(r not in ("system", "user") for r in roles):
            raise ValidationError(
                f"{where}: the prompt must be system/user messages ending in user"
            )
        parse_time(self.time, field=f"{where}.time")

    @classmethod
    def of(cls, item: Item, messages: Sequence[Message], *, open_form: bool) -> RLPrompt:
        choices = {} if open_form else dict(item.choices)
        return cls(
            id=f"{item.id}:open" if open_form else item.id,
            user=item.user,
            time=to_storage(item.time),
            task=item.task,
            kind="open" if open_form else "choice",
            question=item.query if open_form else prompt_text(item),
            reference=item.choices[item.answer] if open_form else item.answer,
            choices=choices,
            prompt=tuple({"role": m.role, "content": message_text(m)} for m in messages),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "time": self.time,
            "task": self.task,
            "kind": self.kind,
            "question": self.question,
            "reference": self.reference,
            "choices": dict(self.choices),
            "prompt": [dict(m) for m in self.prompt],
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


@dataclass(frozen=True)
class RLData:
    prompts: list[RLPrompt]
    store: Path  # the memory store the rollouts search
    manifest: dict[str, Any]


def write_rl_prompts(
    out_dir: Path, prompts: Sequence[RLPrompt], *, store_path: str, info: Mapping[str, Any]
) -> dict[str, Any]:
    manifest = {
        "format": RL_FORMAT,
        "store": store_path,
        "prompts": len(prompts),
        "kinds": dict(sorted(Counter(p.kind for p in prompts).items())),
        "tasks": dict(sorted(Counter(p.task for p in prompts).items())),
        **info,
    }
    lines = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in prompts)
    write_text_atomic(out_dir / "rl.jsonl", lines)
    write_text_atomic(out_dir / "rl_manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_rl_prompts(directory: Path) -> RLData:
    """The prompts of a training-data folder; every line is checked before any is used."""
    directory = Path(directory)
    manifest_path = directory / "rl_manifest.json"
    if not manifest_path.is_file():
        raise NotFoundError(
            f"no RL prompts in {directory} (rl_manifest.json missing); "
            "build them with `personavlm train data`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{manifest_path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("store"), str):
        raise ValidationError(f"{manifest_path}: expected an object naming its 'store'")
    version = manifest.get("format")
    if not isinstance(version, int) or version > RL_FORMAT:
        raise ValidationError(f"{manifest_path}: format {version!r} is newer than supported")
    prompts = []
    prompts_path = directory / "rl.jsonl"
    if not prompts_path.is_file():
        raise NotFoundError(f"{prompts_path} is missing; rebuild with `personavlm train data`")
    lines = prompts_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            prompts.append(_prompt(record))
        except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            raise ValidationError(f"{directory / 'rl.jsonl'} line {number}: {exc}") from exc
    store = directory / str(manifest["store"])
    if not store.is_file():
        raise NotFoundError(f"the RL prompts' memory store {store} is missing")
    return RLData(prompts, store, manifest)


def _prompt(record: Mapping[str, Any]) -> RLPrompt:
    return RLPrompt(
        id=str(record["id"]),
        user=str(record["user"]),
        time=str(record["time"]),
        task=str(record["task"]),
        kind=str(record["kind"]),
        question=str(record["question"]),
        reference=str(record["reference"]),
        choices={str(k): str(v) for k, v in dict(record.get("choices") or {}).items()},
        prompt=tuple(
            {"role": str(m["role"]), "content": str(m["content"])} for m in record["prompt"]
        ),
        extra=dict(record.get("extra") or {}),
    )
