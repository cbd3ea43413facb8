"""Model calls and tokens per turn of the agent, against the reference design.

    .venv/bin/python bench/agent_calls.py --out bench/results/agent_calls.json

Options: --turns N (default: every user turn of the bundled sample conversation; more than
that repeats the conversation, shifted by whole weeks), --embedder hashing|minilm (default
hashing), --call-delay-ms D [D ...] (simulated model latency per call, for the latency rows;
default 0 100), --seed S.

What runs: `personavlm.agent.Assistant` with a real MemoryStore (a temporary directory) and
the real `OpenAIChatModel`, talking HTTP to a `personavlm.testing.ScriptedOpenAIServer` whose
handler (`ScriptedModel` below) plays a plausible model deterministically. It tells the
agent's calls apart by their system prompt and answers in the protocol's own format:
- response: retrieves 0, 1 or 2 times (seeded by the message; at least once for a question),
  then answers with the sample's own assistant reply;
- per-turn update: a personality reading, and an ADD of a fact about half the time (seeded;
  tags: the 5-line reading, then the 4-line semantic candidate with decision true/false);
- session close: one episodic topic over the whole session, one core key (tags: a procedural
  call answered with no lines).
The user's messages and their times are the user turns of
src/personavlm/data/sample_conversation.jsonl (its photo included), so sessions close by the
60-minute rule; the last session is closed explicitly after the last turn.

Both protocols (json, tags) run the conversation twice per --call-delay-ms value: once with
update="inline" (counts and tokens are read from every turn's `Response.trace`), once with
update="background" (respond() must not include the update; the queue is drained, untimed,
before the next message so both modes see the same memory). respond() wall time is reported
as p50 per mode.

Tokens: the scripted server counts whitespace-separated words of the text parts of each
request (prompt) and reply (completion). They are word counts of our real prompts, a proxy
for tokens (a BPE tokenizer gives more), and images are not counted.

The reference design is not run: its calls are computed from its published call structure
(PAPER.md section 7: 1-6 response calls, 2 update calls per turn, 3 per session close, all
synchronous) on this conversation: response calls = 1 + retrievals (the same loop, same
retrievals), 2 update calls per turn, 3 calls per session close, all on the response path.

Output: a Markdown table on stdout, the raw numbers as JSON in --out ("format": 1).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from personavlm import embed
from personavlm.agent import AgentConfig, Assistant
from personavlm.agent.trace import ModelCall, Phase, Trace, UpdateReport
from personavlm.memory import MemoryStore
from personavlm.models import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer, ScriptedResponse
from personavlm.timeutil import parse_time

FORMAT = 1
USER = "maya"
SEED = 20240302
PROTOCOLS = ("json", "tags")
TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
# The reference design's published call structure (PAPER.md section 7).
REFERENCE_UPDATE_CALLS = 2
REFERENCE_SESSION_CALLS = 3
EXPECTED_UPDATE_CALLS = {"json": 1, "tags": 2}
EXPECTED_SESSION_CALLS = {"json": 2, "tags": 3}

# The agent's calls, told apart by the first words of their prompt (agent/prompts): the
# system message under json, the one user message under tags.
KINDS = {
    "You are a long-term personal assistant": "respond",
    "You maintain the long-term memory": "update",
    "You summarise a finished conversation session": "episodic",
    "A conversation session between a user and their assistant has ended": "consolidate",
    "You are a personal AI assistant that reasons and remembers": "respond",
    "Your task is to read a user's input and its context": "personality",
    "You are an AI memory analyst": "semantic",
    "You are an engine that analyses the topics": "episodic",
    "You are an assistant that manages a user profile": "core",
    "You are an engine that recognises a user's behaviour": "procedural",
}
_STOPWORDS = """about after also and are been but can did for from going had has have her his
how i'm i've just next not our she that the their them then there they this too was way what when
where which who will with you your"""
STOPWORDS = frozenset(_STOPWORDS.split())


# ----------------------------------------------------------------------------- the conversation


@dataclass(frozen=True, slots=True)
class UserTurn:
    time: datetime
    text: str
    images: tuple[Path, ...]
    reply: str  # the sample's assistant reply, which the scripted model gives as its answer


def sample_turns(count: int | None) -> list[UserTurn]:
    """The sample's user turns with their replies; `count` beyond the sample repeats it,
    each round shifted by whole weeks so time only moves forward."""
    data = resources.files("personavlm.data")
    rows = [json.loads(line) for line in data.joinpath("sample_conversation.jsonl").open()]
    base: list[UserTurn] = []
    for index, row in enumerate(rows):
        if row["role"] != "user":
            continue
        following = rows[index + 1] if index + 1 < len(rows) else None
        reply = following["text"] if following and following["role"] == "assistant" else "OK."
        images = tuple(Path(str(data.joinpath(name))) for name in row.get("images", ()))
        base.append(UserTurn(parse_time(row["time"]), row["text"], images, reply))
    wanted = len(base) if count is None else count
    span = base[-1].time - base[0].time
    shift = timedelta(weeks=span.days // 7 + 2)
    return [
        UserTurn(t.time + shift * (i // len(base)), t.text, t.images, t.reply)
        for i, t in ((i, base[i % len(base)]) for i in range(wanted))
    ]


# ----------------------------------------------------------------------------- the scripted model


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def _has_image(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and any(p.get("type") == "image_url" for p in content)


def _words(text: str, skip: int = 0, take: int = 4) -> list[str]:
    words = [w.strip(".,!?;:'\"()").lower() for w in text.split()]
    content = [w for w in words if len(w) > 2 and w not in STOPWORDS]
    return content[skip : skip + take] or ["conversation"]


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].rstrip(".!?")


def _user_texts(text: str) -> list[str]:
    """The first line of each user turn's text: after `User: `, or on the next line when a
    picture comes first (the tags layout; pictures are not text)."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("User:"):
            rest = line[len("User:") :].strip()
            if not rest and index + 1 < len(lines):
                rest = lines[index + 1].strip()
            found.append(rest)
    return found


