"""Intent aspect: what the user wants when they say it (Explicit Intent Inference) and when
they only hint at it (Implicit Intent Recognition).

    plan = plan_intents(rng, cast, scale)

Explicit: people in the user's life have hobbies, said in passing ("Sam has got really into
gardening"). The question states the intent ("I want to get Sam a present") and the right
gift follows from that person's hobby; the wrong gifts fit other people's hobbies, which are
in the history too.

Implicit: the user complains about a problem twice, late in the history, without asking for
anything ("my laptop took ten minutes to boot"). The question asks, without naming it, what
they should sort out; one wrong option is a problem the user already solved (said in the
history), the others are problems they never had. Problems asked about in the same history
never appear as each other's wrong options (both would be right).

A short history may cover only one of the two tasks (`Scale.covers`); the other's beats are
then not planned at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample
from personavlm.synth.world import Cast

__all__ = ["GIFTS", "PROBLEMS", "IntentPlan", "plan_intents"]

GIFTS = {
    "gardening": "a pair of good pruning shears",
    "cooking": "a cast-iron frying pan",
    "reading": "a voucher for the local bookshop",
    "cycling": "a set of bright bike lights",
    "yoga": "a cork yoga block set",
    "board games": "a new strategy board game",
    "coffee": "a pour-over coffee kit",
    "running": "a running belt for keys and phone",
}
_HOBBY_TEXTS = (
    "{name} has got really into {hobby} lately.",
    "{name} spent the whole weekend on {hobby} again, totally hooked.",
    "Apparently {name}'s new obsession is {hobby}.",
)
_GIFT_QUERIES = (
    "I want to get {name} a little present. What would go down well?",
    "{name}'s birthday is coming up and I'd like to surprise them. Any gift ideas?",
)


@dataclass(frozen=True, slots=True)
class _Problem:
    fact: str  # the word both hints contain
    hints: tuple[str, str]
    solved: str  # what the user says once it is sorted
    intent: str  # the need, as an answer option


PROBLEMS = {
    "laptop": _Problem(
        "laptop",
        (
            "My laptop took ten minutes to boot this morning.",
            "The battery on this ancient laptop dies in under an hour now.",
        ),
        "Finally got a new laptop, it boots in seconds. Bliss.",
        "replacing my old laptop",
    ),
    "shoes": _Problem(
        "trainers",
        (
            "There's a hole in the sole of my trainers, my socks got soaked.",
            "Blisters again after my run, these trainers are done for.",
        ),
        "New trainers arrived, no more blisters.",
        "buying new running shoes",
    ),
    "sleep": _Problem(
        "dog",
        (
            "The neighbour's dog barked all night, I got maybe four hours.",
            "Another night wide awake thanks to that barking dog.",
        ),
        "Got earplugs for the barking dog next door and slept like a baby.",
        "getting earplugs or a white-noise machine for the night",
    ),
    "plants": _Problem(
        "flat",
        (
            "All my basil died again, the flat gets no sun.",
            "Even the cactus looks sad, there's just no light in this flat.",
        ),
        "Bought a grow light for the flat, the basil is thriving.",
        "getting a grow light for my plants",
    ),
    "commute": _Problem(
        "bus",
        (
            "The bus was forty minutes late again this morning.",
            "Missed the start of a meeting because of the bus, again.",
        ),
        "Started cycling to work instead of taking the bus, so much better.",
        "finding a way to get to work that isn't the bus",
    ),
    "chair": _Problem(
        "chair",
        (
            "My back is killing me after a day in this awful chair.",
            "This desk chair wobbles and squeaks every time I move.",
        ),
        "The new desk chair arrived and my back already thanks me.",
        "getting a better desk chair",
    ),
    "phone": _Problem(
        "phone",
        (
            "My phone screen cracked when I dropped it on the stairs.",
            "Can barely read texts through the cracks on my phone now.",
        ),
        "Phone screen's fixed, good as new.",
        "getting my phone screen repaired",
    ),
}
_PROBLEM_QUERIES = (
    "I've got a free Saturday and a bit of spare cash. What should I sort out first?",
    "Any idea what I should take care of this weekend?",
    "If you had to guess, what's been quietly bugging me lately?",
)
_HOBBY_REPLIES = (
    "That's lovely, it's nice when people find their thing.",
    "Ha, sounds like they're having fun with it!",
    "Good for them!",
)
_PROBLEM_REPLIES = (
    "Oh no, that sounds frustrating.",
    "Ugh, that's annoying. Hope it gets better soon.",
    "That doesn't sound fun at all.",
)
_SOLVED_REPLY = "Glad to hear it!"


@dataclass(frozen=True, slots=True)
class IntentPlan:
    hobbies: dict[str, str]  # person -> hobby, each said in the history
    gift_for: tuple[str, ...]  # people asked about
    problems: tuple[str, ...]  # open problems, each asked about
    solved: str | None  # a problem the user solved (a distractor in the history)
    beat_texts: dict[str, tuple[float, str, str, tuple[str, ...]]]

    def beats(self) -> list[Beat]:
        return [Beat(k, at, u, r, f) for k, (at, u, r, f) in self.beat_texts.items()]

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        out = [self._gift(rng, name) for name in self.gift_for]
        for problem in self.problems:
            assert self.solved is not None  # planned together with the open problems
            spec = PROBLEMS[problem]
            unused = [p for p in PROBLEMS if p not in self.problems and p != self.solved]
            wrong = [PROBLEMS[self.solved].intent] + [
                PROBLEMS[p].intent for p in sample(rng, unused, 2)
            ]
            evidence = (f"intent:problem:{problem}:0", f"intent:problem:{problem}:1")
            query = fill(rng, _PROBLEM_QUERIES, {})
            out.append(
                Draft(
                    "Implicit Intent Recognition",
                    query,
                    spec.intent,
                    tuple(wrong),
                    evidence,
                    (spec.fact,),
                )
            )
        return out

    def _gift(self, rng: random.Random, name: str) -> Draft:
        hobby = self.hobbies[name]
        others = [h for n, h in self.hobbies.items() if n != name and h != hobby]
        spare = [h for h in GIFTS if h not in self.hobbies.values()]
        wrong = [GIFTS[h] for h in (list(dict.fromkeys(others))[:2] + sample(rng, spare, 3))[:3]]
        query = fill(rng, _GIFT_QUERIES, {"name": name})
        return Draft(
            "Explicit Intent Inference",
            query,
            GIFTS[hobby],
            tuple(wrong),
            (f"intent:hobby:{name}",),
            (hobby,),
        )

    def truth(self, placed: Placement) -> dict[str, Any]:
        return {
            "people_hobbies": {
                name: {"hobby": hobby, "turn": placed[f"intent:hobby:{name}"].id}
                for name, hobby in self.hobbies.items()
            },
            "open_problems": {
                p: [placed[f"intent:problem:{p}:{i}"].id for i in (0, 1)] for p in self.problems
            },
            "solved_problem": {}
            if self.solved is None
            else {self.solved: placed["intent:solved"].id},
        }


def plan_intents(rng: random.Random, cast: Cast, scale: Scale) -> IntentPlan:
    """Each task's beats only where the user's history covers that task."""
    people = [p.name for p in cast.people] if scale.covers("Explicit Intent Inference") else []
    hobbies = dict(zip(people, sample(rng, tuple(GIFTS), len(people)), strict=True))
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]] = {}
    for name, hobby in hobbies.items():
        user = fill(rng, _HOBBY_TEXTS, {"name": name, "hobby": hobby})
        texts[f"intent:hobby:{name}"] = (
            rng.uniform(0.0, 0.9),
            user,
            pick(rng, _HOBBY_REPLIES),
            (name, hobby),
        )
    problems: tuple[str, ...] = ()
    solved = None
    if scale.covers("Implicit Intent Recognition"):
        chosen = sample(rng, tuple(PROBLEMS), scale.pick(1, 2) + 1)
        problems, solved = tuple(chosen[:-1]), chosen[-1]
        _problem_beats(rng, problems, solved, texts)
    gift_for = tuple(sample(rng, people, scale.pick(1, 2) if people else 0))
    return IntentPlan(hobbies, gift_for, problems, solved, texts)


def _problem_beats(
    rng: random.Random,
    problems: tuple[str, ...],
    solved: str,
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]],
) -> None:
    for problem in problems:
        spec = PROBLEMS[problem]
        # Late in the history, so the need is still open when the question is asked.
        for i, hint in enumerate(spec.hints):
            at = rng.uniform(0.6, 0.8) + 0.15 * i
            texts[f"intent:problem:{problem}:{i}"] = (
                at,
                hint,
                pick(rng, _PROBLEM_REPLIES),
                (spec.fact,),
            )
    texts["intent:solved"] = (
        rng.uniform(0.1, 0.9),
        PROBLEMS[solved].solved,
        _SOLVED_REPLY,
        (PROBLEMS[solved].fact,),
    )
