"""Interests that evolve: a hobby in the first weeks, another later (Interest Evolution
Analysis).

    plan = plan_interests(rng, scale, avoid={"climbing"}, elsewhere=("gardening",))

The user takes up hobby 1 early, switches to hobby 2 around the middle ("haven't touched
pottery in weeks, climbing has taken over") and, in the 128k setting, to hobby 3 late. The
question asks how their free time changed; wrong options reverse the order, keep the first
hobby throughout, or swap in a hobby someone else in the history has (`elsewhere`). A short
history that does not cover the task (`Scale.covers`) has no hobbies of the user's own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample, time_text

__all__ = ["HOBBIES", "InterestPlan", "plan_interests"]

HOBBIES = (
    "pottery",
    "climbing",
    "chess",
    "watercolour painting",
    "salsa dancing",
    "sourdough baking",
    "birdwatching",
    "knitting",
    "guitar",
    "woodworking",
    "archery",
    "calligraphy",
)
_START = (
    "Signed up for a {new} class on Tuesdays, first one tonight.",
    "Decided to give {new} a proper go this month.",
    "Spent my whole Sunday on {new}, I think I've found my thing.",
)
_ONGOING = (
    "Another evening of {new}, loving it.",
    "My {new} is slowly getting better, small wins.",
    "Can't stop thinking about {new}, honestly.",
)
_SWITCH = (
    "I've drifted away from {old} lately; all my spare time goes into {new} now.",
    "Haven't touched {old} in weeks, {new} has taken over.",
    "Tried {new} with a mate and I'm hooked. {old} can wait.",
)
_REPLIES = (
    "That's great, it's lovely to have something you enjoy!",
    "Sounds like a fun way to spend your evenings.",
    "Ooh, how's it going so far?",
)
_QUERIES = (
    "How have the things I do in my free time changed since we started talking?",
    "Looking back, how would you describe the way my pastimes have shifted?",
)


@dataclass(frozen=True, slots=True)
class InterestPlan:
    hobbies: tuple[str, ...]  # in the order taken up
    elsewhere: str  # a hobby someone else has in the history (a distractor)
    beat_texts: dict[str, tuple[float, str, str, tuple[str, ...]]]  # key -> at, user, reply, facts

    def beats(self) -> list[Beat]:
        return [Beat(k, at, u, r, f) for k, (at, u, r, f) in self.beat_texts.items()]

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        h = self.hobbies
        if not h:
            return []  # a short history that does not cover the task
        if len(h) == 2:
            correct = f"{h[0]} first, then {h[1]}"
            wrong = (
                f"{h[1]} first, then {h[0]}",
                f"{h[0]} the whole time",
                f"{h[0]} first, then {self.elsewhere}",
            )
        else:
            correct = f"{h[0]} first, then {h[1]}, now {h[2]}"
            wrong = (
                f"{h[0]} first, then {h[2]}, now {h[1]}",
                f"{h[1]} first, then {h[0]}, now {h[2]}",
                f"{h[0]} the whole time",
            )
        evidence = tuple(self.beat_texts)
        query = fill(rng, _QUERIES, {})
        return [Draft("Interest Evolution Analysis", query, correct, wrong, evidence, h)]

    def truth(self, placed: Placement) -> dict[str, Any]:
        stages = []
        for i, hobby in enumerate(self.hobbies):
            first = placed[f"interest:{i}:0"]
            stages.append({"hobby": hobby, "since": time_text(first.time), "turn": first.id})
        return {"interests": stages}


def plan_interests(
    rng: random.Random, scale: Scale, *, avoid: set[str], elsewhere: tuple[str, ...]
) -> InterestPlan:
    if not scale.covers("Interest Evolution Analysis"):
        return InterestPlan((), "", {})
    count = scale.pick(2, 3)
    hobbies = sample(rng, [h for h in HOBBIES if h not in avoid], count)
    # Where each stage starts, as a share of the history.
    starts = [(0.02, 0.25), (0.45, 0.65)] if count == 2 else [(0.02, 0.2), (0.35, 0.5), (0.7, 0.85)]
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]] = {}
    for i, (hobby, (low, high)) in enumerate(zip(hobbies, starts, strict=True)):
        at = rng.uniform(low, high)
        values = {"new": hobby, "old": hobbies[i - 1] if i else ""}
        first = fill(rng, _SWITCH if i else _START, values)
        facts = (hobby, hobbies[i - 1]) if i else (hobby,)
        texts[f"interest:{i}:0"] = (at, first, pick(rng, _REPLIES), facts)
        if scale.large:  # a second mention of the stage, a little later
            later = fill(rng, _ONGOING, values)
            texts[f"interest:{i}:1"] = (at + 0.08, later, pick(rng, _REPLIES), (hobby,))
    spare = (
        pick(rng, elsewhere) if elsewhere else pick(rng, [h for h in HOBBIES if h not in hobbies])
    )
    return InterestPlan(tuple(hobbies), spare, texts)
