"""Training data from simulated worlds: SFT samples in the agent's formats, and RL prompts.

    manifest = build_training_data(Path("data/train"), users=20, size="32k", seed=1,
                                   embedder=MiniLMEmbedder())
    # or distil a real model: teacher=OpenAIChatModel(...), kept only where it was right

What happens, per simulated user (`personavlm.synth`):
1. The history is replayed through the real agent (`Assistant.record`, tags protocol, the
   update phase inline) whose model is a `RecordingModel` around the teacher. The teacher
   is the `Oracle` (the world's ground truth) unless a model is given.
2. Every question of the user is asked through `Assistant.ask` at its time: the multiple
   choice form and, for choice questions, the open form (the bare question, the right
   option's text as the reference). Alignment items are the binary questions.
3. Each recorded call becomes a sample (`recorder.call_kind` names it): the update calls
   one sample each, a question the whole trajectory (think/retrieve steps, the retrieved
   memories, the answer). A reply is kept only when the agent's own parser reads it, and a
   trajectory only when its answer is right (for the oracle: when the evidence was found).
4. The samples are mixed to the paper's shares (PAPER.md section 5: 43.6% reasoning,
   10.3% personality, 46.1% memory extraction) and written as a dataset folder
   (`samples.py`). The first prompt of every question is an RL prompt (`rl_data.py`), to be
   rolled out against `memory.db`, the store the replay filled.

Layout of `out_dir`: world/ (the synth benchmark), memory.db (+ blobs), sft.json,
images/, manifest.json, rl.jsonl, rl_manifest.json.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from personavlm.agent import AgentConfig, Assistant
from personavlm.agent.formats import (
    parse_episodic_tags,
    parse_key_values,
    parse_reading_tags,
    parse_semantic_tags,
)
from personavlm.agent.protocol import AnswerAction, Protocol, parse_step
from personavlm.bench.harness import AgentIngest, Answer, HistoryExchange, RecordLog, run_plans
from personavlm.bench.mcq import Item, prompt_text, robust_letter
from personavlm.bench.persona_mme import load_persona_mme
from personavlm.embed import Embedder
from personavlm.errors import ProtocolError, ValidationError
from personavlm.memory.store import MemoryStore
from personavlm.models.base import ChatModel, Message
from personavlm.synth import build_user, synthesize
from personavlm.synth.dialogue import Turn as WorldTurn
from personavlm.synth.generate import User
from personavlm.train.oracle import Oracle, Question
from personavlm.train.recorder import (
    RecordedCall,
    RecordingModel,
    call_kind,
    text_of,
    without_retries,
)
from personavlm.train.rl_data import RLPrompt, write_rl_prompts
from personavlm.train.samples import Sample, SampleWriter, sample_from_messages

__all__ = ["PAPER_MIX", "build_training_data", "mix_samples"]

# PAPER.md section 5: shares of the 78K SFT samples.
PAPER_MIX: dict[str, float] = {"reasoning": 0.436, "personality": 0.103, "memory": 0.461}
_GROUP = {
    "reasoning": "reasoning",
    "personality": "personality",
    "semantic": "memory",
    "episodic": "memory",
    "core": "memory",
    "procedural": "memory",
    "update": "memory",
    "consolidate": "memory",
}
_PARSERS: dict[str, Callable[[str], object]] = {
    "personality": parse_reading_tags,
    "semantic": parse_semantic_tags,
    "episodic": parse_episodic_tags,
    "core": parse_key_values,
    "procedural": parse_key_values,
}


@dataclass
class _Collector:
    """Turns recorded calls into samples as the replay goes (pictures written at once)."""

    writer: SampleWriter
    source: str
    rejected: Counter[str] = field(default_factory=Counter)
    rl: list[RLPrompt] = field(default_factory=list)

    def update_calls(self, calls: Sequence[RecordedCall]) -> None:
        for call in calls:
            kind = call_kind(call.messages)
            parse = _PARSERS.get(kind or "")
            if kind is None or parse is None:
                self.rejected[f"unexpected {kind or 'foreign'} call"] += 1
                continue
            try:
                parse(call.reply)
            except ProtocolError:
                self.rejected[f"{kind}: unreadable reply"] += 1
                continue
            self._add(without_retries(call.messages), call.reply, kind)

    def trajectory(self, calls: Sequence[RecordedCall], keep: bool, why: str) -> None:
        if not calls:
            self.rejected["question without a model call"] += 1
            return
        last = calls[-1]
        messages = without_retries(last.messages)
        if _final_answer(messages, last.reply) is None:
            self.rejected["reasoning: unreadable or unfinished trajectory"] += 1
        elif not keep:
            self.rejected[f"reasoning: {why}"] += 1
        else:
            self._add(messages, last.reply, "reasoning")

    def _add(self, messages: Sequence[Message], reply: str, kind: str) -> None:
        sample_id = self.writer.next_id(kind)
        self.writer.add(
            sample_from_messages(
                messages,
                reply,
                kind=kind,
                source=self.source,
                images_dir=self.writer.images_dir,
                sample_id=sample_id,
            )
        )


def _final_answer(messages: Sequence[Message], reply: str) -> AnswerAction | None:
    """The trajectory's answer when every step of it reads, else None."""
    try:
        for message in messages:
            if message.role == "assistant":
                parse_step(text_of(message), Protocol.TAGS)
        final = parse_step(reply, Protocol.TAGS)
    except ProtocolError:
        return None
    return final if isinstance(final, AnswerAction) else None


