"""Prompts: the package's prompt texts, message parts, and the `json` protocol's messages.

The `tags` protocol's messages (the released weights' layout) are built in
agent/reference.py; this module holds what both share (the templates, `PartsBuilder`,
pictures read from the blob store) and the layout of our own `json` protocol: a system
prompt, then one user message with the core profile (`key: value`), the personality
rendered by PEM, the recent conversation (every turn of the last 60 minutes, images where
they occurred), and the user input `{'time': 'YYYY-MM-DD HH:MM (Weekday)', 'query': ...}`.
Retrieved memory comes back as one user message with procedural, semantic and episodic
blocks, images in order. Every piece of user or memory text passes through
`protocol.escape` on its way in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache

from personavlm.agent.protocol import escape
from personavlm.agent.templates import Templates
from personavlm.errors import NotFoundError, StoreError
from personavlm.media.blobs import BlobStore
from personavlm.memory.records import Hit, ImageRef, Memory, MemoryType, Turn
from personavlm.models.base import ImagePart, Message, Part, Role, TextPart
from personavlm.personality import PersonalityState, render
from personavlm.timeutil import display_time

__all__ = [
    "PartsBuilder",
    "image_part",
    "packaged_templates",
    "prompt",
    "render_core",
    "render_turns",
    "response_message",
    "retrieval_message",
]


@cache
def packaged_templates() -> Templates:
    """The package's prompt templates (checked once per process)."""
    return Templates.load()


def prompt(name: str, **values: object) -> str:
    """The package's prompt text `agent/prompts/<name>.txt`, its `{Placeholders}` filled in
    (agent/templates.py lists each prompt's)."""
    return packaged_templates().text(name, **{k: str(v) for k, v in values.items()})


def image_part(ref: ImageRef, blobs: BlobStore) -> ImagePart:
    """A stored image as a message part; a registered picture without bytes is a StoreError."""
    try:
        data = blobs.read(ref.id)
    except NotFoundError as exc:
        raise StoreError(f"picture {ref.id} is registered but {exc}") from exc
    return ImagePart(data, ref.mime)


class PartsBuilder:
    """Text and images in order; adjacent text runs are merged into one part."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._parts: list[Part] = []

    def text(self, text: str) -> PartsBuilder:
        if self._parts and isinstance(self._parts[-1], TextPart):
            self._parts[-1] = TextPart(self._parts[-1].text + text)
        elif text:
            self._parts.append(TextPart(text))
        return self

    def images(self, refs: Iterable[ImageRef]) -> PartsBuilder:
        for ref in refs:
            self._parts.append(image_part(ref, self._blobs))
        return self

    def extend(self, message: Message) -> PartsBuilder:
        for part in message.parts:
            if isinstance(part, TextPart):
                self.text(part.text)
            else:
                self._parts.append(part)
        return self

    @property
    def parts(self) -> list[Part]:
        return list(self._parts)

    def message(self, role: Role) -> Message:
        return Message(role, tuple(self._parts))


def render_core(core: Sequence[Memory]) -> str:
    if not core:
        return "(nothing known yet)"
    return "\n".join(f"{escape(m.key or '')}: {escape(m.content)}" for m in core)


def render_turns(builder: PartsBuilder, turns: Sequence[Turn], images: dict[str, ImageRef]) -> None:
    """Turns as the reference shows them: the time with weekday, then `User:` and
    `Assistant:` lines, each user image right after the text it came with."""
    for turn in turns:
        if turn.role == "user":
            builder.text(f"{display_time(turn.time)}\nUser: {escape(turn.text)}")
            builder.images(images[i] for i in turn.image_ids if i in images)
            builder.text("\n")
        else:
            builder.text(f"Assistant: {escape(turn.text)}\n")


def response_message(
    *,
    core: Sequence[Memory],
    personality: PersonalityState,
    recent: Sequence[Turn],
    recent_images: dict[str, ImageRef],
    query: str,
    query_images: Sequence[ImageRef],
    time: datetime,
    blobs: BlobStore,
) -> Message:
    """The first user message of a turn: profile, personality, recent turns, the input."""
    builder = PartsBuilder(blobs)
    builder.text(f"## User profile (core memory)\n{render_core(core)}\n\n")
    builder.text(f"## {render(personality)}\n\n")
    builder.text("## Recent conversations (the last 60 minutes)\n")
    if recent:
        render_turns(builder, recent, recent_images)
    else:
        builder.text("(none)\n")
    builder.text("\n## User input\n")
    builder.images(query_images)
    builder.text(str({"time": display_time(time), "query": escape(query)}))
    return builder.message("user")


def retrieval_message(
    hits: Sequence[Hit], notes: Sequence[str], retrievals_left: int, blobs: BlobStore
) -> Message:
    """Retrieved memories as the next user turn: procedural, semantic, episodic blocks."""
    builder = PartsBuilder(blobs)
    for note in notes:
        builder.text(f"Note: {escape(note)}\n")
    by_type = {kind: [h for h in hits if h.memory.type is kind] for kind in MemoryType}
    builder.text("## Retrieved procedural memory\n")
    procedural = by_type[MemoryType.PROCEDURAL] + by_type[MemoryType.CORE]
    for hit in procedural:
        builder.text(f"{escape(hit.memory.key or '')}: {escape(hit.memory.content)}\n")
    if not procedural:
        builder.text("(none found)\n")
    builder.text("\n## Retrieved semantic memory\n")
    for hit in by_type[MemoryType.SEMANTIC]:
        builder.text(f"Time: {display_time(hit.memory.event_start)}\n")
        builder.text(f"Memory: {escape(hit.memory.content)}\n")
        builder.images(hit.images)
    if not by_type[MemoryType.SEMANTIC]:
        builder.text("(none found)\n")
    builder.text("\n## Retrieved episodic memory\n")
    _episodic_block(builder, by_type[MemoryType.EPISODIC])
    left = "no more retrievals: answer now" if retrievals_left <= 0 else f"{retrievals_left} left"
    builder.text(f"\n(Retrievals: {left}.)")
    return builder.message("user")


def _episodic_block(builder: PartsBuilder, hits: Sequence[Hit]) -> None:
    """Episodic memory comes back as the raw turns it covers (a topic summary first), each
    turn once even when two hits share it."""
    if not hits:
        builder.text("(none found)\n")
        return
    shown: set[int] = set()
    for hit in hits:
        images = {ref.id: ref for ref in hit.images}
        turns = [t for t in hit.turns if t.id not in shown]
        shown.update(t.id for t in turns)
        if len(hit.turns) > 1 or not hit.turns:  # a session topic, not a single turn
            builder.text(f"Topic: {escape(hit.memory.content)}\n")
        for turn in turns:
            speaker = "User" if turn.role == "user" else "Assistant"
            builder.text(f"Time: {display_time(turn.time)}\n{speaker}: {escape(turn.text)}\n")
            builder.images(images[i] for i in turn.image_ids if i in images)
