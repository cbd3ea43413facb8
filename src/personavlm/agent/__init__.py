"""The agent: a chat model made into a long-term personal assistant.

`Assistant.respond` runs the response phase (think / retrieve / answer over the memory store)
and the update phase (personality and memory, inline or from the durable queue). See
assistant.py for an example, docs/architecture.md "Agent" for the design.

The names below load on first use (PEP 562): the CLI imports `personavlm.agent.protocol` for
its --protocol option, which runs this file first, and `personavlm --help` must not load the
memory store (numpy) or the model clients (httpx) with it. Type checkers read the
`TYPE_CHECKING` block instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from personavlm.lazy import lazy_getattr

if TYPE_CHECKING:
    from personavlm.agent.assistant import AgentConfig, Assistant, Response
    from personavlm.agent.protocol import Protocol, escape, parse_step
    from personavlm.agent.trace import (
        AnswerStep,
        FailureStep,
        MemoryChange,
        ModelCall,
        Phase,
        RetrieveStep,
        ThinkStep,
        Trace,
        UpdateReport,
    )
    from personavlm.agent.worker import BackgroundWorker, Worker

__all__ = [
    "AgentConfig",
    "AnswerStep",
    "Assistant",
    "BackgroundWorker",
    "FailureStep",
    "MemoryChange",
    "ModelCall",
    "Phase",
    "Protocol",
    "Response",
    "RetrieveStep",
    "ThinkStep",
    "Trace",
    "UpdateReport",
    "Worker",
    "escape",
    "parse_step",
]

# Where each public name lives; it must match the TYPE_CHECKING block.
_SOURCES: dict[str, str] = {
    **dict.fromkeys(("AgentConfig", "Assistant", "Response"), "personavlm.agent.assistant"),
    **dict.fromkeys(("Protocol", "escape", "parse_step"), "personavlm.agent.protocol"),
    **dict.fromkeys(
        (
            "AnswerStep",
            "FailureStep",
            "MemoryChange",
            "ModelCall",
            "Phase",
            "RetrieveStep",
            "ThinkStep",
            "Trace",
            "UpdateReport",
        ),
        "personavlm.agent.trace",
    ),
    **dict.fromkeys(("BackgroundWorker", "Worker"), "personavlm.agent.worker"),
}


if not TYPE_CHECKING:
    # Hidden from type checkers: a module __getattr__ would make them accept any attribute
    # of this module (a typo included), typed `object`.
    __getattr__ = lazy_getattr(__name__, _SOURCES, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
