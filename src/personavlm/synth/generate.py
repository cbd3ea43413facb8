"""One simulated user from a seed: schedule, ground truth, history, questions, alignment.

    user = build_user(seed=7, user_id="u003", size="32k")
    user.turns        # the rendered history (Turn: slot, user text, reply, picture, ...)
    user.questions    # multiple-choice questions of the tasks the user covers
    user.tasks        # those tasks: all 13, or fewer for a short history
    user.alignment    # personality alignment pairs

Everything is drawn from one `random.Random` seeded with the seed, size and user id (string
seeds hash with SHA-512 in CPython, so this is stable across runs and machines), in a fixed
order: the same arguments always give the same user.

Short users. Every task's evidence takes turns (about 30 fact turns plus pictures for all 13
in the 32k setting), and at least a quarter of the turns stay small talk. A history too short
for all of it (in practice some users under about 33 turns) covers fewer tasks: the user
drops the fewest tasks, in the order `drop_order(seed, size, index)` gives, that make the
beats fit, replanning from the same draws each time. That order is one seeded shuffle of
the 12 droppable tasks per run (Visual Detail Recall is never dropped: the pictures are drawn
anyway), rotated by a third of its length per user index, and a user drops at most two
thirds of it; so any three consecutive users of a run (u000-u002 included) cover all 13
tasks between them. Personality alignment pairs need no beats and every user has them.
Histories under 40 turns also span fewer days (`_FULL_SPAN_TURNS`), at least 15.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from personavlm.errors import ValidationError
from personavlm.synth.alignment import AlignmentPair, alignment_pairs
from personavlm.synth.behavior import plan_behavior
from personavlm.synth.core import TASKS, Aspect, Beat, Scale, Slot
from personavlm.synth.dialogue import Turn, fits, render_history
from personavlm.synth.growth import plan_growth
from personavlm.synth.intent import plan_intents
from personavlm.synth.interests import plan_interests
from personavlm.synth.memory import plan_memory
from personavlm.synth.preference import plan_preferences
from personavlm.synth.questions import Question, finalise
from personavlm.synth.relationship import plan_relationships
from personavlm.synth.schedule import plan_schedule
from personavlm.synth.world import Cast, TraitPlan, draw_cast, draw_traits

__all__ = ["DROPPABLE", "MAX_DROPPED", "SIZES", "SizeSpec", "User", "build_user", "drop_order"]


@dataclass(frozen=True, slots=True)
class SizeSpec:
    turns: tuple[int, int]  # turns per user, inclusive
    span_days: tuple[int, int]  # days from the first session to the last (shorter: below)
    people: int  # people around the user
    alignment_pairs: int


# PAPER.md section 6: 32k histories hold 20-100 turns, 128k ones 100-500, over up to three
# months. Histories too short for every task's evidence cover fewer tasks (module docstring).
SIZES = {
    "32k": SizeSpec(turns=(20, 100), span_days=(21, 56), people=3, alignment_pairs=2),
    "128k": SizeSpec(turns=(100, 500), span_days=(42, 91), people=5, alignment_pairs=4),
}
_FIRST_DAY = datetime(2024, 1, 8)
# Below this many turns the time span shrinks in proportion (20 turns: half the span), but
# never under 15 days: a handful of sessions spread over two months reads oddly, and every
# history still spans at least two weeks.
_FULL_SPAN_TURNS = 40
_MIN_SPAN_DAYS = 15

# Tasks a short history may leave out, and how many at most: with the order rotated by a
# third per user, any three consecutive users together cover every task.
DROPPABLE = tuple(task for task in TASKS if task != "Visual Detail Recall")
MAX_DROPPED = len(DROPPABLE) - len(DROPPABLE) // 3
_ROTATION = len(DROPPABLE) // 3


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    size: str
    cast: Cast
    traits: TraitPlan
    turns: list[Turn]
    placement: dict[str, Slot]
    aspects: list[Aspect]
    questions: list[Question]
    alignment: list[AlignmentPair]
    asked_at: datetime  # when the end-of-history questions are asked
    tasks: tuple[str, ...]  # the tasks the history covers, in TASKS order

    def truth(self) -> dict[str, Any]:
        """The ground truth, as written to worlds/<user_id>.json."""
        out: dict[str, Any] = {"profile": self.cast.profile(), "tasks": list(self.tasks)}
        for aspect in self.aspects:
            out.update(aspect.truth(self.placement))
        return out


def check_size(size: str) -> SizeSpec:
    if size not in SIZES:
        raise ValidationError(f"unknown size {size!r}; use one of: {', '.join(SIZES)}")
    return SIZES[size]


def drop_order(seed: int, size: str, index: int) -> tuple[str, ...]:
    """The order in which user number `index` of a run drops tasks when its history is short:
    the run's seeded shuffle of DROPPABLE, rotated by a third of its length per index."""
    order = list(DROPPABLE)
    random.Random(f"personavlm.synth/{seed}/{size}/drop-order").shuffle(order)
    start = index * _ROTATION % len(order)
    return tuple(order[start:] + order[:start])