def _last_user_line(text: str) -> str:
    lines = _user_texts(text)
    return lines[-1] if lines else ""


def _prompt_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The message holding the conversation: the user message after the system prompt
    (json), or the one user message that is the whole prompt (tags)."""
    return messages[0] if messages[0]["role"] == "user" else messages[1]


def _user_input(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The `{'time': ..., 'query': ...}` of a response or per-turn prompt."""
    if messages[0]["role"] == "user":  # tags: the User Input block, line breaks shown
        block = _text(messages[0]).rsplit("\nUser Input:\n", 1)[-1].split("\n\n# ", 1)[0]
        parsed = ast.literal_eval(block.strip().replace("\n", "\\n"))
    else:
        parsed = ast.literal_eval(_text(messages[1]).rsplit("## User input\n", 1)[-1].strip())
    assert isinstance(parsed, dict)
    return parsed


def _turn_message(messages: list[dict[str, Any]]) -> str:
    """The user's message a per-turn update is about."""
    if messages[0]["role"] == "user":
        return str(_user_input(messages)["query"]).strip()
    return _last_user_line(_text(messages[1]))


@dataclass
class ScriptedModel:
    """The scripted server's handler: a deterministic, plausible model for both protocols.
    Decisions are seeded by the message they are about, so both protocols and both update
    modes make the same ones."""

    protocol: str
    replies: dict[str, str]  # user message -> the answer to give
    seed: int = SEED
    delay_s: float = 0.0
    kinds: list[str] = field(default_factory=list)

    def __call__(self, body: dict[str, Any]) -> ScriptedResponse:
        messages: list[dict[str, Any]] = body["messages"]
        opening = _text(messages[0])
        kind = next((k for prefix, k in KINDS.items() if opening.startswith(prefix)), None)
        if kind is None:
            raise AssertionError(f"unknown call: {opening[:80]!r}")
        self.kinds.append(kind)
        text = getattr(self, f"_{kind}")(messages)
        return ScriptedResponse(text=text, delay_s=self.delay_s)

    def _rng(self, purpose: str, message: str) -> random.Random:
        return random.Random(f"{self.seed}|{purpose}|{message}")

    def retrievals_for(self, message: str) -> int:
        wanted = self._rng("retrieve", message).choices((0, 1, 2), weights=(2, 2, 1))[0]
        return max(wanted, 1) if "?" in message else wanted

    def adds_fact(self, message: str) -> bool:
        return self._rng("add", message).random() < 0.5

    # response phase

    def _respond(self, messages: list[dict[str, Any]]) -> str:
        query = str(_user_input(messages)["query"]).strip()
        done = sum(m["role"] == "assistant" for m in messages)
        if done < self.retrievals_for(query):
            keywords = " ".join(_words(query, skip=2 * done))
            think = f"This may depend on what the user told me before; search for {keywords}."
            if self.protocol == "json":
                step = {"think": think, "action": "retrieve", "answer": None}
                return json.dumps(
                    step | {"keywords": keywords, "start_time": None, "end_time": None}
                )
            return (
                f'<think>{think}</think>\n<retrieve>\n"keywords": {keywords}\n'
                '"start_time": null\n"end_time": null\n</retrieve>'
            )
        answer = self.replies.get(query, "I see. Tell me more.")
        think = "I know enough to answer, in a warm and practical tone."
        if self.protocol == "json":
            step = {"think": think, "action": "answer", "answer": answer, "keywords": None}
            return json.dumps(step | {"start_time": None, "end_time": None})
        return f"<think>{think}</think>\n<answer>{answer}</answer>"

    # per-turn update

    def _reading(self, message: str) -> dict[str, int]:
        rng = self._rng("reading", message)
        return {t: rng.choice((2, 3, 3, 4)) for t in TRAITS}

    def _fact(self, message: str, image: bool) -> tuple[str, list[str]]:
        content = f"The user said: {_first_sentence(message)}."
        if image:
            content = f"The user's photo: {_first_sentence(message)} (Image Object: dog)"
        return content, _words(message)

    def _update(self, messages: list[dict[str, Any]]) -> str:
        message = _last_user_line(_text(messages[1]))
        ops = []
        if self.adds_fact(message):
            image = _has_image(messages[1])
            content, keywords = self._fact(message, image)
            ops.append(
                {
                    "op": "ADD",
                    "id": None,
                    "content": content,
                    "keywords": keywords,
                    "attach_images": image,
                }
            )
        return json.dumps({"personality": self._reading(message), "operations": ops})

    def _personality(self, messages: list[dict[str, Any]]) -> str:
        reading = self._reading(_turn_message(messages))
        return "\n".join(f'"{trait}": {value}' for trait, value in reading.items())

    def _semantic(self, messages: list[dict[str, Any]]) -> str:
        message = _turn_message(messages)
        if not self.adds_fact(message):
            return '"reason": small talk\n"decision": false\n"content": \n"keywords": '
        content, keywords = self._fact(message, _has_image(_prompt_message(messages)))
        return (
            f'"reason": a durable fact about the user\n"decision": true\n'
            f'"content": {content}\n"keywords": {", ".join(keywords)}'
        )

    # session close

    def _session(self, messages: list[dict[str, Any]]) -> tuple[str, list[str], list[int]]:
        text = _text(_prompt_message(messages))
        numbered = (
            r"^\[(\d+)\] " if messages[0]["role"] == "system" else r"^Round (\d+) of dialogues$"
        )
        exchanges = [int(n) for n in re.findall(numbered, text, re.MULTILINE)]
        session = text.split("## Session\n", 1)[-1].split("Recent Conversations:\n", 1)[-1]
        first = next(iter(_user_texts(session)), "")
        keywords = _words(first)
        return f"The user talked about {', '.join(keywords)}.", keywords, exchanges

    def _episodic(self, messages: list[dict[str, Any]]) -> str:
        summary, keywords, exchanges = self._session(messages)
        if self.protocol == "json":
            topic = {"summary": summary, "keywords": keywords, "turns": exchanges}
            return json.dumps({"topics": [topic]})
        return (
            f'"topic_summary": {summary}\n"keywords": {", ".join(keywords)}\n'
            f'"source_dialog_indices": {", ".join(map(str, exchanges))}'
        )

    def _consolidate(self, messages: list[dict[str, Any]]) -> str:
        _, keywords, _ = self._session(messages)
        core = [{"key": "recent interests", "value": ", ".join(keywords)}]
        return json.dumps({"core": core, "procedural": []})

    def _core(self, messages: list[dict[str, Any]]) -> str:
        _, keywords, _ = self._session(messages)
        return f'"recent interests": {", ".join(keywords)}'

    def _procedural(self, messages: list[dict[str, Any]]) -> str:
        return ""  # no routine to record: no lines


