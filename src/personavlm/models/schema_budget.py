"""A JSON schema bounded so that the longest reply it allows fits in `max_tokens`.

Constrained decoding keeps every prefix of a reply valid, not short: a small model that
repeats itself inside a string, or keeps adding array items, is cut at `max_tokens` with
incomplete JSON (SmolLM2-135M: 8 of 10 constrained calls, docs/benchmarks.md). Bounding the
schema moves the end into the grammar: once a string reaches its `maxLength` only its
closing quote is allowed, once an array has `maxItems` only its closing bracket, so the reply
closes itself within the budget.

The budget is `CHARS_PER_TOKEN` characters a token: what a looping English sentence and
JSON punctuation take in practice (about 4 and 2), not a proof (a token holds at least one
character, and an escape such as \\u00e9 writes six for one). Arrays are capped at
`MAX_ITEMS` (arrays of numbers at four times that), halved together while the strings
would get less than `MIN_STRING` characters each;
then every string without a bound of its own gets an equal share of what is left. Bounds the
schema already has are kept where they are tighter.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CHARS_PER_TOKEN", "MAX_ITEMS", "MIN_STRING", "fit_to_budget"]

CHARS_PER_TOKEN = 3
MAX_ITEMS = 8
MIN_STRING = 48
NUMBER_ITEMS_FACTOR = 4  # arrays of numbers get this many times the cap
_UNBOUNDED_NUMBER = 24  # characters of a number without bounds ("-1.2345678901234567e+300")


def fit_to_budget(schema: Mapping[str, Any], max_tokens: int) -> dict[str, Any]:
    """A copy of `schema` with `maxItems` on every array and `maxLength` on every string,
    sized so the longest reply is at most CHARS_PER_TOKEN * max_tokens characters."""
    budget = CHARS_PER_TOKEN * max_tokens
    items_cap = MAX_ITEMS
    while True:
        fitted: dict[str, Any] = _cap_arrays(copy.deepcopy(dict(schema)), items_cap)
        fixed, free = _measure(fitted)
        share = (budget - fixed) // free if free else budget - fixed
        if share >= MIN_STRING or items_cap == 1:
            break
        items_cap //= 2
    if free:
        _bound_strings(fitted, max(1, share))
    return fitted


def _kinds(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    return set(kind) if isinstance(kind, list) else set()


def _cap_arrays(schema: Any, cap: int) -> Any:
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            schema["properties"][name] = _cap_arrays(sub, cap)
        if "items" in schema:
            schema["items"] = _cap_arrays(schema["items"], cap)
        if "array" in _kinds(schema):
            # Numbers are a few characters each: a list of turn indices may be long.
            numbers = _kinds(schema.get("items", {})) & {"integer", "number"}
            own = NUMBER_ITEMS_FACTOR * cap if numbers else cap
            schema["maxItems"] = min(int(schema.get("maxItems", own)), own)
    return schema


def _measure(schema: Mapping[str, Any]) -> tuple[int, int]:
    """(characters fixed by the schema at most, strings free to grow), for its longest value;
    both count every array item up to its maxItems."""
    kinds = _kinds(schema)
    if "enum" in schema:
        return max(len(json.dumps(value)) for value in schema["enum"]), 0
    if "object" in kinds:
        fixed, free = 2, 0
        for name, sub in schema.get("properties", {}).items():
            sub_fixed, sub_free = _measure(sub)
            fixed += len(json.dumps(name)) + len(": ") + len(", ") + sub_fixed
            free += sub_free
        return fixed, free
    if "array" in kinds:
        item_fixed, item_free = _measure(schema.get("items", {}))
        count = int(schema["maxItems"])
        return 2 + count * (item_fixed + len(", ")), count * item_free
    if "string" in kinds:
        if "maxLength" in schema:
            return 2 + int(schema["maxLength"]), 0
        return 2, 1
    if "integer" in kinds or "number" in kinds:
        return _number_width(schema), 0
    return len("false"), 0  # boolean or null


def _number_width(schema: Mapping[str, Any]) -> int:
    bounds = [schema.get("minimum"), schema.get("maximum")]
    if any(bound is None for bound in bounds) or "number" in _kinds(schema):
        return _UNBOUNDED_NUMBER
    return max(len(str(int(bound))) for bound in bounds if bound is not None)


def _bound_strings(schema: Any, share: int) -> None:
    if not isinstance(schema, dict):
        return
    if "string" in _kinds(schema) and "enum" not in schema and "maxLength" not in schema:
        schema["maxLength"] = share  # a bound of its own was measured as it is
    for name in schema.get("properties", {}):
        _bound_strings(schema["properties"][name], share)
    if "items" in schema:
        _bound_strings(schema["items"], share)
