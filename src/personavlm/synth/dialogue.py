"""The rendered history: beats placed on the schedule in order, small talk in between, and
every user turn worded in the user's voice of that moment.

    turns, placement = render_history(rng, slots, beats, traits)

Placement keeps the beats' order (sorted by `at`) and puts each as close to its wanted share
of the history as the remaining room allows, so "old taste" always comes before "new taste".
At least a quarter of the turns stay small talk: when the beats would take more, neighbouring
shareable beats are said together in one turn ("Rent in Leeds keeps climbing. Lunch with
Tom..."), spread evenly over the history. If that is still too many (`fits`), the planner
(generate.py) drops tasks from the user's history; placing never squeezes out small talk.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from personavlm.synth.core import Beat, Slot
from personavlm.synth.filler import next_filler
from personavlm.synth.pictures import Picture
from personavlm.synth.style import personalise
from personavlm.synth.world import TraitPlan

__all__ = ["SMALL_TALK_SHARE", "Turn", "fits", "place_beats", "render_history"]

SMALL_TALK_SHARE = 0.25  # the least share of turns left to small talk


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange of the history, as written to the files."""

    slot: Slot
    user: str  # with "<img>" where the picture is
    assistant: str
    beats: tuple[str, ...]  # the beat keys said in this turn; () for small talk
    facts: tuple[str, ...]  # strings a paraphrase must keep
    picture: Picture | None
    marker: str | None  # the trait the wording shows, "trait:pole"


def fits(beats: Sequence[Beat], n_turns: int) -> bool:
    """Whether `beats` fit in `n_turns` turns with the small-talk share kept (merging
    neighbouring shareable beats as `place_beats` does)."""
    return len(_groups(beats, n_turns)) <= _room(n_turns)


def place_beats(beats: Sequence[Beat], slots: Sequence[Slot]) -> list[tuple[Slot, list[Beat]]]:
    """(slot, the beats said in it), in order. Each group goes at its wanted share of the
    history, but after the group before it and early enough to leave a slot for every group
    after it. Beats that do not fit (`fits`) are a planning bug: AssertionError."""
    groups = _groups(beats, len(slots))
    if len(groups) > _room(len(slots)):
        raise AssertionError(
            f"{len(beats)} beats do not fit in {len(slots)} turns with "
            f"{SMALL_TALK_SHARE:.0%} small talk"
        )
    out = []
    previous = -1
    for k, group in enumerate(groups):
        wanted = round(min(1.0, max(0.0, group[0].at)) * (len(slots) - 1))
        index = min(max(previous + 1, wanted), len(slots) - (len(groups) - k))
        out.append((slots[index], group))
        previous = index
    return out


def _room(n_turns: int) -> int:
    """How many turns may carry beats: the rest is the small-talk floor."""
    return n_turns - math.ceil(SMALL_TALK_SHARE * n_turns)


def _groups(beats: Sequence[Beat], n_turns: int) -> list[list[Beat]]:
    ordered = sorted(beats, key=lambda b: b.at)  # stable: equal shares keep plan order
    return _pair_up(ordered, _room(n_turns))


def _pair_up(ordered: list[Beat], room: int) -> list[list[Beat]]:
    """Groups of one beat, with evenly spread neighbouring shareable pairs merged until the
    groups fit in `room` (or no pair is left)."""
    pairs = []  # start indices of non-overlapping shareable neighbour pairs
    i = 0
    while i < len(ordered) - 1:
        if ordered[i].shareable and ordered[i + 1].shareable:
            pairs.append(i)
            i += 2
        else:
            i += 1
    needed = min(len(pairs), max(0, len(ordered) - room))
    merged = {pairs[round(n * len(pairs) / needed)] for n in range(needed)} if needed else set()
    groups: list[list[Beat]] = []
    skip = False
    for i, beat in enumerate(ordered):
        if skip:
            skip = False
            continue
        if i in merged:
            groups.append([beat, ordered[i + 1]])
            skip = True
        else:
            groups.append([beat])
    return groups


def render_history(
    rng: random.Random, slots: Sequence[Slot], beats: Sequence[Beat], traits: TraitPlan
) -> tuple[list[Turn], dict[str, Slot]]:
    """The turns, and where each beat was said (beat key -> slot)."""
    placed = place_beats(beats, slots)
    by_slot = {slot.id: group for slot, group in placed}
    placement = {beat.key: slot for slot, group in placed for beat in group}
    recent: deque[int] = deque(maxlen=12)  # no small talk repeats within 12 filler turns
    turns = []
    for slot in slots:
        group = by_slot.get(slot.id, [])
        if group:
            user = " ".join(beat.user for beat in group)
            reply = group[-1].assistant
        else:
            user, reply = next_filler(rng, recent)
        user, marker = personalise(rng, user, traits.at(slot.time))
        turns.append(
            Turn(
                slot=slot,
                user=user,
                assistant=reply,
                beats=tuple(beat.key for beat in group),
                facts=tuple(fact for beat in group for fact in beat.facts),
                picture=next((beat.picture for beat in group if beat.picture), None),
                marker=marker,
            )
        )
    return turns, placement
