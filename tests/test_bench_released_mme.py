"""Persona-MME in the released layout, read as the reference harness reads it.

The folder is the released one in miniature: `Persona-MME.json` beside `samples/`, `data_path`
written as the authors' `./data/Persona-MME/samples/<bucket>/<user>/user_data.json`, `imgs`
entries that are paths of their machine, question times with ` (Weekday)`, nested profiles,
and alignment pairs riding on multiple-choice questions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import write_png
from personavlm import embed
from personavlm.bench.persona_mme import load_persona_mme
from personavlm.cli import app
from personavlm.errors import ValidationError
from personavlm.interop.persona_mme import parse_mme_time, profile_entries
from personavlm.memory import MemoryStore


def turn(time: str, user: str, assistant: str = "OK.") -> dict[str, str]:
    return {"time": time, "user": user, "assistant": assistant}


ZOE = {
    "profile": {
        "name": "Zoe",
        "basic": {"age": 34, "occupation": "barista"},
        "hobbies": ["sketching", "hiking"],
        "note": "",
    },
    "sessions": [
        [turn("2024-09-16 10:00", "Look at my truck <img>"), turn("2024-09-16 10:02", "Nice?")],
        [turn("2024-09-22 18:00", "Painting the mural today.")],
    ],
    "imgs": ["/home/authors/Persona-MME/media/imgs/0.png"],
}
MAX = {"profile": {"name": "Max"}, "sessions": [[turn("2024-09-20 09:00", "I fold cranes.")]]}
CHOICES = {"(a)": "Sketching.", "(b)": "Painting.", "(c)": "Comics.", "(d)": "Latte art."}
PAIR = {"chosen": "Sounds lovely, go paint!", "rejected": "Statistically, painting."}


def question(user: str, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "data_path": f"./data/Persona-MME/samples/50/{user}/user_data.json",
        "type": "Preference Recognition",
        "question_type": "Latest Preference Recognition",
        "time": "2024-09-23 20:08 (Monday)",
        "query": query,
        "choices": CHOICES,
        "answer": "(b)",
    } | extra


QUESTIONS = [
    question("0", "Sketch or paint?"),
    question("0", "Which medium lately?", alignment=PAIR),
    question("1", "What do I fold?", time="2024-09-23 20:08", alignment=PAIR),
]


def released(root: Path) -> Path:
    for user, history in (("0", ZOE), ("1", MAX)):
        folder = root / "samples" / "50" / user
        folder.mkdir(parents=True)
        (folder / "user_data.json").write_text(json.dumps(history))
    write_png(root / "samples" / "50" / "0" / "0.png", (200, 40, 40))
    (root / "Persona-MME.json").write_text(json.dumps(QUESTIONS))
    return root


def test_released_layout_loads_as_the_reference_harness_reads_it(tmp_path: Path) -> None:
    loaded = load_persona_mme(released(tmp_path))
    zoe, max_ = loaded.plans
    assert zoe.user == "samples/50/0"
    # the image by its base name in the user's folder
    assert zoe.exchanges[0].images == (tmp_path / "samples/50/0/0.png",)
    items = {i.id: i for i in zoe.items}
    # question 1 carries a pair: itself under its task, plus two items under Alignment
    assert set(items) == {"q00000", "q00001", "q00001:chosen", "q00001:rejected"}
    host, chosen = items["q00001"], items["q00001:chosen"]
    assert (host.task, host.aspect, host.kind) == (
        "Latest Preference Recognition",
        "Preference",
        "choice",
    )
    assert (chosen.task, chosen.aspect, chosen.kind) == (
        "Personality Alignment",
        "Alignment",
        "alignment",
    )
    assert chosen.query == host.query and chosen.reply == PAIR["chosen"]
    assert (chosen.answer, items["q00001:rejected"].answer) == ("a", "b")
    assert host.time == chosen.time and f"{host.time:%Y-%m-%d %H:%M}" == "2024-09-23 20:08"
    # 3 questions, 2 of them with a pair: 3 + 2 * 2 items, as eval.py counts them
    assert loaded.questions == 3 and len(zoe.items) + len(max_.items) == 7


def test_profile_is_flattened_like_the_reference_agent_does() -> None:
    entries = profile_entries(ZOE["profile"], where="p")  # type: ignore[arg-type]
    assert entries == (
        ("name", "Zoe"),
        ("age", "34"),
        ("occupation", "barista"),
        ("hobbies", "sketching, hiking"),
    )


def test_weekday_suffix_is_checked_against_the_date() -> None:
    assert f"{parse_mme_time('2024-09-23 20:08 (Monday)', field='t'):%H:%M}" == "20:08"
    with pytest.raises(ValidationError, match="is a Monday"):
        parse_mme_time("2024-09-23 20:08 (Friday)", field="t")
    with pytest.raises(ValidationError, match="no weekday"):
        parse_mme_time("2024-09-23 20:08 (soon)", field="t")


def test_bench_random_scores_the_reference_item_count_and_seeds_each_profile(
    tmp_path: Path,
) -> None:
    data = released(tmp_path / "mme")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "bench", "persona-mme", "--data", str(data),
            "--questions", str(data / "Persona-MME.json"),
            "--mode", "random", "--out", str(out), "--embedder", "hashing", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["items"] == 7 and report["data"]["question_records"] == 3
    counts = report["scores"]["robust"]["counts"]["by_aspect"]
    assert counts["Alignment"] == 4
    # uniform guess: 3 four-way questions and 4 yes/no items
    assert report["random_expected"]["overall"] == round(100 * (3 * 0.25 + 4 * 0.5) / 7, 2)
    assert report["ingest"]["profile_keys_seeded"] == 5
    with MemoryStore.open(out / "memory.db", embedder=embed.load("hashing")) as store:
        core = {m.key: m.content for m in store.list("samples/50/0", types=["core"])}
        assert core == {
            "name": "Zoe",
            "age": "34",
            "occupation": "barista",
            "hobbies": "sketching, hiking",
        }
        assert [m.content for m in store.list("samples/50/1", types=["core"])] == ["Max"]


def test_older_synth_folders_with_questions_json_still_load(tmp_path: Path) -> None:
    data = released(tmp_path)
    (data / "Persona-MME.json").rename(data / "questions.json")
    assert load_persona_mme(data).questions == 3


def _bench(data: Path, out: Path, *flags: str) -> dict[str, Any]:
    args = ["bench", "persona-mme", "--data", str(data), "--mode", "random"]
    args += ["--out", str(out), "--embedder", "hashing", "--json", *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return dict(json.loads((out / "report.json").read_text()))


def test_the_report_records_the_ablation_switches(tmp_path: Path) -> None:
    data = released(tmp_path / "mme")
    flags = ("--no-pem", "--skip-rule", "reference", "--retrieval", "reference")
    report = _bench(data, tmp_path / "run", *flags)
    assert {k: report["config"][k] for k in ("pem", "skip_rule", "retrieval")} == {
        "pem": False,
        "skip_rule": "reference",
        "retrieval": "reference",
    }
    assert (
        "PEM off; skip rule reference; retrieval reference"
        in (tmp_path / "run" / "report.md").read_text()
    )


def test_a_run_from_before_the_switches_resumes_with_their_defaults(tmp_path: Path) -> None:
    data = released(tmp_path / "mme")
    out = tmp_path / "run"
    _bench(data, out)
    run_json = out / "run.json"
    stored = json.loads(run_json.read_text())
    for key in ("pem", "skip_rule", "retrieval", "prompts"):
        del stored["config"][key]
    run_json.write_text(json.dumps(stored))
    assert _bench(data, out)["data"]["items"] == 7
    result = CliRunner().invoke(
        app,
        ["bench", "persona-mme", "--data", str(data), "--mode", "random", "--out", str(out),
         "--embedder", "hashing", "--retrieval", "none"],
    )  # fmt: skip
    assert result.exit_code != 0 and "retrieval: 'ours' -> 'none'" in result.output


def test_prompts_are_checked_before_the_run_and_recorded(tmp_path: Path) -> None:
    data = released(tmp_path / "mme")
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "core_tags.txt").write_text("{UserProfile} only", encoding="utf-8")
    args = ["bench", "persona-mme", "--data", str(data), "--mode", "random", "--out",
            str(tmp_path / "bad"), "--embedder", "hashing", "--prompts", str(folder)]  # fmt: skip
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 3 and "missing placeholder" in refused.output
    assert not (tmp_path / "bad").exists()  # nothing started
    (folder / "core_tags.txt").write_text("{UserProfile} then {DialogHistory}", encoding="utf-8")
    report = _bench(data, tmp_path / "run", "--prompts", str(folder))
    assert report["config"]["prompts"] == str(folder.resolve())
    assert f"prompts {folder.resolve()}" in (tmp_path / "run" / "report.md").read_text()
