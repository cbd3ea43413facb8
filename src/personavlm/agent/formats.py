"""What the update phase asks the model for, and the parsers of its replies.

Two families, like the response protocols:
- `json`: one JSON-schema-constrained object per call (`UPDATE_SCHEMA` per turn: personality
  reading + semantic operations; `EPISODIC_SCHEMA` and `CONSOLIDATE_SCHEMA` at session close);
- `tags`: the reference line formats of PAPER.md section 8 (`"key": value` lines), which the
  released weights were trained to write: personality, semantic candidate, episodic topics,
  core profile, procedural entries.
Every parser raises ProtocolError with the exact problem; the caller retries once with it.

Real models write the line formats loosely: keys with apostrophes and spaces, indices
separated by spaces or in brackets, a value running over several lines, a quoted "null",
code fences, trailing commas in JSON. The readers accept these, and each repair is noted
(`collecting_repairs`: the update report shows them). They never guess beyond that: a line
that is no key/value line and continues none is still a ProtocolError quoting it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from personavlm.errors import ProtocolError, ValidationError
from personavlm.personality import TRAITS, Reading, parse_reading

__all__ = [
    "CONSOLIDATE_SCHEMA",
    "EPISODIC_SCHEMA",
    "UPDATE_SCHEMA",
    "KeyValue",
    "Proposal",
    "Topic",
    "collecting_repairs",
    "is_null",
    "load_reply_object",
    "parse_consolidation_json",
    "parse_episodic_json",
    "parse_episodic_tags",
    "parse_key_values",
    "parse_reading_tags",
    "parse_semantic_tags",
    "parse_update_json",
    "without_surrogates",
]

OPS = ("ADD", "UPDATE", "INVALIDATE", "NOOP")

_REPAIRS: ContextVar[list[str] | None] = ContextVar("personavlm_format_repairs", default=None)


@contextmanager
def collecting_repairs() -> Iterator[list[str]]:
    """Collect what the readers inside the block repaired in the model's replies."""
    notes: list[str] = []
    token = _REPAIRS.set(notes)
    try:
        yield notes
    finally:
        _REPAIRS.reset(token)


def _repaired(note: str) -> None:
    notes = _REPAIRS.get()
    if notes is not None and note not in notes:
        notes.append(note)


def is_null(value: str | None) -> bool:
    """An absent value as models write it: nothing, null, None, or either in quotes."""
    return value is None or _unquote(value).strip().lower() in ("", "null", "none")


@dataclass(frozen=True, slots=True)
class Proposal:
    """A semantic-memory operation as the model proposed it (checked later against memory)."""

    op: str  # ADD, UPDATE, INVALIDATE, NOOP
    memory_id: int | None
    content: str | None
    keywords: tuple[str, ...]
    attach_images: bool


@dataclass(frozen=True, slots=True)
class Topic:
    summary: str
    keywords: tuple[str, ...]
    exchanges: tuple[int, ...]  # 0-based exchange numbers of the session


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str | None  # None: remove the key


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


# Bounds on the short fields say what they are (a keyword, a profile key): constrained
# decoding then spends a reply's budget on the long ones (models/schema_budget.py).
KEYWORD_CHARS = 48
KEY_CHARS = 64
_STRINGS = {"type": "array", "items": {"type": "string", "maxLength": KEYWORD_CHARS}}
_KEY_OPS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["key", "value"],
        "properties": {
            "key": {"type": "string", "maxLength": KEY_CHARS},
            "value": _nullable("string"),
        },
    },
}

UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["personality", "operations"],
    "properties": {
        "personality": {
            "type": "object",
            "additionalProperties": False,
            "required": list(TRAITS),
            "properties": {t: {"type": "integer", "minimum": 1, "maximum": 5} for t in TRAITS},
        },
        "operations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["op", "id", "content", "keywords", "attach_images"],
                "properties": {
                    "op": {"type": "string", "enum": list(OPS)},
                    "id": _nullable("integer"),
                    "content": _nullable("string"),
                    "keywords": _STRINGS,
                    "attach_images": {"type": "boolean"},
                },
            },
        },
    },
}

EPISODIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["topics"],
    "properties": {
        "topics": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["summary", "keywords", "turns"],
                "properties": {
                    "summary": {"type": "string"},
                    "keywords": _STRINGS,
                    # exchange numbers of one session (an hour of chat: far below 10,000)
                    "turns": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0, "maximum": 9999},
                    },
                },
            },
        }
    },
}

CONSOLIDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["core", "procedural"],
    "properties": {"core": _KEY_OPS, "procedural": _KEY_OPS},
}


# ----------------------------------------------------------------------------- json


