"""Question drafts -> the benchmark's multiple-choice records: letters drawn, times and
evidence resolved, every rule checked.

    questions = finalise(rng, drafts, placement, end=asked_at, user_id="u003")

Letters are balanced per user: the right answer sits at (a), (b), (c) and (d) equally often
(up to one), in a seeded order. Questions are ordered by task (PAPER.md's order), then as
drafted. A question's evidence must lie at or before its time; a draft that breaks this is a
bug in its aspect, so it raises AssertionError rather than writing a wrong benchmark.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from personavlm.synth.core import TASKS, Draft, Placement, time_text

__all__ = ["LETTERS", "Question", "finalise"]

LETTERS = ("(a)", "(b)", "(c)", "(d)")


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    task: str
    time: datetime
    query: str
    choices: dict[str, str]
    answer: str  # one of LETTERS
    evidence: tuple[str, ...]  # turn ids s<i>t<j>
    facts: tuple[str, ...]  # strings the evidence turns state (for checks, not exported)
    visual: bool

    @property
    def aspect(self) -> str:
        return TASKS[self.task]

    def to_record(self, data_path: str) -> dict[str, Any]:
        """The Persona-MME question record plus our `id` and `evidence`."""
        return {
            "id": self.id,
            "data_path": data_path,
            "type": self.aspect,
            "question_type": self.task,
            "time": time_text(self.time),
            "query": self.query,
            "choices": self.choices,
            "answer": self.answer,
            "evidence": list(self.evidence),
        }


def finalise(
    rng: random.Random,
    drafts: Sequence[Draft],
    placement: Placement,
    *,
    end: datetime,
    user_id: str,
) -> list[Question]:
    order = list(TASKS)
    ordered = sorted(drafts, key=lambda d: order.index(d.task))
    letters = list(LETTERS) * math.ceil(len(ordered) / len(LETTERS))
    letters = letters[: len(ordered)]
    rng.shuffle(letters)
    out = []
    for n, (draft, letter) in enumerate(zip(ordered, letters, strict=True)):
        when = draft.time or end
        slots = sorted(
            {placement[key] for key in draft.evidence}, key=lambda s: (s.session, s.turn)
        )
        evidence = tuple(slot.id for slot in slots)
        late = [placement[key].id for key in draft.evidence if placement[key].time > when]
        if not evidence or late:
            raise AssertionError(f"{draft.task}: evidence {late or 'missing'} after {when}")
        wrong = list(draft.distractors)
        rng.shuffle(wrong)
        choices = {}
        for slot_letter in LETTERS:
            choices[slot_letter] = draft.correct if slot_letter == letter else wrong.pop()
        out.append(
            Question(
                id=f"{user_id}-q{n:02d}",
                task=draft.task,
                time=when,
                query=draft.query,
                choices=choices,
                answer=letter,
                evidence=evidence,
                facts=draft.facts,
                visual=draft.visual,
            )
        )
    return out
