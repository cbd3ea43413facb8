"""The response phase: think, retrieve (a few times), answer (PAPER.md section 4).

`run_response` reads in one sitting: ask the model for a step; an answer ends the turn; a
retrieval runs one search with the model's keywords and time window (hard filter, memories
shown earlier in this answer excluded) and sends the hits back as the next user message. After
`max_retrievals` retrievals the model is told to answer; a model that still will not, or that
breaks the protocol twice in a row, ends the turn with a fallback answer and a FailureStep in
the trace — never a silent guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from personavlm.agent import reference
from personavlm.agent.calls import CallSettings, call_parsed
from personavlm.agent.context import packaged_templates, retrieval_message
from personavlm.agent.protocol import (
    STEP_SCHEMA,
    Action,
    AnswerAction,
    Protocol,
    RetrieveAction,
    parse_step,
    resolve_window,
    unescape,
)
from personavlm.agent.retrieval import with_turns
from personavlm.agent.templates import Templates
from personavlm.agent.trace import (
    AnswerStep,
    FailureStep,
    HitRecord,
    Phase,
    RetrieveStep,
    ThinkStep,
    Trace,
)
from personavlm.errors import ProtocolError
from personavlm.media.blobs import BlobStore
from personavlm.memory.records import Hit, MemoryType
from personavlm.models.base import ChatModel, Message
from personavlm.timeutil import TimeWindow, to_storage_or_none

__all__ = ["FALLBACK_ANSWER", "SearchFn", "run_response"]

FALLBACK_ANSWER = "Sorry, I could not put an answer together just now. Could you ask again?"

# search(keywords, window, exclude_ids) -> hits
SearchFn = Callable[[str, TimeWindow, frozenset[int]], list[Hit]]

_LIMIT_PROMPT = "You have used all {n} retrievals for this answer. Answer now, with what you know."


@dataclass(frozen=True, slots=True)
class _Loop:
    model: ChatModel
    protocol: Protocol
    max_retrievals: int
    settings: CallSettings
    search: SearchFn
    blobs: BlobStore
    templates: Templates


def run_response(
    model: ChatModel,
    messages: list[Message],
    search: SearchFn,
    *,
    protocol: Protocol,
    max_retrievals: int,
    settings: CallSettings,
    trace: Trace,
    blobs: BlobStore,
    templates: Templates | None = None,
) -> str:
    """Run the protocol loop from `messages` (the opening prompt); returns the answer.
    Retrieved pictures are read from `blobs`; `templates` (default: the package's) lay out
    the tags protocol's retrieval message."""
    templates = templates or packaged_templates()
    loop = _Loop(model, protocol, max_retrievals, settings, search, blobs, templates)
    seen = _Seen()
    told_to_answer = False
    while True:
        step = _next_step(loop, messages, trace)
        if step is None:
            return _fallback(trace)
        action, reply_text = step
        if action.think:
            trace.steps.append(ThinkStep(action.think))
        if isinstance(action, AnswerAction):
            answer = unescape(action.text)
            trace.steps.append(AnswerStep(answer))
            return answer
        if trace.retrievals >= max_retrievals:
            if told_to_answer:
                return _give_up(trace, "the model kept retrieving after the limit", reply_text)
            told_to_answer = True
            messages += [
                Message.text("assistant", reply_text),
                Message.text("user", _LIMIT_PROMPT.format(n=max_retrievals)),
            ]
            continue
        messages += [Message.text("assistant", reply_text), _retrieve(loop, action, seen, trace)]


def _next_step(loop: _Loop, messages: Sequence[Message], trace: Trace) -> tuple[Action, str] | None:
    schema: Mapping[str, object] | None = STEP_SCHEMA if loop.protocol is Protocol.JSON else None
    try:
        return call_parsed(
            loop.model,
            messages,
            lambda text: parse_step(text, loop.protocol),
            phase=Phase.RESPONSE,
            purpose="step",
            settings=loop.settings,
            calls=trace.calls,
            schema=schema,
        )
    except ProtocolError as exc:
        trace.steps.append(FailureStep(str(exc), exc.reply))
        trace.failed = True
        return None


def _retrieve(loop: _Loop, action: RetrieveAction, seen: _Seen, trace: Trace) -> Message:
    window = resolve_window(_bound(action.start_time), _bound(action.end_time))
    hits = seen.unseen_turns(loop.search(action.keywords, window.window, frozenset(seen.memories)))
    seen.note(hits)
    trace.steps.append(
        RetrieveStep(
            keywords=action.keywords,
            start=to_storage_or_none(window.window.start),
            end=to_storage_or_none(window.window.end),
            hits=tuple(HitRecord.of(h) for h in hits),
            notes=window.notes,
        )
    )
    if loop.protocol is Protocol.TAGS:  # the reference's blocks; the notes stay in the trace
        return reference.retrieval_message(loop.templates, hits, loop.blobs)
    return retrieval_message(hits, window.notes, loop.max_retrievals - trace.retrievals, loop.blobs)


@dataclass(slots=True)
class _Seen:
    """What this answer has shown: memories (not searched again) and episodic turns (a turn
    shown through one memory is not shown again through another, in a later round)."""

    memories: set[int] = field(default_factory=set)
    turns: set[int] = field(default_factory=set)

    def unseen_turns(self, hits: Sequence[Hit]) -> list[Hit]:
        kept = []
        for hit in hits:
            if hit.memory.type is not MemoryType.EPISODIC or not hit.turns:
                kept.append(hit)
                continue
            turns = tuple(t for t in hit.turns if t.id not in self.turns)
            if len(turns) == len(hit.turns):
                kept.append(hit)
            elif turns:
                kept.append(with_turns(hit, turns))
        return kept

    def note(self, hits: Sequence[Hit]) -> None:
        self.memories.update(hit.memory.id for hit in hits)
        self.turns.update(
            t.id for hit in hits if hit.memory.type is MemoryType.EPISODIC for t in hit.turns
        )


def _bound(value: str | None) -> str | None:
    """A time bound the model wrote as the word null (quoted or not, as the reference prompt
    asks) is no bound, not an unreadable time."""
    if value is None or value.strip().strip("\"'").strip().lower() in ("", "null", "none"):
        return None
    return value


def _give_up(trace: Trace, error: str, reply: str) -> str:
    trace.steps.append(FailureStep(error, reply))
    trace.failed = True
    return _fallback(trace)


_TAG = re.compile(r"</?(?:think|answer|retrieve)>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def _fallback(trace: Trace) -> str:
    """The turn still gets an answer after a protocol failure: the text of the model's last
    reply outside its think block and tags, when it wrote any prose, else a fixed apology.
    The trace says which (trace.failed and the FailureStep hold the raw reply)."""
    failure = next((s for s in reversed(trace.steps) if isinstance(s, FailureStep)), None)
    reply = failure.reply if failure else ""
    text = _TAG.sub("", _THINK_BLOCK.sub("", reply)).strip()
    if "<retrieve>" in reply or reply.lstrip().startswith(("{", "```")):
        text = ""  # a retrieval request or broken JSON is no answer to show
    answer = unescape(text) if text else FALLBACK_ANSWER
    trace.steps.append(AnswerStep(answer))
    return answer