@dataclass
class _Replay:
    """What the ingest and the reader share: the agent, the recorder around the teacher,
    the oracle (None for a real teacher), the simulated worlds and the collector."""

    assistant: Assistant
    recorder: RecordingModel
    oracle: Oracle | None
    worlds: Mapping[str, User]
    collector: _Collector
    turns: dict[tuple[str, str], WorldTurn] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.turns = {(u, t.slot.id): t for u, w in self.worlds.items() for t in w.turns}

    def oracle_on(self, user: str) -> Oracle | None:
        """The oracle, set to `user`'s world (None with a real teacher)."""
        if self.oracle is not None and self.oracle.user is not self.worlds[user]:
            self.oracle.set_user(self.worlds[user])
        return self.oracle


class _Ingest(AgentIngest):
    """AgentIngest that tells the oracle which exchange and session it is on."""

    def __init__(self, replay: _Replay) -> None:
        super().__init__(replay.assistant)
        self.replay = replay
        self._last: dict[str, int] = {}  # user -> session of the last exchange recorded

    def add(self, user: str, exchange: HistoryExchange) -> None:
        turn = self.replay.turns[(user, exchange.ext_id)]
        oracle = self.replay.oracle_on(user)
        if oracle is not None:
            oracle.turn = turn
            oracle.closing = self._last.get(user)  # a new session closes the last one
        super().add(user, exchange)
        self._last[user] = turn.slot.session
        self.replay.collector.update_calls(self.replay.recorder.take())

    def settle(self, user: str, at: datetime) -> None:
        oracle = self.replay.oracle_on(user)
        if oracle is not None:
            oracle.closing = self._last.get(user)
        super().settle(user, at)
        self.replay.collector.update_calls(self.replay.recorder.take())


class _Reader:
    """Asks each item through the agent (multiple choice, then the open form)."""

    name = "teacher"

    def __init__(self, replay: _Replay) -> None:
        self.replay = replay

    def answer(self, item: Item) -> Answer:
        text = self._ask(item, prompt_text(item), open_form=False)
        if item.kind == "choice":
            self._ask(item, item.query, open_form=True)
        return Answer(text)

    def _ask(self, item: Item, query: str, *, open_form: bool) -> str:
        replay = self.replay
        oracle = replay.oracle_on(item.user)
        if oracle is not None:
            evidence = tuple(replay.turns[(item.user, e)] for e in item.evidence)
            oracle.question = Question(item, evidence)
        answer, _ = replay.assistant.ask(item.user, query, time=item.time)
        calls = replay.recorder.take()
        right = robust_letter(answer, item.choices) == item.answer
        if open_form:
            # The open form's answer is the option text: right when it names that option.
            right = item.choices[item.answer].lower() in answer.lower()
        missed = oracle is not None and item.id in oracle.unanswered
        why = "evidence never retrieved" if missed else "wrong answer"
        replay.collector.trajectory(calls, right and not missed, why)
        if calls:
            replay.collector.rl.append(RLPrompt.of(item, calls[0].messages, open_form=open_form))
        if oracle is not None:
            oracle.unanswered.discard(item.id)
        return answer


