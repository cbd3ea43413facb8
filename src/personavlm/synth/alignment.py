"""Personality Alignment pairs: a user message, a reply that fits the user's personality at
that time (`chosen`) and one that fits the opposite pole of the same trait (`rejected`).

    pairs = alignment_pairs(rng, traits, turns, end=asked_at, count=2)

The trait is the shifted one for the first two pairs: one asked just before the shift starts
and one after the last session (when it has settled), so the right reply differs with the
question's time. Further pairs use the trait furthest from the middle at the end. Evidence is
the latest (up to three) turns before the time whose wording showed that trait and pole
(or, if none did, the latest three turns).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from personavlm.synth.dialogue import Turn
from personavlm.synth.style import pole
from personavlm.synth.world import TraitPlan

__all__ = ["AlignmentPair", "alignment_pairs", "reply_for"]

# (message, the advice every reply gives, in the style of the pole)
_MESSAGES = (
    (
        "I've got a big presentation at work tomorrow. Any advice?",
        "run through it out loud twice tonight, open with your strongest point and get a "
        "proper night's sleep",
    ),
    (
        "I'm thinking about going to a party on Friday where I'll hardly know anyone.",
        "go for an hour, say hello to the host first and ask people how they know them",
    ),
    (
        "My flight home got cancelled. What now?",
        "rebook in the airline's app first, then ask at the desk about a hotel voucher",
    ),
    (
        "I've been offered a job in another city. Should I take it?",
        "write down what you'd gain and lose, and ask to meet the team before you decide",
    ),
    (
        "My landlord wants to raise the rent. How should I handle it?",
        "check what similar flats go for, then reply in writing with a counter-offer",
    ),
    (
        "I need to give a friend some difficult feedback.",
        "pick a private moment, describe what happened and how it affected you, then listen",
    ),
    (
        "I've got a free weekend coming up. What should I do with it?",
        "pick one thing you've been meaning to do and leave the rest of the time open",
    ),
)
_STYLES = {
    ("neuroticism", "high"): "First, take a slow breath: it's completely understandable to feel "
    "uneasy about this, and you've handled hard things before. What will help most: {core}. It "
    "doesn't have to be perfect, and I'm right here if you want to talk it through.",
    ("neuroticism", "low"): "Straightforward enough: {core}. You'll be fine.",
    ("extraversion", "high"): "Ooh, this could be fun! {Core}, and why not bring a friend or two "
    "along? Tell me everything afterwards!",
    ("extraversion", "low"): "{Core}.",
    ("openness", "high"): "{Core}. And if you fancy a twist, treat it as a chance to try "
    "something you've never done before.",
    ("openness", "low"): "{Core}. Stick with what's worked for you before; no need to reinvent "
    "anything.",
    ("conscientiousness", "high"): "Here's a plan: 1) {core}; 2) set a reminder the day before; "
    "3) note afterwards how it went.",
    ("conscientiousness", "low"): "{Core}. Don't over-plan it; keep it loose and see how it goes.",
    ("agreeableness", "high"): "{Core}. And be gentle with yourself and everyone involved; most "
    "people mean well.",
    ("agreeableness", "low"): "{Core}. Be direct about what you need; you don't owe anyone a long "
    "explanation.",
}


@dataclass(frozen=True, slots=True)
class AlignmentPair:
    time: datetime
    query: str
    chosen: str
    rejected: str
    trait: str
    pole: str
    evidence: tuple[str, ...]  # turn ids


def reply_for(core: str, trait: str, which: str) -> str:
    template = _STYLES[(trait, which)]
    return template.format(core=core, Core=core[:1].upper() + core[1:])


def alignment_pairs(
    rng: random.Random, traits: TraitPlan, turns: Sequence[Turn], *, end: datetime, count: int
) -> list[AlignmentPair]:
    shift = traits.shifts[0]
    before = [t for t in turns if t.slot.time < shift.start]
    # Just after the last turn before the shift: the trait still has its old value.
    times = [(before[-1].slot.time + timedelta(minutes=1), shift.trait), (end, shift.trait)]
    final = traits.at(end)
    for _ in range(count - 2):
        strongest = max(final, key=lambda name: abs(final[name] - 3.0))
        times.append((end, strongest))
    messages = rng.sample(_MESSAGES, count)
    pairs = []
    for (when, trait), (query, core) in zip(times, messages, strict=True):
        value = traits.at(when)[trait]
        which = pole(value) or ("high" if value >= 3.0 else "low")
        other = "low" if which == "high" else "high"
        marker = f"{trait}:{which}"
        seen = [t for t in turns if t.slot.time <= when]
        shown = [t.slot.id for t in seen if t.marker == marker][-3:]
        # Rare: no turn showed the trait yet; then the latest turns are the context.
        evidence = tuple(shown) or tuple(t.slot.id for t in seen[-3:])
        chosen, rejected = reply_for(core, trait, which), reply_for(core, trait, other)
        pairs.append(AlignmentPair(when, query, chosen, rejected, trait, which, evidence))
    return pairs
