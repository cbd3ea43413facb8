"""Tests of the Personality Evolving Mechanism (personavlm.personality, PAPER.md section 3)."""

from __future__ import annotations

import itertools
import math
import random
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personavlm.errors import ValidationError
from personavlm.personality import (
    NEUTRAL,
    TRAITS,
    PersonalityState,
    Reading,
    SkipRule,
    Traits,
    paper_lambda,
    parse_reading,
    render,
    replay,
    update,
)

trait_values = st.floats(min_value=1.0, max_value=5.0, allow_nan=False, allow_infinity=False)
traits_st = st.builds(Traits, trait_values, trait_values, trait_values, trait_values, trait_values)
levels = st.integers(min_value=1, max_value=5)
readings_st = st.builds(Reading, levels, levels, levels, levels, levels)
states_st = st.builds(PersonalityState, traits_st, st.integers(min_value=0, max_value=200))
skip_rules = st.sampled_from(list(SkipRule))

PAPER_TEXT = """"openness": 4
"conscientiousness": 2
"extraversion": 5
"agreeableness": 3
"neuroticism": 1"""


def state_of(*values: float, step: int = 0) -> PersonalityState:
    return PersonalityState(Traits(*values), step)


# --- the schedule -------------------------------------------------------------------------


def test_lambda_anchors_are_exact() -> None:
    assert paper_lambda(0) == 0.5
    assert paper_lambda(25) == 0.7
    assert paper_lambda(50) == 0.9


@given(st.integers(min_value=50, max_value=10**9))
def test_lambda_is_flat_after_fifty_turns(m: int) -> None:
    assert paper_lambda(m) == 0.9


def test_lambda_is_monotone_non_decreasing() -> None:
    values = [paper_lambda(m) for m in range(0, 120)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert all(0.5 <= v <= 0.9 for v in values)


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200))
def test_lambda_is_monotone_for_any_pair(m: int, n: int) -> None:
    low, high = sorted((m, n))
    assert paper_lambda(low) <= paper_lambda(high)


@pytest.mark.parametrize("m", [-1, True, 2.0, "3", None])
def test_lambda_rejects_bad_m(m: object) -> None:
    with pytest.raises(ValidationError, match="m must be an integer >= 0"):
        paper_lambda(m)  # type: ignore[arg-type]


# --- the update rule ----------------------------------------------------------------------


def test_hand_computed_three_steps() -> None:
    # Start neutral (3, 3, 3, 3, 3), m = 0, paper schedule and paper skip rule.
    # Step 1: lambda_0 = 0.5, reading (5, 1, 4, 2, 3)
    #   p1 = 0.5*3 + 0.5*(5, 1, 4, 2, 3) = (4, 2, 3.5, 2.5, 3)
    # Step 2: lambda_1 = 0.7 - 0.2*cos(pi/50) = 0.500394654314, reading (4, 2, 5, 1, 3)
    #   openness      0.500394654314*4   + 0.499605345686*4 = 4
    #   consc.        0.500394654314*2   + 0.499605345686*2 = 2
    #   extraversion  0.500394654314*3.5 + 0.499605345686*5 = 4.249408018529
    #   agreeableness 0.500394654314*2.5 + 0.499605345686*1 = 1.750591981471
    #   neuroticism   3 (read as 3, and 3 already)
    # Step 3: lambda_2 = 0.7 - 0.2*cos(2*pi/50) = 0.501577059737, reading (5, 1, 4, 2, 3)
    #   openness      0.501577059737*4              + 0.498422940263*5 = 4.498422940263
    #   consc.        0.501577059737*2              + 0.498422940263*1 = 1.501577059737
    #   extraversion  0.501577059737*4.249408018529 + 0.498422940263*4 = 4.125097340609
    #   agreeableness 0.501577059737*1.750591981471 + 0.498422940263*2 = 1.874902659391
    assert paper_lambda(1) == pytest.approx(0.500394654314, abs=1e-12)
    assert paper_lambda(2) == pytest.approx(0.501577059737, abs=1e-12)
    states = replay([Reading(5, 1, 4, 2, 3), Reading(4, 2, 5, 1, 3), Reading(5, 1, 4, 2, 3)])
    assert states[0] == state_of(4.0, 2.0, 3.5, 2.5, 3.0, step=1)
    expected = [
        (4.0, 2.0, 4.249408018529, 1.750591981471, 3.0),
        (4.498422940263, 1.501577059737, 4.125097340609, 1.874902659391, 3.0),
    ]
    for state, want, step in zip(states[1:], expected, (2, 3), strict=True):
        assert state.step == step
        assert state.traits.as_tuple() == pytest.approx(want, abs=1e-11)


