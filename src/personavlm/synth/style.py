"""How the user's current Big Five traits show in their wording.

    text, marker = personalise(rng, "Signed up for a pottery class.", traits.at(when))
    # -> ("Signed up for a pottery class. I keep worrying I'll be the worst one there.",
    #     "neuroticism:high")

A trait shows when it is far from the middle (|value - 3| >= 0.8): about half the turns get
one phrase of the most marked traits (weighted by how marked they are), added after the text
(or before it, for worried openers). Low extraversion also makes the text terse: no
exclamation marks. The marker ("trait:pole") is kept per turn, so personality alignment can
cite the turns that show the trait.
"""

from __future__ import annotations

import random

from personavlm.synth.core import pick

__all__ = ["MARKED", "personalise", "pole"]

MARKED = 0.8  # distance from 3.0 at which a trait shows in the wording

# (trait, pole) -> (openers, closers). Openers go before the text, closers after it.
_PHRASES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("neuroticism", "high"): (
        ("Sorry, slightly anxious today.", "I'm a bit on edge.", "Ugh, I keep fretting."),
        (
            "I keep worrying it'll go wrong.",
            "Is that bad?",
            "I can't stop overthinking it.",
            "Hope I'm not messing this up.",
        ),
    ),
    ("neuroticism", "low"): ((), ("No stress though.", "All good really.", "Not fussed.")),
    ("extraversion", "high"): (
        ("Guess what!", "Hiya!"),
        (
            "Can't wait to tell everyone!",
            "Dragging the whole gang along, obviously!",
            "Such a fun crowd!",
        ),
    ),
    ("extraversion", "low"): ((), ("Anyway.", "That's all.", "Quiet day, which suits me.")),
    ("openness", "high"): (
        (),
        ("Always up for trying something new.", "Love a bit of novelty.", "Curious how it goes."),
    ),
    ("openness", "low"): ((), ("Prefer the usual, to be honest.", "Not one for surprises.")),
    ("conscientiousness", "high"): (
        (),
        ("Already in my planner.", "Made a checklist for it.", "Sorted it well in advance."),
    ),
    ("conscientiousness", "low"): ((), ("I'll probably forget, ha.", "Winging it as usual.")),
    ("agreeableness", "high"): (
        (),
        ("Hope your day's going well too.", "Thanks for listening, honestly.", "Bless them."),
    ),
    ("agreeableness", "low"): ((), ("Whatever.", "Not my problem, frankly.")),
}


def pole(value: float) -> str | None:
    """'high' or 'low' when a trait value shows in wording, else None."""
    if value >= 3.0 + MARKED:
        return "high"
    if value <= 3.0 - MARKED:
        return "low"
    return None


def personalise(
    rng: random.Random, text: str, traits: dict[str, float], *, chance: float = 0.5
) -> tuple[str, str | None]:
    """`text` in the user's current voice, and which trait it shows ("trait:pole")."""
    if traits["extraversion"] <= 3.0 - MARKED:
        text = text.replace("!", ".")
    marked = [(name, p) for name, value in traits.items() if (p := pole(value)) is not None]
    if not marked or rng.random() >= chance:
        return text, None
    weights = [abs(traits[name] - 3.0) for name, _ in marked]
    trait, which = rng.choices(marked, weights=weights)[0]
    openers, closers = _PHRASES[(trait, which)]
    if openers and rng.random() < 0.4:
        return f"{pick(rng, openers)} {text}", f"{trait}:{which}"
    # Close the sentence first, unless it ends with punctuation or a picture.
    ending = "" if text.endswith((".", "!", "?", ">")) else "."
    return f"{text}{ending} {pick(rng, closers)}", f"{trait}:{which}"
