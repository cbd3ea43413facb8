"""Readers: the ways a benchmark item gets answered (bench/harness.py asks them).

- `AgentReader` (`--mode rag`): the agent's response phase as of the item's time
  (`Assistant.ask`): context, think/retrieve/answer, nothing stored.
- `FullContextReader` (`--mode full-context`, the paper's long-context baseline): the raw
  history up to the item's time, newest first until the context budget is spent, then the
  question; one model call, no memory.
- `RandomReader`: a seeded uniform pick. Its expected accuracy is exactly 1/len(choices) per
  item; the run reports what the seed drew.
- `RetrievalOnlyReader`: a baseline that needs no language model. It searches the user's
  memory with the question (as of its time) and picks the option whose embedding is closest
  to any retrieved memory. It cannot judge personality fit, so alignment items get a seeded
  coin flip, marked `"guess": true` in their records; read its accuracy without alignment.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from personavlm.agent import Assistant
from personavlm.agent.context import PartsBuilder, render_turns
from personavlm.bench.harness import Answer
from personavlm.bench.mcq import Item, prompt_text
from personavlm.errors import MissingDependencyError, ValidationError
from personavlm.memory.records import MemoryType, Turn
from personavlm.memory.store import MemoryStore
from personavlm.models.base import ChatModel, ImagePart, Message, TextPart
from personavlm.timeutil import display_time

__all__ = [
    "APPROX_CHARS_PER_TOKEN",
    "QWEN_IMAGE_TOKENS",
    "AgentReader",
    "ApproxCounter",
    "FullContextReader",
    "RandomReader",
    "RetrievalOnlyReader",
    "TokenCounter",
    "TokenizerCounter",
    "load_counter",
]

# English prose runs at about four characters per token in BPE vocabularies of 100k-150k
# entries (Qwen2.5, GPT-4o); used only when no tokenizer file is given, and said in the report.
APPROX_CHARS_PER_TOKEN = 4
# Qwen2.5-VL at max_pixels 230400 (PAPER.md section 5): 230400 / (28 * 28) = 294 patches,
# plus the vision start/end markers.
QWEN_IMAGE_TOKENS = 296
# Chat templates wrap each message in role markers: a few tokens each.
_MESSAGE_OVERHEAD = 4
_MAX_HISTORY_TURNS = 1_000_000

FULL_CONTEXT_SYSTEM = (
    "You answer a user's question from your conversation history with them, which follows "
    "oldest first (the oldest part may have been cut to fit). You are their long-term "
    "personal assistant."
)


class AgentReader:
    name = "agent"

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant

    def answer(self, item: Item) -> Answer:
        text, trace = self.assistant.ask(
            item.user, prompt_text(item), images=item.images, time=item.time
        )
        return Answer(
            text=text,
            model_calls=len(trace.calls),
            prompt_tokens=sum(c.prompt_tokens for c in trace.calls),
            completion_tokens=sum(c.completion_tokens for c in trace.calls),
            retrievals=trace.retrievals,
            failed=trace.failed,
            extra={"trace": trace.to_dict()},
        )


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class ApproxCounter:
    name = f"approx ({APPROX_CHARS_PER_TOKEN} characters per token)"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / APPROX_CHARS_PER_TOKEN)


class TokenizerCounter:
    """Exact counts with the model's own tokenizer (a local tokenizer.json, or a directory
    holding one, as Hugging Face checkpoints do)."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError(
                "counting tokens with --tokenizer needs the tokenizers package: "
                "pip install 'personavlm[local]'"
            ) from exc
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ValidationError(
                f"--tokenizer {path}: no tokenizer.json there; give the file or the model "
                "directory that holds it"
            )
        self._tokenizer = Tokenizer.from_file(str(file))
        self.name = f"tokenizer {file}"

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def load_counter(path: Path | None) -> TokenCounter:
    return ApproxCounter() if path is None else TokenizerCounter(path)


@dataclass(frozen=True, slots=True)
class _Piece:
    """One exchange of the history as message parts, with its token cost."""

    parts: tuple[TextPart | ImagePart, ...]
    tokens: int


