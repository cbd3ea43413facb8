"""Preference aspect: tastes that drift (Latest Preference Recognition) and what they imply
(Implicit Preference Recommendation). Hobbies that evolve are in interests.py.

    plan = plan_preferences(rng, cast, scale, vegetarian=False, diet_beats=())

Each user has tastes in several categories (soft drink, cuisine, music, sport to watch, film).
In one or two of them the taste changes at a known turn ("Sprite" -> "Coca-Cola"); a friend's
taste in the same category is said too, so the old value and the friend's value are both in
the history when the question offers them. A latest-preference question asked after the last
session expects the new value; one asked just before the change expects the old value.

A recommendation question asks for something concrete (a dish, an album, an outing, a film)
without naming the category's value; only one option matches the current taste (and, for
dishes, the user's diet).

A short history may cover only one of the two tasks (`Scale.covers`): without Latest
Preference Recognition the user states one steady taste, in a category that has things to
recommend; without Implicit Preference Recommendation no recommendation is asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample, time_text
from personavlm.synth.world import Cast

__all__ = ["CATEGORIES", "PreferencePlan", "plan_preferences"]


@dataclass(frozen=True, slots=True)
class _Category:
    values: tuple[str, ...]
    statements: tuple[str, ...]  # {value}
    changes: tuple[str, ...]  # {old} -> {new}
    friend: tuple[str, ...]  # {friend} likes {value}
    queries: tuple[str, ...]
    items: dict[str, tuple[str, ...]]  # value -> things that imply it (dishes: veg, meat)
    rec_queries: tuple[str, ...]


CATEGORIES: dict[str, _Category] = {
    "soft drink": _Category(
        ("Sprite", "Coca-Cola", "Fanta", "ginger beer", "lemonade", "iced tea", "kombucha"),
        (
            "Grabbed a {value} from the corner shop, my usual.",
            "Nothing hits the spot like an ice-cold {value}.",
            "{value} is basically my fuel at the moment.",
            "Had a {value} with lunch, as per.",
        ),
        (
            "Funny, I always used to go for {old}, but lately it's {new} every time.",
            "Gone right off {old}. It's {new} for me now.",
            "Had a {new} with lunch again, can't get enough of it; {old} tastes too sweet now.",
        ),
        (
            "{friend} drinks nothing but {value}, buys it by the crate.",
            "{friend} is obsessed with {value}, there's always some in their bag.",
        ),
        (
            "If you were picking up a fizzy drink for me, which one should it be?",
            "What should be waiting in the fridge for me these days?",
            "Which can would I reach for right now?",
        ),
        {},
        (),
    ),
    "cuisine": _Category(
        ("Thai", "Italian", "Mexican", "Japanese", "Indian", "Lebanese", "Korean", "Greek"),
        (
            "Had {value} food for dinner again, I could eat it every day.",
            "Found a new {value} place near the station, it's brilliant.",
            "Nothing beats a {value} takeaway on a Friday.",
        ),
        (
            "I've gone off {old} food a bit; {new} is what I crave lately.",
            "Used to be all about {old}, but {new} cooking has completely won me over.",
            "Third {new} meal this week. Sorry {old}, you've been replaced.",
        ),
        (
            "{friend} dragged me to a {value} restaurant, they're obsessed.",
            "{friend} only ever wants {value} when we eat out.",
        ),
        (
            "What kind of food am I craving most these days?",
            "If you booked dinner for me tonight, which kitchen should it be?",
        ),
        {
            "Thai": ("a tofu green curry", "a beef massaman curry"),
            "Italian": ("a wild mushroom risotto", "veal saltimbocca"),
            "Mexican": ("black bean tacos", "carnitas tacos"),
            "Japanese": ("vegetable tempura udon", "chicken katsu"),
            "Indian": ("paneer tikka masala", "lamb rogan josh"),
            "Lebanese": ("a falafel wrap", "lamb shawarma"),
            "Korean": ("vegetable bibimbap", "Korean fried chicken"),
            "Greek": ("spanakopita", "lamb souvlaki"),
        },
        (
            "I'm ordering a takeaway tonight. What should I get?",
            "Pick a dish for me for dinner this evening?",
        ),
    ),
    "music": _Category(
        ("jazz", "indie rock", "hip hop", "classical", "country", "techno", "folk", "k-pop"),
        (
            "Been listening to nothing but {value} on my commute.",
            "{value} on repeat all weekend, no regrets.",
            "Went to a {value} gig last night, still buzzing.",
        ),
        (
            "I've drifted away from {old}; {new} is all I play now.",
            "My playlists used to be wall-to-wall {old}, now it's mostly {new}.",
            "Can't stop playing {new} lately, and I haven't put on any {old} in weeks.",
        ),
        (
            "{friend} keeps sending me {value} tracks, they're obsessed.",
            "{friend} is a massive {value} fan, dragged me to a gig once.",
        ),
        (
            "What sort of music should you queue up for me these days?",
            "Which genre would I want on in the background right now?",
        ),
        {
            "jazz": ("the new Kamasi Washington record",),
            "indie rock": ("the latest Arctic Monkeys album",),
            "hip hop": ("Kendrick Lamar's new album",),
            "classical": ("a recording of Chopin's nocturnes",),
            "country": ("Chris Stapleton's latest album",),
            "techno": ("a three-hour Berlin club DJ set",),
            "folk": ("the new Fleet Foxes album",),
            "k-pop": ("BLACKPINK's newest single",),
        },
        (
            "Long drive on Saturday. What should I put on?",
            "Recommend me something to listen to on my run?",
        ),
    ),
    "sport": _Category(
        ("tennis", "football", "basketball", "Formula 1", "rugby", "cricket", "cycling"),
        (
            "Stayed up far too late watching {value} again.",
            "{value} is the only thing I watch on TV lately.",
            "Booked the weekend off just to watch the {value}.",
        ),
        (
            "I used to follow {old} religiously but I've swapped it for {new}.",
            "Haven't watched any {old} in ages, it's all {new} now.",
            "{new} has completely taken over my weekends; {old} can't compete.",
        ),
        (
            "{friend} is mad about {value}, never misses a match.",
            "{friend} tried to get me into {value} again.",
        ),
        (
            "Which sport would I most want on the telly at the moment?",
            "What should the pub put on for me, sport-wise?",
        ),
        {
            "tennis": ("tickets for the Wimbledon quarter-finals",),
            "football": ("a Champions League night at the pub",),
            "basketball": ("courtside seats at a basketball game",),
            "Formula 1": ("a Grand Prix weekend at Silverstone",),
            "rugby": ("a Six Nations match at the stadium",),
            "cricket": ("a day at a test match",),
            "cycling": ("a Tour de France mountain stage, watched from the roadside",),
        },
        ("My friends want to get me a treat outing. What would I enjoy most?",),
    ),
    "film": _Category(
        ("horror", "romantic comedies", "sci-fi", "documentaries", "thrillers", "westerns"),
        (
            "Had a {value} marathon last night, perfect evening.",
            "I'm in a real {value} phase at the moment.",
            "Can't beat {value} on a rainy Sunday.",
        ),
        (
            "Weirdly I've gone off {old}, it's {new} every movie night now.",
            "Used to only watch {old}; these days I'm all about {new}.",
            "Another one of those {new} tonight, I'm hooked. Who needs {old}?",
        ),
        (
            "{friend} only ever wants to watch {value}, it drives me mad.",
            "{friend} lent me a stack of {value}.",
        ),
        (
            "Movie night: what kind of film would I pick these days?",
            "What genre should you suggest when I fancy a film right now?",
        ),
        {
            "horror": ("The Conjuring",),
            "romantic comedies": ("Notting Hill",),
            "sci-fi": ("Interstellar",),
            "documentaries": ("a David Attenborough nature series",),
            "thrillers": ("Gone Girl",),
            "westerns": ("The Good, the Bad and the Ugly",),
        },
        ("Film night at mine tonight. What should we watch?",),
    ),
}
_REPLIES = (
    "Ooh, good choice!",
    "Ha, tastes change. Enjoy it!",
    "Sounds delicious, or at least fun.",
    "Nice, I'll remember that.",
    "Fair enough, everyone has their favourites.",
)


@dataclass(frozen=True, slots=True)
class _Taste:
    category: str
    values: tuple[str, ...]  # over time: one value, or old then new
    friend: str  # who likes `friend_value`
    friend_value: str
    spare: tuple[str, ...]  # values said nowhere, as distractors


@dataclass(frozen=True, slots=True)
class PreferencePlan:
    tastes: tuple[_Taste, ...]
    latest: bool  # whether Latest Preference Recognition is asked
    recommend: tuple[str, ...]  # categories asked about with a recommendation question
    vegetarian: bool
    diet_beats: tuple[str, ...]
    beat_texts: dict[str, tuple[float, str, str, tuple[str, ...]]]  # key -> at, user, reply, facts

    def beats(self) -> list[Beat]:
        return [
            # A question is asked just before the change: it needs a turn of its own.
            Beat(key, at, user, reply, facts, alone=key.endswith(":new:0"))
            for key, (at, user, reply, facts) in self.beat_texts.items()
        ]

    def _keys(self, taste: _Taste, stage: str) -> tuple[str, ...]:
        prefix = f"pref:{taste.category}:{stage}:"
        return tuple(k for k in self.beat_texts if k.startswith(prefix))

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        out = []
        for taste in self.tastes if self.latest else ():
            out += self._latest(rng, taste, placed)
        for category in self.recommend:
            taste = next(t for t in self.tastes if t.category == category)
            out.append(self._recommendation(rng, taste))
        return out

    def _latest(self, rng: random.Random, taste: _Taste, placed: Placement) -> list[Draft]:
        spec = CATEGORIES[taste.category]
        task = "Latest Preference Recognition"
        current = taste.values[-1]
        wrong = (*taste.values[:-1], taste.friend_value, *taste.spare)[:3]
        final_keys = self._keys(taste, "new") or self._keys(taste, "stated")
        query = fill(rng, spec.queries, {})
        out = [Draft(task, query, current, wrong, final_keys, (current,))]
        if len(taste.values) == 2:
            # Asked one minute before the change is said: then the old value is the truth.
            change = placed[f"pref:{taste.category}:new:0"].time - timedelta(minutes=1)
            old, new = taste.values
            wrong = (new, taste.friend_value, taste.spare[0])
            query = fill(rng, spec.queries, {})
            evidence = self._keys(taste, "old")
            out.append(Draft(task, query, old, wrong, evidence, (old,), time=change))
        return out

    def _recommendation(self, rng: random.Random, taste: _Taste) -> Draft:
        spec = CATEGORIES[taste.category]
        current = taste.values[-1]
        others = [*taste.values[:-1], taste.friend_value, *taste.spare]
        if taste.category == "cuisine" and self.vegetarian:
            # Right cuisine but meat, and meat-free dishes of the other cuisines.
            veg, meat = spec.items[current]
            correct, wrong = veg, [meat] + [spec.items[v][0] for v in others[:2]]
        else:
            correct = pick(rng, spec.items[current])
            wrong = [pick(rng, spec.items[v]) for v in others[:3]]
        evidence = self._keys(taste, "new") or self._keys(taste, "stated")
        if taste.category == "cuisine" and self.vegetarian:
            evidence += self.diet_beats
        query = fill(rng, spec.rec_queries, {})
        return Draft(
            "Implicit Preference Recommendation", query, correct, tuple(wrong), evidence, (current,)
        )

    def truth(self, placed: Placement) -> dict[str, Any]:
        out = []
        for taste in self.tastes:
            stages = ("old", "new") if len(taste.values) == 2 else ("stated",)
            timeline = []
            for value, stage in zip(taste.values, stages, strict=True):
                first = placed[self._keys(taste, stage)[0]]
                timeline.append({"value": value, "since": time_text(first.time), "turn": first.id})
            said = placed.get(f"pref:{taste.category}:friend")
            friend = (
                {"name": taste.friend, "value": taste.friend_value, "turn": said.id}
                if said
                else None
            )
            out.append({"category": taste.category, "timeline": timeline, "friend": friend})
        return {"preferences": out}


def plan_preferences(
    rng: random.Random, cast: Cast, scale: Scale, *, vegetarian: bool, diet_beats: tuple[str, ...]
) -> PreferencePlan:
    if scale.covers("Latest Preference Recognition"):
        categories = sample(rng, tuple(CATEGORIES), scale.pick(3, 5))
        drifting = scale.pick(1, 2)
    elif scale.covers("Implicit Preference Recommendation"):
        # Recommendation only: one steady taste in a category with things to recommend.
        categories = [pick(rng, [c for c in CATEGORIES if CATEGORIES[c].items])]
        drifting = 0
    else:
        categories, drifting = [], 0
    tastes = []
    for i, category in enumerate(categories):
        values = sample(rng, CATEGORIES[category].values, 5)
        count = 2 if i < drifting else 1
        friend = pick(rng, cast.people).name
        tastes.append(
            _Taste(
                category, tuple(values[:count]), friend, values[count], tuple(values[count + 1 :])
            )
        )
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]] = {}
    for taste in tastes:
        _taste_beats(rng, taste, scale, texts)
    recommend: tuple[str, ...] = ()
    if scale.covers("Implicit Preference Recommendation"):
        with_items = [t.category for t in tastes if CATEGORIES[t.category].items]
        recommend = tuple(sample(rng, with_items, min(len(with_items), scale.pick(1, 2))))
    latest = scale.covers("Latest Preference Recognition")
    return PreferencePlan(tuple(tastes), latest, recommend, vegetarian, diet_beats, texts)


def _taste_beats(
    rng: random.Random,
    taste: _Taste,
    scale: Scale,
    texts: dict[str, tuple[float, str, str, tuple[str, ...]]],
) -> None:
    spec = CATEGORIES[taste.category]
    prefix = f"pref:{taste.category}"

    def add(key: str, at: float, templates: tuple[str, ...], values: dict[str, str]) -> None:
        texts[key] = (at, fill(rng, templates, values), pick(rng, _REPLIES), tuple(values.values()))

    if len(taste.values) == 2:
        old, new = taste.values
        for i, statement in enumerate(sample(rng, spec.statements, scale.pick(1, 2))):
            add(f"{prefix}:old:{i}", rng.uniform(0.02, 0.3), (statement,), {"value": old})
        add(f"{prefix}:new:0", rng.uniform(0.45, 0.7), spec.changes, {"old": old, "new": new})
        if scale.large:
            add(f"{prefix}:new:1", rng.uniform(0.75, 0.95), spec.statements, {"value": new})
    else:
        for i, statement in enumerate(sample(rng, spec.statements, scale.pick(1, 2))):
            add(
                f"{prefix}:stated:{i}",
                rng.uniform(0.0, 0.9),
                (statement,),
                {"value": taste.values[0]},
            )
    if len(taste.values) == 1 and not scale.large:
        return  # room is short in 32k histories: friends' tastes only where a taste drifts
    add(
        f"{prefix}:friend",
        rng.uniform(0.0, 0.95),
        spec.friend,
        {"friend": taste.friend, "value": taste.friend_value},
    )
