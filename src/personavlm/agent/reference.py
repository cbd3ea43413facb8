"""The released PersonaVLM layout: what fills the slots of the `tags` prompts.

The released weights were trained on prompts with these pieces (docs/reference-format.md
has the whole layout and what differs on purpose):

- `User Profile:` the core memory as a Python dict (`{'name': 'Lila', ..., 'update time':
  '2024-04-22 17:31'}`), the last core change as its `update time`;
- the Big Five as `*   Openness: 3.7` lines: the value's first three characters (3.66 -> 3.6);
- conversations as exchanges `Time: 2024-04-23 15:25 (Tuesday)` / `User: <text>` /
  `Assistant: <text>`, one per line, each picture of a user turn at the start of its text on
  a line of its own (where the reference's `<image>` marker stands); the episodic prompt
  numbers them `Round 0 of dialogues`, ...;
- the user input as the Python dict `{'time': 'YYYY-MM-DD HH:MM (Weekday)', 'query': '...'}`
  with each `\\n` of the repr shown as a real line break (the reference turns them back), a
  picture of the message at the start of the query, followed by a blank line;
- retrieved memory as `key: value` procedural lines, `Time:` / `Memory:` semantic entries
  (a picture where its `(Image Object: ...)` phrase stands) and the retrieved exchanges.

Every piece of user or memory text passes through `protocol.escape` on its way in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from personavlm.agent.context import PartsBuilder
from personavlm.agent.protocol import escape
from personavlm.agent.templates import Templates, Value
from personavlm.media.blobs import BlobStore
from personavlm.memory.records import Hit, ImageRef, Memory, MemoryType, Turn
from personavlm.models.base import Message, Part, TextPart
from personavlm.personality import PersonalityState
from personavlm.timeutil import display_time

__all__ = [
    "exchanges_of",
    "history",
    "procedural_dict",
    "profile_dict",
    "retrieval_message",
    "retrieval_values",
    "step_message",
    "trait_values",
    "user_input",
]

PROFILE_TIME_KEY = "update time"  # the reference's key for when the profile last changed


def _shown_repr(value: object) -> str:
    """Python's repr, with each `\\n` escape shown as the line break it stands for (the
    reference's model input turns them back)."""
    return repr(value).replace("\\n", "\n")


def profile_dict(core: Sequence[Memory]) -> str:
    """The core profile as the reference shows it: a Python dict of key -> value, with the
    time of the latest core change as `'update time'` (no entry for an empty profile)."""
    profile = {escape(m.key or ""): escape(m.content) for m in core}
    if core:
        latest = max(m.valid_from for m in core)
        profile[PROFILE_TIME_KEY] = f"{latest:%Y-%m-%d %H:%M}"
    return _shown_repr(profile)


def procedural_dict(procedural: Sequence[Memory]) -> str:
    """Current procedural memory as the reference's procedural prompt shows it: a Python
    dict of key -> sentence, or nothing at all when there is none."""
    if not procedural:
        return ""
    return _shown_repr({escape(m.key or ""): escape(m.content) for m in procedural})


_TRAIT_SLOTS = {
    "openness": "Openness",
    "conscientiousness": "Conscientiousness",
    "extraversion": "Extraversion",
    "agreeableness": "Agreeableness",
    "neuroticism": "Neuroticism",
}


def trait_values(state: PersonalityState) -> dict[str, str]:
    """The five slot values: each trait's first three characters (3.66 -> '3.6', 4 -> '4.0'),
    the reference's cut, not a rounding."""
    return {_TRAIT_SLOTS[name]: repr(float(v))[:3] for name, v in state.traits.to_dict().items()}


def exchanges_of(turns: Sequence[Turn]) -> list[list[Turn]]:
    """Turns as exchanges: each user turn with the replies after it (a reply before any user
    turn is an exchange of its own)."""
    exchanges: list[list[Turn]] = []
    for turn in turns:
        if turn.role == "user" or not exchanges:
            exchanges.append([turn])
        else:
            exchanges[-1].append(turn)
    return exchanges


def history(
    turns: Sequence[Turn],
    images: Mapping[str, ImageRef],
    blobs: BlobStore,
    *,
    numbered: bool = False,
) -> list[Part]:
    """Exchanges as `Time:` / `User:` / `Assistant:` lines, one exchange after another;
    `numbered` puts `Round <i> of dialogues` before each (the episodic prompt)."""
    out = PartsBuilder(blobs)
    for index, exchange in enumerate(exchanges_of(turns)):
        if index:
            out.text("\n")
        if numbered:
            out.text(f"Round {index} of dialogues\n")
        out.text(f"Time: {display_time(exchange[0].time)}")
        for turn in exchange:
            if turn.role == "user":
                out.text("\nUser: ")
                for image_id in turn.image_ids:
                    if image_id in images:
                        out.images([images[image_id]]).text("\n")
                out.text(escape(turn.text))
            else:
                out.text(f"\nAssistant: {escape(turn.text)}")
    return out.parts


