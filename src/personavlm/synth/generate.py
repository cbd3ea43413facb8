"""One simulated user from a seed: schedule, ground truth, history, questions, alignment.

    user = build_user(seed=7, user_id="u003", size="32k")
    user.turns        # the rendered history (Turn: slot, user text, reply, picture, ...)
    user.questions    # multiple-choice questions of all 13 tasks
    user.alignment    # personality alignment pairs

Everything is drawn from one `random.Random` seeded with the seed, size and user id (string
seeds hash with SHA-512 in CPython, so this is stable across runs and machines), in a fixed
order: the same arguments always give the same user.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from personavlm.errors import ValidationError
from personavlm.synth.alignment import AlignmentPair, alignment_pairs
from personavlm.synth.behavior import plan_behavior
from personavlm.synth.core import Aspect, Beat, Scale, Slot
from personavlm.synth.dialogue import Turn, render_history
from personavlm.synth.growth import plan_growth
from personavlm.synth.intent import plan_intents
from personavlm.synth.interests import plan_interests
from personavlm.synth.memory import plan_memory
from personavlm.synth.preference import plan_preferences
from personavlm.synth.questions import Question, finalise
from personavlm.synth.relationship import plan_relationships
from personavlm.synth.schedule import plan_schedule
from personavlm.synth.world import Cast, TraitPlan, draw_cast, draw_traits

__all__ = ["SIZES", "SizeSpec", "User", "build_user"]


@dataclass(frozen=True, slots=True)
class SizeSpec:
    turns: tuple[int, int]  # turns per user, inclusive
    span_days: tuple[int, int]  # days from the first session to the last
    people: int  # people around the user
    alignment_pairs: int


# PAPER.md section 6: 32k histories hold 20-100 turns, 128k ones 100-500, over up to three
# months. The 32k floor is 40 here: below that the ~30 fact turns every task needs would
# leave almost no small talk between them.
SIZES = {
    "32k": SizeSpec(turns=(40, 100), span_days=(21, 56), people=3, alignment_pairs=2),
    "128k": SizeSpec(turns=(100, 500), span_days=(42, 91), people=5, alignment_pairs=4),
}
_FIRST_DAY = datetime(2024, 1, 8)


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

    def truth(self) -> dict[str, Any]:
        """The ground truth, as written to worlds/<user_id>.json."""
        out: dict[str, Any] = {"profile": self.cast.profile()}
        for aspect in self.aspects:
            out.update(aspect.truth(self.placement))
        return out


def check_size(size: str) -> SizeSpec:
    if size not in SIZES:
        raise ValidationError(f"unknown size {size!r}; use one of: {', '.join(SIZES)}")
    return SIZES[size]


def build_user(*, seed: int, user_id: str, size: str) -> User:
    spec = check_size(size)
    rng = random.Random(f"personavlm.synth/{seed}/{size}/{user_id}")
    scale = Scale(n_turns=rng.randint(*spec.turns), large=size == "128k")
    start = _FIRST_DAY + timedelta(days=rng.randrange(300))
    slots = plan_schedule(
        rng, n_turns=scale.n_turns, span_days=rng.randint(*spec.span_days), start=start
    )
    traits = draw_traits(rng, first=slots[0].time, last=slots[-1].time, shifts=scale.pick(1, 2))
    cast = draw_cast(rng, user_id=user_id, people=spec.people)
    aspects = _plan_aspects(rng, cast, scale)
    beats: list[Beat] = [beat for aspect in aspects for beat in aspect.beats()]
    turns, placement = render_history(rng, slots, beats, traits)
    asked_at = slots[-1].time + timedelta(hours=rng.randint(2, 30))
    drafts = [draft for aspect in aspects for draft in aspect.drafts(rng, placement)]
    questions = finalise(rng, drafts, placement, end=asked_at, user_id=user_id)
    pairs = alignment_pairs(rng, traits, turns, end=asked_at, count=spec.alignment_pairs)
    return User(user_id, size, cast, traits, turns, placement, aspects, questions, pairs, asked_at)


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
