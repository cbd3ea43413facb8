"""Personality persisted in the store: readings kept with their turns, trajectory replayable."""

from __future__ import annotations

import math

import pytest

from personavlm.errors import ConflictError, NotFoundError, ValidationError
from personavlm.memory import MemoryStore, TurnInput
from personavlm.personality import PersonalityState, Reading, SkipRule, replay

# The store contract: every test here runs on SQLite and on PostgreSQL (conftest.py).
STORE_CONTRACT = True


def test_readings_follow_the_paper_schedule_and_are_kept(store: MemoryStore) -> None:
    store.append_turns(
        "ann", [TurnInput.create(time="2024-03-01 10:00", role="user", text="hi", ext_id="a")]
    )
    turn = store.turns("ann")[0]
    first = store.record_personality("ann", Reading(5, 3, 1, 3, 3), turn_id=turn.id)
    # m = 0: lambda = 0.5, so each trait moves halfway from 3 to the reading.
    assert first.traits.as_tuple() == (4.0, 3.0, 2.0, 3.0, 3.0) and first.step == 1
    second = store.record_personality("ann", Reading(5, 3, 1, 3, 3))
    lam = 0.7 - 0.2 * math.cos(math.pi / 50)
    assert second.traits.openness == pytest.approx(lam * 4 + (1 - lam) * 5)
    assert store.personality("ann") == second
    records = store.personality_readings("ann")
    assert [r.turn_id for r in records] == [turn.id, None]
    assert [r.state_after for r in records] == [first, second]


def test_paper_rule_skips_all_neutral_readings(store: MemoryStore) -> None:
    store.record_personality("ann", Reading(4, 4, 4, 4, 4))
    state = store.record_personality("ann", Reading(3, 3, 3, 3, 3))
    assert state.step == 1
    assert [r.absorbed for r in store.personality_readings("ann")] == [True, False]


def test_stored_readings_replay_to_the_stored_trajectory(store: MemoryStore) -> None:
    readings = [Reading(5, 2, 3, 4, 1), Reading(3, 3, 3, 3, 3), Reading(1, 5, 2, 2, 5)]
    for reading in readings:
        store.record_personality("ann", reading, skip_rule="reference")
    stored = [r.state_after for r in store.personality_readings("ann")]
    assert replay(readings, skip_rule=SkipRule.REFERENCE) == stored
    slow = replay([r.reading for r in store.personality_readings("ann")], schedule=lambda m: 0.9)
    assert slow[-1] != stored[-1]  # another schedule, another trajectory, same raw readings


def test_one_user_keeps_one_skip_rule(store: MemoryStore) -> None:
    store.record_personality("ann", Reading(4, 4, 4, 4, 4), skip_rule="paper")
    with pytest.raises(ConflictError, match="skip rule 'paper'"):
        store.record_personality("ann", Reading(4, 4, 4, 4, 4), skip_rule="reference")
    with pytest.raises(ValidationError, match="unknown skip rule"):
        store.record_personality("bob", Reading(4, 4, 4, 4, 4), skip_rule="sometimes")


def test_personality_errors(store: MemoryStore) -> None:
    with pytest.raises(NotFoundError, match="no user"):
        store.personality("nobody")
    store.record_personality("ann", Reading(4, 4, 4, 4, 4))
    with pytest.raises(NotFoundError, match="turn 999"):
        store.record_personality("ann", Reading(4, 4, 4, 4, 4), turn_id=999)
    assert store.personality("ann").step == 1
    store.add("bob", "semantic", "fact")
    assert store.personality("bob") == PersonalityState.initial()