def _index(user_id: str) -> int:
    """u007 -> 7: the user's number in its run (0 for an id without digits)."""
    digits = re.search(r"(\d+)$", user_id)
    return int(digits.group(1)) if digits else 0


def build_user(*, seed: int, user_id: str, size: str, index: int | None = None) -> User:
    """One user; `index` (default: the trailing number of `user_id`) picks which tasks a short
    history drops (`drop_order`)."""
    spec = check_size(size)
    rng = random.Random(f"personavlm.synth/{seed}/{size}/{user_id}")
    n_turns = rng.randint(*spec.turns)
    start = _FIRST_DAY + timedelta(days=rng.randrange(300))
    span_days = rng.randint(*spec.span_days)
    if n_turns < _FULL_SPAN_TURNS:
        span_days = max(_MIN_SPAN_DAYS, round(span_days * n_turns / _FULL_SPAN_TURNS))
    slots = plan_schedule(rng, n_turns=n_turns, span_days=span_days, start=start)
    large = size == "128k"
    traits = draw_traits(rng, first=slots[0].time, last=slots[-1].time, shifts=2 if large else 1)
    cast = draw_cast(rng, user_id=user_id, people=spec.people)
    order = drop_order(seed, size, _index(user_id) if index is None else index)
    planned = rng.getstate()
    for dropped in range(MAX_DROPPED + 1):
        rng.setstate(planned)  # each try plans from the same draws: only the tasks differ
        tasks = tuple(task for task in TASKS if task not in order[:dropped])
        scale = Scale(n_turns=n_turns, large=large, tasks=frozenset(tasks))
        aspects = _plan_aspects(rng, cast, scale)
        beats: list[Beat] = [beat for aspect in aspects for beat in aspect.beats()]
        if fits(beats, n_turns):
            break
    else:
        raise AssertionError(f"{user_id}: no plan fits {n_turns} turns")
    turns, placement = render_history(rng, slots, beats, traits)
    asked_at = slots[-1].time + timedelta(hours=rng.randint(2, 30))
    drafts = [draft for aspect in aspects for draft in aspect.drafts(rng, placement)]
    questions = finalise(rng, drafts, placement, end=asked_at, user_id=user_id)
    pairs = alignment_pairs(rng, traits, turns, end=asked_at, count=spec.alignment_pairs)
    return User(
        user_id, size, cast, traits, turns, placement, aspects, questions, pairs, asked_at, tasks
    )


def _plan_aspects(rng: random.Random, cast: Cast, scale: Scale) -> list[Aspect]:
    """Growth first: the user's constraints limit their hobbies (no climbing with a fear of
    heights) and their dishes (a vegetarian is recommended no meat)."""
    growth = plan_growth(rng, cast, scale)
    intents = plan_intents(rng, cast, scale)
    avoid = {"climbing"} if "heights" in growth.constraints else set()
    diet = tuple(k for k, name, _ in growth.constraint_beats if name == "vegetarian")
    return [
        plan_memory(rng, cast, scale),
        intents,
        plan_preferences(rng, cast, scale, vegetarian=bool(diet), diet_beats=diet),
        plan_interests(rng, scale, avoid=avoid, elsewhere=tuple(intents.hobbies.values())),
        plan_behavior(rng, cast, scale),
        plan_relationships(rng, cast, scale),
        growth,
    ]
