"""Relationship aspect: who the people around the user are (Relationship Recognition) and
how that changes (Relationship Dynamics Comprehension).

    plan = plan_relationships(rng, cast, scale)

Every person of the cast is introduced in passing ("{name} from work covered my meeting").
One person (two in the 128k setting) changes later: a colleague becomes a close friend, a
close friend falls out with the user, a neighbour becomes a friend, a flatmate a partner.
Recognition asks who someone is (after the last session: the latest relation; for a changed
person also once just before the change, when the old relation holds). Dynamics asks how a
relation developed; wrong options reverse it, deny the change, or name another change.

A short history may cover only one of the two tasks (`Scale.covers`): without Dynamics no
relation changes; without Recognition only the people whose relation changes are introduced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample, time_text
from personavlm.synth.world import CHANGEABLE, Cast, Person

__all__ = ["RelationshipPlan", "plan_relationships"]

# How the assistant names a relation in an answer option.
LABELS = {
    "colleague": "a colleague from work",
    "close friend": "a close friend",
    "neighbour": "your neighbour",
    "sister": "your sister",
    "brother": "your brother",
    "cousin": "your cousin",
    "flatmate": "your flatmate",
    "partner": "your partner",
    "fell out": "a friend you've fallen out with",
}
CHANGES = {
    "colleague": "close friend",
    "close friend": "fell out",
    "neighbour": "close friend",
    "flatmate": "partner",
}
_MENTIONS = {
    "colleague": (
        "{name} from work covered my meeting today, a lifesaver.",
        "Lunch with {name}, we share a desk at the office.",
        "My colleague {name} brought in cake for the whole team.",
    ),
    "close friend": (
        "{name} and I have been best mates since school.",
        "Long phone call with {name}, my closest friend, exactly what I needed.",
    ),
    "neighbour": (
        "{name} from next door took in my parcel again.",
        "My neighbour {name} was playing drums at midnight, I swear.",
    ),
    "sister": (
        "My sister {name} is visiting this weekend.",
        "{name}, my little sister, just got engaged!",
    ),
    "brother": (
        "My brother {name} called, he's moving house.",
        "{name}, my older brother, roped me into painting his hallway.",
    ),
    "cousin": (
        "My cousin {name} is in town next week.",
        "Family barbecue, and of course my cousin {name} burnt everything.",
    ),
    "flatmate": (
        "{name}, my flatmate, left the dishes again.",
        "Movie night in with {name}; sharing a flat has its perks.",
    ),
    "partner": (
        "Date night with {name} tonight, pasta and a film.",
        "{name}, my partner, surprised me with breakfast in bed.",
    ),
    "fell out": (
        "Saw {name} at the shop and we both pretended not to notice each other.",
        "Still not talking to {name}; it's awkward with mutual friends.",
    ),
}
_CHANGE_TEXTS = {
    "colleague": (
        "{name} and I have really bonded lately, proper friends now, not just people who "
        "share an office.",
        "Funny how things go: {name} started as someone from work and now they're one of my "
        "closest friends.",
    ),
    "close friend": (
        "{name} and I had a huge row; we're not speaking any more.",
        "I don't think {name} and I are friends any more after what happened at the party.",
    ),
    "neighbour": (
        "{name} from next door has become a proper close friend, we hang out every week now.",
        "Never thought the person next door would become a best mate, but {name} really has.",
    ),
    "flatmate": (
        "Big news: {name} and I are together now! From sharing a flat to actually dating.",
        "So {name} and I are officially a couple. Living together just got a lot more romantic.",
    ),
}
_REPLIES = (
    "It sounds like they matter to you.",
    "People really shape our days, don't they?",
    "Thanks for filling me in!",
    "Oh, how are you feeling about that?",
)
_WHO_QUERIES = (
    "Remind me, who's {name} to me?",
    "How do I know {name} again?",
    "What's {name}'s connection to me these days?",
)
_HOW_QUERIES = (
    "How have things between {name} and me developed over time?",
    "Has anything shifted between me and {name} since I first brought them up?",
)


@dataclass(frozen=True, slots=True)
class RelationshipPlan:
    people: tuple[Person, ...]
    changed: tuple[str, ...]  # names of the people whose relation changes
    recognition: bool  # whether Relationship Recognition is asked (all people introduced)
    beat_texts: dict[str, tuple[float, str, str, tuple[str, ...]]]  # key -> at, user, reply, facts

    def beats(self) -> list[Beat]:
        # A question is asked just before a change: it needs a turn of its own.
        return [
            Beat(k, at, u, r, f, alone=k.endswith(":change:0"))
            for k, (at, u, r, f) in self.beat_texts.items()
        ]

    def _stages(self, person: Person) -> tuple[str, ...]:
        if person.name in self.changed:
            return (person.relation, CHANGES[person.relation])
        return (person.relation,)

    def _keys(self, name: str, stage: str) -> tuple[str, ...]:
        return tuple(k for k in self.beat_texts if k.startswith(f"rel:{name}:{stage}:"))

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        out = []
        if self.recognition:
            asked = [p for p in self.people if p.name in self.changed]
            asked += sample(rng, [p for p in self.people if p.name not in self.changed], 1)
            for person in asked:
                out += self._recognition(rng, person, placed)
        for name in self.changed:
            out.append(self._dynamics(rng, next(p for p in self.people if p.name == name)))
        return out

    def _recognition(self, rng: random.Random, person: Person, placed: Placement) -> list[Draft]:
        stages = self._stages(person)
        # Other people's relations are in the history: offer those first.
        known = [r for p in self.people for r in self._stages(p) if p is not person]
        out = []
        for i, stage in enumerate(stages):
            wrong = _distinct_labels(rng, stage, [*stages, *known])
            query = fill(rng, _WHO_QUERIES, {"name": person.name})
            if i + 1 < len(stages):  # asked one minute before the change is said
                when = placed[self._keys(person.name, "change")[0]].time - timedelta(minutes=1)
                evidence = self._keys(person.name, "intro")
            else:
                when = None
                evidence = self._keys(person.name, "change" if i else "intro")
            task = "Relationship Recognition"
            out.append(Draft(task, query, LABELS[stage], wrong, evidence, (person.name,), when))
        return out

    def _dynamics(self, rng: random.Random, person: Person) -> Draft:
        before, after = self._stages(person)
        other = pick(rng, [CHANGES[r] for r in CHANGES if CHANGES[r] not in (before, after)])
        a, b, c = LABELS[before], LABELS[after], LABELS[other]
        correct = f"{a} at first, now {b}"
        wrong = (
            f"{b} at first, now {a}",
            f"{a} all along, nothing changed",
            f"{a} at first, now {c}",
        )
        evidence = self._keys(person.name, "intro") + self._keys(person.name, "change")
        query = fill(rng, _HOW_QUERIES, {"name": person.name})
        return Draft(
            "Relationship Dynamics Comprehension", query, correct, wrong, evidence, (person.name,)
        )

    def truth(self, placed: Placement) -> dict[str, Any]:
        out = []
        for person in self.people:
            if not self._keys(person.name, "intro"):
                continue  # never introduced (a short history without recognition questions)
            timeline = []
            for stage, kind in zip(self._stages(person), ("intro", "change"), strict=False):
                first = placed[self._keys(person.name, kind)[0]]
                timeline.append(
                    {"relation": stage, "since": time_text(first.time), "turn": first.id}
                )
            out.append({"name": person.name, "timeline": timeline})
        return {"relationships": out}


def _distinct_labels(rng: random.Random, right: str, preferred: list[str]) -> tuple[str, ...]:
    """Three relation labels other than `right`: those in the history first, then others."""
    seen = [r for r in dict.fromkeys(preferred) if r != right]
    rest = [r for r in LABELS if r != right and r not in seen]
    rng.shuffle(rest)
    return tuple(LABELS[r] for r in (seen[:3] + rest)[:3])


def plan_relationships(rng: random.Random, cast: Cast, scale: Scale) -> RelationshipPlan:
    recognition = scale.covers("Relationship Recognition")
    changes = scale.pick(1, 2) if scale.covers("Relationship Dynamics Comprehension") else 0
    changing = [p.name for p in cast.people if p.relation in CHANGEABLE][:changes]
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]] = {}
    used: set[str] = set()
    for person in cast.people:
        if not recognition and person.name not in changing:
            continue  # dynamics only: just the people whose relation changes
        name = {"name": person.name}
        mentions = scale.pick(1, 2)
        # Two people of the same relation (two neighbours) get different wordings if possible:
        # short histories often say two introductions in one turn.
        unused = [t for t in _MENTIONS[person.relation] if t not in used]
        options = unused if len(unused) >= mentions else list(_MENTIONS[person.relation])
        for i, template in enumerate(sample(rng, options, mentions)):
            used.add(template)
            # A person who changes is introduced before the change and seen after it.
            at = rng.uniform(0.02, 0.35) if person.name in changing else rng.uniform(0.0, 0.9)
            texts[f"rel:{person.name}:intro:{i}"] = (
                at,
                template.format(**name),
                pick(rng, _REPLIES),
                (person.name,),
            )
        if person.name in changing:
            change = fill(rng, _CHANGE_TEXTS[person.relation], name)
            at = rng.uniform(0.45, 0.7)
            texts[f"rel:{person.name}:change:0"] = (at, change, pick(rng, _REPLIES), (person.name,))
            if scale.large:
                after = fill(rng, _MENTIONS[CHANGES[person.relation]], name)
                texts[f"rel:{person.name}:change:1"] = (
                    at + 0.15,
                    after,
                    pick(rng, _REPLIES),
                    (person.name,),
                )
    return RelationshipPlan(cast.people, tuple(changing), recognition, texts)
