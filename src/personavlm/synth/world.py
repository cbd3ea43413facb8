"""The simulated person: who they are (`Cast`) and how their Big Five traits move (`TraitPlan`).

    cast = draw_cast(rng, user_id="u003")
    traits = draw_traits(rng, first=slots[0].time, last=slots[-1].time)
    traits.at(some_time)   # {"openness": 3.1, ..., "neuroticism": 4.2}

Every aspect module (memory, intent, preference, ...) reads the cast, so that a friend named
in one place is the same friend everywhere. Trait values are on the paper's 1.0-5.0 scale;
every plan has at least one shift (a trait crossing from one pole to the other over a week),
at a known time, so personality alignment questions asked before and after it differ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from personavlm.personality import TRAITS
from personavlm.synth.core import pick, sample, time_text
from personavlm.synth.vocab import (
    CITIES,
    FIRST_NAMES,
    LANGUAGES,
    LAST_NAMES,
    MONTHS,
    OCCUPATIONS,
    PET_NAMES,
    PET_SPECIES,
)

__all__ = [
    "CHANGEABLE",
    "RELATIONS",
    "Cast",
    "Person",
    "Shift",
    "TraitPlan",
    "draw_cast",
    "draw_traits",
]

# Labels of the people around the user, as the user would introduce them.
RELATIONS = ("colleague", "close friend", "neighbour", "sister", "brother", "cousin", "flatmate")
CHANGEABLE = ("colleague", "close friend", "neighbour", "flatmate")
_SHIFT_RAMP = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    relation: str  # how the user first knows them (relationship.py may change it later)


@dataclass(frozen=True, slots=True)
class Cast:
    user_id: str
    name: str
    age: int
    city: str
    hometown: str
    occupation: str
    expert_domain: str
    pet_species: str
    pet_name: str
    birthday_month: str
    language: str
    people: tuple[Person, ...]
    spare_names: tuple[str, ...]  # names used nowhere in the history: distractors only

    def profile(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "age": self.age,
            "city": self.city,
            "hometown": self.hometown,
            "occupation": self.occupation,
            "pet": {"species": self.pet_species, "name": self.pet_name},
            "birthday_month": self.birthday_month,
            "native_language": self.language,
        }


def draw_cast(rng: random.Random, *, user_id: str, people: int) -> Cast:
    first, *others = sample(rng, FIRST_NAMES, 1 + people + 3)
    city, hometown = sample(rng, CITIES, 2)
    occupation = pick(rng, tuple(OCCUPATIONS))
    # The first two can change later (relationship.py); family relations come at most once.
    relations: list[str] = []
    for i in range(people):
        pool = CHANGEABLE if i < 2 else RELATIONS
        options = [r for r in pool if r not in relations or r in ("colleague", "neighbour")]
        relations.append(pick(rng, options))
    return Cast(
        user_id=user_id,
        name=f"{first} {pick(rng, LAST_NAMES)}",
        age=rng.randint(22, 64),
        city=city,
        hometown=hometown,
        occupation=occupation,
        expert_domain=OCCUPATIONS[occupation],
        pet_species=pick(rng, PET_SPECIES),
        pet_name=pick(rng, PET_NAMES),
        birthday_month=pick(rng, MONTHS),
        language=pick(rng, LANGUAGES),
        people=tuple(Person(n, r) for n, r in zip(others[:people], relations, strict=True)),
        spare_names=tuple(others[people:]),
    )


@dataclass(frozen=True, slots=True)
class Shift:
    """`trait` moves from `before` to `after`, linearly over the week starting at `start`."""

    trait: str
    before: float
    after: float
    start: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "trait": self.trait,
            "before": self.before,
            "after": self.after,
            "start": time_text(self.start),
            "end": time_text(self.start + _SHIFT_RAMP),
        }


@dataclass(frozen=True, slots=True)
class TraitPlan:
    base: dict[str, float]
    shifts: tuple[Shift, ...]

    def at(self, when: datetime) -> dict[str, float]:
        values = dict(self.base)
        for shift in self.shifts:
            done = (when - shift.start) / _SHIFT_RAMP
            share = min(1.0, max(0.0, done))
            values[shift.trait] = round(shift.before + share * (shift.after - shift.before), 2)
        return values

    def settled(self, when: datetime) -> bool:
        """True when no shift is half-way at `when` (alignment asks only then)."""
        return all(not (s.start <= when < s.start + _SHIFT_RAMP) for s in self.shifts)


def draw_traits(
    rng: random.Random, *, first: datetime, last: datetime, shifts: int = 1
) -> TraitPlan:
    """Base traits in 1.6..4.4 and `shifts` pole-crossing shifts (neuroticism most often),
    the first starting 35-55% of the way through the history."""
    base = {name: round(rng.uniform(1.6, 4.4), 1) for name in TRAITS}
    span = last - first
    chosen = ["neuroticism"] if rng.random() < 0.6 else [pick(rng, TRAITS)]
    chosen += sample(rng, [t for t in TRAITS if t not in chosen], shifts - 1)
    plan = []
    for i, trait in enumerate(chosen):
        high, low = round(rng.uniform(3.9, 4.6), 1), round(rng.uniform(1.5, 2.2), 1)
        before, after = (high, low) if rng.random() < 0.6 else (low, high)
        # A second shift (another trait) comes late in the history.
        fraction = rng.uniform(0.35, 0.55) if i == 0 else rng.uniform(0.7, 0.8)
        plan.append(Shift(trait, before, after, first + span * fraction))
        base[trait] = before
    return TraitPlan(base, tuple(plan))
