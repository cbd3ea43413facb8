"""What a `<retrieve>` step searches: three strategies behind the response loop's `SearchFn`.

- `ours` (the default): one search with the model's keywords in the model's window, every
  retrieved type at once (memory/search.py).
- `reference`: what the released weights were trained with (PAPER.md section 9). Semantic and
  episodic memory are searched twice, with the model's keywords and with the raw user message,
  and each memory keeps the better of its two scores; nothing from the last 60 minutes comes
  back (those turns are in the prompt already, as "recent conversations"); procedural memory
  is searched with the raw message alone and no window.
- `none`: the ablation without memory retrieval: every search finds nothing, so the model
  answers from the profile, the personality and the recent turns of its first prompt.

All three exclude memories already shown in this answer (`seen`); the response loop also
drops episodic turns shown in an earlier round (agent/respond.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from personavlm.errors import ValidationError
from personavlm.memory.records import Hit, MemoryType, Turn
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import SESSION_GAP
from personavlm.timeutil import TimeWindow

__all__ = [
    "ReferenceQuery",
    "RetrievalMode",
    "check_retrieval",
    "reference_hits",
    "with_turns",
    "without_recent",
]


class RetrievalMode(enum.StrEnum):
    OURS = "ours"
    REFERENCE = "reference"
    NONE = "none"


def check_retrieval(value: object) -> RetrievalMode:
    if isinstance(value, str) and value in RetrievalMode._value2member_map_:
        return RetrievalMode(value)
    choices = ", ".join(repr(m.value) for m in RetrievalMode)
    raise ValidationError(f"retrieval must be one of {choices}; got {value!r}")


@dataclass(frozen=True, slots=True)
class ReferenceQuery:
    """One round of reference retrieval: the user's message and when it was sent."""

    user_id: str
    message: str
    now: datetime
    k: Mapping[str, int]


def reference_hits(
    store: MemoryStore,
    query: ReferenceQuery,
    keywords: str,
    window: TimeWindow,
    seen: frozenset[int],
) -> list[Hit]:
    """Semantic and episodic memory by keywords and by the message (the better score of the
    two per memory), older than 60 minutes; procedural memory by the message alone."""
    hits: list[Hit] = []
    recallable = [t for t in (MemoryType.SEMANTIC, MemoryType.EPISODIC) if _k(query, t) > 0]
    capped = _before_recent(window, query.now)
    if recallable and capped is not None:
        k = {t.value: _k(query, t) for t in recallable}
        found = [
            store.search(
                query.user_id, text, types=recallable, k=k, window=capped, exclude_ids=seen
            )
            for text in _distinct(keywords, query.message)
        ]
        hits += without_recent(_best_of(found, k), query.now)
    if _k(query, MemoryType.PROCEDURAL) > 0 and query.message.strip():
        hits += store.search(
            query.user_id,
            query.message,
            types=[MemoryType.PROCEDURAL],
            k={MemoryType.PROCEDURAL.value: _k(query, MemoryType.PROCEDURAL)},
            exclude_ids=seen,
        )
    return hits


def without_recent(hits: Sequence[Hit], now: datetime) -> list[Hit]:
    """Episodic hits keep only their turns older than 60 minutes (a session topic may reach
    into the last hour); a hit left with no turn goes."""
    cutoff = now - SESSION_GAP
    kept: list[Hit] = []
    for hit in hits:
        if hit.memory.type is not MemoryType.EPISODIC or not hit.turns:
            kept.append(hit)
            continue
        turns = tuple(t for t in hit.turns if t.time <= cutoff)
        if turns:
            kept.append(hit if len(turns) == len(hit.turns) else with_turns(hit, turns))
    return kept


def with_turns(hit: Hit, turns: tuple[Turn, ...]) -> Hit:
    """The hit showing only `turns` (and only the pictures those turns or the memory show)."""
    shown = {i for t in turns for i in t.image_ids}
    images = tuple(ref for ref in hit.images if ref.id in shown or ref.id in hit.memory.image_ids)
    return replace(hit, turns=turns, images=images)


def _before_recent(window: TimeWindow, now: datetime) -> TimeWindow | None:
    """The model's window with its end moved before the last 60 minutes; None when nothing
    older than that can be in it."""
    cutoff = now - SESSION_GAP
    end = cutoff if window.end is None else min(window.end, cutoff)
    if window.start is not None and window.start > end:
        return None
    return TimeWindow(window.start, end)


def _best_of(found: Sequence[Sequence[Hit]], k: Mapping[str, int]) -> list[Hit]:
    """Per memory the hit with the higher score; per type the k best, best first."""
    best: dict[int, Hit] = {}
    for hits in found:
        for hit in hits:
            held = best.get(hit.memory.id)
            if held is None or hit.score > held.score:
                best[hit.memory.id] = hit
    ranked = sorted(best.values(), key=lambda h: (-h.score, h.memory.id))
    out: list[Hit] = []
    for kind, limit in k.items():
        out += [h for h in ranked if h.memory.type.value == kind][:limit]
    return out


def _distinct(*texts: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def _k(query: ReferenceQuery, kind: MemoryType) -> int:
    return int(query.k.get(kind.value, 0))
