"""Training data: SFT samples and RL prompts recorded from the real agent replaying simulated
users (`personavlm.train.world_samples`), the dataset format (`samples.py`), the recorder
(`recorder.py`), the RL prompts (`rl_data.py`) and `personavlm train data|import`.

The oracle-built folder is made once per module (about 2 s); everything else is small and
built per test in tmp_path. A teacher is the real OpenAI client against a scripted server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import write_png
from personavlm.agent.context import prompt
from personavlm.agent.formats import (
    parse_episodic_tags,
    parse_key_values,
    parse_reading_tags,
    parse_semantic_tags,
)
from personavlm.agent.protocol import AnswerAction, Protocol, parse_step
from personavlm.agent.templates import PLACEHOLDERS
from personavlm.bench.mcq import robust_letter
from personavlm.cli.app import app
from personavlm.embed import HashingEmbedder
from personavlm.errors import NotFoundError, ValidationError
from personavlm.models.base import ImagePart, Message, TextPart
from personavlm.models.openai import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer
from personavlm.train.recorder import RecordingModel, call_kind, text_of, without_retries
from personavlm.train.rl_data import PICTURE_PLACEHOLDER, RLPrompt, load_rl_prompts
from personavlm.train.samples import (
    IMAGE_MARKER,
    SAMPLES_FORMAT,
    Sample,
    SampleTurn,
    SampleWriter,
    copy_dataset,
    load_samples,
    sample_from_messages,
)
from personavlm.train.world_samples import PAPER_MIX, build_training_data, mix_samples

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
OUTPUTS = ("sft.json", "images", "manifest.json", "rl.jsonl", "rl_manifest.json", "memory.db")
GROUP = {"reasoning": "reasoning", "personality": "personality"}  # everything else: memory
# The agent prompt file each sample kind's system prompt comes from.
PROMPT_OF = {
    "reasoning": "response_tags",
    "personality": "personality_tags",
    "semantic": "semantic_tags",
    "episodic": "episodic_tags",
    "core": "core_tags",
    "procedural": "procedural_tags",
}
PARSERS: dict[str, Callable[[str], object]] = {
    "personality": parse_reading_tags,
    "semantic": parse_semantic_tags,
    "episodic": parse_episodic_tags,
    "core": parse_key_values,
    "procedural": parse_key_values,
}
RETRY_NOTE = "Your reply could not be read: "


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("train") / "data"
    manifest = build_training_data(out, users=2, size="32k", seed=1, embedder=HashingEmbedder())
    return out, manifest


@pytest.fixture(scope="module")
def records(built: tuple[Path, dict[str, Any]]) -> list[dict[str, Any]]:
    data = json.loads((built[0] / "sft.json").read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def _values(record: dict[str, Any], speaker: str) -> list[str]:
    return [t["value"] for t in record["conversations"] if t["from"] == speaker]


def _prompt_key(text: str) -> str:
    """A first user message as both the samples (markers) and RL prompts (placeholder) hold it."""
    return text.replace(IMAGE_MARKER, PICTURE_PLACEHOLDER)


def _rl_by_first_message(prompts: list[RLPrompt]) -> dict[str, RLPrompt]:
    by_text: dict[str, RLPrompt] = {}
    for p in prompts:
        first_user = next(m["content"] for m in p.prompt if m["role"] == "user")
        assert first_user not in by_text, f"two RL prompts share a first message: {p.id}"
        by_text[first_user] = p
    return by_text


def _names_right_option(answer: str, rl: RLPrompt) -> bool:
    if rl.kind == "choice":
        return robust_letter(answer, rl.choices) == rl.reference
    return rl.reference.lower() in answer.lower()


def _turns(*pairs: tuple[str, str]) -> tuple[SampleTurn, ...]:
    return tuple(SampleTurn(role, text) for role, text in pairs)  # type: ignore[arg-type]


def _sample(sample_id: str, kind: str) -> Sample:
    return Sample(sample_id, kind, _turns(("user", f"q {sample_id}"), ("assistant", "a")))


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _reference_file(tmp_path: Path) -> Path:
    """A bare reference-format file (no id, kind, source) with one picture beside it."""
    write_png(tmp_path / "cat.png", (10, 120, 200))
    return _write_json(
        tmp_path / "ref.json",
        [
            {
                "conversations": [
                    {"from": "system", "value": "You are helpful."},
                    {"from": "human", "value": f"{IMAGE_MARKER}\nWhat is this?"},
                    {"from": "gpt", "value": "A blue square."},
                ],
                "image": ["cat.png"],
            },
            {
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello."},
                ]
            },
        ],
    )


# ------------------------------------------------------------ build_training_data, oracle


def test_build_writes_the_whole_folder(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    for name in OUTPUTS:
        assert (out / name).exists(), name
    assert (out / "images").is_dir() and any((out / "images").iterdir())
    assert (out / "world").is_dir() and any((out / "world").iterdir())
    on_disk = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == manifest
    assert manifest["format"] == SAMPLES_FORMAT and manifest["teacher"] == "oracle"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "stray folders left"


def test_the_stores_picture_blobs_live_in_the_finished_folder(
    built: tuple[Path, dict[str, Any]],
) -> None:
    # GRPO rollouts read pictures back from memory.db: every registered picture's blob must
    # be in the folder's own blob store (rows name blobs by sha256, so the folder can move).
    import sqlite3

    out, _ = built
    with sqlite3.connect(out / "memory.db") as db:
        ids = [str(row[0]) for row in db.execute("SELECT id FROM images")]
    assert ids
    for image_id in ids:
        assert (out / "memory.db.blobs" / image_id[:2] / image_id).is_file(), image_id


def test_a_failed_build_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "data"
    with pytest.raises(ValidationError, match="unknown size"):
        build_training_data(out, users=1, size="64k", seed=1, embedder=HashingEmbedder())
    assert not out.exists()


def test_build_refuses_an_existing_folder_and_leaves_it_intact(
    built: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = built
    before = {p.relative_to(out): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    sft = (out / "sft.json").read_bytes()
    with pytest.raises(ValidationError, match="exists"):
        build_training_data(out, users=1, size="32k", seed=9, embedder=HashingEmbedder())
    after = {p.relative_to(out): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert (out / "sft.json").read_bytes() == sft


def test_build_mixes_to_the_paper_shares(
    built: tuple[Path, dict[str, Any]], records: list[dict[str, Any]]
) -> None:
    _, manifest = built
    assert manifest["mix_target"] == PAPER_MIX
    assert set(manifest["mix"]) == set(PAPER_MIX)
    for group, share in PAPER_MIX.items():
        assert abs(manifest["mix"][group] - share) <= 0.02, (group, manifest["mix"])
    # The shares are those of the samples actually written.
    groups = Counter(GROUP.get(r["kind"], "memory") for r in records)
    for group, n in groups.items():
        assert abs(n / len(records) - manifest["mix"][group]) < 0.001
    counts = Counter(r["kind"] for r in records)
    assert manifest["counts"] == dict(counts) and manifest["samples"] == len(records)
    assert set(counts) <= set(manifest["before_mix"])
    for kind, n in counts.items():
        assert manifest["before_mix"][kind] >= n, kind
    assert sum(manifest["before_mix"].values()) > len(records), "the mix dropped nothing"
    assert set(counts) == set(PROMPT_OF), "every kind of the paper's mix is represented"


def test_every_reply_reads_with_the_agents_own_parsers(records: list[dict[str, Any]]) -> None:
    for record in records:
        kind = record["kind"]
        replies = _values(record, "gpt")
        assert record["conversations"][-1]["from"] == "gpt"
        if kind == "reasoning":
            for text in replies:
                parse_step(text, Protocol.TAGS)
            assert isinstance(parse_step(replies[-1], Protocol.TAGS), AnswerAction)
        else:
            assert len(replies) == 1, record["id"]
            PARSERS[kind](replies[0])


def test_reasoning_answers_name_the_right_option(
    built: tuple[Path, dict[str, Any]], records: list[dict[str, Any]]
) -> None:
    out, manifest = built
    rl = _rl_by_first_message(load_rl_prompts(out).prompts)
    reasoning = [r for r in records if r["kind"] == "reasoning"]
    assert reasoning
    for record in reasoning:
        question = rl[_prompt_key(_values(record, "human")[0])]
        final = parse_step(_values(record, "gpt")[-1], Protocol.TAGS)
        assert isinstance(final, AnswerAction)
        assert _names_right_option(final.text, question), (record["id"], final.text)
    # The oracle never answers wrong; it only misses evidence.
    assert set(manifest["rejected"]) <= {"reasoning: evidence never retrieved"}


def test_opening_prompts_are_the_agents_prompt_files(records: list[dict[str, Any]]) -> None:
    # The tags layout: one human message holds the whole prompt (no system turn), as the
    # released weights were trained.
    for record in records:
        first = record["conversations"][0]
        assert first["from"] == "human"
        assert call_kind([Message.text("user", first["value"])]) == record["kind"], record["id"]
        assert "system" not in [t["from"] for t in record["conversations"]]


def test_reasoning_trajectories_alternate_with_retrievals(
    records: list[dict[str, Any]],
) -> None:
    reasoning = [r for r in records if r["kind"] == "reasoning"]
    with_retrieval = 0
    for record in reasoning:
        speakers = [t["from"] for t in record["conversations"]]
        assert speakers[:1] == ["human"]
        rest = speakers[1:]
        assert len(rest) % 2 == 1 and rest == ["gpt", "human"] * (len(rest) // 2) + ["gpt"]
        for turn in record["conversations"][2::2]:
            assert turn["value"].startswith("Retrieved Procedural Memory:\n"), turn["value"][:80]
        with_retrieval += len(rest) > 1
    assert with_retrieval > 0, "no trajectory retrieved anything"


def test_pictures_are_written_by_content(
    built: tuple[Path, dict[str, Any]], records: list[dict[str, Any]]
) -> None:
    out, manifest = built
    with_images = [r for r in records if r["image"]]
    assert with_images
    for record in with_images:
        markers = sum(t["value"].count(IMAGE_MARKER) for t in record["conversations"])
        assert markers == len(record["image"]), record["id"]
        for image in record["image"]:
            path = out / image
            assert path.is_file() and image.startswith("images/")
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    named = {i for r in records for i in r["image"]}
    assert manifest["images"] == len(named)


def test_load_samples_round_trips(
    built: tuple[Path, dict[str, Any]], records: list[dict[str, Any]]
) -> None:
    out, manifest = built
    dataset = load_samples(out)
    assert dataset.manifest == manifest
    assert dataset.counts() == manifest["counts"]
    assert [s.to_record() for s in dataset.samples] == records
    assert len({s.id for s in dataset.samples}) == len(records)
    image = next(s for s in dataset.samples if s.images).images[0]
    assert dataset.image_path(image) == out / image


# ----------------------------------------------------------------------------- mix_samples


def _pool() -> list[Sample]:
    kinds = ["reasoning"] * 100 + ["personality"] * 10 + ["semantic"] * 200 + ["episodic"] * 50
    return [_sample(f"s{i:03d}", kind) for i, kind in enumerate(kinds)]


def test_mix_keeps_the_scarcest_group_and_honours_shares() -> None:
    pool = _pool()
    mixed = mix_samples(pool, PAPER_MIX, seed=4)
    kinds = Counter(s.kind for s in mixed)
    assert kinds["personality"] == 10  # the scarcest group, kept whole
    groups = Counter(GROUP.get(s.kind, "memory") for s in mixed)
    for group, share in PAPER_MIX.items():
        assert abs(groups[group] / len(mixed) - share) < 0.02, groups
    assert 90 <= len(mixed) <= 100
    assert kinds["semantic"] > kinds["episodic"] > 0  # memory's own kinds both kept
    # The input order is kept, and nothing is duplicated.
    position = {s.id: i for i, s in enumerate(pool)}
    assert [position[s.id] for s in mixed] == sorted(position[s.id] for s in mixed)
    assert len({s.id for s in mixed}) == len(mixed)


def test_mix_is_seeded() -> None:
    pool = _pool()
    first = [s.id for s in mix_samples(pool, PAPER_MIX, seed=4)]
    assert first == [s.id for s in mix_samples(pool, PAPER_MIX, seed=4)]
    assert first != [s.id for s in mix_samples(pool, PAPER_MIX, seed=5)]


@pytest.mark.parametrize(
    "shares",
    [
        {"reasoning": 0.5, "personality": 0.2, "memory": 0.2},
        {"reasoning": 0.7, "personality": -0.2, "memory": 0.5},
        {"reasoning": 0.5, "personality": 0.0, "memory": 0.5},
    ],
)
def test_mix_rejects_bad_shares(shares: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        mix_samples(_pool(), shares, seed=1)


def test_mix_rejects_a_kind_outside_the_groups() -> None:
    with pytest.raises(ValidationError, match="imported"):
        mix_samples([*_pool(), _sample("x", "imported")], PAPER_MIX, seed=1)


# ------------------------------------------------------------------ distilling a teacher


class _Teacher:
    """Answers each agent call by its prompt's opening; the first personality reply is
    unreadable, every question is answered (a)."""

    BAD_READING = "I cannot tell their personality."
    GOOD_READING = "\n".join(f'"{t}": 4' for t in TRAITS)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.personality_calls = 0
        self.retry_notes = 0

    def __call__(self, request: dict[str, Any]) -> str:
        messages = request["messages"]
        system = _content_text(messages[0])
        if _content_text(messages[-1]).startswith(RETRY_NOTE):
            with self.lock:
                self.retry_notes += 1
        if system.startswith("Your task is to read a user's input and its context"):
            with self.lock:
                self.personality_calls += 1
                first = self.personality_calls == 1
            return self.BAD_READING if first else self.GOOD_READING
        if system.startswith("You are an AI memory analyst"):
            return '"reason": small talk\n"decision": false\n"content": \n"keywords": '
        if system.startswith("You are an engine that analyses the topics"):
            return '"topic_summary": a chat\n"keywords": chat\n"source_dialog_indices": 0'
        if system.startswith(("You are an assistant that manages", "You are an engine that rec")):
            return '"name": "X"'
        if system.startswith("You are a personal AI assistant that reasons and remembers"):
            return "<think>t</think><answer>(a) x</answer>"
        raise AssertionError(f"unexpected call: {system[:80]!r}")


def _content_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p["type"] == "text")


def test_distilling_keeps_only_right_answers_and_readable_replies(tmp_path: Path) -> None:
    teacher = _Teacher()
    out = tmp_path / "distilled"
    with ScriptedOpenAIServer(teacher) as server:
        model = OpenAIChatModel("m", server.base_url, max_retries=0)
        manifest = build_training_data(
            out, users=1, size="32k", seed=1, embedder=HashingEmbedder(), teacher=model, mix=None
        )
    assert manifest["teacher"].startswith("teacher:") and manifest["mix_target"] is None
    assert manifest["before_mix"] == manifest["counts"]
    prompts = load_rl_prompts(out).prompts
    right = [p for p in prompts if _names_right_option("(a) x", p)]
    wrong = len(prompts) - len(right)
    assert right and wrong, "the script should answer some questions right and some wrong"
    assert manifest["rejected"]["reasoning: wrong answer"] == wrong
    assert manifest["counts"]["reasoning"] == len(right)

    dataset = load_samples(out)
    rl = _rl_by_first_message(prompts)
    for sample in dataset.samples:
        if sample.kind == "reasoning":
            question = rl[_prompt_key(sample.turns[0].text)]
            assert question.kind == "choice" and question.reference == "a", question.id

    # The unreadable reading was retried once; its call is dropped, the retry kept clean.
    assert teacher.retry_notes == 1
    assert manifest["rejected"]["personality: unreadable reply"] == 1
    readings = [s for s in dataset.samples if s.kind == "personality"]
    assert len(readings) == teacher.personality_calls - 1
    for sample in dataset.samples:
        texts = [t.text for t in sample.turns]
        assert not any(RETRY_NOTE in t or _Teacher.BAD_READING in t for t in texts), sample.id
    assert all(s.turns[-1].text == _Teacher.GOOD_READING for s in readings)
    assert all(len(s.turns) == 2 for s in readings)  # the prompt (one user turn), the reply
    assert all(s.source == manifest["teacher"] for s in dataset.samples)


# ----------------------------------------------------------------------------- samples.py


def test_load_a_bare_reference_file(tmp_path: Path) -> None:
    dataset = load_samples(_reference_file(tmp_path))
    assert [s.kind for s in dataset.samples] == ["imported", "imported"]
    assert [s.id for s in dataset.samples] == ["imported-000000", "imported-000001"]
    first = dataset.samples[0]
    assert [t.role for t in first.turns] == ["system", "user", "assistant"]
    assert first.images == ("cat.png",) and first.source == "ref.json"
    assert dataset.image_path("cat.png") == tmp_path / "cat.png"
    assert dataset.manifest == {}
    assert dataset.samples[1].images == ()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}
            | {"image": ["cat.png"]},
            "0 <image> markers but 1 images",
        ),
        (
            {"conversations": [{"from": "bot", "value": "hi"}, {"from": "gpt", "value": "x"}]},
            "'from' is 'bot'",
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "human", "value": "x"}]},
            "must end with a gpt",
        ),
        ({"conversations": []}, "non-empty list"),
        ({"conversations": [{"from": "human"}]}, '"value"'),
    ],
)
def test_bad_records_are_named(tmp_path: Path, record: dict[str, Any], message: str) -> None:
    write_png(tmp_path / "cat.png")
    good = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    path = _write_json(tmp_path / "bad.json", [good, record])
    with pytest.raises(ValidationError) as raised:
        load_samples(path)
    assert message in str(raised.value)
    assert "record 1" in str(raised.value)


def test_a_missing_picture_is_not_found(tmp_path: Path) -> None:
    path = _reference_file(tmp_path)
    (tmp_path / "cat.png").unlink()
    with pytest.raises(NotFoundError, match=r"cat\.png"):
        load_samples(path)


def test_not_a_list_and_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="expected a JSON list"):
        load_samples(_write_json(tmp_path / "obj.json", {"conversations": []}))
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    with pytest.raises(ValidationError, match="not readable JSON"):
        load_samples(tmp_path / "broken.json")
    with pytest.raises(NotFoundError, match="train data"):
        load_samples(tmp_path / "empty_dir_or_nothing")


def test_copy_dataset_makes_a_self_contained_folder(tmp_path: Path) -> None:
    source = _reference_file(tmp_path)
    picture = (tmp_path / "cat.png").read_bytes()
    original = load_samples(source)
    out = tmp_path / "imported"
    manifest = copy_dataset(original, out, source="ref")
    assert manifest["format"] == SAMPLES_FORMAT and manifest["source"] == "ref"
    assert manifest["samples"] == 2 and manifest["images"] == 1
    (tmp_path / "cat.png").unlink()  # the copy must not need the original
    source.unlink()
    copied = load_samples(out)
    name = f"images/{hashlib.sha256(picture).hexdigest()}.png"
    assert copied.samples[0].images == (name,)
    assert (out / name).read_bytes() == picture
    assert copied.manifest == manifest
    assert [(s.id, s.kind, s.turns, s.source) for s in copied.samples] == [
        (s.id, s.kind, s.turns, s.source) for s in original.samples
    ]
    assert copied.samples[1].turns == _turns(("user", "Hi"), ("assistant", "Hello."))


def test_writer_manifest_and_newer_format_refused(tmp_path: Path) -> None:
    writer = SampleWriter(tmp_path / "ds")
    png = write_png(tmp_path / "p.png").read_bytes()
    messages = [
        Message.text("system", "sys"),
        Message("user", (TextPart("look "), ImagePart(png, "image/png"), TextPart(" and"))),
        Message("user", (ImagePart(png, "image/png"),)),
    ]
    writer.add(
        sample_from_messages(
            messages,
            "ok",
            kind="semantic",
            source="test",
            images_dir=writer.images_dir,
            sample_id=writer.next_id("semantic"),
        )
    )
    manifest = writer.finish({"seed": 3})
    assert manifest == {
        "format": 1,
        "samples": 1,
        "counts": {"semantic": 1},
        "images": 1,
        "seed": 3,
    }
    assert len(list(writer.images_dir.iterdir())) == 1  # one picture, written once
    sample = load_samples(tmp_path / "ds").samples[0]
    assert sample.id == "semantic-000000"
    assert sample.turns[1].text == f"look {IMAGE_MARKER} and"
    assert len(sample.images) == 2 and sample.images[0] == sample.images[1]

    _write_json(tmp_path / "ds" / "manifest.json", {**manifest, "format": 2})
    with pytest.raises(ValidationError, match="newer"):
        load_samples(tmp_path / "ds")


def test_sample_checks_itself() -> None:
    with pytest.raises(ValidationError, match="kind"):
        Sample("x", "chitchat", _turns(("user", "a"), ("assistant", "b")))
    with pytest.raises(ValidationError, match="start with a human"):
        Sample("x", "semantic", _turns(("assistant", "a"), ("assistant", "b")))
    with pytest.raises(ValidationError, match="markers"):
        Sample("x", "semantic", _turns(("user", IMAGE_MARKER), ("assistant", "b")))


# ----------------------------------------------------------------------------- recorder.py


AGENT_PROMPTS = {
    "response_tags": "reasoning",
    "response_json": "reasoning",
    "personality_tags": "personality",
    "semantic_tags": "semantic",
    "episodic_tags": "episodic",
    "episodic_json": "episodic",
    "core_tags": "core",
    "procedural_tags": "procedural",
    "update_json": "update",
    "consolidate_json": "consolidate",
}


def _opening(name: str, filling: str) -> Message:
    """Prompt `name` as the agent opens a call with it: json prompts as the system message,
    tags prompts as the one user message, every placeholder filled with `filling`."""
    text = prompt(name, **{slot: filling for slot in PLACEHOLDERS[name]})
    return Message.text("user" if name.endswith("_tags") else "system", text)


def test_call_kind_names_every_agent_prompt() -> None:
    files = resources.files("personavlm.agent").joinpath("prompts").iterdir()
    names = {Path(f.name).stem for f in files if f.name.endswith(".txt")}
    # retrieval_tags is the follow-up message inside a reasoning call, never its opening.
    assert names - {"retrieval_tags"} == set(AGENT_PROMPTS), "a prompt file has no sample kind"
    for name, kind in AGENT_PROMPTS.items():
        for filling in ("3", "7\nTime: 2024-03-04 10:00 (Monday)\nUser: hi"):
            opening = _opening(name, filling)
            assert call_kind([opening, Message.text("user", "hi")]) == kind, name
            assert call_kind([opening]) == kind, name


def test_call_kind_of_foreign_calls() -> None:
    user = Message.text("user", "hi")
    assert call_kind([Message.text("system", "You are a helpful assistant."), user]) is None
    assert call_kind([user]) is None
    assert call_kind([]) is None
    edited = text_of(_opening("semantic_tags", "x")) + "\nAlso reply in French."
    assert call_kind([Message.text("user", edited)]) is None


def test_without_retries_drops_the_bad_reply_and_its_note() -> None:
    system = Message.text("system", "sys")
    question = Message.text("user", "q")
    step = Message.text("assistant", "<think>a</think><retrieve>...</retrieve>")
    retrieved = Message.text("user", "## Retrieved procedural memory\n")
    bad = Message.text("assistant", "garbage")
    note = Message.text("user", RETRY_NOTE + "no <answer> tag. Reply again.")
    assert without_retries([system, question, bad, note]) == [system, question]
    assert without_retries([system, question, step, retrieved, bad, note]) == [
        system,
        question,
        step,
        retrieved,
    ]
    # A note with no reply before it, and a message that only mentions the phrase, stay.
    mention = Message.text("user", f"Earlier you said: {RETRY_NOTE}")
    assert without_retries([system, note]) == [system, note]
    assert without_retries([system, question, step, mention]) == [system, question, step, mention]


def test_recording_model_records_in_order() -> None:
    replies = iter(["one", "two"])
    with ScriptedOpenAIServer(lambda _request: next(replies)) as server:
        recorder = RecordingModel(OpenAIChatModel("m", server.base_url, max_retries=0))
        first = [Message.text("user", "a")]
        assert recorder.generate(first).text == "one"
        assert recorder.generate([Message.text("user", "b")]).text == "two"
    calls = recorder.take()
    assert [(c.messages, c.reply) for c in calls] == [
        (tuple(first), "one"),
        ((Message.text("user", "b"),), "two"),
    ]
    assert recorder.take() == []
    assert recorder.name == recorder.inner.name


# ----------------------------------------------------------------------------- rl_data.py


def test_rl_prompts_of_the_built_folder(built: tuple[Path, dict[str, Any]]) -> None:
    out, _ = built
    data = load_rl_prompts(out)
    assert data.store == out / "memory.db" and data.store.is_file()
    assert data.manifest["prompts"] == len(data.prompts) > 0
    kinds = Counter(p.kind for p in data.prompts)
    assert data.manifest["kinds"] == dict(kinds) and kinds["choice"] and kinds["open"]
    by_id = {p.id: p for p in data.prompts}
    for p in data.prompts:
        # The tags weights' layout: the whole prompt is one user message.
        [opening] = p.prompt
        assert opening["role"] == "user"
        assert call_kind([Message.text("user", opening["content"])]) == "reasoning"
        assert IMAGE_MARKER not in "".join(m["content"] for m in p.prompt)
        if p.kind == "choice":
            assert p.reference in p.choices
        else:
            assert p.choices == {} and p.reference.strip()
            assert p.id.endswith(":open")
            mc = by_id[p.id.removesuffix(":open")]
            assert mc.choices[mc.reference] == p.reference
            assert p.question in mc.question


def _rl_copy(out: Path, dest: Path, *, store: bool) -> Path:
    dest.mkdir()
    for name in ("rl.jsonl", "rl_manifest.json"):
        shutil.copyfile(out / name, dest / name)
    if store:
        (dest / "memory.db").write_bytes(b"")
    return dest


def test_rl_corrupted_lines_are_named(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder = _rl_copy(built[0], tmp_path / "rl", store=True)
    lines = (folder / "rl.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 3
    assert len(load_rl_prompts(folder).prompts) == len(lines)

    broken = [*lines[:2], lines[2][: len(lines[2]) // 2], *lines[3:]]
    (folder / "rl.jsonl").write_text("\n".join(broken) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"rl\.jsonl line 3\b"):
        load_rl_prompts(folder)

    record = json.loads(lines[0])
    choice = next(json.loads(x) for x in lines if json.loads(x)["kind"] == "choice")
    wrong = [*lines[:3], json.dumps({**choice, "reference": "z"}), *lines[4:]]
    (folder / "rl.jsonl").write_text("\n".join(wrong) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 4: .*not a choice letter"):
        load_rl_prompts(folder)

    no_user = {**record, "prompt": [{"role": "system", "content": "a system prompt alone"}]}
    (folder / "rl.jsonl").write_text(json.dumps(no_user) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 1: .*ending in user"):
        load_rl_prompts(folder)


def test_rl_missing_store_or_prompts(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder = _rl_copy(built[0], tmp_path / "rl", store=False)
    with pytest.raises(NotFoundError, match="memory store"):
        load_rl_prompts(folder)
    with pytest.raises(NotFoundError, match=r"rl_manifest\.json"):
        load_rl_prompts(tmp_path)


# ----------------------------------------------------------------------------- CLI


def test_cli_train_data(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["train", "data", "--out", str(out), "--users", "1", "--size", "32k", "--seed", "2"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--embedder", "hashing", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == len(load_samples(out).samples) > 0
    assert report["seed"] == 2 and report["embedder"].startswith("hashing")
    assert load_rl_prompts(out).prompts
    again = runner.invoke(app, [*args, "--embedder", "hashing"])
    assert again.exit_code == 2
    assert "exists" in again.output


def test_cli_train_import(tmp_path: Path) -> None:
    source = _reference_file(tmp_path)
    out = tmp_path / "imported"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "import", str(source), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == 2 and report["source"] == str(source)
    assert load_samples(out).counts() == {"imported": 2}
    again = runner.invoke(app, ["train", "import", str(source), "--out", str(out)])
    assert again.exit_code == 2
    assert "exists" in again.output
    bad = _write_json(tmp_path / "bad.json", [{"conversations": [{"from": "gpt", "value": "x"}]}])
    refused = runner.invoke(app, ["train", "import", str(bad), "--out", str(tmp_path / "new")])
    assert refused.exit_code == 2
    assert "record 0" in refused.output and not (tmp_path / "new").exists()