# ----------------------------------------------------------------------------- one run


def _phase_sums(calls: Sequence[ModelCall]) -> dict[str, int]:
    return {
        "calls": len(calls),
        "retries": sum("retry" in c.purpose for c in calls),
        "prompt_tokens": sum(c.prompt_tokens for c in calls),
        "completion_tokens": sum(c.completion_tokens for c in calls),
    }


def _report_calls(reports: Sequence[UpdateReport], kind: str) -> list[ModelCall]:
    return [c for r in reports if r.kind == kind for c in r.calls]


def turn_record(index: int, turn: UserTurn, trace: Trace, respond_s: float) -> dict[str, Any]:
    totals = trace.to_dict()["totals"]
    sessions = [r for r in trace.updates if r.kind == "session"]
    turn_updates = [r for r in trace.updates if r.kind == "turn"]
    record: dict[str, Any] = {
        "turn": index,
        "time": f"{turn.time:%Y-%m-%d %H:%M}",
        "retrievals": trace.retrievals,
        "failed": trace.failed,
        "respond_s": respond_s,
        "totals": totals,
        "response": _phase_sums(trace.calls),
        "update": _phase_sums(_report_calls(trace.updates, "turn")),
        "sessions_closed": len(sessions),
        "session_calls": [len(r.calls) for r in sessions],
        "session": _phase_sums(_report_calls(trace.updates, "session")),
        "statuses": [r.status for r in trace.updates],
        "update_jobs": len(turn_updates),
    }
    # The trace's own totals must agree with the calls it lists.
    for phase, key in ((Phase.RESPONSE, "response"), (Phase.UPDATE, "update")):
        assert totals[phase.value]["calls"] == record[key]["calls"], (phase, totals)
    return record