def test_stable_phase_arithmetic() -> None:
    # From m = 50 lambda is 0.9: 0.9*3 + 0.1*5 = 3.2, 0.9*3.2 + 0.5 = 3.38,
    # 0.9*3.38 + 0.5 = 3.542 (and the mirror image for a reading of 1: 2.8, 2.62, 2.458).
    start = state_of(3, 3, 3, 3, 3, step=50)
    states = replay([Reading(5, 1, 5, 1, 5)] * 3, start=start)
    assert [s.traits.openness for s in states] == pytest.approx([3.2, 3.38, 3.542], abs=1e-12)
    assert [s.traits.conscientiousness for s in states] == pytest.approx(
        [2.8, 2.62, 2.458], abs=1e-12
    )
    assert [s.step for s in states] == [51, 52, 53]


@settings(max_examples=60, deadline=None)
@given(states_st, st.lists(readings_st, max_size=40), skip_rules)
def test_traits_stay_in_range(
    start: PersonalityState, readings: list[Reading], rule: SkipRule
) -> None:
    for state in replay(readings, start=start, skip_rule=rule):
        assert all(1.0 <= v <= 5.0 for v in state.traits.as_tuple())


@settings(max_examples=60, deadline=None)
@given(states_st, st.lists(readings_st, max_size=20), st.floats(0.0, 1.0))
def test_traits_stay_in_range_with_any_constant_schedule(
    start: PersonalityState, readings: list[Reading], lam: float
) -> None:
    for state in replay(readings, start=start, schedule=lambda m: lam):
        assert all(1.0 <= v <= 5.0 for v in state.traits.as_tuple())


@settings(max_examples=25, deadline=None)
@given(states_st, readings_st.filter(lambda r: not r.is_neutral), skip_rules)
def test_constant_reading_converges(
    start: PersonalityState, reading: Reading, rule: SkipRule
) -> None:
    final = replay([reading] * 300, start=start, skip_rule=rule)[-1]
    for name in TRAITS:
        target = getattr(reading, name)
        if rule is SkipRule.REFERENCE and target == NEUTRAL:
            assert getattr(final.traits, name) == getattr(start.traits, name)
        else:
            assert getattr(final.traits, name) == pytest.approx(target, abs=1e-6)


def test_update_is_pure() -> None:
    state = PersonalityState.initial()
    update(state, Reading(5, 5, 5, 5, 5))
    assert state == PersonalityState.initial()


# --- skip rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", list(SkipRule))
def test_all_neutral_reading_absorbs_nothing(rule: SkipRule) -> None:
    state = state_of(4.2, 1.5, 3.3, 2.0, 5.0, step=7)
    assert update(state, Reading(3, 3, 3, 3, 3), skip_rule=rule) is state


def test_paper_rule_pulls_threes_toward_neutral() -> None:
    state = state_of(5, 1, 5, 1, 5, step=0)
    after = update(state, Reading(3, 3, 3, 3, 1), skip_rule=SkipRule.PAPER)
    # lambda_0 = 0.5: 0.5*5 + 0.5*3 = 4, 0.5*1 + 0.5*3 = 2, 0.5*5 + 0.5*1 = 3.
    assert after == state_of(4, 2, 4, 2, 3, step=1)


def test_reference_rule_keeps_threes() -> None:
    state = state_of(5, 1, 5, 1, 5, step=0)
    after = update(state, Reading(3, 3, 3, 3, 1), skip_rule=SkipRule.REFERENCE)
    assert after == state_of(5, 1, 5, 1, 3, step=1)


