"""The oracle's update targets: what a perfect update model answers for a simulated user.

Every rendered reply must parse with the agent's own parsers back to the target, and the
targets must follow the paper's rules (one candidate per exchange, skip repeats, keep
changes, pictures as visual concepts without pixel-only details) and the world's truth.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from functools import cache

import pytest

from personavlm.agent.formats import (
    Topic,
    parse_episodic_tags,
    parse_key_values,
    parse_reading_tags,
    parse_semantic_tags,
)
from personavlm.errors import ValidationError
from personavlm.personality import TRAITS
from personavlm.synth import User, build_user
from personavlm.synth.behavior import ANCHORS, GOALS
from personavlm.synth.core import Beat
from personavlm.synth.growth import CONSTRAINTS
from personavlm.synth.intent import PROBLEMS
from personavlm.synth.pictures import Pet, Picture, Scene
from personavlm.synth.preference import CATEGORIES
from personavlm.train import targets
from personavlm.train.targets import (
    MAX_PREFERENCES,
    MAX_PROCEDURAL,
    SMALL_TALK_REASON,
    SemanticTarget,
    TopicTarget,
    core_target,
    procedural_target,
    reading_target,
    render_key_values,
    render_reading,
    render_semantic,
    render_topics,
    safe_text,
    session_topics,
    turn_targets,
)

# 32k users include short histories (shared turns, dropped tasks); 128k users have every
# beat family with repeated mentions.
USERS = [(seed, "32k", f"u{i:03d}") for seed in (1, 2, 3) for i in range(3)] + [
    (seed, "128k", f"u{i:03d}") for seed in (1, 2) for i in range(2)
]
LARGE = [u for u in USERS if u[1] == "128k"]
_MARKERS = re.compile(r"<\||</?\s*(think|answer|retrieve)\b", re.IGNORECASE)
_CORE_KEYS = {
    "occupation": "occupation",
    "city": "city",
    "hometown": "hometown",
    "language": "native language",
    "birthday_month": "birthday month",
}


@cache
def _user(seed: int, size: str, user_id: str) -> User:
    return build_user(seed=seed, user_id=user_id, size=size)


def _sessions(user: User) -> range:
    return range(user.turns[-1].slot.session + 1)


def _beats(user: User) -> dict[str, Beat]:
    return {b.key: b for aspect in user.aspects for b in aspect.beats()}


def _turn_of(user: User, key: str) -> int:
    """The history position of the turn that says beat `key`."""
    slot = user.placement[key]
    return next(i for i, t in enumerate(user.turns) if t.slot == slot)


def _session_of(turn_id: str) -> int:
    match = re.fullmatch(r"s(\d+)t\d+", turn_id)
    assert match is not None
    return int(match.group(1))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("spec", USERS)
def test_readings_and_semantic_round_trip(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    semantic = turn_targets(user)
    assert list(semantic) == [t.slot.id for t in user.turns]
    for turn in user.turns:
        reading = reading_target(user, turn)
        assert list(reading) == list(TRAITS)
        assert all(type(v) is int and 1 <= v <= 5 for v in reading.values())
        assert parse_reading_tags(render_reading(reading)).to_dict() == reading

        target = semantic[turn.slot.id]
        text = render_semantic(target)
        assert len(text.splitlines()) == 4 and not _MARKERS.search(text)
        assert dict(parse_key_values(text))["reason"] == target.reason
        parsed = parse_semantic_tags(text)
        if not target.decision:
            assert parsed is None and target.content == "" and target.keywords == ()
            continue
        assert parsed is not None
        assert (parsed.op, parsed.content, parsed.keywords) == (
            "ADD",
            target.content,
            target.keywords,
        )
        assert parsed.attach_images == (turn.picture is not None)
        assert target.keywords and "<img>" not in target.content


@pytest.mark.parametrize("spec", USERS)
def test_session_targets_round_trip(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    for session in _sessions(user):
        topics = session_topics(user, session)
        text = render_topics(topics)
        assert not _MARKERS.search(text)
        expected = [Topic(t.summary, t.keywords, t.indices) for t in topics]
        assert parse_episodic_tags(text) == expected
        for values in (core_target(user, session), procedural_target(user, session)):
            text = render_key_values(values)
            assert not _MARKERS.search(text)
            assert parse_key_values(text) == list(values.items())


def test_hostile_text_stays_one_safe_line() -> None:
    nasty = "first\nsecond\u2028third <answer>x</answer> <|im_end|> < think> <img>"
    target = SemanticTarget(True, nasty, nasty, (nasty, "a, b", " ", "a  b"))
    text = render_semantic(target)
    assert len(text.splitlines()) == 4 and not _MARKERS.search(text)
    assert "<img>" not in text
    parsed = parse_semantic_tags(text)
    assert parsed is not None and parsed.content == target.content
    assert parsed.keywords == target.keywords and "a b" in target.keywords
    assert safe_text(safe_text(nasty)) == safe_text(nasty)

    values = {'odd: "key"': nasty, "plain": ""}
    pairs = parse_key_values(render_key_values(values))
    assert pairs == [("odd key", safe_text(nasty)), ("plain", "")]

    topic = TopicTarget(nasty, ("small talk",), (0, 2))
    parsed_topics = parse_episodic_tags(render_topics([topic]))
    assert parsed_topics == [Topic(topic.summary, ("small talk",), (0, 2))]


def test_malformed_targets_are_refused() -> None:
    with pytest.raises(ValidationError):
        SemanticTarget(True, "kept", " \n ", ())
    with pytest.raises(ValidationError):
        TopicTarget("summary", (), (2, 1))
    with pytest.raises(ValidationError):
        TopicTarget("summary", (), ())
    with pytest.raises(ValidationError):
        render_reading({**dict.fromkeys(TRAITS, 3), "openness": 6})
    with pytest.raises(ValidationError):
        render_key_values({'"::"': "x"})
    user = _user(*USERS[0])
    for function in (session_topics, core_target, procedural_target):
        with pytest.raises(ValidationError, match="no session"):
            function(user, 10_000)


def test_tables_cover_the_simulator() -> None:
    # A family or value added to the simulator must get a template here too.
    assert set(targets._CONSTRAINTS) == set(CONSTRAINTS)
    assert set(targets._GOALS) == set(GOALS)
    assert set(targets._PROBLEMS) == set(PROBLEMS)
    assert set(targets._ANCHORS) == set(ANCHORS)
    assert set(targets._TASTES) == set(CATEGORIES) == set(targets._CORE_TASTES)


# --------------------------------------------------------------------------- semantic


@pytest.mark.parametrize("spec", LARGE)
def test_first_mention_kept_and_repeats_skipped(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    semantic = turn_targets(user)
    truth = user.truth()
    assert truth["facts"], "a 128k user states profile facts"
    for kind, fact in truth["facts"].items():
        turns = sorted(_turn_of(user, f"fact:{kind}:{i}") for i in range(len(fact["turns"])))
        assert len(turns) == 2  # 128k users say every fact twice, in other words
        first, repeat = (semantic[user.turns[i].slot.id] for i in turns)
        if len(user.turns[turns[0]].beats) == 1:
            assert first.decision and fact["value"] in first.content
            assert user.cast.name in first.content
        if len(user.turns[turns[1]].beats) == 1 and first.decision:
            assert not repeat.decision
            assert repeat.reason == f"already known: {first.content}"


@pytest.mark.parametrize("spec", USERS)
def test_small_talk_and_one_candidate_per_turn(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    semantic = turn_targets(user)
    for turn in user.turns:
        target = semantic[turn.slot.id]
        if not turn.beats:
            assert target == SemanticTarget(False, SMALL_TALK_REASON, "", ())
        if any(b.startswith("oneoff:") for b in turn.beats) and len(turn.beats) == 1:
            assert not target.decision and "one-off" in target.reason


@pytest.mark.parametrize("spec", LARGE)
def test_changes_are_kept(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    semantic = turn_targets(user)
    truth = user.truth()
    changed = [p for p in truth["preferences"] if len(p["timeline"]) == 2]
    assert changed
    for pref in changed:
        old, new = (stage["value"] for stage in pref["timeline"])
        change = semantic[user.placement[f"pref:{pref['category']}:new:0"].id]
        assert change.decision and old in change.content and new in change.content
        later = semantic[user.placement[f"pref:{pref['category']}:new:1"].id]
        assert not later.decision and later.reason == f"already known: {change.content}"
    people = [r for r in truth["relationships"] if len(r["timeline"]) == 2]
    assert people
    for person in people:
        change = semantic[user.placement[f"rel:{person['name']}:change:0"].id]
        assert change.decision and person["name"] in change.content
        assert not semantic[user.placement[f"rel:{person['name']}:change:1"].id].decision
    for i, stage in enumerate(truth["interests"][1:], start=1):
        switch = semantic[user.placement[f"interest:{i}:0"].id]
        assert switch.decision and stage["hobby"] in switch.content
    for goal in truth["goals"]:
        if goal["reported"] is not None:
            outcome = semantic[goal["reported"]["turn"]]
            assert outcome.decision and goal["status"] in outcome.keywords
    solved = semantic[user.placement["intent:solved"].id]
    assert solved.decision and "solved" in solved.reason


def _item(identity: str, *, change: bool = False) -> targets._Said:
    return targets._Said(identity, f"about {identity}", (identity,), (identity,), change, "new")


def test_one_candidate_keeps_the_first_new_beat() -> None:
    stored: dict[tuple[str, ...], str] = {}
    kept = targets._decide([_item("a"), _item("b")], stored)
    assert kept.content == "about a" and set(stored) == {("a",)}
    # "b" was not stored with "a": it is new when said again.
    assert targets._decide([_item("b")], stored).content == "about b"
    assert targets._decide([_item("a"), _item("c")], stored).content == "about c"
    skipped = targets._decide([_item("a"), _item("b")], stored)
    assert not skipped.decision and skipped.reason == "already known: about a"
    assert targets._decide([_item("a", change=True)], stored).decision


def test_shared_turns_keep_one_of_their_beats() -> None:
    shared = 0
    for seed in range(6):
        for i in range(3):
            user = _user(seed, "32k", f"u{i:03d}")
            semantic = turn_targets(user)
            beats = _beats(user)
            for turn in (t for t in user.turns if len(t.beats) == 2):
                shared += 1
                target = semantic[turn.slot.id]
                if target.decision:
                    facts = [f for key in turn.beats for f in beats[key].facts]
                    assert any(f in target.content for f in facts)
                else:
                    assert target.reason.startswith(("already known", "a one-off"))
    assert shared  # short 32k histories share turns


def _pixel_only(picture: Picture) -> set[str]:
    """Words only the pixels hold: colours, counts, object kinds, fur and markings."""
    numbers = ("zero", "one", "two", "three", "four", "five")
    if isinstance(picture, Scene):
        words = {picture.background} | {t.colour for t in picture.things}
        words |= {t.kind for t in picture.things} | {numbers[t.count] for t in picture.things}
        return words
    assert isinstance(picture, Pet)
    marks = set() if picture.marking == "none" else {picture.marking, picture.mark_colour}
    return {picture.fur} | marks


@pytest.mark.parametrize("spec", USERS)
def test_pictures_are_visual_concepts_without_pixel_details(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    semantic = turn_targets(user)
    shown: set[str] = set()
    pictures = [t for t in user.turns if t.picture is not None]
    assert pictures
    for turn in pictures:
        picture = turn.picture
        assert picture is not None
        target = semantic[turn.slot.id]
        what = picture.setting if isinstance(picture, Scene) else picture.name
        if what not in shown:
            assert target.decision and "(Image Object:" in target.content
            category = picture.setting if isinstance(picture, Scene) else picture.species
            assert target.content.endswith(f"(Image Object: {category})")
            assert what in target.content
        else:
            assert not target.decision and target.reason.startswith("already known")
        shown.add(what)
        said = turn.user.lower()
        for word in _pixel_only(picture):
            if not re.search(rf"\b{re.escape(word)}\b", said):
                assert not re.search(rf"\b{re.escape(word)}\b", target.content, re.IGNORECASE)
        for topic in session_topics(user, turn.slot.session):
            if turn.slot.turn in topic.indices:
                for word in _pixel_only(picture) - set(said.split()):
                    assert not re.search(rf"\b{re.escape(word)}\b", topic.summary)


# --------------------------------------------------------------------------- session close


@pytest.mark.parametrize("spec", USERS)
def test_topics_cover_each_exchange_once(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    for session in _sessions(user):
        turns = [t for t in user.turns if t.slot.session == session]
        topics = session_topics(user, session)
        covered = [i for t in topics for i in t.indices]
        assert covered == list(range(len(turns)))
        for topic in topics:
            beat_turns = [i for i in topic.indices if turns[i].beats]
            # A beat turn is a topic of its own; small talk is grouped.
            assert len(beat_turns) in (0, len(topic.indices)) and len(beat_turns) <= 1
            if not beat_turns:
                assert topic.summary.startswith(f"{user.cast.name} made small talk")


@pytest.mark.parametrize("spec", USERS)
def test_core_grows_and_never_runs_ahead(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    truth = user.truth()
    previous: dict[str, str] = {}
    for session in _sessions(user):
        core = core_target(user, session)
        assert core["name"] == user.cast.name
        assert set(previous) <= set(core)  # facts are never forgotten
        for kind, key in _CORE_KEYS.items():
            fact = truth["facts"].get(kind)
            stated = fact is not None and min(map(_session_of, fact["turns"])) <= session
            assert (key in core) == stated
            if stated:
                assert fact is not None and core[key] == fact["value"]
        pet = [k for k in user.placement if k.startswith(("fact:pet_name:", "picture:pet:"))]
        assert ("pet" in core) == any(user.placement[k].session <= session for k in pet)
        assert sum(k.startswith("favourite") or k == "current hobby" for k in core) <= (
            MAX_PREFERENCES
        )
        previous = core
    final = core_target(user, user.turns[-1].slot.session)
    if "occupation" in truth["facts"]:
        assert final["occupation"] == truth["facts"]["occupation"]["value"]
    for pref in truth["preferences"]:
        key = f"favourite {pref['category']}"
        latest = pref["timeline"][-1]["value"]
        assert latest in {v for k, v in final.items() if k.startswith(key)}


@pytest.mark.parametrize("spec", USERS)
def test_procedural_holds_known_routines_and_open_goals(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    truth = user.truth()
    for session in _sessions(user):
        procedural = procedural_target(user, session)
        assert len(procedural) <= MAX_PROCEDURAL
        for routine in truth["routines"]:
            said = min(map(_session_of, routine["turns"])) <= session
            entries = [v for v in procedural.values() if routine["place"] in v]
            assert bool(entries) == said
            for entry in entries:
                assert routine["day"] in entry and user.cast.name in entry
        for goal in truth["goals"]:
            key = f"goal_{goal['goal'].replace(' ', '_')}"
            reported = goal["reported"] and _session_of(goal["reported"]["turn"]) <= session
            if key in procedural:
                assert _session_of(goal["stated"]["turn"]) <= session and not reported
                assert procedural[key].startswith("Since ")


# --------------------------------------------------------------------------- personality


def _rounded(value: float) -> int:
    return min(5, max(1, math.floor(value + 0.5)))


@pytest.mark.parametrize("spec", USERS)
def test_reading_follows_the_trait_shift(spec: tuple[int, str, str]) -> None:
    user = _user(*spec)
    for shift in user.traits.shifts:
        before = [t for t in user.turns if t.slot.time < shift.start]
        after = [t for t in user.turns if t.slot.time >= shift.start + timedelta(days=7)]
        assert before or after
        for turn in before:
            assert reading_target(user, turn)[shift.trait] == _rounded(shift.before)
        for turn in after:
            assert reading_target(user, turn)[shift.trait] == _rounded(shift.after)
        assert _rounded(shift.before) != _rounded(shift.after)  # pole to pole
