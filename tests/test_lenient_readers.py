"""The update phase's readers take what real models write, say what they repaired, and
still refuse what they cannot read (the raw reply is kept with the failure).

Each case is a shape seen from real-looking models that failed every update before: a core
key with an apostrophe, space-separated `source_dialog_indices`, multi-line content, a
quoted "null", code fences, trailing commas.
"""

from __future__ import annotations

import pytest

from personavlm.agent.formats import (
    collecting_repairs,
    is_null,
    parse_consolidation_json,
    parse_episodic_tags,
    parse_key_values,
    parse_reading_tags,
    parse_semantic_tags,
    parse_update_json,
)
from personavlm.errors import ProtocolError

NEUTRAL = (
    '"personality": {"openness": 3, "conscientiousness": 3, "extraversion": 3, '
    '"agreeableness": 3, "neuroticism": 3}'
)


def test_keys_with_apostrophes_and_spaces_and_a_quoted_null() -> None:
    pairs = parse_key_values(
        '"user\'s favourite drink": "green tea"\nuser\'s home town: Tartu\n"old hobby": "null"'
    )
    assert pairs == [
        ("user's favourite drink", "green tea"),
        ("user's home town", "Tartu"),
        ("old hobby", "null"),
    ]
    assert is_null(pairs[2][1]) and is_null('"None"') and not is_null("nullable")


def test_a_value_over_several_lines_is_joined_and_noted() -> None:
    with collecting_repairs() as notes:
        proposal = parse_semantic_tags(
            '"reason": the user shared a fact\n"decision": true\n'
            '"content": Ann works nights at the hospital\nand sleeps until noon\n'
            '"keywords": work, sleep'
        )
    assert proposal is not None
    assert proposal.content == "Ann works nights at the hospital\nand sleeps until noon"
    assert proposal.keywords == ("work", "sleep")
    assert notes == ['joined a value that runs over several lines (key "content")']


@pytest.mark.parametrize(
    ("written", "expected", "noted"),
    [
        ("0, 1, 2", (0, 1, 2), False),
        ("[0, 1, 2]", (0, 1, 2), False),
        ("0 1 2", (0, 1, 2), True),
        ("[3;4]", (3, 4), True),
        ('"null"', (), False),
    ],
)
def test_source_dialog_indices_as_models_write_them(
    written: str, expected: tuple[int, ...], noted: bool
) -> None:
    with collecting_repairs() as notes:
        [topic] = parse_episodic_tags(
            f'"topic_summary": Ann planned a trip\n"source_dialog_indices": {written}\n'
            '"keywords": trip'
        )
    assert topic.exchanges == expected
    assert bool(notes) is noted


def test_json_in_a_fence_with_trailing_commas_is_read_and_noted() -> None:
    with collecting_repairs() as notes:
        reading, operations = parse_update_json(
            f'```JSON\n{{{NEUTRAL}, "operations": [{{"op": "ADD", "content": "x",}},],}}\n```'
        )
    assert reading.openness == 3 and [o.content for o in operations] == ["x"]
    assert notes == [
        "removed a code fence around the JSON",
        "removed trailing commas from the JSON",
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "Sure! Here is what I remember about the user.",  # prose, no key/value line
        '"decision": maybe\n"content": x',  # a value the format does not have
    ],
)
def test_what_cannot_be_read_is_still_a_protocol_error(reply: str) -> None:
    with pytest.raises(ProtocolError):
        parse_semantic_tags(reply)


def test_indices_with_words_are_refused_not_guessed() -> None:
    with pytest.raises(ProtocolError, match="exchange numbers"):
        parse_episodic_tags('"topic_summary": a\n"source_dialog_indices": first and third')


def test_broken_json_beyond_a_trailing_comma_is_refused() -> None:
    with pytest.raises(ProtocolError, match="not one JSON object"):
        parse_consolidation_json('{"core": [{"key": "name", "value": "Ann"}], "procedural": [')


def test_response_steps_and_updates_share_one_reader_for_json() -> None:
    from personavlm.agent.protocol import AnswerAction, Protocol, parse_step

    step = parse_step(
        '```json\n{"think": "t", "action": "answer", "answer": "hi",}\n```', Protocol.JSON
    )
    assert isinstance(step, AnswerAction) and step.text == "hi"
    # an unpaired surrogate spelled in JSON, also inside a list, becomes U+FFFD
    _, [operation] = parse_update_json(
        f'{{{NEUTRAL}, "operations": [{{"op": "ADD", "content": "a\\ud800b", '
        '"keywords": ["x\\udc00"]}]}'
    )
    assert operation.content == "a\ufffdb" and operation.keywords == ("x\ufffd",)


def test_a_reading_with_numbered_or_bulleted_traits_is_read_and_noted() -> None:
    numbered = "1. Openness: 4\n2. Conscientiousness: 3\n3) extraversion: 2\n"
    bulleted = "- agreeableness: 5\n* Neuroticism: 1"
    with collecting_repairs() as notes:
        reading = parse_reading_tags(numbered + bulleted)
    assert reading.to_dict() == {
        "openness": 4, "conscientiousness": 3, "extraversion": 2, "agreeableness": 5,
        "neuroticism": 1,
    }  # fmt: skip
    assert notes == ["removed list markers before the traits"]
    with pytest.raises(ProtocolError, match="must be an integer"):
        parse_reading_tags("1. Openness: -\n2. Conscientiousness: 3")  # no value is no guess
