"""The answers a perfect update model would give for a simulated user, and their tags text.

The simulator (`personavlm.synth`) knows what every turn states; this module turns that ground
truth into the replies the agent's update calls ask for (PAPER.md sections 2, 3 and 8), so an
"oracle" teacher can answer those calls and the recorded calls become SFT samples:

    from personavlm.synth import build_user
    from personavlm.train.targets import (
        core_target, procedural_target, reading_target, render_key_values, render_reading,
        render_semantic, render_topics, session_topics, turn_targets,
    )

    user = build_user(seed=1, user_id="u000", size="32k")
    semantic = turn_targets(user)                 # turn id -> SemanticTarget, history order
    turn = user.turns[3]
    render_semantic(semantic[turn.slot.id])       # '"reason": ...\\n"decision": true\\n...'
    render_reading(reading_target(user, turn))    # '"openness": 4\\n...'
    render_topics(session_topics(user, 0))        # episodic blocks of session 0
    render_key_values(core_target(user, 0))       # '"name": "Nina Romero"\\n...'
    render_key_values(procedural_target(user, 0))

Rules (the paper's, made exact for the simulator):
- Semantic: one candidate per exchange. A beat that states something not yet in semantic
  memory is kept; a repeat of a stored fact (the same fact in other words) is skipped as
  "already known"; a change (taste drift, relation change, hobby switch, goal outcome, a
  solved problem) is always new. Small talk and one-off visits are skipped. Pictures become a
  visual concept, "<the user's naming> (Image Object: <category>)", the first time a setting
  or the pet is shown; what only the pixels hold (colours, counts, objects, fur, markings)
  never enters the text, so questions about it still need the image.
- Episodic: each beat turn is a topic of its own, consecutive small talk one topic.
- Core and procedural: the state known at the end of a session (facts never forgotten).
Every value is one line with protocol markers escaped (`safe_text`), so the rendered replies
parse with the agent's own parsers (agent/formats.py) back to exactly these targets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from personavlm.agent.protocol import escape
from personavlm.errors import ValidationError
from personavlm.personality import TRAITS
from personavlm.synth.core import Beat
from personavlm.synth.dialogue import Turn
from personavlm.synth.generate import User
from personavlm.synth.growth import DOMAINS
from personavlm.synth.pictures import Pet
from personavlm.synth.preference import CATEGORIES

__all__ = [
    "MAX_PREFERENCES",
    "MAX_PROCEDURAL",
    "SMALL_TALK_REASON",
    "SemanticTarget",
    "TopicTarget",
    "core_target",
    "procedural_target",
    "reading_target",
    "render_key_values",
    "render_reading",
    "render_semantic",
    "render_topics",
    "safe_text",
    "session_topics",
    "turn_targets",
]

MAX_PROCEDURAL = 5  # PAPER.md section 2: at most ~5 procedural sentences
MAX_PREFERENCES = 7  # PAPER.md section 8: core preferences condensed to about 5-7 items
SMALL_TALK_REASON = "small talk, nothing durable"
_SMALL_TALK_WORDS = 8  # words of the first small-talk turn quoted in its topic summary


# --------------------------------------------------------------------------- targets


def safe_text(text: str) -> str:
    """`text` as one line with protocol markers escaped: line breaks (every kind
    `str.splitlines` knows) and runs of spaces become one space, and `<think>`, `<answer>`,
    `<retrieve>`, image markers and chat-template tokens (`<|...`) are escaped the way the
    agent escapes quoted text (agent/protocol.py), so a value can never end a field or a
    turn. Idempotent."""
    flat = re.sub(r"\s+", " ", " ".join(text.splitlines())).strip()
    return escape(flat)


def _keywords(words: Iterable[str]) -> tuple[str, ...]:
    """Keywords are written comma-separated: no commas inside one, no blanks, no repeats."""
    out: list[str] = []
    for word in words:
        clean = safe_text(word.replace(",", " "))
        if clean and clean not in out:
            out.append(clean)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SemanticTarget:
    """The one semantic-memory candidate of an exchange (PAPER.md section 8).

    Fields are normalised on construction (`safe_text`, keywords without commas), so the
    rendered reply parses back to exactly this target."""

    decision: bool
    reason: str
    content: str
    keywords: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", safe_text(self.reason))
        object.__setattr__(self, "content", safe_text(self.content))
        object.__setattr__(self, "keywords", _keywords(self.keywords))
        if self.decision and not self.content:
            raise ValidationError("a kept semantic candidate needs content")


@dataclass(frozen=True, slots=True)
class TopicTarget:
    """One episodic topic of a session: a third-person summary, keywords, and the 0-based
    exchange numbers it covers (ascending)."""

    summary: str
    keywords: tuple[str, ...]
    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", safe_text(self.summary))
        object.__setattr__(self, "keywords", _keywords(self.keywords))
        if not self.summary or not self.indices or list(self.indices) != sorted(self.indices):
            raise ValidationError("a topic needs a summary and ascending exchange numbers")


_SMALL_TALK = SemanticTarget(False, SMALL_TALK_REASON, "", ())


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True, slots=True)
class _World:
    """What the describers read, parsed once from the user's ground truth (`User.truth`)
    and beats. Positions are indices into `user.turns` (history order)."""

    name: str
    truth: dict[str, Any]
    beats: dict[str, Beat]
    positions: dict[str, int]  # beat key -> position of its turn

    def said(self, prefix: str, upto: int) -> bool:
        """Whether a beat whose key starts with `prefix` was said at or before `upto`."""
        return any(k.startswith(prefix) and p <= upto for k, p in self.positions.items())

    def first(self, prefix: str) -> int | None:
        """The position of the earliest beat whose key starts with `prefix`."""
        found = [p for k, p in self.positions.items() if k.startswith(prefix)]
        return min(found) if found else None

    def relations(self, person: str) -> list[str]:
        for entry in self.truth["relationships"]:
            if entry["name"] == person:
                return [str(stage["relation"]) for stage in entry["timeline"]]
        return []

    def preference(self, category: str) -> dict[str, Any]:
        return next(p for p in self.truth["preferences"] if p["category"] == category)

    def pet(self) -> tuple[str, str]:
        pet = self.truth["profile"]["pet"]
        return str(pet["species"]), str(pet["name"])


def _world(user: User) -> _World:
    order = {turn.slot.id: i for i, turn in enumerate(user.turns)}
    return _World(
        name=user.cast.name,
        truth=user.truth(),
        beats={beat.key: beat for aspect in user.aspects for beat in aspect.beats()},
        positions={key: order[slot.id] for key, slot in user.placement.items()},
    )


def _session_end(user: User, session: int) -> int:
    """The position of the session's last turn; unknown sessions are the caller's error."""
    positions = [i for i, t in enumerate(user.turns) if t.slot.session == session]
    if not positions:
        last = user.turns[-1].slot.session if user.turns else -1
        raise ValidationError(f"{user.user_id} has no session {session} (sessions 0..{last})")
    return positions[-1]


# --------------------------------------------------------------------------- beats


@dataclass(frozen=True, slots=True)
class _Said:
    """What one beat states, as the memories would word it."""

    statement: str  # a third-person sentence (episodic summaries)
    content: str  # the semantic memory (a visual concept for pictures)
    keywords: tuple[str, ...]
    identity: tuple[str, ...] | None  # what it states; None: nothing durable
    change: bool  # new even when `identity` is already stored
    reason: str  # why it is kept (or, without identity, why skipped)


def _said(
    sentence: str,
    identity: tuple[str, ...],
    reason: str,
    keywords: Iterable[str],
    *,
    change: bool = False,
) -> _Said:
    return _Said(sentence, sentence, tuple(keywords), identity, change, reason)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_FACTS = {  # fact kind -> (sentence, label)
    "occupation": ("{name} works as {a} {value}.", "occupation"),
    "hometown": ("{name} grew up in {value}.", "hometown"),
    "city": ("{name} lives in {value}.", "city"),
    "pet_name": ("{name} has a {species} named {value}.", "pet"),
    "birthday_month": ("{name}'s birthday is in {value}.", "birthday month"),
    "language": ("{name}'s native language is {value}.", "native language"),
}


def _fact(w: _World, parts: list[str], turn: Turn) -> _Said:
    kind = parts[1]
    template, label = _FACTS[kind]
    value = str(w.truth["facts"][kind]["value"])
    species, _ = w.pet()
    sentence = template.format(name=w.name, value=value, a=_article(value), species=species)
    keys = (*w.beats[":".join(parts)].facts, label, *([species] if kind == "pet_name" else []))
    return _said(sentence, ("fact", kind), f"new durable fact: {label}", keys)


def _picture(w: _World, parts: list[str], turn: Turn) -> _Said:
    picture = w.beats[":".join(parts)].picture
    if picture is None:
        raise AssertionError(f"picture beat {':'.join(parts)} has no picture")
    if isinstance(picture, Pet):
        # The species is the concept's category; the naming is what the user wrote: "my dog
        # Tofu" where the text says so, else just the name. Fur and markings stay unsaid.
        naming = f"my {picture.species} {picture.name}"
        if naming.lower() not in turn.user.lower():
            naming = picture.name
        statement = f"{w.name} shared a photo of the {picture.species} {picture.name}."
        content = f"{naming} (Image Object: {picture.species})"
        keys: tuple[str, ...] = (picture.name, picture.species, "pet", "photo")
        return _Said(statement, content, keys, ("pet", picture.name), False, "new visual concept")
    # Scenes: the user names only the setting ("my desk"); the objects, their colours and
    # counts and the wall are pixel-only, which is what the visual questions ask about.
    statement = f"{w.name} shared a photo of the {picture.setting}."
    content = f"my {picture.setting} (Image Object: {picture.setting})"
    keys = (picture.setting, "photo")
    return _Said(statement, content, keys, ("scene", picture.setting), False, "new visual concept")


_TASTES = {  # category -> how a value reads as a liking
    "soft drink": "{value}",
    "cuisine": "{value} food",
    "music": "{value} music",
    "sport": "watching {value}",
    "film": "{value}",
}
_CORE_TASTES = {  # category -> core memory key
    "soft drink": "favourite soft drink",
    "cuisine": "favourite cuisine",
    "music": "favourite music",
    "sport": "favourite sport to watch",
    "film": "favourite film genre",
}


def _taste(category: str, value: str) -> str:
    if category == "film" and not value.endswith("s"):
        return f"{value} films"  # "horror films"; "westerns" and "documentaries" as they are
    return _TASTES[category].format(value=value)


def _pref(w: _World, parts: list[str], turn: Turn) -> _Said:
    category, stage = parts[1], parts[2]
    entry = w.preference(category)
    values = [str(stage_["value"]) for stage_ in entry["timeline"]]
    keys = (*w.beats[":".join(parts)].facts, category, "preference")
    if stage == "friend":
        friend = entry["friend"]
        person = _person(w, str(friend["name"]), w.positions[":".join(parts)])
        sentence = f"{person} loves {_taste(category, str(friend['value']))}."
        identity = ("pref-friend", category, str(friend["name"]))
        return _said(sentence, identity, f"new fact about someone close: {category}", keys)
    if stage == "new" and parts[3] == "0":
        old, new = values[0], values[-1]
        sentence = f"{w.name} now prefers {_taste(category, new)} over {_taste(category, old)}."
        reason = f"preference changed: {category}"
        return _said(sentence, ("pref", category, new), reason, keys, change=True)
    value = values[-1] if stage == "new" else values[0]
    sentence = f"{w.name} loves {_taste(category, value)}."
    return _said(sentence, ("pref", category, value), f"new preference: {category}", keys)


def _person(w: _World, person: str, upto: int) -> str:
    """How a memory names someone: by the relation said so far in the history (a turn
    that introduces them counts), else as someone the user knows."""
    relations = w.relations(person)
    relation = None
    if len(relations) > 1 and w.said(f"rel:{person}:change:", upto):
        relation = relations[1]
    elif relations and w.said(f"rel:{person}:intro:", upto):
        relation = relations[0]
    if relation is None:
        return f"{person} (someone {w.name} knows)"
    if relation == "fell out":
        return f"{person} (a friend {w.name} has fallen out with)"
    return f"{w.name}'s {relation} {person}"


def _relation_sentence(name: str, person: str, relation: str) -> str:
    if relation == "fell out":
        return f"{name} has fallen out with {person}."
    return f"{person} is {name}'s {relation}."


def _change_sentence(name: str, person: str, old: str, new: str) -> str:
    if new == "fell out":
        return f"{name} has fallen out with {person}, formerly a {old}."
    if new == "close friend":
        return f"{name}'s {old} {person} has become a close friend."
    return f"{person}, formerly {name}'s {old}, is now {name}'s {new}."


def _rel(w: _World, parts: list[str], turn: Turn) -> _Said:
    person, stage = parts[1], parts[2]
    relations = w.relations(person)
    # Keywords name only the relations said by now: an introduction says nothing yet of a
    # later change.
    said = relations[:1] if stage == "intro" else relations
    keys = (*w.beats[":".join(parts)].facts, *said, "relationship")
    if stage == "intro":
        sentence = _relation_sentence(w.name, person, relations[0])
        return _said(sentence, ("rel", person, relations[0]), f"new relationship: {person}", keys)
    old, new = relations[0], relations[-1]
    if parts[3] == "0":
        sentence = _change_sentence(w.name, person, old, new)
        reason = f"relationship changed: {person}"
        return _said(sentence, ("rel", person, new), reason, keys, change=True)
    # A mention after the change restates the new relation.
    sentence = _relation_sentence(w.name, person, new)
    return _said(sentence, ("rel", person, new), f"new relationship: {person}", keys)


_LEVELS = {
    "expert": "{name} is an expert in {noun}.",
    "intermediate": "{name} knows the basics of {noun} (intermediate level).",
    "beginner": "{name} is a complete beginner in {noun}.",
}


def _level(w: _World, parts: list[str], turn: Turn) -> _Said:
    domain = parts[1]
    level = str(w.truth["expertise"][domain]["level"])
    noun = DOMAINS[domain].noun
    sentence = _LEVELS[level].format(name=w.name, noun=noun)
    keys = (noun, level, "expertise")
    return _said(sentence, ("level", domain), f"new expertise level: {noun}", keys)


_CONSTRAINTS = {  # growth.CONSTRAINTS name -> (sentence, label)
    "vegetarian": ("{name} does not eat meat (vegetarian).", "vegetarian"),
    "heights": ("{name} is afraid of heights.", "fear of heights"),
    "cat_allergy": ("{name} is allergic to cats.", "cat allergy"),
    "no_licence": ("{name} cannot drive and has no driving licence.", "no driving licence"),
    "cannot_swim": ("{name} cannot swim.", "cannot swim"),
    "crowds": ("{name} cannot stand crowds.", "dislikes crowds"),
}


def _constraint(w: _World, parts: list[str], turn: Turn) -> _Said:
    template, label = _CONSTRAINTS[parts[1]]
    keys = (*w.beats[":".join(parts)].facts, label, "constraint")
    return _said(
        template.format(name=w.name), ("constraint", parts[1]), f"new constraint: {label}", keys
    )


_ANCHORS = {  # behavior.ANCHORS anchor -> how a routine sentence says it
    "hike": "the hike",
    "run": "the run",
    "swim": "the swim",
    "yoga class": "yoga class",
    "football practice": "football practice",
    "choir rehearsal": "choir rehearsal",
}


def _routine_of(w: _World, day: str) -> dict[str, Any]:
    return next(r for r in w.truth["routines"] if r["day"] == day)


def _routine_sentence(name: str, routine: Mapping[str, Any]) -> str:
    anchor = _ANCHORS[str(routine["anchor"])]
    return f"Every {routine['day']} after {anchor}, {name} goes to {routine['place']}."


def _routine(w: _World, parts: list[str], turn: Turn) -> _Said:
    routine = _routine_of(w, parts[1])
    keys = (*w.beats[":".join(parts)].facts, str(routine["anchor"]), "routine")
    sentence = _routine_sentence(w.name, routine)
    return _said(sentence, ("routine", parts[1]), f"new routine: {parts[1]}", keys)


def _oneoff(w: _World, parts: list[str], turn: Turn) -> _Said:
    # A single visit is a passing event, not a habit or a lasting taste: episodic only.
    place = w.beats[":".join(parts)].facts[0]
    sentence = f"{w.name} visited {place} once."
    return _Said(sentence, sentence, (place,), None, False, "a one-off visit, nothing durable")


def _interest(w: _World, parts: list[str], turn: Turn) -> _Said:
    stage, mention = int(parts[1]), parts[2]
    hobbies = [str(i["hobby"]) for i in w.truth["interests"]]
    keys = (*w.beats[":".join(parts)].facts, "hobby")
    if stage and mention == "0":
        old, new = hobbies[stage - 1], hobbies[stage]
        sentence = f"{w.name} has moved on from {old} to {new} as a hobby."
        return _said(sentence, ("interest", new), "hobby changed", keys, change=True)
    sentence = f"{w.name} has taken up {hobbies[stage]} as a hobby."
    return _said(sentence, ("interest", hobbies[stage]), "new hobby", keys)


_GOALS = {  # behavior.GOALS goal -> (what the user is doing, done, abandoned)
    "half marathon": (
        "training to run a half marathon",
        "{name} finished the half marathon.",
        "{name} pulled out of the half marathon because of a bad knee.",
    ),
    "spanish": (
        "learning to hold a conversation in Spanish",
        "{name} reached the goal of holding a conversation in Spanish.",
        "{name} gave up on learning Spanish.",
    ),
    "japan": (
        "saving up for a trip to Japan",
        "{name} reached the savings target for the Japan trip and is booking flights.",
        "{name} spent the Japan savings on car repairs, so the trip is off.",
    ),
    "reading": (
        "working on a challenge to read twenty books this year",
        "{name} finished the challenge of reading twenty books this year.",
        "{name} gave up on the challenge of reading twenty books this year.",
    ),
    "bathroom": (
        "redoing the bathroom at home, tiles and all",
        "{name} finished redoing the bathroom.",
        "{name} gave up on redoing the bathroom without help.",
    ),
    "certification": (
        "studying for a professional certification exam",
        "{name} passed the certification exam.",
        "{name} decided not to sit the certification exam.",
    ),
    "story": (
        "writing a short story for the city's writing competition",
        "{name} submitted the short story to the writing competition.",
        "{name} abandoned the short story for the writing competition.",
    ),
}


def _goal(w: _World, parts: list[str], turn: Turn) -> _Said:
    goal, stage = parts[1], parts[2]
    doing, done, abandoned = _GOALS[goal]
    keys = (*w.beats[":".join(parts)].facts, "goal")
    if stage == "stated":
        sentence = f"{w.name} has a goal: {doing}."
        return _said(sentence, ("goal", goal), f"new long-term goal: {goal}", keys)
    status = next(str(g["status"]) for g in w.truth["goals"] if g["goal"] == goal)
    sentence = {"done": done, "abandoned": abandoned}[status].format(name=w.name)
    reason = f"goal outcome: {goal} {status}"
    return _said(sentence, ("goal", goal, status), reason, (*keys, status), change=True)


_PROBLEMS = {  # intent.PROBLEMS problem -> (the open problem, once solved)
    "laptop": (
        "{name} is having trouble with an old, unreliable laptop.",
        "{name} got a new laptop that boots in seconds.",
    ),
    "shoes": (
        "{name}'s trainers are worn out and giving trouble.",
        "{name} got new trainers, so no more blisters.",
    ),
    "sleep": (
        "{name} is losing sleep because of a neighbour's barking dog.",
        "{name} got earplugs against the neighbour's barking dog and sleeps well now.",
    ),
    "plants": (
        "{name}'s plants keep dying because the flat gets too little light.",
        "{name} bought a grow light for the flat and the basil is thriving.",
    ),
    "commute": (
        "{name}'s bus to work keeps running late.",
        "{name} now cycles to work instead of taking the bus.",
    ),
    "chair": (
        "{name} is struggling with a bad desk chair.",
        "{name} got a new desk chair, which helps with back pain.",
    ),
    "phone": (
        "{name}'s phone screen is cracked.",
        "{name}'s cracked phone screen has been repaired.",
    ),
}


def _intent(w: _World, parts: list[str], turn: Turn) -> _Said:
    keys = (*w.beats[":".join(parts)].facts,)
    if parts[1] == "hobby":
        person = parts[2]
        hobby = str(w.truth["people_hobbies"][person]["hobby"])
        sentence = f"{_person(w, person, w.positions[':'.join(parts)])} is really into {hobby}."
        reason = f"new fact about someone close: {person}"
        return _said(sentence, ("hobby", person), reason, (*keys, "hobby"))
    if parts[1] == "problem":
        sentence = _PROBLEMS[parts[2]][0].format(name=w.name)
        reason = f"new ongoing problem: {parts[2]}"
        return _said(sentence, ("problem", parts[2]), reason, (*keys, "problem"))
    problem = next(iter(w.truth["solved_problem"]))
    sentence = _PROBLEMS[problem][1].format(name=w.name)
    reason = f"problem solved: {problem}"
    return _said(sentence, ("solved", problem), reason, (*keys, "solved"), change=True)


_Describer = Callable[[_World, list[str], Turn], _Said]
_FAMILIES: dict[str, _Describer] = {
    "fact": _fact,
    "picture": _picture,
    "pref": _pref,
    "rel": _rel,
    "level": _level,
    "constraint": _constraint,
    "routine": _routine,
    "oneoff": _oneoff,
    "interest": _interest,
    "goal": _goal,
    "intent": _intent,
}


def _describe(w: _World, turn: Turn) -> list[_Said]:
    out = []
    for key in turn.beats:
        parts = key.split(":")
        if parts[0] not in _FAMILIES:
            raise ValidationError(f"beat key {key!r} is of no known family")
        out.append(_FAMILIES[parts[0]](w, parts, turn))
    return out


# --------------------------------------------------------------------------- semantic


def turn_targets(user: User) -> dict[str, SemanticTarget]:
    """Turn id -> the semantic candidate of that exchange, in one pass over the history:
    what counts as "already known" is what earlier candidates stored."""
    world = _world(user)
    stored: dict[tuple[str, ...], str] = {}  # identity -> the content that stored it
    return {turn.slot.id: _decide(_describe(world, turn), stored) for turn in user.turns}


def _decide(said: Sequence[_Said], stored: dict[tuple[str, ...], str]) -> SemanticTarget:
    """Keep the first beat that is new. The reference format has one candidate per
    exchange, so a second new beat of a shared turn is not stored now; it stays unknown and
    is kept when the user says it again."""
    if not said:
        return _SMALL_TALK
    for item in said:
        if item.identity is not None and (item.change or item.identity not in stored):
            stored[item.identity] = item.content
            return SemanticTarget(True, item.reason, item.content, item.keywords)
    repeats = [s.identity for s in said if s.identity is not None]
    if repeats:
        return SemanticTarget(False, f"already known: {stored[repeats[0]]}", "", ())
    return SemanticTarget(False, said[0].reason, "", ())


# --------------------------------------------------------------------------- personality


def _round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def reading_target(user: User, turn: Turn) -> dict[str, int]:
    """The momentary Big Five reading at the turn's time: the simulator's trait values,
    rounded half away from zero and clamped to 1..5, in TRAITS order."""
    values = user.traits.at(turn.slot.time)
    return {name: min(5, max(1, _round_half_away(values[name]))) for name in TRAITS}


# --------------------------------------------------------------------------- session close


def session_topics(user: User, session: int) -> list[TopicTarget]:
    """The session's episodic topics: one per beat turn (its statements), one per run of
    consecutive small-talk turns. Together they cover every exchange once, in order."""
    _session_end(user, session)  # raises for an unknown session
    world = _world(user)
    topics: list[TopicTarget] = []
    chat: list[Turn] = []
    for turn in (t for t in user.turns if t.slot.session == session):
        if not turn.beats:
            chat.append(turn)
            continue
        if chat:
            topics.append(_small_talk_topic(world.name, chat))
            chat = []
        said = _describe(world, turn)
        summary = " ".join(s.statement for s in said)
        keywords = [k for s in said for k in s.keywords]
        topics.append(TopicTarget(summary, tuple(keywords), (turn.slot.turn,)))
    if chat:
        topics.append(_small_talk_topic(world.name, chat))
    return topics


def _small_talk_topic(name: str, chat: Sequence[Turn]) -> TopicTarget:
    # Honest and generic: small talk carries no ground truth, so the summary only quotes
    # how it began.
    words = chat[0].user.replace("<img>", " ").split()
    opening = " ".join(words[:_SMALL_TALK_WORDS]) + (
        " ..." if len(words) > _SMALL_TALK_WORDS else ""
    )
    summary = f"{name} made small talk: {opening}"
    return TopicTarget(summary, ("small talk",), tuple(t.slot.turn for t in chat))


_CORE_FACTS = (  # (fact kind, core key), in the order core memory lists them
    ("occupation", "occupation"),
    ("city", "city"),
    ("hometown", "hometown"),
    ("language", "native language"),
    ("birthday_month", "birthday month"),
)


def core_target(user: User, session: int) -> dict[str, str]:
    """The core profile known at the end of `session`: the name, each profile fact once a
    turn has stated it, then the latest taste per category and the current hobby (at most
    MAX_PREFERENCES preference items). Keys in a fixed order."""
    end = _session_end(user, session)
    w = _world(user)
    out = {"name": w.name}
    for kind, key in _CORE_FACTS:
        if kind in w.truth["facts"] and w.said(f"fact:{kind}:", end):
            out[key] = str(w.truth["facts"][kind]["value"])
    # The pet is known from a fact turn or from its photo (named there, species visible).
    if w.said("fact:pet_name:", end) or w.said("picture:pet:", end):
        species, pet = w.pet()
        out["pet"] = f"{_article(species)} {species} named {pet}"
    out.update(_core_preferences(w, end))
    return {key: safe_text(value) for key, value in out.items()}


def _core_preferences(w: _World, end: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for category in CATEGORIES:  # a fixed order, whatever order the plan drew them in
        entry = next((p for p in w.truth["preferences"] if p["category"] == category), None)
        if entry is None:
            continue
        timeline = entry["timeline"]
        if w.said(f"pref:{category}:new:", end):
            out[_CORE_TASTES[category]] = str(timeline[-1]["value"])
        elif w.said(f"pref:{category}:old:", end) or w.said(f"pref:{category}:stated:", end):
            out[_CORE_TASTES[category]] = str(timeline[0]["value"])
    hobbies = [str(i["hobby"]) for i in w.truth["interests"]]
    current = [h for i, h in enumerate(hobbies) if w.said(f"interest:{i}:", end)]
    if current:
        out["current hobby"] = current[-1]
    return dict(list(out.items())[:MAX_PREFERENCES])


def procedural_target(user: User, session: int) -> dict[str, str]:
    """Procedural memory at the end of `session`, at most MAX_PROCEDURAL entries: every
    routine said at least once by then (first said first), then the goals stated and not
    yet reported done or abandoned (stated first, first). Routines come first because they
    are what procedural memory is for; open goals fill the room left, and a finished goal
    leaves the list (its outcome is a semantic memory)."""
    end = _session_end(user, session)
    w = _world(user)
    entries: list[tuple[int, str, str]] = []  # (first said, key, sentence)
    for routine in w.truth["routines"]:
        day = str(routine["day"])
        first = w.first(f"routine:{day}:")
        if first is not None and first <= end:
            key = f"{day.lower()}_after_{str(routine['anchor']).split()[0]}"
            entries.append((first, key, _routine_sentence(w.name, routine)))
    goals: list[tuple[int, str, str]] = []
    for goal in w.truth["goals"]:
        name = str(goal["goal"])
        stated = w.first(f"goal:{name}:stated")
        if stated is None or stated > end or w.said(f"goal:{name}:outcome", end):
            continue
        when = user.turns[stated].slot.time
        sentence = f"Since {when.day} {when:%B %Y}, {w.name} has been {_GOALS[name][0]}."
        goals.append((stated, f"goal_{name.replace(' ', '_')}", sentence))
    chosen = sorted(entries) + sorted(goals)
    return {key: safe_text(value) for _, key, value in chosen[:MAX_PROCEDURAL]}


# --------------------------------------------------------------------------- renderers


def _quoted(value: str) -> str:
    return f'"{safe_text(value)}"'


def render_reading(reading: Mapping[str, int]) -> str:
    """Five `"trait": n` lines in TRAITS order (parse_reading_tags reads them)."""
    lines = []
    for name in TRAITS:
        value = reading[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ValidationError(f"{name} must be an integer 1..5, got {value!r}")
        lines.append(f'"{name}": {value}')
    return "\n".join(lines)


def render_semantic(target: SemanticTarget) -> str:
    """The four lines of a semantic candidate (parse_semantic_tags reads them)."""
    return "\n".join(
        (
            f'"reason": {_quoted(target.reason)}',
            f'"decision": {"true" if target.decision else "false"}',
            f'"content": {_quoted(target.content)}',
            f'"keywords": {_quoted(", ".join(_keywords(target.keywords)))}',
        )
    )


def render_topics(topics: Sequence[TopicTarget]) -> str:
    """Three lines per topic (parse_episodic_tags reads them)."""
    blocks = []
    for topic in topics:
        indices = ", ".join(str(i) for i in topic.indices)
        blocks.append(
            f'"topic_summary": {_quoted(topic.summary)}\n'
            f'"keywords": {_quoted(", ".join(_keywords(topic.keywords)))}\n'
            f'"source_dialog_indices": {indices}'
        )
    return "\n".join(blocks)


def render_key_values(values: Mapping[str, str]) -> str:
    """`"key": "value"` lines (parse_key_values reads them). A key loses quotes and colons
    (the line format cannot hold them); an empty value asks the agent to remove the key."""
    lines = []
    for key, value in values.items():
        clean = safe_text(re.sub(r"[\"':]", " ", key))
        if not clean:
            raise ValidationError(f"key {key!r} is empty once made safe")
        lines.append(f'"{clean}": {_quoted(value)}')
    return "\n".join(lines)
