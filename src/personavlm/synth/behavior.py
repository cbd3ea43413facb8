"""Behavior aspect: weekly routines (Behavioral Pattern Recognition) and long-term goals
whose outcome is done, abandoned, or never reported (Long-term Goal Tracking).

    plan = plan_behavior(rng, cast, scale)

A routine is a day, an anchor activity and a place ("after my Saturday hike I grab a latte at
Blue Door"), said two or three times in different words; a one-off visit to another place of
the same kind is said too. The question asks where the user heads after the anchor activity
(named with a synonym), or on which day they go to the place.

A goal is said early; its outcome, if any, later. The question asks what became of it; the
options are the same four outcomes for every goal, one of them "you never told me".

A short history may cover only one of the two tasks (`Scale.covers`); the other has no
routines (or no goals) at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample, time_text
from personavlm.synth.world import Cast

__all__ = ["GOALS", "OUTCOMES", "BehaviorPlan", "plan_behavior"]

DAYS = ("Monday", "Wednesday", "Friday", "Saturday", "Sunday")
# anchor -> how a question names it without repeating the word
ANCHORS = {
    "hike": "walk in the hills",
    "run": "jog",
    "swim": "session in the pool",
    "yoga class": "stretching session",
    "football practice": "training with the team",
    "choir rehearsal": "singing practice",
}
# kind of place -> (what the user does there, the places of that kind)
PLACES = {
    "cafe": (
        "grab a latte at {place}",
        ("Blue Door", "The Copper Kettle", "Little Fox Coffee", "Drift Cafe", "Bean There"),
    ),
    "bakery": (
        "pick up a cinnamon bun at {place}",
        ("Crumb & Co", "Rise Bakery", "The Bread Shed", "Oven Door"),
    ),
    "pub": (
        "have a pint at {place}",
        ("The Red Lion", "The Crown", "The Fox & Hound", "The Anchor"),
    ),
}
_ROUTINE_TEXTS = (
    "After my {day} {anchor} I always {act}.",
    "{day} {anchor} done, so off to {place} as usual.",
    "Can't do a {day} {anchor} without heading to {place} afterwards.",
    "Post-{anchor} ritual this {day}: {act}.",
)
_ONE_OFF = (
    "Popped into {place} for the first time today, it was alright.",
    "Tried {place} once, wasn't really my thing.",
)
_PLACE_QUERIES = (
    "It's {day} and I've just wrapped up my {synonym}. Where am I probably heading next?",
    "Guess where I'll end up once my {day} {synonym} is over?",
)
_DAY_QUERIES = (
    "Which day am I most likely to be found at {place}?",
    "When do I usually end up at {place}?",
)
OUTCOMES = {
    "done": "You completed it",
    "abandoned": "You gave up on it",
    "postponed": "You postponed it to next year",
    "unknown": "You never told me how it turned out",
}
# goal -> (fact, how a question names it, statements, done texts, abandoned texts)
GOALS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "half marathon": (
        "half marathon",
        "my half marathon plan",
        (
            "Signed up for the {city} half marathon in the spring, training starts now.",
            "Goal for this year: run a half marathon without walking.",
        ),
        ("Finished the half marathon! Legs are dead but I did it.",),
        ("Pulled out of the half marathon, my knee isn't having it.",),
    ),
    "spanish": (
        "Spanish",
        "learning Spanish",
        (
            "Goal for this year: get conversational in Spanish.",
            "Started Spanish lessons, aiming to hold a real conversation by summer.",
        ),
        ("Had a whole conversation in Spanish with a waiter, calling that goal achieved!",),
        ("I've quietly given up on Spanish, the app streak is long dead.",),
    ),
    "japan": (
        "Japan",
        "saving up for the big trip",
        ("Saving up three thousand for a trip to Japan, every penny counts.",),
        ("Hit my Japan savings target today, booking flights!",),
        ("Spent the Japan fund on car repairs, so that dream is off.",),
    ),
    "reading": (
        "books",
        "the reading challenge",
        ("Challenge for this year: read twenty books.",),
        ("Just finished my twentieth book of the year, twenty books done!",),
        ("Giving up on twenty books this year, I'm stuck on book six.",),
    ),
    "bathroom": (
        "bathroom",
        "the renovation at home",
        ("We're redoing the bathroom ourselves, tiles and all.",),
        ("The bathroom is finished! Grouted the last tile today.",),
        ("We've given up on doing the bathroom ourselves, too much hassle.",),
    ),
    "certification": (
        "certification",
        "that exam I was studying for",
        ("Studying for a professional certification in my field, the exam's in two months.",),
        ("Passed my certification exam!",),
        ("Decided not to sit the certification exam after all, not worth the stress.",),
    ),
    "story": (
        "short story",
        "my writing competition entry",
        ("Writing a short story for the city's writing competition.",),
        ("Submitted my short story to the competition, fingers crossed!",),
        ("Binned the short story, I just couldn't make it work.",),
    ),
}
_GOAL_QUERIES = (
    "Whatever happened with {goal}?",
    "Did I ever get anywhere with {goal}?",
    "How did {goal} turn out in the end?",
)
_GOAL_TASK = "Long-term Goal Tracking"
_ONE_OFF_REPLY = "Fair enough, not every place is a winner."
_REPLIES = (
    "That's a great goal, good luck!",
    "Sounds like a plan. Keep me posted!",
    "Oh wow, well done!",
    "That's a shame, but it's okay to change course.",
)


@dataclass(frozen=True, slots=True)
class _Routine:
    day: str
    anchor: str
    kind: str
    place: str
    one_off: str  # another place of the same kind, visited once (in the history)


@dataclass(frozen=True, slots=True)
class BehaviorPlan:
    routines: tuple[_Routine, ...]
    goals: dict[str, str]  # goal -> outcome (done, abandoned, unknown)
    beat_texts: dict[str, tuple[float, str, str, tuple[str, ...]]]

    def beats(self) -> list[Beat]:
        return [Beat(k, at, u, r, f) for k, (at, u, r, f) in self.beat_texts.items()]

    def _keys(self, prefix: str) -> tuple[str, ...]:
        return tuple(k for k in self.beat_texts if k.startswith(prefix))

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        out = [self._routine(rng, r) for r in self.routines]
        for goal, outcome in self.goals.items():
            fact, name = GOALS[goal][:2]
            wrong = tuple(text for o, text in OUTCOMES.items() if o != outcome)
            query = fill(rng, _GOAL_QUERIES, {"goal": name})
            evidence = self._keys(f"goal:{goal}:")
            out.append(
                Draft("Long-term Goal Tracking", query, OUTCOMES[outcome], wrong, evidence, (fact,))
            )
        return out

    def _routine(self, rng: random.Random, routine: _Routine) -> Draft:
        evidence = self._keys(f"routine:{routine.day}:")
        task = "Behavioral Pattern Recognition"
        if rng.random() < 0.6:
            spare = [
                p for p in PLACES[routine.kind][1] if p not in (routine.place, routine.one_off)
            ]
            wrong = (routine.one_off, *sample(rng, spare, 2))
            values = {"day": routine.day, "synonym": ANCHORS[routine.anchor]}
            query = fill(rng, _PLACE_QUERIES, values)
            return Draft(task, query, routine.place, wrong, evidence, (routine.place,))
        days = sample(rng, [d for d in DAYS if d != routine.day], 3)
        query = fill(rng, _DAY_QUERIES, {"place": routine.place})
        return Draft(task, query, routine.day, tuple(days), evidence, (routine.day,))

    def truth(self, placed: Placement) -> dict[str, Any]:
        routines = [
            {
                "day": r.day,
                "anchor": r.anchor,
                "place": r.place,
                "turns": [placed[k].id for k in self._keys(f"routine:{r.day}:")],
            }
            for r in self.routines
        ]
        goals = []
        for goal, outcome in self.goals.items():
            stated = placed[f"goal:{goal}:stated"]
            report = placed.get(f"goal:{goal}:outcome")
            goals.append(
                {
                    "goal": goal,
                    "status": outcome,
                    "stated": {"turn": stated.id, "time": time_text(stated.time)},
                    "reported": None
                    if report is None
                    else {"turn": report.id, "time": time_text(report.time)},
                }
            )
        return {"routines": routines, "goals": goals}


def plan_behavior(rng: random.Random, cast: Cast, scale: Scale) -> BehaviorPlan:
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]] = {}
    routines = []
    count = scale.pick(1, 2) if scale.covers("Behavioral Pattern Recognition") else 0
    days, anchors, kinds = (
        sample(rng, DAYS, count),
        sample(rng, tuple(ANCHORS), count),
        sample(rng, tuple(PLACES), count),
    )
    for day, anchor, kind in zip(days, anchors, kinds, strict=True):
        act, places = PLACES[kind]
        place, one_off = sample(rng, places, 2)
        routines.append(_Routine(day, anchor, kind, place, one_off))
        values = {"day": day, "anchor": anchor, "place": place, "act": act.format(place=place)}
        for i, template in enumerate(sample(rng, _ROUTINE_TEXTS, scale.pick(2, 3))):
            user = fill(rng, (template,), values)
            facts = (place, day)
            texts[f"routine:{day}:{i}"] = (
                rng.uniform(0.0, 0.95),
                user,
                pick(rng, _REPLIES[:2]),
                facts,
            )
        texts[f"oneoff:{day}"] = (
            rng.uniform(0.0, 0.95),
            fill(rng, _ONE_OFF, {"place": one_off}),
            _ONE_OFF_REPLY,
            (one_off,),
        )
    goals = sample(rng, tuple(GOALS), scale.pick(2, 4) if scale.covers(_GOAL_TASK) else 0)
    outcomes = ["done", "abandoned", "unknown"] * 2
    rng.shuffle(outcomes)
    plan_goals = dict(zip(goals, outcomes, strict=False))
    for goal, outcome in plan_goals.items():
        fact, _, statements, done, abandoned = GOALS[goal]
        user = fill(rng, statements, {"city": cast.city})
        texts[f"goal:{goal}:stated"] = (rng.uniform(0.02, 0.4), user, _REPLIES[0], (fact,))
        if outcome != "unknown":
            report = fill(rng, done if outcome == "done" else abandoned, {})
            reply = _REPLIES[2] if outcome == "done" else _REPLIES[3]
            texts[f"goal:{goal}:outcome"] = (rng.uniform(0.55, 0.95), report, reply, (fact,))
    return BehaviorPlan(tuple(routines), plan_goals, texts)
