"""The agent: a chat model made into a long-term personal assistant.

`Assistant.respond` runs the response phase (think / retrieve / answer over the memory store)
and the update phase (personality and memory, inline or from the durable queue). See
assistant.py for an example, docs/architecture.md "Agent" for the design.
"""

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