def test_reference_rule_steps_only_when_something_changes() -> None:
    readings = [Reading(3, 3, 3, 3, 3), Reading(5, 3, 3, 3, 3), Reading(3, 3, 3, 3, 3)]
    states = replay(readings, skip_rule=SkipRule.REFERENCE)
    assert [s.step for s in states] == [0, 1, 1]
    assert states[1].traits == Traits(4, 3, 3, 3, 3)


def test_skip_rule_accepts_its_string_value() -> None:
    state = state_of(5, 5, 5, 5, 5)
    reading = Reading(1, 3, 3, 3, 3)
    assert update(state, reading, skip_rule="reference") == update(  # type: ignore[arg-type]
        state, reading, skip_rule=SkipRule.REFERENCE
    )


def test_unknown_skip_rule() -> None:
    with pytest.raises(ValidationError, match=r"skip_rule must be one of 'paper', 'reference'"):
        update(PersonalityState.initial(), Reading(1, 1, 1, 1, 1), skip_rule="never")  # type: ignore[arg-type]


# --- replay -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(states_st, st.lists(readings_st, max_size=30), skip_rules)
def test_replay_equals_folding_update(
    start: PersonalityState, readings: list[Reading], rule: SkipRule
) -> None:
    states = replay(readings, start=start, skip_rule=rule)
    assert len(states) == len(readings)
    final = reduce(lambda s, r: update(s, r, skip_rule=rule), readings, start)
    assert (states[-1] if states else start) == final
    for i, state in enumerate(states):
        prev = states[i - 1] if i else start
        assert state == update(prev, readings[i], skip_rule=rule)


def test_replay_with_custom_schedule() -> None:
    readings = [Reading(5, 5, 5, 5, 5)] * 3
    # lambda = 0.8 throughout: 0.8*3 + 0.2*5 = 3.4, 0.8*3.4 + 1 = 3.72, 0.8*3.72 + 1 = 3.976.
    custom = replay(readings, schedule=lambda m: 0.8)
    assert [s.traits.openness for s in custom] == pytest.approx([3.4, 3.72, 3.976], abs=1e-12)
    # The paper schedule adapts faster at first: 0.5*3 + 0.5*5 = 4.
    assert replay(readings)[0].traits.openness == 4.0


def test_replay_passes_the_step_to_the_schedule() -> None:
    seen: list[int] = []

    def schedule(m: int) -> float:
        seen.append(m)
        return 0.5

    replay(
        [Reading(5, 5, 5, 5, 5), Reading(3, 3, 3, 3, 3), Reading(1, 1, 1, 1, 1)], schedule=schedule
    )
    assert seen == [0, 1]


def test_replay_of_nothing() -> None:
    assert replay([]) == []


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (0, "integer 1..5; got 0"),
        (6, "integer 1..5; got 6"),
        (-3, "integer 1..5; got -3"),
        (3.0, "got 3.0 (float)"),
        (math.nan, "got nan (float)"),
        (True, "got True (bool)"),
        ("4", "got '4' (str)"),
    ],
)
def test_bad_reading_values(value: object, fragment: str) -> None:
    with pytest.raises(ValidationError, match=r"reading extraversion must be") as info:
        Reading(3, 3, value, 3, 3)  # type: ignore[arg-type]
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (0.99, "[1, 5]; got 0.99"),
        (5.0001, "[1, 5]; got 5.0001"),
        (math.nan, "got nan"),
        (math.inf, "got inf"),
        (-math.inf, "got -inf"),
        (False, "got False (bool)"),
        (None, "got None (NoneType)"),
    ],
)
def test_bad_trait_values(value: object, fragment: str) -> None:
    with pytest.raises(ValidationError, match=r"trait neuroticism must be") as info:
        Traits(3, 3, 3, 3, value)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_traits_accept_ints_as_floats() -> None:
    traits = Traits(1, 2, 3, 4, 5)
    assert traits.as_tuple() == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert all(type(v) is float for v in traits.as_tuple())
    assert traits == Traits(1.0, 2.0, 3.0, 4.0, 5.0)


