"""The Persona-MME harness end to end: loader, replay, asking at the question's time, modes,
resuming, reports, the CLI. A scripted model on loopback stands in for the real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent_script import AgentScript, Req, answer
from helpers import write_png
from personavlm import embed
from personavlm.bench.harness import RecordLog
from personavlm.bench.persona_mme import load_persona_mme
from personavlm.bench.runs import RunConfig, execute
from personavlm.cli import app
from personavlm.errors import ConflictError, ModelError, ValidationError
from personavlm.memory import MemoryStore
from personavlm.models import OpenAIChatModel
from personavlm.testing import ScriptedResponse


def turn(time: str, user: str, assistant: str) -> dict[str, str]:
    return {"time": time, "user": user, "assistant": assistant}


ANN = {
    "profile": {"name": "Ann"},
    "sessions": [
        [
            turn("2025-03-01 10:00", "Sprite is my favourite drink.", "Noted!"),
            turn("2025-03-01 10:05", "This is my cat Miso <img>", "Cute!"),
        ],
        [turn("2025-03-20 18:00", "These days I only drink Coca-Cola.", "Got it.")],
        [turn("2025-04-02 09:00", "My colleague Sam became my best friend.", "Lovely.")],
    ],
    "imgs": ["miso.png"],
}
BEN = {"sessions": [[turn("2025-05-01 08:00", "I run every morning.", "Great.")]]}
DRINKS = {"(a)": "Water", "(b)": "Sprite", "(c)": "Coca-Cola", "(d)": "Tea"}
QUESTIONS = [
    {"id": "ann-drink-march", "data_path": "samples/32k/ann/user_data.json", "type": "Preference",
     "question_type": "Latest Preference Recognition", "time": "2025-03-10 12:00",
     "query": "What should I drink?", "choices": DRINKS, "answer": "(b)"},
    {"id": "ann-drink-april", "data_path": "samples/32k/ann/user_data.json", "type": "Preference",
     "question_type": "Latest Preference Recognition", "time": "2025-04-03 12:00",
     "query": "What should I drink?", "choices": DRINKS, "answer": "(c)", "evidence": ["s1t0"]},
    {"id": "ann-align", "data_path": "samples/32k/ann/user_data.json", "type": "Alignment",
     "question_type": "Personality Alignment", "time": "2025-04-03 12:00",
     "query": "I'm nervous about my exam.",
     "alignment": {"chosen": "It's normal to worry; you prepared well.", "rejected": "Whatever."}},
    {"id": "ben-sport", "data_path": "samples/32k/ben/user_data.json", "type": "Behavior",
     "question_type": "Behavioral Pattern Recognition", "time": "2025-05-02 08:00",
     "query": "What do I do every morning?",
     "choices": {"(a)": "Run", "(b)": "Swim", "(c)": "Cycle", "(d)": "Sleep in"}, "answer": "(a)"},
]  # fmt: skip


def write_data(root: Path, questions: list[dict[str, Any]] | None = None) -> Path:
    for name, history in (("ann", ANN), ("ben", BEN)):
        folder = root / "samples" / "32k" / name
        folder.mkdir(parents=True)
        (folder / "user_data.json").write_text(json.dumps(history))
    write_png(root / "samples" / "32k" / "ann" / "miso.png", (230, 120, 20))
    (root / "questions.json").write_text(json.dumps(questions or QUESTIONS))
    return root


def config(data: Path, mode: str, **changes: Any) -> RunConfig:
    values: dict[str, Any] = {
        "benchmark": "persona-mme",
        "data": str(data),
        "mode": mode,
        "embedder": "hashing",
        "model": "openai:scripted@loopback" if mode in ("rag", "full-context") else None,
    }
    return RunConfig(**(values | changes))


def run(
    data: Path, out: Path, mode: str, model: OpenAIChatModel | None, **changes: Any
) -> dict[str, Any]:
    loaded = load_persona_mme(data)
    return execute(
        loaded.plans,
        out,
        config(data, mode, **changes),
        model=model,
        embedder=embed.load("hashing"),
        describe={},
    )


def records(out: Path) -> dict[str, dict[str, Any]]:
    return RecordLog(out / "records.jsonl").records


def test_loader_builds_one_plan_per_history_and_two_items_per_alignment_pair(
    tmp_path: Path,
) -> None:
    loaded = load_persona_mme(write_data(tmp_path))
    assert [p.user for p in loaded.plans] == ["samples/32k/ann", "samples/32k/ben"]
    ann = loaded.plans[0]
    assert [e.ext_id for e in ann.exchanges] == ["s0t0", "s0t1", "s1t0", "s2t0"]
    assert ann.exchanges[1].images == (tmp_path / "samples/32k/ann/miso.png",)
    items = {i.id: i for i in ann.items}
    assert set(items) == {
        "ann-drink-march",
        "ann-drink-april",
        "ann-align:chosen",
        "ann-align:rejected",
    }
    assert items["ann-drink-april"].answer == "c"
    assert items["ann-drink-april"].evidence == ("s1t0",)
    assert (items["ann-align:chosen"].answer, items["ann-align:rejected"].answer) == ("a", "b")
    assert items["ann-align:rejected"].reply == "Whatever."
    assert items["ann-align:chosen"].aspect == "Alignment"
    assert loaded.questions == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"answer": "(e)"}, r"\[1\]\.answer"),
        ({"choices": ["Water", "Tea"]}, r"\[1\]\.choices"),
        ({"time": "April"}, r"\[1\]\.time"),
        ({"data_path": ""}, r"\[1\]\.data_path"),
        ({"query": None}, r"\[1\]\.query"),
    ],
)
def test_a_bad_question_record_names_its_index_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    questions = [dict(q) for q in QUESTIONS]
    questions[1] |= change
    with pytest.raises(ValidationError, match=message):
        load_persona_mme(write_data(tmp_path, questions))


def test_full_context_sees_only_the_history_before_the_question(
    tmp_path: Path, script: AgentScript, model: OpenAIChatModel
) -> None:
    script.full_context = lambda req: "(b)" if "March" in req.last else "The answer is (c)."
    data = write_data(tmp_path / "data")
    report = run(data, tmp_path / "out", "full-context", model)
    asked = {_question_time(req): req for kind, req in script.seen if kind == "full_context"}
    march = asked["2025-03-10 12:00"]
    assert "Sprite is my favourite drink." in march.all_text
    assert "These days I only drink Coca-Cola." not in march.all_text  # its future
    assert len(march.images()) == 1  # Miso, shown on March 1st
    assert "These days I only drink Coca-Cola." in asked["2025-04-03 12:00"].all_text
    done = records(tmp_path / "out")
    assert done["ann-drink-march"]["history_turns"] == 4  # two exchanges, two turns each
    assert report["scores"]["items"] == 5
    assert report["data"]["exchanges"] == 5


def _question_time(req: Req) -> str:
    return req.last.split("## Question\n", 1)[1][:16]


def test_full_context_cuts_the_oldest_turns_to_fit_the_budget(
    tmp_path: Path, script: AgentScript, model: OpenAIChatModel
) -> None:
    long = {
        "sessions": [
            [turn(f"2025-01-{day:02d} 10:00", f"Day {day}: " + "blah " * 300, "ok")]
            for day in range(1, 29)
        ]
    }
    folder = tmp_path / "data" / "samples" / "long"
    folder.mkdir(parents=True)
    (folder / "user_data.json").write_text(json.dumps(long))
    question = {
        "data_path": "samples/long/user_data.json",
        "question_type": "Semantic Information Recall",
        "time": "2025-02-01 10:00",
        "query": "What did I say?",
        "choices": {"(a)": "x", "(b)": "y"},
        "answer": "(a)",
    }
    (tmp_path / "data" / "questions.json").write_text(json.dumps([question]))
    run(tmp_path / "data", tmp_path / "out", "full-context", model, context_tokens=4096)
    record = records(tmp_path / "out")["q00000"]
    assert record["history_turns"] == 56
    assert 0 < record["history_turns_kept"] < 56
    assert record["context_tokens_estimated"] <= 4096 - 1024  # room left for the reply
    (req,) = [r for kind, r in script.seen if kind == "full_context"]
    assert "Day 28:" in req.all_text and "Day 1:" not in req.all_text


def test_rag_replays_with_the_update_phase_and_asks_without_storing(
    tmp_path: Path, script: AgentScript, model: OpenAIChatModel
) -> None:
    script.respond = lambda req: answer("(c) Coca-Cola" if "2025-04-03" in req.query else "(b)")
    data = write_data(tmp_path / "data")
    report = run(data, tmp_path / "out", "rag", model)
    kinds = script.kinds()
    assert kinds.count("update") == 5  # one per replayed exchange
    assert kinds.count("respond") == 5  # one step per item: each answered at once
    assert "episodic" in kinds  # sessions closed by the 60-minute rule during the replay
    with MemoryStore.open(tmp_path / "out" / "memory.db", embedder=embed.load("hashing")) as store:
        turns = store.turns("samples/32k/ann", limit=100)
    assert len(turns) == 8  # the history's turns only: questions left nothing behind
    done = records(tmp_path / "out")
    assert done["ann-drink-march"]["correct_robust"] is True
    assert done["ann-drink-april"]["reference"] == "c"
    assert done["ann-drink-april"]["trace"]["protocol"] == "json"
    assert report["ingest"]["update_turn_applied"] == 5
    assert report["scores"]["robust"]["by_task"]["Latest Preference Recognition"] == 100.0


def test_an_interrupted_run_resumes_where_it_stopped(
    tmp_path: Path, script: AgentScript, model: OpenAIChatModel
) -> None:
    calls = 0

    def flaky(_req: Req) -> str | ScriptedResponse:
        nonlocal calls
        calls += 1
        return ScriptedResponse(status=503) if calls == 3 else "(a)"

    script.full_context = flaky
    data = write_data(tmp_path / "data")
    with pytest.raises(ModelError):
        run(data, tmp_path / "out", "full-context", model)
    assert len(records(tmp_path / "out")) == 2
    assert not (tmp_path / "out" / "report.json").exists()

    script.full_context = lambda req: "(a)"
    report = run(data, tmp_path / "out", "full-context", model)
    assert report["scores"]["items"] == 5
    assert sum(kind == "full_context" for kind, _ in script.seen) == 3 + 3  # 3 before, 3 after
    lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 5  # nothing asked twice


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    run(data, tmp_path / "out", "random", None)
    with pytest.raises(ConflictError, match="mode"):
        run(data, tmp_path / "out", "retrieval-only", None)
    with pytest.raises(ConflictError, match="seed"):
        run(data, tmp_path / "out", "random", None, seed=1)


def test_a_torn_last_record_is_cut_off_and_asked_again(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a", "x": 1}\n{"id": "b", "x"')
    log = RecordLog(path)
    assert list(log.records) == ["a"]
    assert path.read_text() == '{"id": "a", "x": 1}\n'
    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(Exception, match="damaged"):
        RecordLog(path)


def test_random_baseline_and_report_files(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    report = run(data, tmp_path / "out", "random", None, seed=7)
    again = run(data, tmp_path / "again", "random", None, seed=7)
    assert report["scores"] == again["scores"]  # seeded
    assert report["random_expected"]["overall"] == pytest.approx(100 * (3 * 0.25 + 2 * 0.5) / 5)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["format"] == 1 and saved["config"]["seed"] == 7
    assert saved["personavlm"] and saved["config"]["mode"] == "random"
    assert "| **overall** | 5 |" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "accuracy_by_aspect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieval_only_baseline_picks_the_option_nearest_the_memories(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    run(data, tmp_path / "out", "retrieval-only", None)
    done = records(tmp_path / "out")
    assert done["ben-sport"]["robust"] == "a"  # "Run" is what the memory says
    assert done["ann-align:chosen"]["guess"] is True  # cannot judge personality: a coin flip
    assert "guess" not in done["ben-sport"]


def test_cli_runs_a_baseline_and_refuses_rag_with_model_none(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["bench", "persona-mme", "--data", str(data), "--out", str(tmp_path / "out"),
         "--mode", "random", "--embedder", "hashing", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scores"]["items"] == 5
    result = runner.invoke(
        app,
        ["bench", "persona-mme", "--data", str(data), "--out", str(tmp_path / "rag"),
         "--model", "none"],
    )  # fmt: skip
    assert result.exit_code == 3
    assert "--model" in result.output
    result = runner.invoke(
        app,
        ["bench", "persona-mme", "--data", str(data), "--out", str(tmp_path / "x"),
         "--mode", "oracle"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "rag, full-context, random, retrieval-only" in result.output


def test_full_context_counts_tokens_with_a_local_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from personavlm.bench.readers import ApproxCounter, load_counter

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    tokenizer.train_from_iterator(["my cat Miso likes fish"], trainer=trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    counter = load_counter(tmp_path)  # a model directory holding tokenizer.json
    assert counter.count("my cat Miso likes fish") == 5
    assert counter.count("an unknown sentence here") == 4
    assert isinstance(load_counter(None), ApproxCounter)
    assert ApproxCounter().count("x" * 9) == 3
    with pytest.raises(ValidationError, match=r"no tokenizer\.json"):
        load_counter(tmp_path / "nowhere")
