"""Persona-MME data as harness plans: the questions file and the user histories it points at.

Layout (the released benchmark's, which `personavlm synth` also writes):

    DIR/Persona-MME.json                     a JSON list of question records
    DIR/samples/<bucket>/<id>/user_data.json one history per user, its images beside it

(An older synth folder holds `questions.json` instead; it is read when `Persona-MME.json` is
absent.) A question record (PAPER.md section 6):

    {"id"?, "data_path", "type", "question_type", "time", "query",
     "choices": {"(a)": ..., "(b)": ...}, "answer": "(b)",
     "alignment"?: {"chosen": reply, "rejected": reply}, "evidence"?: ["s3t1", ...]}

Read as the reference harness reads it (PAPER.md section 9):
- `data_path` is found by its `samples/...` part under DIR (the released file writes
  `./data/Persona-MME/samples/50/0/user_data.json`); a path without a `samples` folder is
  relative to DIR, an absolute one is used as is.
- `time` may end in ` (Weekday)`; the weekday is checked and dropped.
- A record with `choices` and an `alignment` pair is three items: the question itself
  (under its own task), then the pair's two yes/no items under the "Personality Alignment"
  task of the "Alignment" aspect, asked with the question's query (chosen -> (a) yes,
  rejected -> (b) no), ids `<id>:chosen` and `<id>:rejected`. A record with an `alignment`
  pair and no `choices` (our older synth files) is the two yes/no items alone.
- The history's `profile` is seeded into core memory before the replay.

Records without an `id` are named by their position (`q00017`), so a rerun of the same file
names them the same way. Every record is checked before anything runs; a bad one raises
ValidationError naming its index and field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personavlm.bench.harness import HistoryExchange, UserPlan
from personavlm.bench.mcq import Item, aspect_of, choice_letter
from personavlm.errors import ValidationError
from personavlm.interop.persona_mme import History, load_history, parse_mme_time
from personavlm.tasks import ALIGNMENT_TASK, TASK_ASPECT

__all__ = ["LEGACY_QUESTIONS_FILE", "QUESTIONS_FILE", "MmeData", "load_persona_mme"]

QUESTIONS_FILE = "Persona-MME.json"  # the released benchmark's name
LEGACY_QUESTIONS_FILE = "questions.json"  # what synth wrote before it used the released name
_YES_NO = {"a": "Yes", "b": "No"}


@dataclass(frozen=True, slots=True)
class MmeData:
    plans: tuple[UserPlan, ...]
    questions: int  # records in the file (an alignment pair is one record, two items)
    source: Path


def load_persona_mme(
    data_dir: Path, *, questions_file: Path | None = None, users: int | None = None
) -> MmeData:
    """Plans for every user the questions name (the first `users` of them, if given)."""
    path = questions_file or _default_questions(data_dir)
    records = _read_records(path, data_dir)
    by_history: dict[Path, list[tuple[int, Mapping[str, Any]]]] = {}
    for index, record in enumerate(records):
        by_history.setdefault(_history_path(record, index, data_dir, path), []).append(
            (index, record)
        )
    chosen = list(by_history.items())[: users if users is not None else None]
    user_ids = _user_ids([history for history, _ in chosen], data_dir)
    plans = []
    for history_path, indexed in chosen:
        history = load_history(history_path)
        user = user_ids[history_path]
        items = [item for index, record in indexed for item in _items(record, index, user, path)]
        plans.append(UserPlan(user, _exchanges(history), tuple(items), history.profile_entries))
    return MmeData(tuple(plans), sum(len(v) for _, v in chosen), path)


def _default_questions(data_dir: Path) -> Path:
    released = data_dir / QUESTIONS_FILE
    legacy = data_dir / LEGACY_QUESTIONS_FILE
    return legacy if not released.exists() and legacy.exists() else released


def _read_records(path: Path, data_dir: Path) -> list[Mapping[str, Any]]:
    if not path.is_file():
        found = sorted(p.name for p in data_dir.glob("*.json")) if data_dir.is_dir() else []
        hint = f" (JSON files there: {', '.join(found)})" if found else ""
        raise ValidationError(
            f"no questions file at {path}{hint}; pass --questions FILE or a --data directory "
            f"holding {QUESTIONS_FILE}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path}: not a JSON file: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise ValidationError(f"{path}: expected a non-empty JSON list of question records")
    for index, record in enumerate(data):
        if not isinstance(record, Mapping):
            raise ValidationError(f"{path}: [{index}] is not a JSON object")
    return data


def _history_path(record: Mapping[str, Any], index: int, data_dir: Path, source: Path) -> Path:
    value = record.get("data_path")
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{source}: [{index}].data_path: missing; it names the history file")
    path = Path(value.replace("\\", "/"))
    if path.is_absolute():
        return path
    parts = path.parts
    if "samples" in parts:  # the released form: ./data/Persona-MME/samples/<bucket>/<user>/...
        return data_dir.joinpath(*parts[parts.index("samples") :])
    return data_dir / path


def _user_ids(paths: Sequence[Path], data_dir: Path) -> dict[Path, str]:
    """A readable store user id per history: its path under DIR without user_data.json."""
    ids = {}
    for path in paths:
        try:
            shown = path.relative_to(data_dir)
        except ValueError:
            shown = path
        parts = (
            shown.parent.parts if shown.name == "user_data.json" else shown.with_suffix("").parts
        )
        name = "/".join(p for p in parts if p not in ("", "/")) or "user"
        ids[path] = re.sub(r"\s+", "_", name)[-120:]
    if len(set(ids.values())) != len(ids):
        raise ValidationError("two histories map to the same user id; give them distinct paths")
    return ids


def _exchanges(history: History) -> tuple[HistoryExchange, ...]:
    return tuple(
        HistoryExchange(
            ext_id=f"s{turn.session_index}t{turn.turn_index}",
            time=turn.time,
            user=turn.user,
            assistant=turn.assistant,
            images=turn.images,
        )
        for turn in history.turns()
    )


def _items(record: Mapping[str, Any], index: int, user: str, source: Path) -> list[Item]:
    where = f"{source}: [{index}]"
    qid = str(record.get("id") or f"q{index:05d}")
    task = _text(record, "question_type", where)
    query = _text(record, "query", where)
    time = parse_mme_time(_text(record, "time", where), field=f"{where}.time")
    kind = record.get("type")
    aspect = aspect_of(task, kind if isinstance(kind, str) else None)
    evidence = tuple(str(e) for e in record.get("evidence") or ())
    alignment = record.get("alignment")
    items: list[Item] = []
    if record.get("choices") is not None or alignment is None:
        choices = _choices(record.get("choices"), where)
        answer = choice_letter(_text(record, "answer", where), where=f"{where}.answer")
        if answer not in choices:
            raise ValidationError(f"{where}.answer: {answer!r} is not one of the choices")
        items.append(
            Item(
                id=qid,
                user=user,
                time=time,
                query=query,
                choices=choices,
                answer=answer,
                task=task,
                aspect=aspect,
                evidence=evidence,
            )
        )
        # The pair rides on the question: scored apart, under the alignment task.
        task, aspect = ALIGNMENT_TASK, TASK_ASPECT[ALIGNMENT_TASK]
    if alignment is not None:
        if not isinstance(alignment, Mapping):
            raise ValidationError(f"{where}.alignment: must be {{'chosen': ..., 'rejected': ...}}")
        items += [
            Item(
                id=f"{qid}:{side}",
                user=user,
                time=time,
                query=query,
                choices=_YES_NO,
                answer=answer,
                task=task,
                aspect=aspect,
                kind="alignment",
                reply=_text(alignment, side, f"{where}.alignment"),
                evidence=evidence,
            )
            for side, answer in (("chosen", "a"), ("rejected", "b"))
        ]
    return items


def _choices(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) < 2:
        raise ValidationError(
            f"{where}.choices: must be an object like {{'(a)': 'text', '(b)': 'text'}}"
        )
    choices: dict[str, str] = {}
    for label, text in value.items():
        letter = choice_letter(str(label), where=f"{where}.choices")
        if not isinstance(text, str) or letter in choices:
            raise ValidationError(f"{where}.choices[{label!r}]: must be text, once per letter")
        choices[letter] = text
    return dict(sorted(choices.items()))


def _text(record: Mapping[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{where}.{key}: missing or empty; it must be text")
    return value
