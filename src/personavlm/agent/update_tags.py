"""The update phase under the `tags` protocol: the released weights' five prompts, and core
and procedural memory rewritten whole.

Each prompt is one user message in the reference's layout (agent/reference.py): the user's
profile, the conversation as exchanges, and (per turn) the user's input; the episodic prompt
numbers the exchanges `Round <i> of dialogues`, the procedural prompt shows the current
procedures as a dict. The model's reply to the core prompt is the new whole profile, to the
procedural prompt the new whole procedure list (at most MAX_PROCEDURAL): `rewrite` turns
each into supersessions through the store (a changed key: a new version of it; a key the
reply leaves out: invalidated), so history and undo show every change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from personavlm.agent import reference
from personavlm.agent.formats import KeyValue, is_null, parse_key_values
from personavlm.agent.templates import Templates, Value
from personavlm.agent.trace import MemoryChange
from personavlm.memory.records import ImageRef, Memory, MemoryType, Turn
from personavlm.memory.store import MemoryStore
from personavlm.memory.writes import AddOp, InvalidateOp, MemoryOp
from personavlm.models.base import Message
from personavlm.timeutil import display_time

__all__ = [
    "MAX_PROCEDURAL",
    "Rewrite",
    "SessionMessages",
    "read_procedures",
    "read_profile",
    "rewrite",
    "session_messages",
    "turn_messages",
]

MAX_PROCEDURAL = 5  # PAPER.md section 2 and the reference prompt: at most 5 entries
# Core keys the reference keeps when a rewritten profile leaves them out: the profile's
# `name` is the user's, never the model's to drop.
PINNED_CORE_KEYS = ("name",)


def _images(store: MemoryStore, turns: Sequence[Turn]) -> dict[str, ImageRef]:
    ids = list(dict.fromkeys(i for t in turns for i in t.image_ids))
    return {ref.id: ref for ref in store.images(ids)}


def turn_messages(
    store: MemoryStore, templates: Templates, user_id: str, user_turn: Turn
) -> tuple[Message, Message]:
    """The personality and semantic prompts of one turn: the profile, the session's earlier
    exchanges and the user's input (the reply is not shown: the reference reads the user)."""
    core = store.list(user_id, types=["core"], limit=1000)
    session = store.turns(user_id, session_id=user_turn.session_id, end=user_turn.time)
    earlier = [t for t in session if t.id < user_turn.id]
    blobs = store.blobs
    pictures = store.images(user_turn.image_ids)
    values: dict[str, Value] = {
        "UserProfile": reference.profile_dict(core),
        "DialogHistory": reference.history(earlier, _images(store, earlier), blobs),
        "UserQuery": reference.user_input(
            user_turn.text, pictures, display_time(user_turn.time), blobs
        ),
    }
    return (
        Message("user", tuple(templates.render("personality_tags", values))),
        Message("user", tuple(templates.render("semantic_tags", values))),
    )


@dataclass(frozen=True, slots=True)
class SessionMessages:
    episodic: Message
    core: Message
    procedural: Message


def session_messages(
    store: MemoryStore,
    templates: Templates,
    turns: Sequence[Turn],
    core: Sequence[Memory],
    procedural: Sequence[Memory],
) -> SessionMessages:
    """The three session-close prompts over the session's turns, with the profile and the
    procedures as they are before the update."""
    images = _images(store, turns)
    profile = reference.profile_dict(core)
    plain = reference.history(turns, images, store.blobs)
    numbered = reference.history(turns, images, store.blobs, numbered=True)
    episodic = templates.render(
        "episodic_tags", {"UserProfile": profile, "DialogHistory": numbered}
    )
    core_prompt = templates.render("core_tags", {"UserProfile": profile, "DialogHistory": plain})
    procedural_prompt = templates.render(
        "procedural_tags",
        {
            "UserProfile": profile,
            "CurrentProceduralMemory": reference.procedural_dict(procedural),
            "DialogHistory": plain,
        },
    )
    return SessionMessages(
        Message("user", tuple(episodic)),
        Message("user", tuple(core_prompt)),
        Message("user", tuple(procedural_prompt)),
    )


