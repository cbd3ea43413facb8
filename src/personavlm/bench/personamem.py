"""PersonaMem (Jiang et al., 2025) in its official format, as harness plans.

    questions_32k.csv        one row per question; the columns used:
        question_id, question_type, user_question_or_message, all_options, correct_answer,
        shared_context_id, end_index_in_shared_context  (persona_id, topic: kept if present)
    shared_contexts_32k.jsonl one JSON object per line: {"<shared_context_id>": [messages]}
        each message {"role": "system" | "user" | "assistant", "content": "..."}

A question sees its shared context up to (not including) message `end_index_in_shared_context`.
`all_options` is a list written as JSON or as a Python literal (the official files use the
latter), each option starting with its label: "(a) ...". `correct_answer` is "(c)" or "c".

The contexts carry no timestamps and no session marks, and our store is time-ordered, so each
context becomes one user whose exchanges get synthetic times: 10 minutes apart, with a new
session (a 3-hour gap) at every system message after the first and after every
`session_exchanges` exchanges. A user message and the assistant messages after it form one
exchange; a system message becomes a user turn "System: ..." with an empty reply (it is part
of what the model saw). An exchange is ingested for a question only when all its messages lie
before the question's end index; if the end index cuts one in half, that exchange is left out
for that question and counted (`cut_exchanges`).

One context is replayed once, however many questions share it: questions are asked in order
of their end index as the replay passes it (bench/harness.py), with times to match.
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from personavlm.bench.harness import HistoryExchange, UserPlan
from personavlm.bench.mcq import Item, choice_letter
from personavlm.errors import ValidationError

__all__ = ["PersonaMemData", "load_personamem"]

_START = datetime(2025, 1, 6, 9, 0)
_STEP = timedelta(minutes=10)
_SESSION_GAP = timedelta(hours=3)
_REQUIRED = (
    "question_type",
    "user_question_or_message",
    "all_options",
    "correct_answer",
    "shared_context_id",
    "end_index_in_shared_context",
)


@dataclass(frozen=True, slots=True)
class PersonaMemData:
    plans: tuple[UserPlan, ...]
    questions: int
    cut_exchanges: int


@dataclass(frozen=True, slots=True)
class _Exchange:
    exchange: HistoryExchange
    first: int  # index of its first message in the context
    end: int  # one past its last message


def load_personamem(
    questions: Path, contexts: Path, *, session_exchanges: int = 8, limit: int | None = None
) -> PersonaMemData:
    """Plans for the questions (the first `limit` rows, if given) and their contexts."""
    if session_exchanges < 1:
        raise ValidationError(f"session_exchanges must be >= 1, got {session_exchanges}")
    rows = _read_questions(questions)[: limit if limit is not None else None]
    wanted = {row["shared_context_id"] for row in rows}
    messages = _read_contexts(contexts, wanted)
    plans = []
    cut = 0
    for context_id in dict.fromkeys(row["shared_context_id"] for row in rows):
        exchanges = list(_exchanges(messages[context_id], session_exchanges, where=context_id))
        items = []
        for index, row in enumerate(rows):
            if row["shared_context_id"] != context_id:
                continue
            item, cuts = _item(row, index, context_id, exchanges, questions)
            items.append(item)
            cut += cuts
        plans.append(UserPlan(context_id, tuple(e.exchange for e in exchanges), tuple(items)))
    return PersonaMemData(tuple(plans), len(rows), cut)


def _read_questions(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValidationError(f"cannot read questions CSV {path}: {exc}") from exc
    if not rows:
        raise ValidationError(f"{path}: no question rows")
    missing = [c for c in _REQUIRED if c not in rows[0]]
    if missing:
        raise ValidationError(
            f"{path}: missing columns {missing}; PersonaMem questions need {list(_REQUIRED)}"
        )
    return rows


def _read_contexts(path: Path, wanted: set[str]) -> dict[str, list[Mapping[str, Any]]]:
    found: dict[str, list[Mapping[str, Any]]] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read contexts {path}: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{path}: line {number} is not JSON: {exc.msg}") from exc
            if not isinstance(entry, dict):
                raise ValidationError(f"{path}: line {number}: expected {{id: [messages]}}")
            for context_id, messages in entry.items():
                if context_id in wanted:
                    found[context_id] = _checked_messages(messages, f"{path}: {context_id}")
    missing = sorted(wanted - found.keys())
    if missing:
        raise ValidationError(f"{path}: no context for shared_context_id {missing[:5]}")
    return found


def _checked_messages(value: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise ValidationError(f"{where}: expected a list of messages")
    for i, message in enumerate(value):
        if (
            not isinstance(message, Mapping)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise ValidationError(
                f"{where}[{i}]: a message needs role system|user|assistant and text content"
            )
    return value


def _exchanges(
    messages: Sequence[Mapping[str, Any]], per_session: int, *, where: str
) -> Iterator[_Exchange]:
    time = _START - _STEP
    in_session = 0
    for first, end, user, reply, system in _pairs(messages):
        new_session = (system and first > 0) or in_session >= per_session
        time += _SESSION_GAP if new_session else _STEP
        in_session = 1 if new_session else in_session + 1
        yield _Exchange(HistoryExchange(f"m{first}", time, user, reply), first, end)


def _pairs(messages: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, int, str, str, bool]]:
    """(first index, end index, user text, reply text, is a system message)."""
    i = 0
    while i < len(messages):
        role, content = messages[i]["role"], messages[i]["content"]
        if role == "system":
            yield i, i + 1, f"System: {content}", "", True
            i += 1
            continue
        # A reply with no user message before it is kept, under an empty-looking user turn.
        user = content if role == "user" else "(continued)"
        end = i + 1 if role == "user" else i
        replies = []
        while end < len(messages) and messages[end]["role"] == "assistant":
            replies.append(messages[end]["content"])
            end += 1
        yield i, end, user, "\n\n".join(replies), False
        i = end


def _item(
    row: Mapping[str, str],
    index: int,
    context_id: str,
    exchanges: Sequence[_Exchange],
    source: Path,
) -> tuple[Item, int]:
    where = f"{source}: row {index + 2}"  # +1 for the header, +1 for 1-based lines
    try:
        end_index = int(row["end_index_in_shared_context"])
    except ValueError:
        raise ValidationError(f"{where}: end_index_in_shared_context must be an integer") from None
    visible = [e for e in exchanges if e.end <= end_index]
    cuts = sum(1 for e in exchanges if e.first < end_index < e.end)
    last = visible[-1].exchange.time if visible else _START - _STEP
    choices = _options(row["all_options"], where)
    answer = choice_letter(row["correct_answer"], where=f"{where}: correct_answer")
    if answer not in choices:
        raise ValidationError(f"{where}: correct_answer {answer!r} is not among the options")
    task = row["question_type"].strip() or "unknown"
    item = Item(
        id=(row.get("question_id") or "").strip() or f"row{index:05d}",
        user=context_id,
        # Just after the last visible exchange: the replay stops there for this question.
        time=last + timedelta(minutes=1),
        query=row["user_question_or_message"],
        choices=choices,
        answer=answer,
        task=task,
        aspect=task,
    )
    return item, cuts


def _options(text: str, where: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValidationError(
                f"{where}: all_options is neither a JSON list nor a Python list literal"
            ) from None
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise ValidationError(f"{where}: all_options must list at least two options")
    choices: dict[str, str] = {}
    for option in value:
        label, _, body = str(option).strip().partition(")")
        letter = choice_letter(label + ")", where=f"{where}: all_options")
        choices[letter] = body.strip()
    return choices
