"""The response protocols: what the model writes each step, and how it is read.

Two protocols, one meaning (PAPER.md section 4):

- `tags`, the paper's text format, so the released PersonaVLM weights can be used:
  `<think>...</think>` then exactly one of `<answer>...</answer>` or
  `<retrieve>` + three lines `"keywords": ...`, `"start_time": ...|null`, `"end_time": ...`
  + `</retrieve>`.
- `json`, for any instruction model: one object `{"think", "action": "answer"|"retrieve",
  "answer", "keywords", "start_time", "end_time"}`, sent as a JSON-schema response format
  so servers with constrained decoding cannot break it.

Parsers never guess: anything else raises ProtocolError saying exactly what is wrong, and the
agent sends that message back to the model once. Text from the user or from memory is passed
through `escape` before it enters a prompt, so a message holding `</answer>` or `<retrieve>`
(or a chat-template token such as `<|im_end|>`) stays data and cannot steer the protocol.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from personavlm.agent.formats import load_reply_object
from personavlm.errors import ProtocolError, ValidationError
from personavlm.timeutil import TimeWindow, parse_time

__all__ = [
    "STEP_SCHEMA",
    "AnswerAction",
    "Protocol",
    "ResolvedWindow",
    "RetrieveAction",
    "escape",
    "parse_step",
    "resolve_window",
    "unescape",
]


class Protocol(StrEnum):
    TAGS = "tags"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class AnswerAction:
    think: str
    text: str


@dataclass(frozen=True, slots=True)
class RetrieveAction:
    think: str
    keywords: str
    start_time: str | None  # as the model wrote it; resolve_window checks it
    end_time: str | None


Action = AnswerAction | RetrieveAction

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["think", "action", "answer", "keywords", "start_time", "end_time"],
    "properties": {
        "think": {"type": "string"},
        "action": {"type": "string", "enum": ["answer", "retrieve"]},
        "answer": {"type": ["string", "null"]},
        # Short fields bounded by what they hold ("2024-03-04 10:00 (Wednesday)" is 28), so
        # constrained decoding spends the reply's budget on think and answer.
        "keywords": {"type": ["string", "null"], "maxLength": 200},
        "start_time": {"type": ["string", "null"], "maxLength": 32},
        "end_time": {"type": ["string", "null"], "maxLength": 32},
    },
}

# Protocol tags, the image markers of the reference prompts, and chat-template tokens
# (`<|im_end|>`, `<|vision_start|>`): the pieces of text a model or its tokenizer treats as
# structure. Escaped, they read the same to a person and mean nothing to a parser.
_STRUCTURE = re.compile(r"<(?=/?\s*(?:think|answer|retrieve|image|img)\b|\|)", re.IGNORECASE)
_ESCAPED = re.compile(r"&lt;(?=/?\s*(?:think|answer|retrieve|image|img)\b|\|)", re.IGNORECASE)


def escape(text: str) -> str:
    """Text made safe to place inside a prompt: structure-like `<` become `&lt;`."""
    return _STRUCTURE.sub("&lt;", text)


def unescape(text: str) -> str:
    """The inverse of escape, for an answer that quotes escaped text back to the user."""
    return _ESCAPED.sub("<", text)


def parse_step(text: str, protocol: Protocol) -> Action:
    """One model step read under `protocol`; ProtocolError says what is wrong."""
    if protocol is Protocol.JSON:
        return _parse_json_step(text)
    return _parse_tags_step(text)


# ----------------------------------------------------------------------------- tags

_THINK = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*", re.DOTALL)
_ANSWER = re.compile(r"<answer>(?P<body>.*)</answer>\s*", re.DOTALL)
_RETRIEVE = re.compile(r"<retrieve>(?P<body>.*)</retrieve>\s*", re.DOTALL)
_FIELD = re.compile(r"""^\s*["']?(?P<key>[A-Za-z_]+)["']?\s*:\s*(?P<value>.*?)\s*,?\s*$""")
_RETRIEVE_KEYS = ("keywords", "start_time", "end_time")


def _parse_tags_step(text: str) -> Action:
    think = _THINK.match(text)
    if think is None:
        raise ProtocolError(
            "the reply must start with <think>...</think>, then <answer>...</answer> or "
            "<retrieve>...</retrieve>"
        )
    rest = text[think.end() :]
    if (answer := _ANSWER.fullmatch(rest)) is not None:
        body = answer.group("body").strip()
        if not body or "<answer>" in body or "</answer>" in body:
            raise ProtocolError("<answer> must hold exactly one non-empty answer")
        return AnswerAction(think.group("think").strip(), body)
    if (retrieve := _RETRIEVE.fullmatch(rest)) is not None:
        fields = _retrieve_fields(retrieve.group("body"))
        return RetrieveAction(
            think.group("think").strip(),
            _keywords(fields["keywords"]),
            fields["start_time"],
            fields["end_time"],
        )
    raise ProtocolError(
        "after </think> the reply must be exactly one <answer>...</answer> or one "
        "<retrieve>...</retrieve> block, with nothing after it"
    )


def _retrieve_fields(body: str) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for line in body.strip().splitlines():
        if not line.strip():
            continue
        match = _FIELD.match(line)
        if match is None or match.group("key") not in _RETRIEVE_KEYS:
            raise ProtocolError(
                f"<retrieve> line {line.strip()[:80]!r} is not one of "
                '"keywords": ..., "start_time": ..., "end_time": ...'
            )
        key = match.group("key")
        if key in fields:
            raise ProtocolError(f'<retrieve> gives "{key}" twice')
        fields[key] = _scalar(match.group("value"))
    missing = [k for k in _RETRIEVE_KEYS if k not in fields]
    if missing:
        raise ProtocolError(f"<retrieve> is missing {', '.join(missing)}")
    return fields


def _scalar(value: str) -> str | None:
    """A field's value without its quotes; the word null, quoted or not (the reference
    prompt asks for `"null"`), is no value."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1].strip()
    if value.lower() in ("", "null", "none"):
        return None
    return value


def _keywords(value: str | None) -> str:
    if value is None:
        raise ProtocolError('<retrieve> needs non-empty "keywords"')
    if value.startswith("[") and value.endswith("]"):  # a list written as JSON
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            value = ", ".join(items)
    if not value.strip():
        raise ProtocolError('<retrieve> needs non-empty "keywords"')
    return value.strip()


# ----------------------------------------------------------------------------- json


def _parse_json_step(text: str) -> Action:
    data = load_reply_object(text)
    action = data.get("action")
    think = data.get("think")
    if not isinstance(think, str):
        raise ProtocolError('"think" must be a string')
    if action == "answer":
        answer = data.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise ProtocolError('"action" is "answer" but "answer" is not a non-empty string')
        return AnswerAction(think.strip(), answer.strip())
    if action == "retrieve":
        keywords = data.get("keywords")
        if not isinstance(keywords, str) or not keywords.strip():
            raise ProtocolError('"action" is "retrieve" but "keywords" is not a non-empty string')
        start, end = data.get("start_time"), data.get("end_time")
        for name, value in (("start_time", start), ("end_time", end)):
            if value is not None and not isinstance(value, str):
                raise ProtocolError(f'"{name}" must be a string or null')
        return RetrieveAction(think.strip(), keywords.strip(), start or None, end or None)
    raise ProtocolError(f'"action" must be "answer" or "retrieve", got {action!r}')


# ----------------------------------------------------------------------------- time window


@dataclass(frozen=True, slots=True)
class ResolvedWindow:
    """The window a retrieval searches, and what of the model's window was dropped and why."""

    window: TimeWindow
    notes: tuple[str, ...]


def resolve_window(start: str | None, end: str | None) -> ResolvedWindow:
    """The model's time window, used as given; an unreadable bound is dropped, and a
    window TimeWindow refuses (reversed) is dropped whole, each with a note for the trace."""
    notes: list[str] = []
    bounds: list[datetime | None] = []
    for name, value in (("start_time", start), ("end_time", end)):
        if value is None:
            bounds.append(None)
            continue
        try:
            bounds.append(parse_time(value, field=name))
        except ValidationError:
            notes.append(f"{name} {value!r} is not a time; searched without it")
            bounds.append(None)
    try:
        window = TimeWindow(bounds[0], bounds[1])
    except ValidationError:
        notes.append(f"start_time {start} is after end_time {end}; searched all time instead")
        window = TimeWindow()
    return ResolvedWindow(window, tuple(notes))
