"""Growth aspect: how much the user knows about things (Tiered Explanation Delivery) and the
lasting facts that should shape advice in new situations (Generalizing to New Scenarios).

    plan = plan_growth(rng, cast, scale)

Expertise: the user's job makes them an expert in its domain; they say so, and say they are
a beginner (or dabbler) in other domains. A tiered question asks for an explanation; the
four options explain the same thing for a beginner, an intermediate, an expert, and in one
curt line; the right one fits the user's stated level.

Constraints ("I don't eat meat", "heights and me don't mix") are said in passing. A
generalizing question asks for advice in a situation the user never mentioned; one option
respects the constraint, three break it. Constraints that would clash with the rest of the
life (a cat allergy and a pet cat, fear of heights and a climbing hobby) are never combined.

A short history may cover only one of the two tasks (`Scale.covers`); the other's beats are
then not planned (a user without constraints is not known to be vegetarian).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from personavlm.synth.core import Beat, Draft, Placement, Scale, fill, pick, sample
from personavlm.synth.world import Cast

__all__ = ["CONSTRAINTS", "DOMAINS", "GrowthPlan", "plan_growth"]


@dataclass(frozen=True, slots=True)
class _Domain:
    noun: str  # how the user names the field
    topic: str  # what the question asks to explain
    tiers: dict[str, str]  # level -> explanation; "terse" is never the right one


DOMAINS: dict[str, _Domain] = {
    "medicine": _Domain(
        "medicine",
        "how vaccines actually protect people",
        {
            "beginner": "A vaccine shows your body a harmless 'wanted poster' of a germ, so if the "
            "real one turns up later your defences recognise it and fight it off early.",
            "intermediate": "Vaccines present an antigen, such as an inactivated virus or a "
            "protein, so the immune system makes antibodies and memory cells; a later "
            "infection then meets a faster, stronger response.",
            "expert": "They induce adaptive immunity: antigen presentation primes CD4+ and CD8+ T "
            "cells, germinal-centre maturation yields high-affinity neutralising antibodies, and "
            "long-lived plasma and memory B cells give durable protection; adjuvants boost innate "
            "signalling.",
            "terse": "They train the immune system.",
        },
    ),
    "programming": _Domain(
        "coding",
        "what recursion is",
        {
            "beginner": "It's like Russian dolls: you solve a task by opening a slightly smaller "
            "version of the same task, again and again, until the tiniest doll needs no opening.",
            "intermediate": "A recursive function calls itself on a smaller input and has a base "
            "case that stops the calls; factorial(n) = n * factorial(n - 1) with factorial(0) = 1 "
            "is the classic example.",
            "expert": "Self-reference over a well-founded measure: each call shrinks the argument "
            "toward the base case, frames live on the call stack, and tail-call elimination or an "
            "explicit stack turns it into iteration; structural recursion mirrors inductive types.",
            "terse": "A function that calls itself.",
        },
    ),
    "finance": _Domain(
        "money and investing",
        "how compound interest works",
        {
            "beginner": "Think of a snowball rolling downhill: the interest you earn is added to "
            "your savings, and next year you earn interest on that bigger pile too, so it grows "
            "faster and faster.",
            "intermediate": "Interest is added to the principal each period, so the balance grows "
            "exponentially: balance = principal x (1 + rate)^years, and more frequent compounding "
            "grows it slightly faster.",
            "expert": "Discrete exponential growth, A = P(1 + r/n)^(nt), converging to Pe^(rt) "
            "under continuous compounding; in practice what matters is the effective annual rate "
            "net of fees, taxes and inflation.",
            "terse": "Interest on interest.",
        },
    ),
    "cooking": _Domain(
        "cooking",
        "why bread dough needs kneading",
        {
            "beginner": "Kneading is like stretching a tangle of rubber bands into a net: the "
            "dough gets stretchy so it can hold air bubbles and rise into a fluffy loaf.",
            "intermediate": "Kneading develops gluten: glutenin and gliadin in the flour link "
            "into elastic strands that trap the gas the yeast makes, which gives the loaf its "
            "structure.",
            "expert": "Mechanical work aligns glutenin polymers and forms disulphide cross-links "
            "while gliadin plasticises the network; good development balances extensibility and "
            "elasticity for gas retention, which autolyse and stretch-and-folds reach with less "
            "shear.",
            "terse": "To build gluten.",
        },
    ),
    "photography": _Domain(
        "photography",
        "what a camera's aperture does",
        {
            "beginner": "The aperture is like the pupil of your eye: a bigger opening lets in more "
            "light and makes the background soft and blurry, a smaller one keeps more of the "
            "picture sharp.",
            "intermediate": "Aperture is the lens opening, measured in f-stops: f/1.8 lets in lots "
            "of light with a shallow depth of field, while f/11 keeps more of the scene in focus.",
            "expert": "The f-number is focal length over entrance-pupil diameter; each stop halves "
            "the light, depth of field scales with it and subject distance, and stopping down past "
            "the lens's sweet spot trades aberration control for diffraction softening.",
            "terse": "It sets how much light gets in.",
        },
    ),
    "music": _Domain(
        "music theory",
        "what a chord progression is",
        {
            "beginner": "It's the order in which a song moves between groups of notes played "
            "together, a bit like a story going from home, off on an adventure, and back home.",
            "intermediate": "A chord progression is a sequence of chords, often named by scale "
            "degree: I-V-vi-IV in C major is C, G, A minor and F, the backbone of many pop songs.",
            "expert": "Functional harmony in motion: tonic, predominant and dominant functions "
            "joined by voice leading, with cadential formulas and secondary dominants or modal "
            "interchange colouring the path back to the tonic.",
            "terse": "A series of chords.",
        },
    ),
    "gardening": _Domain(
        "gardening",
        "how composting works",
        {
            "beginner": "Composting lets nature recycle: tiny creatures and bugs munch through "
            "your peelings and leaves and turn them into rich, crumbly food for your plants.",
            "intermediate": "Microbes break down organic matter; mixing nitrogen-rich greens "
            "with carbon-rich browns, keeping it moist and turning it for air gives finished "
            "compost in a few months.",
            "expert": "Aerobic decomposition by mesophilic then thermophilic microbial succession; "
            "a C:N ratio near 30:1, 50-60% moisture and enough oxygen hold the pile at 55-65 C "
            "long enough to sanitise it before curing.",
            "terse": "Things rot into soil.",
        },
    ),
    "cars": _Domain(
        "cars",
        "what a turbocharger does",
        {
            "beginner": "A turbo uses the engine's waste exhaust to spin a little fan that pushes "
            "extra air into the engine, and more air means it can burn more fuel and go faster.",
            "intermediate": "Exhaust gas drives a turbine linked to a compressor that forces more "
            "air into the cylinders; with more fuel that gives more power from a smaller engine, "
            "with some lag at low revs.",
            "expert": "Exhaust enthalpy drives the turbine on a shaft shared with the compressor, "
            "raising manifold pressure; the wastegate governs boost, intercooling raises charge "
            "density, and twin-scroll or variable-geometry housings cut lag.",
            "terse": "It forces more air into the engine.",
        },
    ),
}
_LEVEL_TEXTS = {
    "beginner": (
        "I know absolutely nothing about {noun}, it all goes over my head.",
        "Honestly {noun} is a total mystery to me.",
        "I've never understood the first thing about {noun}.",
    ),
    "intermediate": (
        "I did an evening course in {noun} a while back, so I know the basics.",
        "I dabble in {noun}, I know a bit but nothing fancy.",
    ),
    "expert": (
        "Been working in {noun} for over a decade now, it's my bread and butter.",
        "Colleagues come to me with their {noun} questions, it's literally my job.",
    ),
}
_LEVEL_REPLIES = (
    "Everyone has their own areas, that's completely fine.",
    "Good to know where you're coming from!",
    "Thanks, that helps me pitch things right for you.",
)
_EXPLAIN_QUERIES = (
    "Could you explain {topic} to me?",
    "Can you walk me through {topic}?",
    "I'd love a quick explanation of {topic}.",
)


@dataclass(frozen=True, slots=True)
class _Constraint:
    fact: str  # the string every statement of it contains
    statements: tuple[str, ...]
    scenarios: tuple[tuple[str, str, tuple[str, str, str]], ...]  # query, right, three wrong


CONSTRAINTS: dict[str, _Constraint] = {
    "vegetarian": _Constraint(
        "meat",
        (
            "I don't eat meat, haven't for about ten years.",
            "The canteen had nothing without meat in it again, so chips it was.",
            "Made a big lentil stew tonight, meat-free as always.",
        ),
        (
            (
                "My team wants to go out for dinner and I get to pick. Where should we go?",
                "the falafel and mezze bar on the corner",
                (
                    "the Brazilian all-you-can-eat steakhouse",
                    "the burger place famous for bacon stacks",
                    "the hog roast night at the pub",
                ),
            ),
            (
                "I'm hosting a barbecue this weekend. What should I grill for myself?",
                "sweetcorn and portobello mushroom burgers",
                ("pork sausages", "chicken wings", "beef burgers"),
            ),
        ),
    ),
    "heights": _Constraint(
        "heights",
        (
            "Couldn't go near the edge of the viewing platform, my fear of heights is ridiculous.",
            "Walked over a tall footbridge today and my legs turned to jelly. Heights, man.",
            "I get dizzy on a step ladder; heights and me just don't mix.",
        ),
        (
            (
                "My friends are planning a day out for my birthday. Which idea would suit me best?",
                "an afternoon at the science museum and dinner after",
                (
                    "the glass-floor skywalk on the tower",
                    "a hot-air balloon ride at sunrise",
                    "a via ferrata route along the cliffs",
                ),
            ),
            (
                "I've got a free afternoon in a new city. What should I do with it?",
                "a guided food tour of the old market",
                (
                    "the cathedral's rooftop tower climb",
                    "the zip line across the gorge",
                    "the cable car up to the summit viewing deck",
                ),
            ),
        ),
    ),
    "cat_allergy": _Constraint(
        "cats",
        (
            "I'm allergic to cats, my eyes swell up within minutes.",
            "Spent the evening at a friend's with two cats and sneezed non-stop, stupid allergy.",
        ),
        (
            (
                "Where should I stay for my weekend away?",
                "a modern hotel room in the centre",
                (
                    "a cosy B&B run by someone with five cats",
                    "house-sitting for a friend's two cats",
                    "the guesthouse above the cat cafe",
                ),
            ),
        ),
    ),
    "no_licence": _Constraint(
        "licence",
        (
            "I never learned to drive, so no licence for me.",
            "Had to beg a lift again, the downside of not having a driving licence.",
        ),
        (
            (
                "How should I get to the wedding out in the countryside?",
                "the train and then a taxi from the station",
                (
                    "hire a car and drive there",
                    "drive my own car down",
                    "borrow a van and drive the gang",
                ),
            ),
            (
                "What's the best way for me to get to the coast next weekend?",
                "the direct coach from the bus station",
                (
                    "rent a car and do the coastal drive",
                    "drive down myself after work",
                    "share the driving with a friend",
                ),
            ),
        ),
    ),
    "cannot_swim": _Constraint(
        "swim",
        (
            "I can't swim, never learned as a kid.",
            "Stayed in the shallow end again because I can't swim, a bit embarrassing.",
        ),
        (
            (
                "I'm booking one holiday activity. Which one makes sense for me?",
                "a guided cycling tour of the vineyards",
                (
                    "a snorkelling trip out to the reef",
                    "a day of open-water kayaking",
                    "a wild-swimming excursion",
                ),
            ),
        ),
    ),
    "crowds": _Constraint(
        "crowds",
        (
            "Packed trains make me want to scream, I really can't stand crowds.",
            "Left the concert early, the crowds were too much for me.",
        ),
        (
            (
                "Any ideas for my New Year's Eve?",
                "a small dinner at a friend's flat",
                (
                    "the fireworks in the packed city square",
                    "a huge club night downtown",
                    "the sold-out countdown festival",
                ),
            ),
            (
                "What should I do on Saturday afternoon?",
                "a quiet walk in the botanical garden",
                (
                    "the first day of the big shopping centre sale",
                    "the stadium match everyone's going to",
                    "the street festival in the main square",
                ),
            ),
        ),
    ),
}
_CONSTRAINT_REPLIES = (
    "Good to know, I'll keep that in mind when I suggest things.",
    "That makes sense, thanks for telling me.",
    "Noted, no judgement at all.",
)


@dataclass(frozen=True, slots=True)
class GrowthPlan:
    levels: dict[str, str]  # domain -> beginner / intermediate / expert
    constraints: tuple[str, ...]
    level_beats: tuple[tuple[str, str, float], ...]  # (beat key, domain, at)
    constraint_beats: tuple[tuple[str, str, float], ...]  # (beat key, constraint, at)
    beat_texts: dict[str, tuple[str, str]]

    def beats(self) -> list[Beat]:
        out = []
        for key, domain, at in self.level_beats:
            user, reply = self.beat_texts[key]
            out.append(Beat(key, at, user, reply, (DOMAINS[domain].noun,)))
        for key, name, at in self.constraint_beats:
            user, reply = self.beat_texts[key]
            out.append(Beat(key, at, user, reply, (CONSTRAINTS[name].fact,)))
        return out

    def drafts(self, rng: random.Random, placed: Placement) -> list[Draft]:
        out = []
        for domain, level in self.levels.items():
            spec = DOMAINS[domain]
            wrong = tuple(text for tier, text in spec.tiers.items() if tier != level)
            evidence = tuple(k for k, d, _ in self.level_beats if d == domain)
            query = fill(rng, _EXPLAIN_QUERIES, {"topic": spec.topic})
            out.append(
                Draft(
                    "Tiered Explanation Delivery",
                    query,
                    spec.tiers[level],
                    wrong,
                    evidence,
                    (spec.noun,),
                )
            )
        for name in self.constraints:
            spec_c = CONSTRAINTS[name]
            query, right, wrong3 = pick(rng, spec_c.scenarios)
            evidence = tuple(k for k, c, _ in self.constraint_beats if c == name)
            out.append(
                Draft(
                    "Generalizing to New Scenarios",
                    query,
                    right,
                    wrong3,
                    evidence,
                    (spec_c.fact,),
                )
            )
        return out

    def truth(self, placed: Placement) -> dict[str, Any]:
        return {
            "expertise": {
                domain: {
                    "level": level,
                    "turns": [placed[k].id for k, d, _ in self.level_beats if d == domain],
                }
                for domain, level in self.levels.items()
            },
            "constraints": {
                name: [placed[k].id for k, c, _ in self.constraint_beats if c == name]
                for name in self.constraints
            },
        }


def plan_growth(rng: random.Random, cast: Cast, scale: Scale) -> GrowthPlan:
    levels: dict[str, str] = {}
    if scale.covers("Tiered Explanation Delivery"):
        others = sample(rng, [d for d in DOMAINS if d != cast.expert_domain], 2)
        levels = {cast.expert_domain: "expert", others[0]: "beginner"}
        if scale.large:
            levels[others[1]] = "intermediate"
    allowed = [c for c in CONSTRAINTS if not (c == "cat_allergy" and cast.pet_species == "cat")]
    said = scale.pick(1, 2) if scale.covers("Generalizing to New Scenarios") else 0
    constraints = tuple(sample(rng, allowed, said))
    texts: dict[str, tuple[str, str]] = {}
    level_beats = []
    for domain, level in levels.items():
        key = f"level:{domain}"
        noun = {"noun": DOMAINS[domain].noun}
        texts[key] = (fill(rng, _LEVEL_TEXTS[level], noun), pick(rng, _LEVEL_REPLIES))
        level_beats.append((key, domain, rng.uniform(0.0, 0.8)))
    constraint_beats = []
    for name in constraints:
        statements = sample(rng, CONSTRAINTS[name].statements, scale.pick(1, 2))
        for i, statement in enumerate(statements):
            key = f"constraint:{name}:{i}"
            texts[key] = (statement, pick(rng, _CONSTRAINT_REPLIES))
            constraint_beats.append((key, name, rng.uniform(0.0, 0.85)))
    return GrowthPlan(levels, constraints, tuple(level_beats), tuple(constraint_beats), texts)