def user_input(
    text: str, pictures: Sequence[ImageRef], time_shown: str, blobs: BlobStore
) -> list[Part]:
    """`{'time': ..., 'query': ...}` as the reference renders the dict: the query's repr
    (its quote character as Python picks it) with line breaks shown, each picture at the
    start of the query followed by a blank line."""
    quoted = repr(escape(text))
    quote, body = quoted[0], quoted[1:-1].replace("\\n", "\n")
    out = PartsBuilder(blobs).text(f"{{'time': {time_shown!r}, 'query': {quote}")
    for ref in pictures:
        out.images([ref]).text("\n\n")
    out.text(f"{body}{quote}}}")
    return out.parts


def retrieval_values(hits: Sequence[Hit], blobs: BlobStore) -> dict[str, list[Part]]:
    """The three slots of the retrieval message: procedural lines, semantic entries and the
    retrieved exchanges (each turn once, in time order)."""
    by_type = {kind: [h for h in hits if h.memory.type is kind] for kind in MemoryType}
    keyed = by_type[MemoryType.PROCEDURAL] + by_type[MemoryType.CORE]
    procedural = "\n".join(
        f"{escape(h.memory.key or '')}: {escape(h.memory.content)}" for h in keyed
    )
    semantic = PartsBuilder(blobs)
    for index, hit in enumerate(by_type[MemoryType.SEMANTIC]):
        if index:
            semantic.text("\n")
        semantic.text(f"Time: {display_time(hit.memory.event_start)}\nMemory: ")
        _memory_with_pictures(semantic, escape(hit.memory.content), hit.images)
    turns: dict[int, Turn] = {}
    pictures: dict[str, ImageRef] = {}
    for hit in by_type[MemoryType.EPISODIC]:
        turns.update((t.id, t) for t in hit.turns)
        pictures.update((ref.id, ref) for ref in hit.images)
    ordered = sorted(turns.values(), key=lambda t: (t.time, t.id))
    return {
        "ProceduralMemory": [TextPart(procedural)] if procedural else [],
        "SemanticMemory": semantic.parts,
        "DialogHistory": history(ordered, pictures, blobs),
    }


_OBJECT_PHRASE = "(Image Object:"


def _memory_with_pictures(out: PartsBuilder, content: str, pictures: Sequence[ImageRef]) -> None:
    """A semantic memory's text with its pictures where its `(Image Object: ...)` phrases
    stand (the reference puts the object's crop there, followed by a line break); pictures
    left over follow the text."""
    rest = content
    remaining = list(pictures)
    while remaining and (start := rest.find(_OBJECT_PHRASE)) >= 0:
        end = rest.find(")", start)
        if end < 0:
            break
        out.text(rest[:start].rstrip()).images([remaining.pop(0)]).text("\n")
        rest = rest[end + 1 :]
    out.text(rest)
    for ref in remaining:
        out.images([ref])


# ----------------------------------------------------------------------------- messages


def step_message(
    templates: Templates,
    *,
    core: Sequence[Memory],
    personality: PersonalityState,
    recent: Sequence[Turn],
    recent_images: Mapping[str, ImageRef],
    query: str,
    query_images: Sequence[ImageRef],
    time: datetime,
    blobs: BlobStore,
) -> Message:
    """The first (and only) message of a turn's first step: one user message holding the
    whole prompt, as the released weights were trained on (no system message)."""
    values: dict[str, Value] = {
        "UserProfile": profile_dict(core),
        **trait_values(personality),
        "DialogHistory": history(recent, recent_images, blobs),
        "UserQuery": user_input(query, query_images, display_time(time), blobs),
    }
    return Message("user", tuple(templates.render("response_tags", values)))


def retrieval_message(templates: Templates, hits: Sequence[Hit], blobs: BlobStore) -> Message:
    """Retrieved memory as the next user message, in the reference's three blocks, then the
    instruction to answer or retrieve again."""
    values: dict[str, Value] = dict(retrieval_values(hits, blobs))
    return Message("user", tuple(templates.render("retrieval_tags", values)))
