"""The tags protocol's prompts in the released weights' layout (docs/reference-format.md).

A fixed conversation (a profile, a picture, a session close, a retrieval) runs through the
real agent against a scripted model; every prompt the model receives is compared with a
checked-in text under tests/data/golden/ (pictures drawn as `<image>` where they stand).
Regenerate after a deliberate change with PERSONAVLM_REGEN_GOLDEN=1 and read the diff.

The scripted replies are in the shapes of the reference's `data/training/sft/sft_demo.json`
(values unquoted, `True`/`False`, an empty `"content": `), so the readers are fed what the
released weights write.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent_script import AgentScript, Req
from helpers import write_png
from personavlm.agent import AgentConfig, Assistant, RetrieveStep
from personavlm.agent.formats import parse_episodic_tags, parse_reading_tags, parse_semantic_tags
from personavlm.agent.protocol import AnswerAction, Protocol, RetrieveAction, parse_step
from personavlm.agent.templates import Templates
from personavlm.agent.update_tags import read_procedures, read_profile
from personavlm.bench.mcq import Item, prompt_text
from personavlm.errors import ConfigError
from personavlm.memory import MemoryStore
from personavlm.models import OpenAIChatModel

GOLDEN = Path(__file__).parent / "data" / "golden"

# Replies shaped like the reference's SFT targets (sft_demo.json).
READING = (
    '"openness": 4\n"conscientiousness": 3\n"extraversion": 4\n"agreeableness": 3\n"neuroticism": 2'
)
SEMANTIC_KEEP = (
    '"reason": User asked to remember her cat shown in the picture.\n"decision": True\n'
    '"content": Her cat Nori (Image Object: cat)\n"keywords": cat, Nori'
)
SEMANTIC_SKIP = (
    '"reason": A greeting with nothing new.\n"decision": False\n"content": \n"keywords": '
)
TOPICS = (
    '"topic_summary": Lila showed her orange cat Nori and asked the assistant to remember '
    'her; she plans to draw Nori every Sunday.\n"keywords": Nori, cat, drawing\n'
    '"source_dialog_indices": 0, 1'
)
PROFILE = '"name": Lila\n"gender": Female\n"preferences": drawing, her cat Nori'
PROCEDURES = '"sunday drawing": Lila draws her cat Nori every Sunday afternoon.'


def _rendered(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p["text"] if p["type"] == "text" else "<image>" for p in content)


def _request_text(req: Req) -> str:
    return "\n".join(f"=== {m['role']}\n{_rendered(m)}" for m in req.messages)


def _respond(req: Req) -> str:
    if "my cat called" in req.query:  # the question of the next day
        if req.steps_so_far == 0:
            return (
                "<think>She asks about her cat from an earlier day; I should search.</think>"
                '<retrieve>\n"keywords": cat Nori\n"start_time": "null"\n"end_time": "null"\n'
                "</retrieve>"
            )
        return "<think>The memory names her.</think><answer>Her name is Nori!</answer>"
    return "<think>A friendly reply fits.</think><answer>What a lovely cat!</answer>"


@pytest.fixture
def prompts(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript, tmp_path: Path
) -> dict[str, str]:
    """Every prompt of the fixed conversation, by name."""
    script.respond = _respond
    script.personality = lambda req: READING
    script.semantic = lambda req: SEMANTIC_KEEP if "remember" in req.query else SEMANTIC_SKIP
    script.episodic = lambda req: TOPICS
    script.core = lambda req: PROFILE
    script.procedural = lambda req: PROCEDURES
    store.add("lila", "core", "Lila", key="name", time="2024-04-20 09:00")
    store.add("lila", "core", "Female", key="gender", time="2024-04-20 09:00")
    cat = write_png(tmp_path / "nori.png", (230, 120, 30))
    assistant = Assistant(store, model, AgentConfig(protocol="tags"))
    assistant.respond(
        "lila", "This is Nori, my orange cat. Please remember her!\nShe's 2.", [cat],
        time="2024-04-23 15:25",
    )  # fmt: skip
    assistant.respond("lila", "Good afternoon again!", time="2024-04-23 15:33")
    assistant.close_session("lila")
    asked = assistant.respond("lila", "What is my cat called?", time="2024-04-24 10:00")
    assert [type(s).__name__ for s in asked.trace.steps].count("RetrieveStep") == 1
    step = next(s for s in asked.trace.steps if isinstance(s, RetrieveStep))
    assert step.start is None and step.end is None and step.notes == ()  # "null": no bound

    seen: dict[str, list[Req]] = {}
    for kind, req in script.seen:
        seen.setdefault(kind, []).append(req)
    return {
        "response_step": _request_text(seen["respond"][1]),  # a recent turn with its picture
        "response_first": _request_text(seen["respond"][0]),  # the picture in the input
        "retrieval": _request_text(seen["respond"][-1]),
        "personality": _request_text(seen["personality"][1]),
        "semantic": _request_text(seen["semantic"][0]),
        "episodic": _request_text(seen["episodic"][0]),
        "core": _request_text(seen["core"][0]),
        "procedural": _request_text(seen["procedural"][0]),
    }


NAMES = (
    "response_first",
    "response_step",
    "retrieval",
    "personality",
    "semantic",
    "episodic",
    "core",
    "procedural",
)


def test_every_tags_prompt_matches_its_golden_text(prompts: dict[str, str]) -> None:
    regenerate = os.environ.get("PERSONAVLM_REGEN_GOLDEN") == "1"
    for name in NAMES:
        path = GOLDEN / f"{name}.txt"
        if regenerate:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(prompts[name] + "\n", encoding="utf-8")
        assert prompts[name] + "\n" == path.read_text(encoding="utf-8"), name


def test_the_conversation_lands_in_memory_as_the_reference_keeps_it(
    store: MemoryStore, prompts: dict[str, str]
) -> None:
    # The readers took every reply in the reference's shapes: the cat was kept, with its
    # picture; the profile and the procedure list were rewritten whole.
    [nori] = store.list("lila", types=["semantic"])
    assert nori.content == "Her cat Nori (Image Object: cat)" and nori.image_ids
    core = {m.key: m.content for m in store.list("lila", types=["core"])}
    assert core == {"name": "Lila", "gender": "Female", "preferences": "drawing, her cat Nori"}
    [sunday] = store.list("lila", types=["procedural"])
    assert sunday.key == "sunday drawing"
    [topic] = store.list("lila", types=["episodic"], limit=100)[-1:]
    assert "Nori" in prompts["retrieval"] and topic is not None


def test_a_prompt_directory_runs_its_templates_verbatim(
    store: MemoryStore, model: OpenAIChatModel, script: AgentScript, tmp_path: Path
) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "response_tags.txt").write_text(
        "You are a personal AI assistant that reasons and remembers, my way.\n"
        "Profile={UserProfile} O={Openness} C={Conscientiousness} E={Extraversion} "
        "A={Agreeableness} N={Neuroticism}\nHistory:\n{DialogHistory}\nNow: {UserQuery}\n",
        encoding="utf-8",
    )
    assistant = Assistant(store, model, AgentConfig(protocol="tags", prompts=str(folder)))
    assistant.respond("ann", "Hi there", time="2024-03-04 10:00")
    first = next(req for kind, req in script.seen if kind == "respond")
    assert first.system == (
        "You are a personal AI assistant that reasons and remembers, my way.\n"
        "Profile={} O=3.0 C=3.0 E=3.0 A=3.0 N=3.0\nHistory:\n\n"
        "Now: {'time': '2024-03-04 10:00 (Monday)', 'query': 'Hi there'}"
    )


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        (
            "core_tags.txt",
            "{UserProfile} {DialogHistory} {Profile}",
            r"unknown placeholder.*\{Profile\}",
        ),
        ("core_tags.txt", "{UserProfile} only", r"missing placeholder.*\{DialogHistory\}"),
        ("cores_tags.txt", "{UserProfile}", r"names no prompt"),
    ],
)
def test_a_bad_template_is_a_config_error_at_start(
    store: MemoryStore, model: OpenAIChatModel, tmp_path: Path, file: str, text: str, message: str
) -> None:
    (tmp_path / file).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        Templates.load(tmp_path)
    with pytest.raises(ConfigError, match=message):  # when the assistant is built
        Assistant(store, model, AgentConfig(protocol="tags", prompts=str(tmp_path)))


# Replies in the exact shapes of the reference's SFT targets (data/training/sft/sft_demo.json:
# tags glued together, values unquoted with commas and brackets inside, `True`/`False`, an
# empty content after a space) with our own words, and the prompt's own formats for the two
# kinds the demo has no sample of (personality, procedural).
def test_the_tags_readers_take_the_reference_reply_shapes() -> None:
    answer = parse_step(
        "<think>She shares a scene, not a question; answer warmly.</think><answer>That blue "
        "jay heist sounds like sketchbook gold! 🐦</answer>",
        Protocol.TAGS,
    )
    assert isinstance(answer, AnswerAction) and answer.text.startswith("That blue jay")
    retrieve = parse_step(
        '<think>Look it up.</think>\n<retrieve>\n"keywords": teddy sign\n"start_time":  "null" '
        '\n"end_time": "2024-04-23 15:40"\n</retrieve>',
        Protocol.TAGS,
    )
    assert isinstance(retrieve, RetrieveAction)
    assert (retrieve.keywords, retrieve.start_time) == ("teddy sign", None)
    assert retrieve.end_time == "2024-04-23 15:40"

    profile = read_profile(
        '"name": Mara Quill\n"gender": Female\n"preferences": field recording (rain, trains), '
        "night walks, avoiding crowds"
    )
    assert [(e.key, e.value) for e in profile] == [
        ("name", "Mara Quill"),
        ("gender", "Female"),
        ("preferences", "field recording (rain, trains), night walks, avoiding crowds"),
    ]
    [topic] = parse_episodic_tags(
        '"topic_summary": Mara described a rainy platform recording; the AI suggested '
        'layering it.\n"keywords": rain, recording, trains\n"source_dialog_indices": 0'
    )
    assert topic.exchanges == (0,) and topic.keywords == ("rain", "recording", "trains")
    kept = parse_semantic_tags(
        '"reason": User stated a new lasting hobby.\n"decision": True\n"content": User records '
        'rain sounds on train platforms.\n"keywords": rain, recording, platforms'
    )
    assert kept is not None and kept.content == "User records rain sounds on train platforms."
    skipped = parse_semantic_tags(
        '"reason": A passing question, nothing to keep.\n"decision": False\n"content": \n'
        '"keywords": '
    )
    assert skipped is None
    reading = parse_reading_tags(
        '"openness": 4\n"conscientiousness": 3\n"extraversion": 2\n"agreeableness": 4\n'
        '"neuroticism": 3'
    )
    assert reading.to_dict()["extraversion"] == 2
    procedures = read_procedures(
        '"night walk": User walks by the river every night after work.\n'
        '"recording goal": User wants to finish a rain album by summer.'
    )
    assert [e.key for e in procedures] == ["night walk", "recording goal"]
    assert read_procedures("{}") == []  # the prompt's "empty object"


# The benchmark's two question prompts (bench/mcq.py), pinned like the agent's: the reference
# harness's layout (`Options:`, `(a). text`, `Response to Evaluate:`) in our words.
BENCH_GOLDEN = {
    "bench_choice": Item(
        id="q1", user="u1", time=datetime(2024, 3, 4, 10, 0), task="preference_recall",
        aspect="Preference", query="Which drink does the user order at the cafe?",
        choices={"a": "Black coffee", "b": "Green tea", "c": "Cocoa", "d": "Water"},
        answer="b",
    ),
    "bench_alignment": Item(
        id="q1-align-1", user="u1", time=datetime(2024, 3, 4, 10, 0), task="alignment",
        aspect="Alignment", query="Suggest a weekend plan for me.",
        choices={"a": "yes", "b": "no"}, answer="a", kind="alignment",
        reply="A quiet hike with Bobby on Saturday morning, then reading at home.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BENCH_GOLDEN))
def test_the_benchmarks_question_prompts_match_their_golden_text(name: str) -> None:
    path = GOLDEN / f"{name}.txt"
    text = prompt_text(BENCH_GOLDEN[name])
    if os.environ.get("PERSONAVLM_REGEN_GOLDEN") == "1":
        path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == path.read_text(encoding="utf-8")