class FullContextReader:
    """The raw history, cut from the oldest end to fit `budget` tokens, then the question."""

    name = "full-context"

    def __init__(
        self,
        store: MemoryStore,
        model: ChatModel,
        *,
        budget: int,
        counter: TokenCounter,
        image_tokens: int = QWEN_IMAGE_TOKENS,
        max_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> None:
        if budget < 1024:
            raise ValidationError(f"the context budget must be at least 1024 tokens, got {budget}")
        self.store = store
        self.model = model
        self.budget = budget
        self.counter = counter
        self.image_tokens = image_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature

    def answer(self, item: Item) -> Answer:
        question = f"{display_time(item.time)}\n{prompt_text(item)}"
        fixed = (
            self.counter.count(FULL_CONTEXT_SYSTEM)
            + self.counter.count(question)
            + self.image_tokens * len(item.images)
            + 3 * _MESSAGE_OVERHEAD
            + self.max_tokens  # room for the reply
        )
        turns = self._history(item)
        kept, used = self._fit(turns, self.budget - fixed)
        messages = self._messages(kept, question, item)
        reply = self.model.generate(
            messages, max_tokens=self.max_tokens, temperature=self.temperature
        )
        return Answer(
            text=reply.text,
            model_calls=1,
            prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens,
            extra={
                "history_turns": len(turns),
                "history_turns_kept": len(kept),
                "context_tokens_estimated": fixed - self.max_tokens + used,
            },
        )

    def _history(self, item: Item) -> list[Turn]:
        if not self.store.has_user(item.user):
            return []
        return list(self.store.turns(item.user, end=item.time, limit=_MAX_HISTORY_TURNS))

    def _fit(self, turns: Sequence[Turn], room: int) -> tuple[list[_Piece], int]:
        """The newest turns that fit in `room` tokens, oldest first."""
        kept: list[_Piece] = []
        used = 0
        for turn in reversed(turns):
            piece = self._piece(turn)
            if used + piece.tokens > room:
                break
            kept.append(piece)
            used += piece.tokens
        kept.reverse()
        return kept, used

    def _piece(self, turn: Turn) -> _Piece:
        builder = PartsBuilder(self.store.blobs)
        images = {ref.id: ref for ref in self.store.images(list(turn.image_ids))}
        render_turns(builder, [turn], images)
        parts = builder.message("user").parts
        tokens = sum(
            self.counter.count(p.text) if isinstance(p, TextPart) else self.image_tokens
            for p in parts
        )
        return _Piece(parts, tokens)

    def _messages(self, kept: Sequence[_Piece], question: str, item: Item) -> list[Message]:
        builder = PartsBuilder(self.store.blobs)
        builder.text("## Conversation history\n")
        if not kept:
            builder.text("(none)\n")
        for piece in kept:
            builder.extend(Message("user", piece.parts))
        builder.text("\n## Question\n")
        builder.images(self.store.store_image(path) for path in item.images)
        builder.text(question)
        return [Message.text("system", FULL_CONTEXT_SYSTEM), builder.message("user")]


class RandomReader:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def answer(self, item: Item) -> Answer:
        letter = random.Random(f"{self.seed}:{item.id}").choice(sorted(item.choices))
        return Answer(text=f"({letter})")


class RetrievalOnlyReader:
    """Baseline without a language model: the option closest to the retrieved memories."""

    name = "retrieval-only"

    def __init__(self, store: MemoryStore, *, k: Mapping[str, int] | None = None, seed: int = 0):
        self.store = store
        self.k = dict(k or {"episodic": 6, "semantic": 4, "procedural": 2})
        self.seed = seed

    def answer(self, item: Item) -> Answer:
        if item.kind == "alignment":
            return self._guess(item, reason="alignment")
        texts = self._memories(item)
        if not texts:
            return self._guess(item, reason="no memory retrieved")
        letters = list(item.choices)
        options = self.store.embedder.encode([item.choices[letter] for letter in letters])
        memories = self.store.embedder.encode(texts)
        closeness = (options @ memories.T).max(axis=1)  # rows are L2-normalised
        best = letters[int(np.argmax(closeness))]
        return Answer(text=f"({best})", extra={"memories": len(texts)})

    def _memories(self, item: Item) -> list[str]:
        if not self.store.has_user(item.user):
            return []
        hits = self.store.search(
            item.user,
            item.query,
            types=[MemoryType(t) for t in self.k],
            k={MemoryType(t): n for t, n in self.k.items()},
            end=item.time,
        )
        texts = []
        for hit in hits:
            texts.append(hit.memory.content)
            texts += [t.caption for t in hit.turns if t.caption]
        return texts

    def _guess(self, item: Item, *, reason: str) -> Answer:
        letter = random.Random(f"{self.seed}:{item.id}").choice(sorted(item.choices))
        return Answer(text=f"({letter})", extra={"guess": True, "guess_reason": reason})
