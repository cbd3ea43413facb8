"""Multiple-choice items: what the harnesses ask, how they word it, how answers are read.

One `Item` is one scored question: a Persona-MME multiple-choice question, one half of a
Persona-MME personality-alignment pair (PAPER.md section 6: each pair is two yes/no items), or a
PersonaMem question. `prompt_text(item)` lays it out like the reference harness (PAPER.md section
9), in our words: the query, `Options:`, one `(a). text` line per choice, an instruction to
give the letter; an alignment item quotes the reply under `Response to Evaluate:`.

Two answer readers, both reported:
- `reference_letter`: the reference harness's rule, the character just before the first ")" of
  the answer ("(b) Coca-Cola" -> "b"; "I think b) ..." -> "b"; "Answer: b" -> nothing).
- `robust_letter`: reads the usual ways a model states its choice ("(b)", "b)", "b.",
  "Answer: b", "**B**", the option's full text) and returns nothing when the reply names two
  different options or none: an unreadable answer is counted wrong, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from personavlm.errors import ValidationError
from personavlm.tasks import TASK_ASPECT
from personavlm.timeutil import to_storage

__all__ = [
    "Item",
    "aspect_of",
    "choice_letter",
    "prompt_text",
    "reference_letter",
    "robust_letter",
]

# The reference harness's layout (PAPER.md section 9), our sentences: a question is its query,
# `Options:`, one `(x). text` line per choice and the instruction, line after line; an
# alignment item is the query, a line saying what to judge, the reply under `Response to
# Evaluate:` in quotes, the yes/no question under `Question:`, and `(a)` / `(b)` options.
ALIGNMENT_INTRO = (
    "Judge the reply below by the user's personality, as the conversation history shows it."
)
ALIGNMENT_QUESTION = "Does this reply suit and adapt to the user's personality?"
ALIGNMENT_OPTIONS = {"a": "Yes, it suits the user.", "b": "No, it does not suit the user."}
ALIGNMENT_INSTRUCTION = "Give only the letter of your final choice: (a) or (b)."

ItemKind = Literal["choice", "alignment"]


@dataclass(frozen=True, slots=True)
class Item:
    """One scored question, asked of `user`'s memory at `time`."""

    id: str
    user: str
    time: datetime
    query: str
    choices: Mapping[str, str]  # letter ("a".."z") -> option text, in display order
    answer: str  # the correct letter
    task: str
    aspect: str
    kind: ItemKind = "choice"
    reply: str | None = None  # alignment items: the reply whose fit is judged
    evidence: tuple[str, ...] = ()
    images: tuple[Path, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValidationError(f"question {self.id!r}: needs at least two choices")
        if self.answer not in self.choices:
            raise ValidationError(
                f"question {self.id!r}: answer {self.answer!r} is not one of its choices "
                f"{sorted(self.choices)}"
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user": self.user,
            "time": to_storage(self.time),
            "task": self.task,
            "aspect": self.aspect,
            "kind": self.kind,
            "answer": self.answer,
        }


def aspect_of(task: str, fallback: str | None = None) -> str:
    """The aspect of a task name (PAPER.md section 6); unknown tasks keep `fallback`."""
    return TASK_ASPECT.get(task) or fallback or "Other"


_LABEL = re.compile(r"^\s*\(?\s*([A-Za-z])\s*\)?\s*[.:]?\s*$")


def choice_letter(label: str, *, where: str) -> str:
    """ "(a)", "a", "A)", "(a)." -> "a"."""
    match = _LABEL.match(label)
    if match is None:
        raise ValidationError(
            f"{where}: {label!r} is not an option label; write options as '(a)', '(b)', ..."
        )
    return match.group(1).lower()


def prompt_text(item: Item) -> str:
    """The question as the reference harness lays it out (PAPER.md section 9)."""
    if item.kind == "alignment":
        options = [
            f"({letter}) {ALIGNMENT_OPTIONS.get(letter, text)}"
            for letter, text in item.choices.items()
        ]
        return "\n".join(
            [
                item.query,
                ALIGNMENT_INTRO,
                "",
                "Response to Evaluate:",
                f'"{item.reply}"',
                "",
                "Question:",
                ALIGNMENT_QUESTION,
                "",
                "Options:",
                *options,
                "",
                ALIGNMENT_INSTRUCTION,
            ]
        )
    lines = [item.query, "Options:"]
    lines += [f"({letter}). {text}" for letter, text in item.choices.items()]
    lines.append(f"Give your final answer: {_letters(item.choices)}.")
    return "\n".join(lines)


def _letters(choices: Mapping[str, str]) -> str:
    """ "(a), (b), (c) or (d)"."""
    labels = [f"({letter})" for letter in choices]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


def reference_letter(answer: str, letters: Mapping[str, str] | None = None) -> str | None:
    """The reference harness's rule: the character just before the first ')'."""
    index = answer.find(")")
    if index < 1:
        return None
    letter = answer[index - 1].lower()
    if letters is not None and letter not in letters:
        return None
    return letter


def robust_letter(answer: str, choices: Mapping[str, str]) -> str | None:
    """The letter the answer commits to, or None when it names none or several."""
    letters = "".join(sorted(choices))
    text = _strip_markup(answer)
    for finder in (_explicit_letters, _leading_letter, _option_texts):
        found = finder(text, letters, choices)
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None  # two different options named the same way: do not guess
    return None


def _strip_markup(answer: str) -> str:
    # Reasoning models may think before answering; the choice is in what follows.
    text = re.sub(r"<think>.*?</think>", " ", answer, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"[*_`]", "", text).strip()


def _explicit_letters(text: str, letters: str, _choices: Mapping[str, str]) -> set[str]:
    """ "(b)" anywhere, or "answer: b", "the answer is b." with the letter standing alone
    ("the answer is a bit unclear" names no option)."""
    pattern = (
        rf"\(([{letters}])\)"
        rf"|(?:answer|option|choice)\s*(?:is|:)?\s*([{letters}])(?=[).:,;]|\s*$)"
    )
    found = re.findall(pattern, text, flags=re.IGNORECASE | re.MULTILINE)
    return {(a or b).lower() for a, b in found}


def _leading_letter(text: str, letters: str, _choices: Mapping[str, str]) -> set[str]:
    """A reply that starts with "b)", "b.", "B:" or is just "b"."""
    match = re.match(rf"^([{letters}])(?:[).:]|\s*$)", text, flags=re.IGNORECASE)
    return {match.group(1).lower()} if match else set()


def _option_texts(text: str, _letters: str, choices: Mapping[str, str]) -> set[str]:
    """Options whose whole text appears in the reply (case-insensitive)."""
    lowered = " ".join(text.lower().split())
    found = {
        letter: " ".join(option.lower().split())
        for letter, option in choices.items()
        if len(option.strip()) > 2 and " ".join(option.lower().split()) in lowered
    }
    # "Coca-Cola Zero" also contains "Coca-Cola": the longer option is the one named.
    return {
        letter
        for letter, option in found.items()
        if not any(option != other and option in other for other in found.values())
    }
