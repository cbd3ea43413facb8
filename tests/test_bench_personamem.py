"""The PersonaMem harness on the shipped fixture (tests/data/personamem, the official format)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_script import AgentScript, Req
from personavlm import embed
from personavlm.bench.harness import RecordLog
from personavlm.bench.personamem import load_personamem
from personavlm.bench.runs import RunConfig, execute
from personavlm.cli import app
from personavlm.errors import ValidationError
from personavlm.models import OpenAIChatModel

FIXTURE = Path(__file__).parent / "data" / "personamem"
QUESTIONS = FIXTURE / "questions_tiny.csv"
CONTEXTS = FIXTURE / "shared_contexts_tiny.jsonl"


def test_loader_slices_each_context_at_the_question_end_index() -> None:
    loaded = load_personamem(QUESTIONS, CONTEXTS)
    assert [p.user for p in loaded.plans] == ["ctx-maya", "ctx-omar"]
    maya = loaded.plans[0]
    # system | user+assistant | user+assistant | system | user+assistant | user+2 assistants
    assert [e.ext_id for e in maya.exchanges] == ["m0", "m1", "m3", "m5", "m6", "m8"]
    assert maya.exchanges[0].user.startswith("System: Current user persona: Maya")
    assert maya.exchanges[-1].assistant.count("\n\n") == 1  # two replies in a row, merged
    items = {i.id: i for i in maya.items}
    early = items["maya-hobby-early"]
    visible = [e for e in maya.exchanges if e.time <= early.time]
    assert [e.ext_id for e in visible] == ["m0", "m1", "m3"]  # messages 0..4
    assert early.choices["b"] == "A pottery class on Thursdays."  # Python-literal options
    assert items["maya-hobby-late"].choices["d"].startswith("A late session")  # JSON options
    assert early.answer == "b" and early.task == "recall_user_shared_facts"
    # end index 7 falls between message 6 (user) and 7 (its reply): that exchange waits
    cut = items["maya-cut"]
    assert [e.ext_id for e in maya.exchanges if e.time <= cut.time] == ["m0", "m1", "m3", "m5"]
    assert loaded.cut_exchanges == 1
    # a system message after the first starts a new session (a gap over 60 minutes)
    gap = maya.exchanges[3].time - maya.exchanges[2].time
    assert gap.total_seconds() > 3600


def test_bad_rows_name_the_row(tmp_path: Path) -> None:
    text = QUESTIONS.read_text().replace(",(c),", ",(e),", 1)
    bad = tmp_path / "q.csv"
    bad.write_text(text)
    with pytest.raises(ValidationError, match=r"row 3: correct_answer 'e'"):
        load_personamem(bad, CONTEXTS)
    missing = tmp_path / "m.csv"
    missing.write_text(QUESTIONS.read_text().replace("all_options", "options", 1))
    with pytest.raises(ValidationError, match="missing columns"):
        load_personamem(missing, CONTEXTS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValidationError, match="no context for shared_context_id"):
        load_personamem(QUESTIONS, empty)


def test_full_context_run_scores_by_option_letter(
    tmp_path: Path, script: AgentScript, model: OpenAIChatModel
) -> None:
    def reply(req: Req) -> str:
        question = req.last.split("## Question", 1)[1]
        if "Which class" in question:
            # Asked at message 5: bouldering (message 6) is still in its future.
            assert "bouldering" not in req.last.split("## Question", 1)[0]
            return "(b)"
        return "I am not sure."

    script.full_context = reply
    config = RunConfig(
        benchmark="personamem",
        data=str(QUESTIONS),
        mode="full-context",
        embedder="hashing",
        model="openai:scripted@loopback",
    )
    loaded = load_personamem(QUESTIONS, CONTEXTS)
    report = execute(
        loaded.plans,
        tmp_path / "out",
        config,
        model=model,
        embedder=embed.load("hashing"),
        describe={"cut_exchanges": loaded.cut_exchanges},
    )
    assert report["scores"]["items"] == 6
    assert report["scores"]["robust"]["by_task"]["recall_user_shared_facts"] == 50.0
    assert report["scores"]["unparsed"]["robust"] == 5
    done = RecordLog(tmp_path / "out" / "records.jsonl").records
    assert done["maya-hobby-early"]["correct_reference"] is True


def test_cli_retrieval_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "personamem", "--questions", str(QUESTIONS), "--contexts", str(CONTEXTS),
         "--out", str(tmp_path / "out"), "--mode", "retrieval-only", "--embedder", "hashing",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["benchmark"] == "personamem"
    assert report["data"]["cut_exchanges"] == 1
    assert report["scores"]["guessed"] == 0
    assert (tmp_path / "out" / "report.md").exists()