def wait_for_queue(store: MemoryStore, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := store.queue_status(USER)).pending:
        if status.failed:
            raise RuntimeError(f"an update job failed: {status.to_dict()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the update queue did not drain: {status.to_dict()}")
        time.sleep(0.002)


def run_conversation(
    protocol: str,
    mode: str,
    turns: Sequence[UserTurn],
    *,
    embedder: str,
    delay_s: float,
    seed: int,
) -> dict[str, Any]:
    """One conversation through a fresh store; every turn's record, and the final close."""
    model_script = ScriptedModel(protocol, {t.text: t.reply for t in turns}, seed, delay_s)
    records: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="agent_calls_") as tmp,
        MemoryStore.open(Path(tmp) / "memory.db", embedder=embed.load(embedder)) as store,
        ScriptedOpenAIServer(model_script) as server,
    ):
        model = OpenAIChatModel("scripted", server.base_url, max_retries=0)
        config = AgentConfig(
            protocol=protocol, update="inline" if mode == "inline" else "background"
        )
        with Assistant(store, model, config) as assistant:
            for index, turn in enumerate(turns):
                t0 = time.perf_counter()
                response = assistant.respond(USER, turn.text, images=turn.images, time=turn.time)
                elapsed = time.perf_counter() - t0
                records.append(turn_record(index, turn, response.trace, elapsed))
                if mode == "background":
                    wait_for_queue(store)  # untimed: the next turn sees the same memory
            final = assistant.close_session(USER)
            if mode == "background":
                wait_for_queue(store)
        memories = {
            t: len(store.list(USER, types=[t], limit=10_000))
            for t in ("semantic", "episodic", "core", "procedural")
        }
        model.close()
    if mode == "inline":  # every request the server saw is in a trace (or the final close)
        traced = sum(sum(v["calls"] for v in r["totals"].values()) for r in records)
        assert traced + sum(len(r.calls) for r in final) == len(model_script.kinds)
    return {
        "protocol": protocol,
        "mode": mode,
        "delay_ms": delay_s * 1000,
        "turns": records,
        "final_close": {
            "statuses": [r.status for r in final],
            "calls": [len(r.calls) for r in final if r.kind == "session"],
            "session": _phase_sums(_report_calls(final, "session")),
        },
        "server_calls": len(model_script.kinds),
        "memories": memories,
    }