def read_profile(text: str) -> list[KeyValue]:
    """The core reply as the new whole profile (`"key": value` lines; the `update time`
    the prompt shows is ours to set, not the model's)."""
    return [e for e in _entries(text) if e.key.strip().lower() != reference.PROFILE_TIME_KEY]


def read_procedures(text: str) -> list[KeyValue]:
    """The procedural reply as the new whole procedure list; an empty object (`{}`) or no
    lines is the empty list the reference prompt allows."""
    return _entries(text)


def _entries(text: str) -> list[KeyValue]:
    return [KeyValue(k, None if is_null(v) else v) for k, v in parse_key_values(text)]


@dataclass(slots=True)
class Rewrite:
    ops: list[MemoryOp] = field(default_factory=list)
    changes: list[MemoryChange] = field(default_factory=list)  # one per op, in order
    dropped: list[MemoryChange] = field(default_factory=list)  # entries not applied, and why


def rewrite(
    kind: MemoryType,
    entries: Sequence[KeyValue],
    current: Sequence[Memory],
    *,
    source: tuple[int, ...],
    end: datetime,
    max_chars: int,
) -> Rewrite:
    """The model's whole new profile (core) or procedure list (procedural, at most
    MAX_PROCEDURAL) applied over what is held: a new or changed key is added (superseding
    the key's holder), a held key the reply leaves out (or gives as null) is invalidated,
    except the pinned core keys. Values over `max_chars` are dropped with a note, and
    their key keeps its value."""
    held = {m.key: m for m in current}
    result = Rewrite()
    if kind is MemoryType.CORE and not any(e.value is not None for e in entries):
        # A profile rewritten to nothing is a reply that went wrong, not a user without
        # attributes: the profile stays, and the report says why.
        if held:
            note = "the model wrote no profile; the profile stays as it is"
            result.dropped.append(MemoryChange("noop", kind.value, None, None, note))
        return result
    given = {e.key: e for e in entries}
    wanted = [e for e in given.values() if e.value is not None]
    if kind is MemoryType.PROCEDURAL:
        for entry in wanted[MAX_PROCEDURAL:]:
            note = f"over the {MAX_PROCEDURAL} procedural entries kept; dropped"
            result.dropped.append(_noop(kind, f"{entry.key}: {entry.value}", note, max_chars))
        wanted = wanted[:MAX_PROCEDURAL]
    kept: set[str] = set()
    for entry in wanted:
        assert entry.value is not None
        old = held.get(entry.key)
        if len(entry.value) > max_chars:
            note = f"value is {len(entry.value):,} characters; the limit is {max_chars:,}; dropped"
            result.dropped.append(_noop(kind, f"{entry.key}: {entry.value}", note, max_chars))
            kept.add(entry.key)  # a value we cannot store is no reason to forget the key
            continue
        kept.add(entry.key)
        if old is not None and _same(old.content, entry.value):
            continue
        result.ops.append(AddOp(kind, entry.value, entry.key, (), source, (), end))
        result.changes.append(MemoryChange("add", kind.value, None, f"{entry.key}: {entry.value}"))
    pinned = PINNED_CORE_KEYS if kind is MemoryType.CORE else ()
    for key, old in held.items():
        if key in kept or key in pinned:
            continue
        result.ops.append(InvalidateOp(old.id, end))
        result.changes.append(MemoryChange("invalidate", kind.value, old.id, old.content))
    return result


def _same(old: str, new: str) -> bool:
    return " ".join(old.split()).casefold() == " ".join(new.split()).casefold()


def _noop(kind: MemoryType, content: str, note: str, max_chars: int) -> MemoryChange:
    shown = content if len(content) <= max_chars else content[:max_chars] + "..."
    return MemoryChange("noop", kind.value, None, shown, note)
