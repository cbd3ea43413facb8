"""A scripted model for agent tests: one handler for the ScriptedOpenAIServer that tells the
agent's calls apart by their system prompt and answers each kind from a test's script.

Tests set `respond` (the response phase), `update` (per-turn update), `episodic` and
`consolidate` (session close), or the tags-protocol variants, as functions of the request;
`Req` gives them the request's text and images in a convenient form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from personavlm.testing import ScriptedResponse

KINDS = {
    "You are a long-term personal assistant": "respond",
    "You maintain the long-term memory": "update",
    "You summarise a finished conversation session": "episodic",
    "A conversation session between a user and their assistant has ended": "consolidate",
    # The tags protocol: one user message opens with the prompt (no system message).
    "You are a personal AI assistant that reasons and remembers": "respond",
    "Your task is to read a user's input and its context": "personality",
    "You are an AI memory analyst": "semantic",
    "You are an engine that analyses the topics": "episodic",
    "You are an assistant that manages a user profile": "core",
    "You are an engine that recognises a user's behaviour": "procedural",
    "You answer a user's question from your conversation history": "full_context",
}

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


@dataclass
class Req:
    """One chat-completions request as the handler sees it."""

    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body["messages"])

    @property
    def system(self) -> str:
        """The prompt that tells the call apart: the system message (json protocol) or the
        first user message (tags)."""
        return _text(self.messages[0])

    @property
    def first_user(self) -> str:
        return _text(next(m for m in self.messages if m["role"] == "user"))

    @property
    def query(self) -> str:
        """The user input of a response-phase request (recent turns left out)."""
        if self.messages[0]["role"] == "user":  # tags: the prompt's User Input block
            return self.system.split("\nUser Input:\n", 1)[-1].split("\n\n# Core", 1)[0]
        return self.first_user.split("## User input", 1)[-1]

    @property
    def last(self) -> str:
        return _text(self.messages[-1])

    @property
    def all_text(self) -> str:
        return "\n".join(_text(m) for m in self.messages)

    def images(self) -> list[str]:
        """Every image data URL in the request, in order."""
        urls = []
        for message in self.messages:
            content = message["content"]
            if isinstance(content, list):
                urls += [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
        return urls

    @property
    def steps_so_far(self) -> int:
        """Assistant messages already in the conversation (earlier steps of this answer)."""
        return sum(m["role"] == "assistant" for m in self.messages)

    def memory_id(self, pattern: str) -> int:
        """The id of the candidate memory whose line matches `pattern` in an update prompt."""
        for line in self.all_text.splitlines():
            match = re.match(r"\[id (\d+)\]", line)
            if match and re.search(pattern, line, re.IGNORECASE):
                return int(match.group(1))
        raise AssertionError(f"no candidate memory matching {pattern!r} in:\n{self.all_text}")


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p["type"] == "text")


Script = Callable[[Req], "str | ScriptedResponse"]


def answer(text: str, think: str = "I can answer.") -> str:
    return json.dumps(
        {
            "think": think,
            "action": "answer",
            "answer": text,
            "keywords": None,
            "start_time": None,
            "end_time": None,
        }
    )


def retrieve(keywords: str, start: str | None = None, end: str | None = None) -> str:
    return json.dumps(
        {
            "think": f"I should look up {keywords}.",
            "action": "retrieve",
            "answer": None,
            "keywords": keywords,
            "start_time": start,
            "end_time": end,
        }
    )


def reading(**traits: int) -> dict[str, int]:
    return {t: traits.get(t, 3) for t in TRAITS}


def update(ops: list[dict[str, Any]] | None = None, **traits: int) -> str:
    return json.dumps({"personality": reading(**traits), "operations": ops or []})


def op(
    kind: str,
    content: str | None = None,
    memory_id: int | None = None,
    keywords: list[str] | None = None,
    attach_images: bool = False,
) -> dict[str, Any]:
    return {
        "op": kind,
        "id": memory_id,
        "content": content,
        "keywords": keywords or [],
        "attach_images": attach_images,
    }


def no_topics(_: Req) -> str:
    return json.dumps({"topics": []})


def no_consolidation(_: Req) -> str:
    return json.dumps({"core": [], "procedural": []})


@dataclass
class AgentScript:
    respond: Script = lambda req: answer("OK.")
    update: Script = lambda req: update()
    episodic: Script = no_topics
    consolidate: Script = no_consolidation
    personality: Script = lambda req: "\n".join(f'"{t}": 3' for t in TRAITS)
    semantic: Script = lambda req: (
        '"reason": small talk\n"decision": false\n"content": \n"keywords": '
    )
    core: Script = lambda req: ""
    procedural: Script = lambda req: ""
    full_context: Script = lambda req: "(a)"
    seen: list[tuple[str, Req]] = field(default_factory=list)

    def __call__(self, body: dict[str, Any]) -> str | ScriptedResponse:
        req = Req(body)
        kind = next((k for prefix, k in KINDS.items() if req.system.startswith(prefix)), None)
        if kind is None:
            raise AssertionError(f"unknown call: {req.system[:80]!r}")
        self.seen.append((kind, req))
        handler: Script = getattr(self, kind)
        return handler(req)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]
