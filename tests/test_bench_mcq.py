"""Multiple-choice wording and answer reading (bench/mcq.py), the task table (tasks.py) and
scoring (bench/scoring.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from personavlm.bench.mcq import (
    Item,
    choice_letter,
    prompt_text,
    reference_letter,
    robust_letter,
)
from personavlm.bench.scoring import expected_random, markdown_table, summarize
from personavlm.errors import ValidationError
from personavlm.tasks import TASK_ASPECT

CHOICES = {"a": "Sprite", "b": "Coca-Cola", "c": "Coca-Cola Zero", "d": "Water"}


@pytest.mark.parametrize(
    ("reply", "reference", "robust"),
    [
        ("(b)", "b", "b"),
        ("b) Coca-Cola", "b", "b"),
        ("The answer is (c).", "c", "c"),
        ("Answer: d", None, "d"),
        ("**B**", None, "b"),
        ("B", None, "b"),
        ("B. Coca-Cola", None, "b"),
        ("I would go with Coca-Cola Zero.", None, "c"),  # the longer option is the one named
        ("The answer is a bit unclear to me.", None, None),  # "a" here is an article
        ("(a) or (b), hard to say", "a", None),  # two options: robust will not guess
        ("<think>maybe (a)</think> (b)", "a", "b"),  # the reference rule reads the thinking
        ("Sorry, I cannot tell.", None, None),
        ("e) none of these", None, None),  # not an offered letter
    ],
)
def test_answer_readers(reply: str, reference: str | None, robust: str | None) -> None:
    assert reference_letter(reply, CHOICES) == reference
    assert robust_letter(reply, CHOICES) == robust


def test_reference_rule_is_the_character_before_the_first_parenthesis() -> None:
    assert reference_letter("I pick c) and not (a)") == "c"
    assert reference_letter(")") is None


def _item(**changes: object) -> Item:
    fields: dict[str, object] = {
        "id": "q1",
        "user": "u",
        "time": datetime(2025, 3, 1, 10, 0),
        "query": "What do I drink now?",
        "choices": CHOICES,
        "answer": "b",
        "task": "Latest Preference Recognition",
        "aspect": "Preference",
    }
    return Item(**(fields | changes))  # type: ignore[arg-type]


def test_prompt_lists_options_as_the_reference_harness_does() -> None:
    # The reference layout line for line: query, Options:, "(x). text" lines, instruction.
    assert prompt_text(_item()).splitlines() == [
        "What do I drink now?",
        "Options:",
        "(a). Sprite",
        "(b). Coca-Cola",
        "(c). Coca-Cola Zero",
        "(d). Water",
        "Give your final answer: (a), (b), (c) or (d).",
    ]


def test_alignment_prompt_quotes_the_reply_under_the_reference_labels() -> None:
    item = _item(
        choices={"a": "Yes", "b": "No"}, answer="a", kind="alignment", reply="Take it easy."
    )
    lines = prompt_text(item).splitlines()
    assert lines[0] == "What do I drink now?"
    reply_at = lines.index("Response to Evaluate:")
    assert lines[reply_at + 1] == '"Take it easy."'
    assert "personality" in lines[lines.index("Question:") + 1]
    options = lines[lines.index("Options:") + 1 : lines.index("Options:") + 3]
    assert [o[:4] for o in options] == ["(a) ", "(b) "]
    assert options[0].startswith("(a) Yes") and options[1].startswith("(b) No")
    assert "(a) or (b)" in lines[-1]


def test_item_rejects_an_answer_outside_its_choices() -> None:
    with pytest.raises(ValidationError, match="not one of its choices"):
        _item(answer="e")


def test_choice_labels() -> None:
    assert [choice_letter(x, where="t") for x in ("(a)", "B", "c)", "(D).")] == list("abcd")
    with pytest.raises(ValidationError, match="not an option label"):
        choice_letter("(ab)", where="t")


def test_every_paper_task_has_an_aspect() -> None:
    assert len(TASK_ASPECT) == 14
    assert set(TASK_ASPECT.values()) == {
        "Memory",
        "Intent",
        "Preference",
        "Behavior",
        "Relationship",
        "Growth",
        "Alignment",
    }


def _record(item_id: str, task: str, aspect: str, kind: str, right: bool) -> dict[str, object]:
    return {
        "id": item_id,
        "task": task,
        "aspect": aspect,
        "kind": kind,
        "reference": "a" if right else None,
        "robust": "a" if right else "b",
        "correct_reference": right,
        "correct_robust": right,
        "model_calls": 2,
        "prompt_tokens": 100,
    }


def test_summary_counts_alignment_items_and_reports_both_overalls() -> None:
    records = [
        _record("q1", "Visual Detail Recall", "Memory", "choice", True),
        _record("q2", "Visual Detail Recall", "Memory", "choice", False),
        _record("q3", "Relationship Recognition", "Relationship", "choice", True),
        _record("p1:chosen", "Personality Alignment", "Alignment", "alignment", True),
        _record("p1:rejected", "Personality Alignment", "Alignment", "alignment", True),
    ]
    summary = summarize(records)
    assert summary["items"] == 5
    assert summary["robust"]["overall"] == 80.0
    assert summary["robust"]["overall_without_alignment"] == pytest.approx(66.67)
    assert summary["robust"]["by_aspect"] == {
        "Memory": 50.0,
        "Relationship": 100.0,
        "Alignment": 100.0,
    }
    assert summary["unparsed"] == {"reference": 1, "robust": 0}
    assert summary["model_calls"] == {"total": 10, "per_item": 2.0}
    table = markdown_table(summary)
    assert "| **overall** | 5 | 80.00 |" in table
    assert "| overall without alignment | 3 | 66.67 |" in table
    choices = {"q1": 4, "q2": 4, "q3": 4, "p1:chosen": 2, "p1:rejected": 2}
    assert expected_random(records, choices) == pytest.approx(100 * (3 * 0.25 + 2 * 0.5) / 5)