_FENCE = re.compile(r"^```[A-Za-z]*\s*\n?(?P<body>.*?)\n?```$", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def load_reply_object(text: str) -> dict[str, Any]:
    """A model's JSON reply as an object, for every JSON reader of the agent (response steps
    and updates): a code fence around it and trailing commas are repaired (noted); an
    unpaired surrogate the JSON spells ("\\ud800") becomes U+FFFD, since such text can be
    neither stored nor sent on; anything else unreadable is a ProtocolError."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced is not None:
        stripped = fenced.group("body").strip()
        _repaired("removed a code fence around the JSON")
    try:
        data = json.loads(stripped, object_hook=_without_surrogates)
    except json.JSONDecodeError as exc:
        # A trailing comma is the one slip repaired (it changes no value); anything else
        # is the model's to fix.
        unslipped = _TRAILING_COMMA.sub(r"\1", stripped)
        if unslipped == stripped:
            raise ProtocolError(f"the reply is not one JSON object: {exc}") from exc
        try:
            data = json.loads(unslipped, object_hook=_without_surrogates)
        except json.JSONDecodeError:
            raise ProtocolError(f"the reply is not one JSON object: {exc}") from exc
        _repaired("removed trailing commas from the JSON")
    if not isinstance(data, dict):
        raise ProtocolError(f"the reply must be a JSON object, not {type(data).__name__}")
    return data


def _without_surrogates(data: dict[str, Any]) -> dict[str, Any]:
    return {key: _replace_surrogates(value) for key, value in data.items()}


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """`text` with each unpaired surrogate (text no store can hold nor client receive)
    replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, list):
        return [_replace_surrogates(item) for item in value]
    return value  # objects inside were cleaned by the hook already


