"""Optional paraphrasing of the user's turns by a chat model, with every fact kept.

    from personavlm import models
    paraphraser = Paraphraser(models.load("openai:qwen@http://127.0.0.1:8000/v1"),
                              name="openai:qwen@http://127.0.0.1:8000/v1")
    text = paraphraser.rewrite("After my Saturday hike I grab a latte at Blue Door.",
                               keep=("Blue Door", "Saturday"))
    # None when the rewrite dropped a kept string or an <img> marker: keep the original.

Templates repeat; a model's rewording makes the histories read less alike. The check is
strict on purpose: every string in `keep` (names, places, objects: the facts questions are
built on) must appear verbatim (case aside), and the `<img>` markers must stay, same count.
A rewrite that fails is not used, and the caller counts it (`kept_original` in the
manifest): never a silent change. Model errors (ModelError) propagate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from personavlm.models.base import ChatModel, Message
from personavlm.synth.dialogue import Turn

__all__ = ["ParaphraseStats", "Paraphraser", "paraphrase_turns"]

IMAGE_MARKER = "<img>"
_SYSTEM = (
    "You rewrite one chat message that a person sent to their assistant. Write it in "
    "different words, as the same person would: same meaning, same facts, same tone, about "
    "the same length. Keep every name, place and object exactly as written, and keep each "
    f"{IMAGE_MARKER} marker exactly where a picture is attached. Reply with the rewritten "
    "message only: no quotes, no explanations."
)


@dataclass(frozen=True, slots=True)
class ParaphraseStats:
    model: str
    rewritten: int
    kept_original: int

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "rewritten": self.rewritten,
            "kept_original": self.kept_original,
        }


class Paraphraser:
    """Rewrites user messages with `model`; `name` is what the manifest records."""

    def __init__(
        self, model: ChatModel, *, name: str, max_tokens: int = 300, temperature: float = 0.7
    ) -> None:
        self.model = model
        self.name = name
        self.max_tokens = max_tokens
        self.temperature = temperature

    def rewrite(self, text: str, *, keep: Sequence[str]) -> str | None:
        """The rewritten text, or None when it lost a kept string or an image marker."""
        must = ", ".join(f'"{k}"' for k in keep) or "(none)"
        prompt = f"Strings to keep verbatim: {must}\n\nMessage:\n{text}"
        reply = self.model.generate(
            [Message.text("system", _SYSTEM), Message.text("user", prompt)],
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        candidate = reply.text.strip()
        if not candidate or candidate.count(IMAGE_MARKER) != text.count(IMAGE_MARKER):
            return None
        lowered = candidate.casefold()
        if any(k.casefold() not in lowered for k in keep):
            return None
        return candidate


def paraphrase_turns(
    paraphraser: Paraphraser, turns: Sequence[Turn]
) -> tuple[list[Turn], int, int]:
    """The turns with rewritten user texts; and how many were rewritten and kept."""
    out, rewritten, kept = [], 0, 0
    for turn in turns:
        text = paraphraser.rewrite(turn.user, keep=turn.facts)
        if text is None:
            kept += 1
            out.append(turn)
        else:
            rewritten += 1
            out.append(replace(turn, user=text))
    return out, rewritten, kept
