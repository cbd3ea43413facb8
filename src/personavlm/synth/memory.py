"""Memory aspect: facts the user states (Semantic Information Recall) and pictures whose
content is only in the pixels (Visual Detail Recall).

    plan = plan_memory(rng, cast, scale)
    plan.beats()                 # fact turns and picture turns
    plan.drafts(rng, placement)  # the questions, once the beats have their turns

Semantic facts come from the cast (job, home town, city, pet's name, birthday month, first
language) and are said in passing, in several wordings; the city and home town are both said
whenever either is asked about, so the wrong one is in the history too. Pictures are object
scenes (the user names only the setting: "my desk") and pet portraits (the pet's name and
species are said, its fur and markings never are). Every user shows pictures (about 15.9% of
the turns); a short user whose history does not cover Semantic Information Recall states no
facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample
from personavlm.synth.pictures import (
    BACKGROUNDS,
    FUR_COLOURS,
    MARKINGS,
    OBJECT_COLOURS,
    OBJECT_KINDS,
    Pet,
    Scene,
    marking_text,
    random_pet,
    random_scene,
)
from personavlm.synth.vocab import CITIES, LANGUAGES, MONTHS, OCCUPATIONS, PET_NAMES
from personavlm.synth.world import Cast

__all__ = ["IMAGE_SHARE", "MemoryPlan", "plan_memory"]

IMAGE_SHARE = 0.159  # PAPER.md section 6: 15.9% of turns carry an image

SETTINGS = (
    "desk",
    "kitchen counter",
    "bookshelf",
    "windowsill",
    "coffee table",
    "workbench",
    "bedside table",
    "balcony table",
    "craft table",
    "hallway shelf",
    "garden bench",
    "dining table",
    "office desk",
    "toy shelf",
)


@dataclass(frozen=True, slots=True)
class _FactKind:
    statements: tuple[str, ...]
    queries: tuple[str, ...]
    pool: tuple[str, ...]


_FACTS: dict[str, _FactKind] = {
    "occupation": _FactKind(
        (
            "Long shift again. Being {a} {value} is rewarding but exhausting some weeks.",
            "Work was chaos today, the joys of being {a} {value}.",
            "People always ask what {a} {value} actually does all day, ha.",
            "Eight years as {a} {value} and I still get Sunday-night dread.",
        ),
        ("What's my line of work again?", "Remind me, how do I earn a living?"),
        tuple(OCCUPATIONS),
    ),
    "hometown": _FactKind(
        (
            "I grew up in {value}, so this drizzle feels like home.",
            "Mum still lives in {value}, the town I was raised in.",
            "Back when I was a kid in {value} we'd spend whole summers outdoors.",
        ),
        ("Where did I spend my childhood?", "Where am I originally from?"),
        CITIES,
    ),
    "city": _FactKind(
        (
            "Rent in {value} keeps climbing, honestly.",
            "Lovely evening for a walk along the river here in {value}.",
            "Three years living in {value} now and I still get lost in the old town.",
        ),
        ("Which city am I based in these days?", "Where's home for me at the moment?"),
        CITIES,
    ),
    "pet_name": _FactKind(
        (
            "{value} woke me at 5am demanding breakfast, typical {species}.",
            "Took {value} to the vet today, my poor {species} sulked all afternoon.",
            "My {species} {value} has claimed the sofa as their own.",
        ),
        ("What did I name my pet?", "Remind me what my furry companion is called?"),
        PET_NAMES,
    ),
    "birthday_month": _FactKind(
        (
            "My birthday's in {value}, already dropping hints to everyone.",
            "I always take a week off in {value} around my birthday.",
        ),
        ("When's my big day each year?", "Which month do I get a year older in?"),
        MONTHS,
    ),
    "language": _FactKind(
        (
            "I'm a native {value} speaker, so some English idioms still baffle me.",
            "Called my gran and we chatted in {value} for an hour, she won't speak anything else.",
        ),
        ("What's my mother tongue?", "Which language is my first one?"),
        LANGUAGES,
    ),
}
_FACT_REPLIES = (
    "Oh, good to know!",
    "Ha, that sounds about right. Anything I can help with?",
    "Thanks for sharing that bit of your life.",
    "That's lovely. Is there anything on your mind today?",
)
_SCENE_TEXTS = (
    "Here's my {setting} this morning <img>",
    "<img> my {setting} after a big tidy-up",
    "Snapped my {setting} just now <img> what do you reckon?",
    "Finally sorted out the {setting} <img>",
    "The state of my {setting} right now <img>",
    "Rearranged things on my {setting} <img>",
)
_SCENE_REPLIES = (
    "Looks great, thanks for the photo!",
    "Nice set-up, it looks really tidy.",
    "Love it, thanks for sharing the picture.",
    "That's a lovely shot! Happy with how it turned out?",
)
_PET_TEXTS = (
    "{pet} being dramatic again <img>",
    "Look who's decided my laptop is a bed <img> {pet}, obviously",
    "<img> my {species} {pet} soaking up the sun",
    "Couldn't resist taking this one of {pet} <img>",
)
_PET_REPLIES = ("Aww, {pet} is adorable!", "What a character! Give {pet} a scratch from me.")
_SIDE = {"left": "on the left", "centre": "in the middle", "right": "on the right"}
_COLOUR_QUERIES = (
    "What colour were the {kind} {side} in the photo of my {setting}{when}?",
    "In that picture of my {setting}{when}, which colour were the {kind}?",
)
_COUNT_QUERIES = (
    "How many {plural} were there in the shot of my {setting}{when}?",
    "Quick one: the {plural} in my {setting} photo{when}, how many did you spot?",
)
_POSITION_QUERIES = (
    "What was sitting {side} in the picture of my {setting}{when}?",
    "In my {setting} photo{when}, which object was {side}?",
)
_WALL_QUERIES = (
    "What colour was the wall behind my {setting}{when}?",
    "Which colour was the background in that photo of my {setting}{when}?",
)
_FUR_QUERIES = ("What colour is {pet}'s coat?", "How would you describe {pet}'s fur colour?")
_MARKING_QUERIES = ("Does {pet} have any distinctive markings?", "What are {pet}'s markings like?")
_NUMBER_WORDS = ("one", "two", "three", "four")


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    cast: Cast
    facts: tuple[str, ...]  # the semantic fact kinds stated
    scenes: tuple[tuple[str, Scene, float], ...]  # (beat key, scene, at)
    pet: Pet
    pet_beats: tuple[tuple[str, float], ...]
    fact_beats: tuple[tuple[str, str, float], ...]  # (beat key, fact kind, at)
    visual_questions: int
    beat_texts: dict[str, tuple[str, str]]  # beat key -> (user, assistant), drawn once

    def beats(self) -> list[Beat]:
        out = []
        for key, kind, at in self.fact_beats:
            user, reply = self.beat_texts[key]
            out.append(Beat(key, at, user, reply, (self._value(kind),)))
        for key, scene, at in self.scenes:
            user, reply = self.beat_texts[key]
            out.append(Beat(key, at, user, reply, (scene.setting,), picture=scene))
        for key, at in self.pet_beats:
            user, reply = self.beat_texts[key]
            out.append(Beat(key, at, user, reply, (self.pet.name,), picture=self.pet))
        return out

    def _value(self, kind: str) -> str:
        value = getattr(self.cast, kind)
        assert isinstance(value, str)
        return value

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        out = [self._semantic(rng, kind) for kind in self.facts]
        out += self._pet_drafts(rng)
        for key, scene, _ in self._question_scenes(rng):
            out.append(self._scene_draft(rng, key, scene, placed))
        return out

    def _semantic(self, rng: random.Random, kind: str) -> Draft:
        spec = _FACTS[kind]
        value = self._value(kind)
        evidence = tuple(k for k, fk, _ in self.fact_beats if fk == kind)
        # The neighbouring fact (city <-> home town) is in the history: offer it first.
        near = {"city": self.cast.hometown, "hometown": self.cast.city}.get(kind)
        others = [v for v in spec.pool if v not in (value, near)]
        wrong = ([near] if near else []) + sample(rng, others, 3 if near is None else 2)
        query = fill(rng, spec.queries, {})
        return Draft("Semantic Information Recall", query, value, tuple(wrong), evidence, (value,))

    def _pet_drafts(self, rng: random.Random) -> list[Draft]:
        evidence = tuple(k for k, _ in self.pet_beats)
        name = {"pet": self.pet.name}
        others = sample(rng, [c for c in FUR_COLOURS if c != self.pet.fur], 3)
        out = [
            Draft(
                "Visual Detail Recall",
                fill(rng, _FUR_QUERIES, name),
                self.pet.fur,
                tuple(others),
                evidence,
                visual=True,
            )
        ]
        if self.visual_questions > 2:
            wrong = tuple(marking_text(self.pet, m) for m in MARKINGS if m != self.pet.marking)
            out.append(
                Draft(
                    "Visual Detail Recall",
                    fill(rng, _MARKING_QUERIES, name),
                    marking_text(self.pet, self.pet.marking),
                    wrong,
                    evidence,
                    visual=True,
                )
            )
        return out

    def _question_scenes(self, rng: random.Random) -> list[tuple[str, Scene, float]]:
        count = self.visual_questions - (2 if self.visual_questions > 2 else 1)
        return sample(rng, self.scenes, min(count, len(self.scenes)))

    def _scene_draft(self, rng: random.Random, key: str, scene: Scene, placed: Placement) -> Draft:
        shown = sum(1 for _, s, _ in self.scenes if s.setting == scene.setting)
        # A setting shown twice needs its day to say which photo is meant.
        when = "" if shown == 1 else f" from {placed[key].time:%B} {placed[key].time.day}"
        thing = pick(rng, scene.things)
        values = {
            "setting": scene.setting,
            "when": when,
            "kind": thing.kind if thing.count == 1 else _plural(thing.kind),
            "plural": _plural(thing.kind),
            "side": _SIDE[thing.position],
        }
        question = rng.choice(("colour", "count", "position", "wall"))
        if question == "colour":
            others = [t.colour for t in scene.things if t is not thing]
            spare = [c for c in OBJECT_COLOURS if c not in others and c != thing.colour]
            correct, wrong = thing.colour, [*others, pick(rng, spare)]
            query = fill(rng, _COLOUR_QUERIES, values)
        elif question == "count":
            correct = _NUMBER_WORDS[thing.count - 1]
            wrong = [n for n in _NUMBER_WORDS if n != correct]
            query = fill(rng, _COUNT_QUERIES, values)
        elif question == "position":
            absent = pick(rng, [k for k in OBJECT_KINDS if k not in {t.kind for t in scene.things}])
            correct = f"a {thing.kind}"
            wrong = [f"a {t.kind}" for t in scene.things if t is not thing] + [f"a {absent}"]
            query = fill(rng, _POSITION_QUERIES, values)
        else:
            correct = scene.background
            wrong = sample(rng, [b for b in BACKGROUNDS if b != correct], 3)
            query = fill(rng, _WALL_QUERIES, values)
        return Draft("Visual Detail Recall", query, correct, tuple(wrong), (key,), visual=True)

    def truth(self, placed: Placement) -> dict[str, Any]:
        return {
            "facts": {
                kind: {
                    "value": self._value(kind),
                    "turns": [placed[k].id for k, fk, _ in self.fact_beats if fk == kind],
                }
                for kind in self.facts
            },
        }


def _plural(kind: str) -> str:
    return "boxes" if kind == "box" else kind + "s"


def plan_memory(rng: random.Random, cast: Cast, scale: Scale) -> MemoryPlan:
    stated = scale.pick(3, 6) if scale.covers("Semantic Information Recall") else 0
    kinds = sample(rng, tuple(_FACTS), stated)
    for pair in (("city", "hometown"), ("hometown", "city")):
        if pair[0] in kinds and pair[1] not in kinds:
            kinds.append(pair[1])
    texts: dict[str, tuple[str, str]] = {}
    fact_beats = []
    for kind in kinds:
        for i in range(scale.pick(1, 2)):
            key = f"fact:{kind}:{i}"
            value = getattr(cast, kind)
            article = "an" if value[0] in "aeiou" else "a"
            values = {"value": value, "species": cast.pet_species, "a": article}
            texts[key] = (fill(rng, _FACTS[kind].statements, values), pick(rng, _FACT_REPLIES))
            fact_beats.append((key, kind, rng.uniform(0.0, 0.9)))
    images = max(3, round(scale.n_turns * IMAGE_SHARE * rng.uniform(0.85, 1.15)))
    pet = random_pet(rng, species=cast.pet_species, name=cast.pet_name)
    pet_beats = []
    for i in range(scale.pick(1, 2)):
        key = f"picture:pet:{i}"
        values = {"pet": pet.name, "species": pet.species}
        texts[key] = (fill(rng, _PET_TEXTS, values), fill(rng, _PET_REPLIES, values))
        pet_beats.append((key, rng.uniform(0.05, 0.9)))
    scenes = []
    for i in range(images - len(pet_beats)):
        key = f"picture:scene:{i}"
        scene = random_scene(rng, setting=pick(rng, SETTINGS))
        texts[key] = (
            fill(rng, _SCENE_TEXTS, {"setting": scene.setting}),
            pick(rng, _SCENE_REPLIES),
        )
        scenes.append((key, scene, rng.uniform(0.0, 1.0)))
    return MemoryPlan(
        cast=cast,
        facts=tuple(kinds),
        scenes=tuple(scenes),
        pet=pet,
        pet_beats=tuple(pet_beats),
        fact_beats=tuple(fact_beats),
        visual_questions=scale.pick(2, 6),
        beat_texts=texts,
    )
