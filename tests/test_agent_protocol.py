"""The readers of model output: response steps (tags, json), time windows, escaping, and the
update formats. Each malformed shape must raise ProtocolError saying what is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personavlm.agent.formats import (
    parse_consolidation_json,
    parse_episodic_tags,
    parse_key_values,
    parse_semantic_tags,
    parse_update_json,
)
from personavlm.agent.protocol import (
    AnswerAction,
    Protocol,
    RetrieveAction,
    escape,
    parse_step,
    resolve_window,
    unescape,
)
from personavlm.errors import ProtocolError

RETRIEVE = (
    "<think>Need the trip.</think>\n<retrieve>\n"
    '"keywords": "Lyon trip, sister"\n"start_time": "2024-03-01 00:00"\n"end_time": null\n'
    "</retrieve>"
)


def test_tags_answer_and_retrieve() -> None:
    assert parse_step("<think>a</think><answer> Hi! </answer>", Protocol.TAGS) == AnswerAction(
        "a", "Hi!"
    )
    assert parse_step(RETRIEVE, Protocol.TAGS) == RetrieveAction(
        "Need the trip.", "Lyon trip, sister", "2024-03-01 00:00", None
    )


def test_tags_keywords_written_as_a_list() -> None:
    text = RETRIEVE.replace('"Lyon trip, sister"', '["Lyon", "sister"]')
    step = parse_step(text, Protocol.TAGS)
    assert isinstance(step, RetrieveAction) and step.keywords == "Lyon, sister"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("<answer>x</answer>", "must start with <think>"),
        ("<think>a</think>", "exactly one <answer>"),
        ("<think>a</think><answer></answer>", "non-empty answer"),
        ("<think>a</think><answer>x</answer> trailing", "nothing after it"),
        ("<think>a</think><answer>x</answer><answer>y</answer>", "exactly one"),
        ('<think>a</think><retrieve>\n"keywords": x\n</retrieve>', "missing start_time"),
        (
            '<think>a</think><retrieve>\n"keywords": null\n"start_time": null\n'
            '"end_time": null\n</retrieve>',
            "non-empty",
        ),
        ('<think>a</think><retrieve>\n"query": x\n</retrieve>', "is not one of"),
        ('<think>a</think><retrieve>\n"keywords": x\n"keywords": y\n</retrieve>', "twice"),
    ],
)
def test_malformed_tags_say_what_is_wrong(reply: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_step(reply, Protocol.TAGS)


def step(**fields: object) -> str:
    base: dict[str, object] = {
        "think": "t",
        "action": "answer",
        "answer": "Hi",
        "keywords": None,
        "start_time": None,
        "end_time": None,
    }
    return json.dumps({**base, **fields})


def test_json_steps() -> None:
    assert parse_step(step(), Protocol.JSON) == AnswerAction("t", "Hi")
    assert parse_step("```json\n" + step() + "\n```", Protocol.JSON) == AnswerAction("t", "Hi")
    retrieve = step(action="retrieve", answer=None, keywords="dog", end_time="2024-03-01 10:00")
    assert parse_step(retrieve, Protocol.JSON) == RetrieveAction(
        "t", "dog", None, "2024-03-01 10:00"
    )


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("Hi", "not one JSON object"),
        ("[1]", "must be a JSON object"),
        (step(action="shout"), '"action" must be'),
        (step(answer=""), "not a non-empty string"),
        (step(action="retrieve", keywords=None), '"keywords"'),
        (step(think=None), '"think" must be a string'),
        (step(action="retrieve", keywords="x", start_time=5), "string or null"),
    ],
)
def test_malformed_json_says_what_is_wrong(reply: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_step(reply, Protocol.JSON)


def test_windows_are_used_as_given_or_dropped_with_a_note() -> None:
    both = resolve_window("2024-03-01 00:00", "2024-03-10 12:00")
    assert str(both.window.start) == "2024-03-01 00:00:00"
    assert str(both.window.end) == "2024-03-10 12:00:00"
    assert both.notes == ()
    bad = resolve_window("last week", "2024-03-10 12:00")
    assert bad.window.start is None and bad.window.end is not None
    assert "not a time" in bad.notes[0]
    reversed_ = resolve_window("2024-03-10 00:00", "2024-03-01 00:00")
    assert reversed_.window.is_open
    assert "after end_time" in reversed_.notes[0]


@given(st.text())
def test_escaped_text_holds_no_protocol_structure_and_round_trips(text: str) -> None:
    escaped = escape(text)
    for marker in ("<think", "</answer", "<answer", "<retrieve", "</retrieve", "<|", "<image"):
        assert marker not in escaped.lower()
    if "&lt;" not in text.lower():
        assert unescape(escaped) == text


def test_update_json() -> None:
    reading, proposals = parse_update_json(
        json.dumps(
            {
                "personality": {
                    "openness": 4,
                    "conscientiousness": 3,
                    "extraversion": 2,
                    "agreeableness": 3,
                    "neuroticism": 5,
                },
                "operations": [
                    {
                        "op": "add",
                        "id": None,
                        "content": "x",
                        "keywords": ["k"],
                        "attach_images": True,
                    }
                ],
            }
        )
    )
    assert reading.neuroticism == 5
    assert proposals[0].op == "ADD" and proposals[0].attach_images


@pytest.mark.parametrize(
    ("operations", "error"),
    [
        ([{"op": "MERGE"}], "op must be one of"),
        ([{"op": "ADD", "id": None, "content": ""}], "has no content"),
        ([{"op": "UPDATE", "id": None, "content": "x"}], "names no memory id"),
        ([{"op": "INVALIDATE", "id": "7"}], "integer memory id"),
    ],
)
def test_malformed_update_operations(operations: list[object], error: str) -> None:
    body = {
        "personality": dict.fromkeys(
            ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"], 3
        ),
        "operations": operations,
    }
    with pytest.raises(ProtocolError, match=error):
        parse_update_json(json.dumps(body))


def test_reference_formats() -> None:
    keep = parse_semantic_tags(
        '"reason": new pet\n"decision": true\n'
        '"content": Bobby the beagle (Image Object: dog)\n"keywords": dog, Bobby'
    )
    assert keep is not None and keep.attach_images and keep.keywords == ("dog", "Bobby")
    assert (
        parse_semantic_tags('"reason": chat\n"decision": false\n"content": \n"keywords": ') is None
    )
    with pytest.raises(ProtocolError, match="decision"):
        parse_semantic_tags('"reason": x\n"content": y')
    topics = parse_episodic_tags(
        '"topic_summary": A\n"keywords": a\n"source_dialog_indices": 0, 1\n'
        '"topic_summary": B\n"keywords": b\n"source_dialog_indices": 2'
    )
    assert [(t.summary, t.exchanges) for t in topics] == [("A", (0, 1)), ("B", (2,))]
    assert parse_key_values('{\n"name": "Ann",\n"job": nurse\n}') == [
        ("name", "Ann"),
        ("job", "nurse"),
    ]
    with pytest.raises(ProtocolError, match="not a"):
        parse_key_values("just some prose")
    core, procedural = parse_consolidation_json(
        '{"core": [{"key": "city", "value": null}], "procedural": []}'
    )
    assert core[0].value is None and procedural == []