# ----------------------------------------------------------------------------- summary


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def summarise(protocol: str, inline: dict[str, Any], background: dict[str, Any]) -> dict[str, Any]:
    turns = inline["turns"]
    n = len(turns)
    closes = [c for t in turns for c in t["session_calls"]]
    final_calls = inline["final_close"]["calls"]
    all_closes = closes + final_calls
    retrievals = [t["retrievals"] for t in turns]
    response_calls = [t["response"]["calls"] for t in turns]
    violations = [  # both modes: the response loop is the same
        {
            "mode": run["mode"],
            "turn": t["turn"],
            "response_calls": t["response"]["calls"],
            "retrievals": t["retrievals"],
        }
        for run in (inline, background)
        for t in run["turns"]
        if t["response"]["retries"] == 0 and t["response"]["calls"] != 1 + t["retrievals"]
    ]
    update_calls = [t["update"]["calls"] for t in turns]
    session_total = (
        sum(t["session"]["calls"] for t in turns) + inline["final_close"]["session"]["calls"]
    )
    total_calls = sum(response_calls) + sum(update_calls) + session_total

    def tokens(phase: str) -> dict[str, float]:
        rows = [t[phase] for t in turns]
        if phase == "session":
            rows = [*rows, inline["final_close"]["session"]]
        prompt = sum(r["prompt_tokens"] for r in rows)
        completion = sum(r["completion_tokens"] for r in rows)
        result = {"prompt_per_turn": prompt / n, "completion_per_turn": completion / n}
        if phase == "session":
            result |= {
                "prompt_per_close": prompt / max(len(all_closes), 1),
                "completion_per_close": completion / max(len(all_closes), 1),
            }
        return result

    bg_turns = background["turns"]
    bg_path_calls = [sum(v["calls"] for v in t["totals"].values()) for t in bg_turns]
    background_ok = all(
        t["update"]["calls"] == 0
        and t["session"]["calls"] == 0
        and all(s == "queued" for s in t["statuses"])
        for t in bg_turns
    )
    reference_total = sum(1 + r for r in retrievals) + REFERENCE_UPDATE_CALLS * n
    reference_total += REFERENCE_SESSION_CALLS * len(all_closes)
    return {
        "protocol": protocol,
        "turns": n,
        "sessions_closed": len(all_closes),
        "sessions_closed_by_gap": len(closes),
        "retrievals": sum(retrievals),
        "retrievals_per_turn": sum(retrievals) / n,
        "response_calls_per_turn": _mean(response_calls),
        "response_retries": sum(t["response"]["retries"] for t in turns),
        "response_calls_eq_1_plus_retrievals": not violations,
        "response_violations": violations,
        "update_calls_per_turn": _mean(update_calls),
        "update_calls_values": sorted(set(update_calls)),
        "session_calls_per_close": _mean(all_closes),
        "session_calls_values": sorted(set(all_closes)),
        "total_calls_per_turn": total_calls / n,
        "response_path_calls_per_turn_background": _mean(bg_path_calls),
        "background_respond_has_no_update": background_ok,
        "background_retrievals_match": [t["retrievals"] for t in bg_turns] == retrievals,
        "failed_turns": sum(t["failed"] for t in turns),
        "tokens": {phase: tokens(phase) for phase in ("response", "update", "session")},
        "reference": {
            "response_calls_per_turn": _mean([1 + r for r in retrievals]),
            "update_calls_per_turn": REFERENCE_UPDATE_CALLS,
            "session_calls_per_close": REFERENCE_SESSION_CALLS,
            "total_calls_per_turn": reference_total / n,
            "response_path_calls_per_turn": reference_total / n,
        },
    }


def latency(inline: dict[str, Any], background: dict[str, Any]) -> dict[str, float]:
    p50_inline = statistics.median(t["respond_s"] for t in inline["turns"])
    p50_background = statistics.median(t["respond_s"] for t in background["turns"])
    return {
        "delay_ms": inline["delay_ms"],
        "inline_p50_ms": p50_inline * 1000,
        "background_p50_ms": p50_background * 1000,
        "background_share": p50_background / p50_inline,
        "inline_mean_ms": statistics.fmean(t["respond_s"] for t in inline["turns"]) * 1000,
        "background_mean_ms": statistics.fmean(t["respond_s"] for t in background["turns"]) * 1000,
    }


# ----------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
        "loadavg_start": os.getloadavg(),
    }