def test_mapping_round_trips() -> None:
    traits = Traits(1.5, 2, 3, 4, 5)
    assert Traits.from_mapping(traits.to_dict()) == traits
    assert list(traits.to_dict()) == list(TRAITS)
    reading = Reading(1, 2, 3, 4, 5)
    assert Reading.from_mapping(reading.to_dict()) == reading
    assert reading.as_tuple() == (1, 2, 3, 4, 5)
    assert Traits.neutral().as_tuple() == (NEUTRAL,) * 5
    assert PersonalityState.initial() == PersonalityState(Traits.neutral(), 0)


def test_mapping_with_missing_and_extra_keys() -> None:
    bad = {"openness": 3, "conscientiousness": 3, "extraversion": 3, "agreeablenes": 3}
    with pytest.raises(ValidationError) as info:
        Reading.from_mapping(bad)
    message = str(info.value)
    assert "missing agreeableness, neuroticism" in message
    assert "unexpected 'agreeablenes'" in message
    with pytest.raises(ValidationError, match="missing neuroticism"):
        Traits.from_mapping({k: 3.0 for k in TRAITS if k != "neuroticism"})
    with pytest.raises(ValidationError, match="must be a mapping"):
        Traits.from_mapping([3.0] * 5)  # type: ignore[arg-type]


def test_is_neutral() -> None:
    assert Reading(3, 3, 3, 3, 3).is_neutral
    assert not Reading(3, 3, 3, 3, 4).is_neutral


@pytest.mark.parametrize("step", [-1, True, 1.0])
def test_bad_step(step: object) -> None:
    with pytest.raises(ValidationError, match="step must be an integer >= 0"):
        PersonalityState(Traits.neutral(), step)  # type: ignore[arg-type]


def test_state_needs_traits() -> None:
    with pytest.raises(ValidationError, match="traits must be a Traits"):
        PersonalityState((3.0,) * 5, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (1.5, "returned 1.5"),
        (-0.1, "returned -0.1"),
        (math.nan, "nan"),
        (True, "returned True"),
        ("0.5", "returned '0.5'"),
    ],
)
def test_bad_schedule_values(value: object, fragment: str) -> None:
    state = PersonalityState(Traits.neutral(), 4)
    with pytest.raises(ValidationError, match="for m=4; it must return a number in") as info:
        update(state, Reading(5, 5, 5, 5, 5), schedule=lambda m: value)  # type: ignore[arg-type,return-value]
    assert fragment in str(info.value)


def test_schedule_edges_are_allowed() -> None:
    state = state_of(2, 2, 2, 2, 2)
    assert update(state, Reading(4, 4, 4, 4, 4), schedule=lambda m: 1.0).traits == state.traits
    assert update(state, Reading(4, 4, 4, 4, 4), schedule=lambda m: 0).traits == Traits(
        4, 4, 4, 4, 4
    )


def test_update_rejects_wrong_types() -> None:
    with pytest.raises(ValidationError, match="reading must be a Reading"):
        update(PersonalityState.initial(), (5, 5, 5, 5, 5))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="state must be a PersonalityState"):
        update(Traits.neutral(), Reading(5, 5, 5, 5, 5))  # type: ignore[arg-type]


# --- render -------------------------------------------------------------------------------


def rendered_value(text: str, trait: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(trait.capitalize() + ":"))
    return line.split(":", 1)[1].split("—", 1)[0].strip()


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3.45, "3.5"), (2.25, "2.3"), (3.44999, "3.4"), (1.0, "1.0"), (5.0, "5.0"), (4.95, "5.0")],
)
def test_render_rounds_half_up(value: float, shown: str) -> None:
    text = render(state_of(value, 3, 3, 3, 3))
    assert rendered_value(text, "openness") == shown


def test_render_has_header_and_all_traits() -> None:
    text = render(PersonalityState.initial())
    lines = text.splitlines()
    assert lines[0] == "User personality (Big Five, 1-5):"
    assert len(lines) == 6
    for line, trait in zip(lines[1:], TRAITS, strict=True):
        assert line.startswith(f"{trait.capitalize()}: 3.0 — ")


