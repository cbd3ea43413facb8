"""Small talk: the turns between the beats, carrying no ground truth.

    user, reply = next_filler(rng, recent)

They are what a real history is mostly made of (weather, quick questions, how the day went),
and they keep fact turns from standing out by position. None of them states a preference,
relation, plan or picture.
"""

from __future__ import annotations

import random
from collections import deque

from personavlm.synth.core import pick

__all__ = ["FILLER", "next_filler"]

FILLER: tuple[tuple[str, str], ...] = (
    ("Morning! Raining again here.", "Morning! Perfect excuse for a hot drink and a slow start."),
    ("What's another word for 'important'?", "Try 'crucial', 'vital', 'essential' or 'key'."),
    (
        "How long should I boil an egg for a runny yolk?",
        "About six minutes from boiling, then into cold water.",
    ),
    (
        "Saw a clip about octopuses last night. Wild creatures.",
        "They really are: three hearts and blue blood!",
    ),
    ("Ugh, Mondays.", "Hang in there. Anything I can take off your plate?"),
    (
        "Can you remind me how to convert Celsius to Fahrenheit?",
        "Multiply by 9/5 and add 32: 20 C is 68 F.",
    ),
    (
        "Tell me a joke, I need cheering up.",
        "Why did the scarecrow win an award? He was outstanding in his field.",
    ),
    ("Long day. Just got home.", "Welcome back! Time to put your feet up."),
    ("Is it 'affect' or 'effect' in 'it will affect the plan'?", "'Affect': it's the verb there."),
    (
        "Any tips for staying focused in the afternoon?",
        "Short walk, a glass of water, and one small task to restart.",
    ),
    (
        "The sunset was unreal this evening.",
        "Those evenings are the best. Did you get to enjoy it?",
    ),
    ("How many tablespoons are in a cup?", "Sixteen US tablespoons make a cup."),
    (
        "Couldn't sleep much last night, brain wouldn't switch off.",
        "That's rough. A wind-down routine can help; want some ideas?",
    ),
    ("What's a good name for a team quiz?", "How about 'Quiz Khalifa' or 'Let's Get Quizzical'?"),
    ("Finally cleaned the oven. Feel like a new person.", "Ha, that's a job worth celebrating!"),
    (
        "How do I get coffee stains out of a shirt?",
        "Rinse with cold water from the back, then a bit of washing-up liquid.",
    ),
    ("Power cut for an hour this afternoon, very dramatic.", "Hope everything came back on okay!"),
    ("Is it rude to leave a group chat?", "Not if you say a quick goodbye first, it's your time."),
    (
        "What's the capital of Australia again?",
        "Canberra, not Sydney, which catches a lot of people out.",
    ),
    ("Just booked a dentist check-up, feeling very adult.", "Look at you being organised!"),
    (
        "Help me word a polite 'no' to an invitation?",
        "'Thanks so much for thinking of me, I can't make it this time.'",
    ),
    ("Windy enough to blow me off the bridge today.", "Wrap up warm and hold on to your hat!"),
    ("How long does it take to walk 5 km?", "Roughly an hour at an easy pace."),
    ("Lazy Sunday, doing absolutely nothing.", "Sounds perfect, you've earned it."),
    (
        "Spell 'necessary' for me? I always get it wrong.",
        "N-E-C-E-S-S-A-R-Y: one collar, two sleeves.",
    ),
    ("Train was packed but at least it was on time.", "Small victories!"),
    (
        "What's a quick lunch I can make in ten minutes?",
        "A wrap with hummus, salad and whatever's in the fridge.",
    ),
    ("Forgot my umbrella, obviously it poured.", "Classic. Hope you dried off!"),
    ("Remind me what day the clocks change?", "The last Sunday of the month, in the early hours."),
    ("Bit of a slow week at work.", "A quiet week can be a nice breather."),
    ("How do you say 'thank you' in Italian?", "'Grazie'!"),
    (
        "Just finished a really good book, feeling a bit lost now.",
        "That post-book feeling! Want a suggestion for the next one?",
    ),
)


def next_filler(rng: random.Random, recent: deque[int]) -> tuple[str, str]:
    """A small-talk exchange not among the `recent` ones (which it updates)."""
    choice = pick(rng, [i for i in range(len(FILLER)) if i not in recent])
    recent.append(choice)
    return FILLER[choice]