def markdown(result: dict[str, Any]) -> str:
    s = {p["protocol"]: p for p in result["protocols"]}
    j, t = s["json"], s["tags"]
    ref = j["reference"]

    def row(label: str, a: object, b: object, c: object = "") -> str:
        return f"| {label} | {a} | {b} | {c} |"

    def f(value: float) -> str:
        return f"{value:.2f}"

    def ok(flag: bool) -> str:
        return "yes" if flag else "**NO**"

    lines = [
        "| per turn unless noted | ours, json | ours, tags | reference (computed) |",
        "|---|---:|---:|---:|",
        row(
            "turns / sessions closed",
            f"{j['turns']} / {j['sessions_closed']}",
            f"{t['turns']} / {t['sessions_closed']}",
            f"{j['turns']} / {j['sessions_closed']}",
        ),
        row("retrievals (total)", j["retrievals"], t["retrievals"], j["retrievals"]),
        row(
            "response calls",
            f(j["response_calls_per_turn"]),
            f(t["response_calls_per_turn"]),
            f(ref["response_calls_per_turn"]),
        ),
        row(
            "response calls = 1 + retrievals, every turn",
            ok(j["response_calls_eq_1_plus_retrievals"]),
            ok(t["response_calls_eq_1_plus_retrievals"]),
            "by construction",
        ),
        row(
            "update calls",
            f(j["update_calls_per_turn"]),
            f(t["update_calls_per_turn"]),
            ref["update_calls_per_turn"],
        ),
        row(
            "session-close calls per close",
            f(j["session_calls_per_close"]),
            f(t["session_calls_per_close"]),
            ref["session_calls_per_close"],
        ),
        row(
            "total calls",
            f(j["total_calls_per_turn"]),
            f(t["total_calls_per_turn"]),
            f(ref["total_calls_per_turn"]),
        ),
        row(
            "calls on the response path (update=background)",
            f(j["response_path_calls_per_turn_background"]),
            f(t["response_path_calls_per_turn_background"]),
            f"{f(ref['response_path_calls_per_turn'])} (all synchronous)",
        ),
    ]
    for phase, label in (
        ("response", "response"),
        ("update", "update"),
        ("session", "session close"),
    ):
        jt, tt = j["tokens"][phase], t["tokens"][phase]
        lines.append(
            row(
                f"prompt / completion words, {label}",
                f"{jt['prompt_per_turn']:.0f} / {jt['completion_per_turn']:.0f}",
                f"{tt['prompt_per_turn']:.0f} / {tt['completion_per_turn']:.0f}",
                "not run",
            )
        )
    for phase in ("session",):
        jt, tt = j["tokens"][phase], t["tokens"][phase]
        lines.append(
            row(
                "prompt / completion words per session close",
                f"{jt['prompt_per_close']:.0f} / {jt['completion_per_close']:.0f}",
                f"{tt['prompt_per_close']:.0f} / {tt['completion_per_close']:.0f}",
                "not run",
            )
        )
    lat = {p: {x["delay_ms"]: x for x in result["latency"][p]} for p in PROTOCOLS}
    for delay in sorted(lat["json"]):
        lj, lt = lat["json"][delay], lat["tags"][delay]
        lines.append(
            row(
                f"respond() p50, inline / background, {delay:.0f} ms per model call",
                f"{lj['inline_p50_ms']:.1f} / {lj['background_p50_ms']:.1f} ms "
                f"({lj['background_share']:.0%})",
                f"{lt['inline_p50_ms']:.1f} / {lt['background_p50_ms']:.1f} ms "
                f"({lt['background_share']:.0%})",
                "",
            )
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=None, help="user turns (default: the sample)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/agent_calls.json"))
    parser.add_argument("--embedder", choices=("hashing", "minilm"), default="hashing")
    parser.add_argument("--call-delay-ms", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.turns is not None and args.turns < 1:
        parser.error("--turns must be positive")
    if min(args.call_delay_ms) < 0:
        parser.error("--call-delay-ms must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    turns = sample_turns(args.turns)
    raw = sys.argv[1:] if argv is None else list(argv)
    result: dict[str, Any] = {
        "format": FORMAT,
        "command": shlex.join([".venv/bin/python", "bench/agent_calls.py", *raw]),
        "machine": machine(),
        "embedder": args.embedder,
        "seed": args.seed,
        "tokens_are": "whitespace-separated words of the text parts (the scripted server's count)",
        "reference_is": "computed from its published call structure (PAPER.md section 7), not run",
        "protocols": [],
        "latency": {},
        "runs": [],
    }
    for protocol in PROTOCOLS:
        result["latency"][protocol] = []
        summary = None
        for delay_ms in args.call_delay_ms:
            runs = {
                mode: run_conversation(
                    protocol,
                    mode,
                    turns,
                    embedder=args.embedder,
                    delay_s=delay_ms / 1000,
                    seed=args.seed,
                )
                for mode in ("inline", "background")
            }
            result["runs"] += list(runs.values())
            result["latency"][protocol].append(latency(runs["inline"], runs["background"]))
            current = summarise(protocol, runs["inline"], runs["background"])
            if summary is None:
                summary = current
            else:  # a deterministic model: every run makes the same calls
                assert current["total_calls_per_turn"] == summary["total_calls_per_turn"]
        result["protocols"].append(summary)
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
