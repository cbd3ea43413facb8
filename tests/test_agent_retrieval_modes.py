"""The agent's retrieval switches and ablations: `retrieval` ours / reference / none, the word
null as a time bound, turn-level de-duplication across rounds, `pem` and `skip_rule`.

A real store (hashing embedder), the real OpenAI client, a scripted model on loopback.
"""

from __future__ import annotations

import pytest

from agent_script import AgentScript, answer, reading, retrieve, update
from personavlm.agent import AgentConfig, Assistant, RetrieveStep
from personavlm.errors import ValidationError
from personavlm.memory import MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.models import OpenAIChatModel
from personavlm.personality import PersonalityState

K = {"semantic": 2, "episodic": 2, "procedural": 2}


def make(store: MemoryStore, model: OpenAIChatModel, **config: object) -> Assistant:
    return Assistant(store, model, AgentConfig(**config))  # type: ignore[arg-type]


def retrieve_once(keywords: str, start: str | None = None, end: str | None = None):  # type: ignore[no-untyped-def]
    return lambda req: retrieve(keywords, start, end) if req.steps_so_far == 0 else answer("ok")


def steps(trace: object) -> list[RetrieveStep]:
    return [s for s in trace.steps if isinstance(s, RetrieveStep)]  # type: ignore[attr-defined]


def seed_semantic(store: MemoryStore) -> dict[str, int]:
    texts = {
        "zebra": "Ann photographed a zebra at the zoo",
        "violin": "Ann takes violin lessons on Thursdays",
        "a": "Ann bought new running shoes",
        "b": "Ann's sister lives in Lyon",
        "c": "Ann dislikes coriander",
    }
    return {
        name: store.add("ann", "semantic", text, time="2024-03-01 10:00").id
        for name, text in texts.items()
    }


def test_reference_retrieval_searches_the_message_as_well_as_the_keywords(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    ids = seed_semantic(store)
    script.respond = retrieve_once("zebra zoo photographed")
    question = "When are my violin lessons again?"
    ours = make(store, model, k=K).ask("ann", question, time="2024-03-04 10:00")[1]
    ref = make(store, model, k=K, retrieval="reference").ask(
        "ann", question, time="2024-03-04 10:00"
    )
    ours_ids = {h.memory_id for h in steps(ours)[0].hits}
    ref_ids = {h.memory_id for h in steps(ref[1])[0].hits}
    assert ids["zebra"] in ours_ids and ids["violin"] not in ours_ids
    assert {ids["zebra"], ids["violin"]} <= ref_ids
    assert len([h for h in steps(ref[1])[0].hits if h.type == "semantic"]) == 2  # still top-k


def test_reference_retrieval_leaves_out_the_last_60_minutes(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    old = TurnInput.create(time="2024-03-04 08:00", role="user", text="My canoe is green")
    recent = TurnInput.create(time="2024-03-04 09:30", role="user", text="My canoe leaks")
    store.append_turns("ann", [old, recent])
    script.respond = retrieve_once("canoe")
    ours = make(store, model).ask("ann", "canoe?", time="2024-03-04 10:00")[1]
    ref = make(store, model, retrieval="reference").ask("ann", "canoe?", time="2024-03-04 10:00")[1]
    assert any("leaks" in h.content for h in steps(ours)[0].hits)
    ref_texts = [h.content for h in steps(ref)[0].hits]
    assert any("green" in t for t in ref_texts)
    assert not any("leaks" in t for t in ref_texts)


@pytest.mark.parametrize("mode", ["ours", "reference"])
def test_null_written_as_a_word_is_no_bound_and_no_note(
    mode: str, store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    seed_semantic(store)
    script.respond = retrieve_once("zebra", '"null"', "NULL")
    trace = make(store, model, retrieval=mode).ask("ann", "zebra?", time="2024-03-04 10:00")[1]
    [step] = steps(trace)
    assert step.notes == () and step.start is None
    assert step.hits


def test_a_turn_shown_in_one_round_is_not_shown_again_through_another_memory(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    turn = TurnInput.create(time="2024-03-01 10:00", role="user", text="My kayak is called Otter")
    store.append_turns("ann", [turn])
    [stored] = store.turns("ann")
    topic = store.add("ann", "episodic", "Ann named her kayak Otter", source_turn_ids=[stored.id])
    script.respond = lambda req: (
        retrieve("kayak Otter") if req.steps_so_far < 2 else answer("Otter.")
    )
    k = {"episodic": 1}
    trace = make(store, model, k=k).ask("ann", "kayak?", time="2024-03-04 10:00")[1]
    first, second = steps(trace)
    # Two memories cover the one turn: the turn's own entry and the topic. The first round
    # shows one of them; the second finds the other, whose only turn was shown: dropped.
    stored_entry = store.search("ann", "kayak", types=["episodic"], k=5)
    assert {h.memory.id for h in stored_entry} == {topic.id, stored_entry[-1].memory.id}
    assert len(first.hits) == 1 and first.hits[0].memory_id in {h.memory.id for h in stored_entry}
    assert second.hits == ()


def test_retrieval_none_finds_nothing(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    seed_semantic(store)
    script.respond = retrieve_once("zebra")
    trace = make(store, model, retrieval="none").ask("ann", "zebra?", time="2024-03-04 10:00")[1]
    assert steps(trace)[0].hits == ()


def test_without_pem_readings_are_not_absorbed_and_the_prompt_stays_neutral(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    script.update = lambda req: update(extraversion=5, neuroticism=1)
    with make(store, model, pem=False) as assistant:
        assistant.respond("ann", "Party tonight!", time="2024-03-04 10:00")
        assistant.respond("ann", "Another one!", time="2024-03-04 10:05")
    assert store.personality("ann") == PersonalityState.initial()
    with make(store, model) as assistant:
        assistant.respond("ann", "And again!", time="2024-03-04 10:10")
    absorbed = store.personality("ann")
    assert absorbed != PersonalityState.initial()
    # Turned off again, the prompt shows the neutral start, not what was absorbed.
    seen: list[str] = []
    script.respond = lambda req: seen.append(req.first_user) or answer("hi")  # type: ignore[func-returns-value]
    make(store, model, pem=False).ask("ann", "Hm?", time="2024-03-04 10:20")
    make(store, model).ask("ann", "Hm?", time="2024-03-04 10:20")
    assert seen[0] != seen[1]


def test_skip_rule_reaches_the_personality_state(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript
) -> None:
    # Conscientiousness read 5, then 3 with openness 5: the reference rule skips the 3 and
    # keeps conscientiousness where the first reading put it; the paper's rule absorbs it.
    readings = iter([reading(conscientiousness=5), reading(openness=5, conscientiousness=3)])
    script.update = lambda req: update(**next(readings))
    with make(store, model, skip_rule="reference") as assistant:
        assistant.respond("ann", "Hi", time="2024-03-04 10:00")
        after_first = store.personality("ann").traits.conscientiousness
        assistant.respond("ann", "Hi again", time="2024-03-04 10:01")
    state = store.personality("ann")
    assert after_first > 3.0
    assert state.traits.conscientiousness == after_first and state.traits.openness > 3.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retrieval", "bm25", "retrieval must be one of"),
        ("skip_rule", "always", "skip_rule must be one of"),
        ("pem", "yes", "pem must be true or false"),
    ],
)
def test_bad_switches_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AgentConfig(**{field: value})  # type: ignore[arg-type]


def test_ablations_are_reported() -> None:
    config = AgentConfig(pem=False, skip_rule="reference", retrieval="reference")
    assert config.ablations() == {"pem": False, "skip_rule": "reference", "retrieval": "reference"}