def build_training_data(
    out_dir: Path,
    *,
    users: int,
    size: str,
    seed: int,
    embedder: Embedder,
    teacher: ChatModel | None = None,
    mix: Mapping[str, float] | None = PAPER_MIX,
    progress: Callable[[int], None] = lambda _n: None,
) -> dict[str, Any]:
    """Simulate `users` users and write SFT samples and RL prompts into `out_dir`, which
    must not exist yet. The folder is built in place (the store records its pictures' blob
    paths, so it cannot be renamed afterwards); the manifests are written last, and a build
    that fails removes the folder, so a half-built one is never mistaken for a finished one."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ValidationError(f"{out_dir} exists; training data is written into a new folder")
    out_dir.mkdir(parents=True)
    try:
        return _build(out_dir, users, size, seed, embedder, teacher, mix, progress)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _build(
    work: Path,
    users: int,
    size: str,
    seed: int,
    embedder: Embedder,
    teacher: ChatModel | None,
    mix: Mapping[str, float] | None,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    synthesize(work / "world", users=users, size=size, seed=seed)
    plans = load_persona_mme(work / "world").plans
    worlds = {
        p.user: build_user(seed=seed, user_id=p.user.rsplit("/", 1)[-1], size=size) for p in plans
    }
    oracle: Oracle | None = None
    if teacher is None:
        oracle = Oracle()
        recorder, source = RecordingModel(oracle), "oracle"
    else:
        recorder, source = RecordingModel(teacher), f"teacher:{teacher.name}"
    collector = _Collector(SampleWriter(work), source)
    config = AgentConfig(protocol="tags", update="inline")
    with MemoryStore.open(work / "memory.db", embedder=embedder) as store:
        replay = _Replay(Assistant(store, recorder, config), recorder, oracle, worlds, collector)
        ingest, reader = _Ingest(replay), _Reader(replay)
        log = RecordLog(work / "asked.jsonl")
        for plan in plans:
            run_plans([plan], ingest, reader, log)
            progress(1)
    natural = Counter(s.kind for s in collector.writer.samples)
    if mix is not None:
        collector.writer.samples = mix_samples(collector.writer.samples, mix, seed=seed)
    info = {
        "users": users,
        "size": size,
        "seed": seed,
        "teacher": source,
        "protocol": "tags",
        "embedder": embedder.name,
        "before_mix": dict(sorted(natural.items())),
        "mix_target": dict(mix) if mix is not None else None,
        "mix": _shares(collector.writer.samples),
        "rejected": dict(sorted(collector.rejected.items())),
    }
    manifest = collector.writer.finish(info)
    rl_info = {"seed": seed, "size": size, "embedder": embedder.name}
    write_rl_prompts(work, collector.rl, store_path="memory.db", info=rl_info)
    return manifest


def _shares(samples: Sequence[Sample]) -> dict[str, float]:
    groups = Counter(_GROUP.get(s.kind, s.kind) for s in samples)
    total = max(1, sum(groups.values()))
    return {name: round(n / total, 3) for name, n in sorted(groups.items())}


def mix_samples(
    samples: Sequence[Sample], shares: Mapping[str, float], *, seed: int
) -> list[Sample]:
    """The largest subset with the given group shares (reasoning / personality / memory):
    the scarcest group is kept whole, the others are sampled down (seeded), keeping each
    group's own kinds in their natural proportions."""
    if abs(sum(shares.values()) - 1.0) > 1e-6 or any(v <= 0 for v in shares.values()):
        raise ValidationError(f"mix shares must be positive and sum to 1, got {dict(shares)}")
    groups: dict[str, list[Sample]] = {name: [] for name in shares}
    for sample in samples:
        group = _GROUP.get(sample.kind)
        if group not in groups:
            raise ValidationError(f"sample kind {sample.kind!r} belongs to no group of the mix")
        groups[group].append(sample)
    empty = [name for name, members in groups.items() if not members]
    if empty:
        raise ValidationError(
            f"no {', '.join(empty)} samples to mix (every one was rejected or none was made); "
            "see the rejections, or keep everything with --no-mix"
        )
    total = min(len(groups[name]) / share for name, share in shares.items())
    rng = random.Random(seed)
    kept: list[Sample] = []
    for name, share in shares.items():
        want = min(len(groups[name]), round(total * share))
        kept += rng.sample(groups[name], want)
    order = {id(s): i for i, s in enumerate(samples)}
    return sorted(kept, key=lambda s: order[id(s)])