def _list_of(data: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    items = data.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ProtocolError(f'"{key}" must be a list of {what} objects')
    return items


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{where} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def parse_update_json(text: str) -> tuple[Reading, list[Proposal]]:
    data = load_reply_object(text)
    personality = data.get("personality")
    if not isinstance(personality, dict):
        raise ProtocolError('"personality" must be an object with the five traits')
    try:
        reading = Reading.from_mapping(personality)
    except ValidationError as exc:
        raise ProtocolError(f'"personality": {exc}') from exc
    proposals = [
        _proposal(item, index)
        for index, item in enumerate(_list_of(data, "operations", "operation"))
    ]
    return reading, proposals


def _proposal(item: dict[str, Any], index: int) -> Proposal:
    where = f"operations[{index}]"
    op = item.get("op")
    if not isinstance(op, str) or op.upper() not in OPS:
        raise ProtocolError(f"{where}.op must be one of {', '.join(OPS)}, got {op!r}")
    memory_id, content = item.get("id"), item.get("content")
    if memory_id is not None and (not isinstance(memory_id, int) or isinstance(memory_id, bool)):
        raise ProtocolError(f"{where}.id must be an integer memory id or null")
    if content is not None and not isinstance(content, str):
        raise ProtocolError(f"{where}.content must be a string or null")
    op = op.upper()
    if op in ("ADD", "UPDATE") and not (content or "").strip():
        raise ProtocolError(f"{where} is {op} but has no content")
    if op in ("UPDATE", "INVALIDATE") and memory_id is None:
        raise ProtocolError(f"{where} is {op} but names no memory id")
    return Proposal(
        op,
        memory_id,
        None if content is None else content.strip(),
        _strings(item.get("keywords"), f"{where}.keywords"),
        item.get("attach_images") is True,
    )


def parse_episodic_json(text: str) -> list[Topic]:
    topics = []
    for index, item in enumerate(_list_of(load_reply_object(text), "topics", "topic")):
        summary, turns = item.get("summary"), item.get("turns")
        if not isinstance(summary, str) or not summary.strip():
            raise ProtocolError(f"topics[{index}].summary must be non-empty text")
        if not isinstance(turns, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in turns
        ):
            raise ProtocolError(f"topics[{index}].turns must be a list of exchange numbers")
        keywords = _strings(item.get("keywords"), f"topics[{index}].keywords")
        topics.append(Topic(summary.strip(), keywords, tuple(turns)))
    return topics


def parse_consolidation_json(text: str) -> tuple[list[KeyValue], list[KeyValue]]:
    data = load_reply_object(text)
    result: list[list[KeyValue]] = []
    for section in ("core", "procedural"):
        entries = []
        for index, item in enumerate(_list_of(data, section, "key/value")):
            key, value = item.get("key"), item.get("value")
            if not isinstance(key, str) or not key.strip():
                raise ProtocolError(f"{section}[{index}].key must be non-empty text")
            if value is not None and not isinstance(value, str):
                raise ProtocolError(f"{section}[{index}].value must be text or null")
            entries.append(KeyValue(key.strip(), (value or "").strip() or None))
        result.append(entries)
    return result[0], result[1]


# ----------------------------------------------------------------------------- tags

_LINE = re.compile(
    r"""^\s*(?:"(?P<dq>[^"]+)"|'(?P<sq>[^']+)'|(?P<bare>[^"':][^:]*?))\s*:\s*(?P<value>.*?)\s*,?\s*$"""
)
_SKIPPED = ("{", "}", "{}")  # an empty object: no lines (the procedural prompt allows it)


def parse_key_values(text: str) -> list[tuple[str, str]]:
    """`"key": value` lines (braces, blank lines, code fences and list bullets ignored). A
    line that is none of these continues the value before it (noted as a repair); before
    any key it raises ProtocolError quoting it."""
    pairs: list[tuple[str, str]] = []
    for raw in text.strip().splitlines():
        line = raw.strip().lstrip("-*").strip()
        if not line or line in _SKIPPED or line.startswith("```"):
            continue
        match = _LINE.match(line)
        if match is not None and _plausible_key(match):
            key = match.group("dq") or match.group("sq") or match.group("bare")
            pairs.append((key.strip(), _unquote(match.group("value"))))
        elif pairs:
            key, value = pairs[-1]
            pairs[-1] = (key, _unquote(f"{value}\n{line}".strip()))
            _repaired(f'joined a value that runs over several lines (key "{key}")')
        else:
            raise ProtocolError(f'line {line[:80]!r} is not a "key": value line')
    return pairs


def _plausible_key(match: re.Match[str]) -> bool:
    # A bare "key" longer than a few words is a sentence with a colon in it, i.e. a value
    # running on from the line before, not a new key.
    bare = match.group("bare")
    return bare is None or len(bare.split()) <= 6


def _unquote(value: str) -> str:
    value = value.strip().rstrip(",").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


# A list marker before a trait ("1. Openness: 3", "- openness: 3"): SmolLM2 numbers them.
_LIST_MARKER = re.compile(r"^([ \t]*)(?:\d{1,2}[.)]|[-*•])[ \t]+(?=[\"']?[A-Za-z])", re.MULTILINE)


def parse_reading_tags(text: str) -> Reading:
    unmarked = _LIST_MARKER.sub(r"\1", text)
    if unmarked != text:
        _repaired("removed list markers before the traits")
    try:
        return parse_reading(unmarked)
    except ValidationError as exc:
        raise ProtocolError(str(exc)) from exc


def parse_semantic_tags(text: str) -> Proposal | None:
    """The reference's one candidate per turn: None when its decision is to skip."""
    fields = dict(parse_key_values(text))
    decision = fields.get("decision", "").lower()
    if decision not in ("true", "false"):
        raise ProtocolError('"decision" must be true or false')
    if decision == "false":
        return None
    content = fields.get("content", "")
    if is_null(content):
        raise ProtocolError('"decision" is true but "content" is empty')
    keywords = tuple(k.strip() for k in fields.get("keywords", "").split(",") if k.strip())
    return Proposal("ADD", None, content, keywords, "(Image Object:" in content)


def parse_episodic_tags(text: str) -> list[Topic]:
    topics: list[Topic] = []
    current: dict[str, str] = {}
    for key, value in parse_key_values(text):
        if key == "topic_summary" and current:
            topics.append(_topic(current, len(topics)))
            current = {}
        current[key] = value
    if current:
        topics.append(_topic(current, len(topics)))
    return topics


def _topic(fields: dict[str, str], index: int) -> Topic:
    summary = fields.get("topic_summary", "")
    if not summary:
        raise ProtocolError(f'topic {index} has no "topic_summary"')
    numbers = _indices(fields.get("source_dialog_indices", ""), index)
    keywords = tuple(k.strip() for k in fields.get("keywords", "").split(",") if k.strip())
    return Topic(summary, keywords, numbers)


_INDICES = re.compile(r"^[\[(]?\s*(-?\d+(?:\s*[,;\s]\s*-?\d+)*)?\s*[\])]?$")


def _indices(text: str, topic: int) -> tuple[int, ...]:
    """Exchange numbers as models write them: `0, 1`, `[0, 1]`, `0 1`, `0;1`."""
    value = _unquote(text)
    if is_null(value):
        return ()
    if _INDICES.match(value) is None:
        raise ProtocolError(
            f'topic {topic}: "source_dialog_indices" must be exchange numbers, got {value!r}'
        )
    numbers = tuple(int(n) for n in re.findall(r"-?\d+", value))
    if re.search(r"\d\s+-?\d", value) or ";" in value:
        _repaired('read "source_dialog_indices" separated by spaces or semicolons')
    return numbers
