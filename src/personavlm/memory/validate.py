"""Checks on caller input, each raising ValidationError that names the field and the fix.

Every check runs before a transaction opens, so a bad value never leaves half a write.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from personavlm.errors import ValidationError
from personavlm.memory.records import KEYED_TYPES, MemoryStatus, MemoryType

__all__ = [
    "MAX_KEYWORDS",
    "MAX_TEXT_CHARS",
    "check_key",
    "check_keywords",
    "check_memory_type",
    "check_status",
    "check_text",
    "check_user_id",
]

# A memory or a turn is a sentence to a few paragraphs. 20k characters is ~5k tokens: past
# that the text belongs in a document store, and the encoder would truncate it anyway.
MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 128
MAX_KEYWORDS = 32


def check_text(value: object, *, field: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{field}: not valid UTF-8 (unpaired surrogate at character {exc.start}); "
            "send the text as proper UTF-8"
        ) from exc
    if "\x00" in value:
        raise ValidationError(f"{field}: contains a NUL character; remove it")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{field}: is empty; give some text")
    if len(value) > MAX_TEXT_CHARS:
        raise ValidationError(
            f"{field}: is {len(value)} characters; the limit is {MAX_TEXT_CHARS}: "
            "split it or summarise it"
        )
    return value


def check_user_id(value: object) -> str:
    return _check_identifier(value, field="user id")


def check_key(memory_type: MemoryType, key: object) -> str | None:
    if memory_type in KEYED_TYPES:
        if key is None:
            raise ValidationError(
                f"{memory_type.value} memory needs a key (e.g. 'name', 'favourite drink'): "
                "one active record is kept per key"
            )
        return _check_identifier(key, field="key")
    if key is not None:
        raise ValidationError(
            f"{memory_type.value} memory takes no key; keys are for core and procedural memory"
        )
    return None


def check_keywords(values: Iterable[object]) -> tuple[str, ...]:
    keywords = tuple(values)
    if len(keywords) > MAX_KEYWORDS:
        raise ValidationError(f"keywords: {len(keywords)} given; the limit is {MAX_KEYWORDS}")
    cleaned = []
    for word in keywords:
        text = check_text(word, field="keyword").strip()
        if len(text) > MAX_ID_CHARS:
            raise ValidationError(f"keyword {text[:40]!r}...: longer than {MAX_ID_CHARS} chars")
        cleaned.append(text)
    return tuple(cleaned)


def check_memory_type(value: object) -> MemoryType:
    if isinstance(value, str) and value in MemoryType._value2member_map_:
        return MemoryType(value)
    allowed = ", ".join(t.value for t in MemoryType)
    raise ValidationError(f"unknown memory type {value!r}; use one of: {allowed}")


def check_status(value: object) -> MemoryStatus:
    if isinstance(value, str) and value in MemoryStatus._value2member_map_:
        return MemoryStatus(value)
    allowed = ", ".join(s.value for s in MemoryStatus)
    raise ValidationError(f"unknown memory status {value!r}; use one of: {allowed}")


def _check_identifier(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field}: must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise ValidationError(f"{field}: longer than {MAX_ID_CHARS} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValidationError(f"{field}: {value!r} contains control characters")
    check_text(value, field=field)
    return value
