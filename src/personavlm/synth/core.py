"""The simulator's shared vocabulary: beats, slots, question drafts, and the task table.

A *beat* is one user turn that carries ground truth ("switched to Coca-Cola lately"). Each
aspect module (memory, intent, preference, behavior, relationship, growth) plans its beats
with a wanted position in the history (`at`, 0..1) and later turns its plan into question
*drafts*. The dialogue module places the beats on the schedule's *slots* (keeping their
order) and fills the rest with small talk; a `Placement` maps each beat key to its slot, which
is how drafts name their evidence and how ground-truth times are read.

    from personavlm.synth.core import Beat, Draft, TASKS
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from personavlm.tasks import ALIGNMENT_TASK, TASK_ASPECT

if TYPE_CHECKING:
    from personavlm.synth.pictures import Picture

__all__ = [
    "ALIGNMENT_TASK",
    "TASKS",
    "Aspect",
    "Beat",
    "Draft",
    "Placement",
    "Scale",
    "Slot",
    "fill",
    "pick",
    "sample",
    "time_text",
]

# The 13 multiple-choice tasks of PAPER.md section 6 and their aspect, in the paper's order:
# the shared table (personavlm/tasks.py) without the alignment task, so the two never disagree.
TASKS: dict[str, str] = {t: a for t, a in TASK_ASPECT.items() if t != ALIGNMENT_TASK}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scale:
    """How much history there is to fill: the turn count, whether it is the 128k setting, and
    the tasks this user's history carries evidence for (all 13 unless the history is too
    short for every task's beats; generate.py decides)."""

    n_turns: int
    large: bool
    tasks: frozenset[str] = frozenset(TASKS)

    def pick(self, small: int, large: int) -> int:
        return large if self.large else small

    def covers(self, task: str) -> bool:
        """Whether this user's history carries evidence (and questions) for `task`."""
        if task not in TASKS:
            raise AssertionError(f"unknown task {task!r}")
        return task in self.tasks


@dataclass(frozen=True, slots=True)
class Slot:
    """A place in the schedule: session and turn (0-based) and the turn's time."""

    session: int
    turn: int
    time: datetime

    @property
    def id(self) -> str:
        """The harness's name for the turn (interop/replay.py): `s<session>t<turn>`."""
        return f"s{self.session}t{self.turn}"


@dataclass(frozen=True, slots=True)
class Beat:
    """A user turn that states ground truth.

    `user` is the user's words before personality wording is added, with `<img>` where the
    picture goes; `facts` are the strings that carry the fact (names, places, objects): a
    paraphrase must keep them, and tests find them in a question's evidence. When a history
    has little room, two shareable beats are said in one turn."""

    key: str
    at: float  # wanted position in the history, 0..1; only the order is guaranteed
    user: str
    assistant: str
    facts: tuple[str, ...] = ()
    picture: Picture | None = None
    alone: bool = False  # never shares its turn (a question is asked just before it)

    @property
    def shareable(self) -> bool:
        """Whether another beat may be said in the same turn, in passing."""
        return not self.alone and self.picture is None


Placement = Mapping[str, Slot]  # beat key -> the slot it landed on


@dataclass(frozen=True, slots=True)
class Draft:
    """A multiple-choice question before its letters are drawn.

    `evidence` are beat keys; `facts` are strings the evidence turns state (what the tests
    check); `time` None means asked after the last session. `visual`: the answer is only in a
    picture."""

    task: str
    query: str
    correct: str
    distractors: tuple[str, ...]
    evidence: tuple[str, ...]
    facts: tuple[str, ...] = ()
    time: datetime | None = None
    visual: bool = False

    def __post_init__(self) -> None:
        options = [self.correct, *self.distractors]
        if len(options) != 4 or len({o.casefold() for o in options}) != 4:
            raise AssertionError(f"{self.task}: needs four distinct options, got {options}")
        if self.task not in TASKS:
            raise AssertionError(f"unknown task {self.task!r}")


class Aspect(Protocol):
    """One part of a simulated person's life: its beats, its questions, its ground truth."""

    def beats(self) -> list[Beat]: ...

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]: ...

    def truth(self, placed: Placement) -> dict[str, Any]: ...


def pick(rng: random.Random, options: Sequence[T]) -> T:
    return options[rng.randrange(len(options))]


def sample(rng: random.Random, options: Sequence[T], k: int) -> list[T]:
    return rng.sample(list(options), k)


def fill(rng: random.Random, templates: Sequence[str], values: Mapping[str, object]) -> str:
    """One of `templates`, formatted; the first letter is capitalised (templates may open
    with a slot such as a name or a lower-case value)."""
    text = pick(rng, templates).format(**values)
    return text[:1].upper() + text[1:]


def time_text(value: datetime) -> str:
    """Persona-MME's time format: naive local `YYYY-MM-DD HH:MM`."""
    return value.strftime("%Y-%m-%d %H:%M")