def test_render_descriptions_follow_level() -> None:
    low = render(state_of(1, 1, 1, 1, 1)).splitlines()[1:]
    mid = render(state_of(3, 3, 3, 3, 3)).splitlines()[1:]
    high = render(state_of(5, 5, 5, 5, 5)).splitlines()[1:]
    for a, b, c in zip(low, mid, high, strict=True):
        descriptions = {a.split("—")[1], b.split("—")[1], c.split("—")[1]}
        assert len(descriptions) == 3
    assert "calm and reassuring" in high[4]
    assert "concise and low-key" in low[2]


def test_render_level_matches_shown_value() -> None:
    # 2.45 is shown as 2.5, which is moderate, so the words must be moderate too.
    assert render(state_of(2.45, 3, 3, 3, 3)) == render(state_of(2.5, 3, 3, 3, 3))
    assert render(state_of(3.55, 3, 3, 3, 3)) != render(state_of(3.5, 3, 3, 3, 3))


# --- parse_reading ------------------------------------------------------------------------


def test_parse_paper_format() -> None:
    assert parse_reading(PAPER_TEXT) == Reading(4, 2, 5, 3, 1)


def test_parse_json_object_any_order_and_case() -> None:
    text = (
        '{"Neuroticism": 1, "EXTRAVERSION": 5, "openness": 4, '
        '"agreeableness": 3, "conscientiousness": 2}'
    )
    assert parse_reading(text) == Reading(4, 2, 5, 3, 1)


def test_parse_multiline_json_with_trailing_commas_and_whitespace() -> None:
    text = "\n  {\n" + ",\n".join("   " + line for line in PAPER_TEXT.splitlines()) + ",\n}\n\n"
    assert parse_reading(text) == Reading(4, 2, 5, 3, 1)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (PAPER_TEXT.replace('"neuroticism": 1', ""), ["lacks neuroticism"]),
        ("", ["lacks openness, conscientiousness"]),
        (PAPER_TEXT + '\n"Openness": 5', ["openness appears twice", "'\"Openness\": 5'"]),
        (PAPER_TEXT + '\n"humour": 4', ["unknown trait 'humour'", "'\"humour\": 4'"]),
        (PAPER_TEXT.replace(": 5", ": 4.5"), ["extraversion must be an integer", "'4.5'"]),
        (PAPER_TEXT.replace(": 5", ": high"), ["got 'high'"]),
        (PAPER_TEXT.replace(": 5", ': "5"'), ["got '\"5\"'"]),
        (PAPER_TEXT.replace(": 5", ": 6"), ["extraversion must be an integer 1..5; got '6'"]),
        (PAPER_TEXT.replace(": 4", ": 0"), ["openness must be an integer 1..5; got '0'"]),
        (PAPER_TEXT.replace(": 4", ":"), ["got ''"]),
        (PAPER_TEXT + "\nI think the user is shy", ["cannot read 'I think the user is shy'"]),
        ("{" + PAPER_TEXT, ["unbalanced braces"]),
        (PAPER_TEXT.replace('"openness"', '"openness'), ["cannot read '\"openness: 4'"]),
    ],
)
def test_parse_rejects(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        parse_reading(text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(ValidationError, match="must be text"):
        parse_reading(None)  # type: ignore[arg-type]


def test_parse_quotes_are_bounded() -> None:
    with pytest.raises(ValidationError) as info:
        parse_reading("x" * 10_000)
    assert len(str(info.value)) < 300


@settings(max_examples=50, deadline=None)
@given(readings_st, st.randoms(use_true_random=False), st.booleans())
def test_parse_round_trip(reading: Reading, rnd: random.Random, as_json: bool) -> None:
    items = [f'"{k}": {v}' for k, v in reading.to_dict().items()]
    rnd.shuffle(items)
    text = "{" + ", ".join(items) + "}" if as_json else "\n".join(items)
    assert parse_reading(text) == reading
