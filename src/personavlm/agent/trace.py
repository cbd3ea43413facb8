"""The typed record of one turn: every model call, every reasoning step, every memory change.

A `Trace` is what `personavlm chat` shows, what `--json` prints, what the service's page draws,
and what training samples are made from; `to_dict()` is its stable JSON form (`"format": 1`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from personavlm.memory.records import Hit
from personavlm.timeutil import to_storage_or_none

__all__ = [
    "TRACE_FORMAT",
    "AnswerStep",
    "FailureStep",
    "HitRecord",
    "MemoryChange",
    "ModelCall",
    "Phase",
    "RetrieveStep",
    "Step",
    "ThinkStep",
    "Trace",
    "UpdateReport",
]

TRACE_FORMAT = 1


class Phase(StrEnum):
    RESPONSE = "response"
    UPDATE = "update"  # the per-turn update: personality reading + semantic memory
    SESSION = "session"  # the session close: episodic topics, core and procedural memory


@dataclass(frozen=True, slots=True)
class ModelCall:
    phase: Phase
    purpose: str  # "step", "retry", "personality", "semantic", "episodic", ...
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str | None = None  # the protocol error this reply had, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "purpose": self.purpose,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": round(self.latency_s, 4),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HitRecord:
    memory_id: int
    type: str
    content: str
    time: str | None
    score: float
    image_ids: tuple[str, ...]

    @classmethod
    def of(cls, hit: Hit) -> HitRecord:
        return cls(
            hit.memory.id,
            hit.memory.type.value,
            hit.memory.content,
            to_storage_or_none(hit.memory.event_start),
            round(hit.score, 4),
            tuple(i.id for i in hit.images),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_id": self.memory_id,
            "type": self.type,
            "content": self.content,
            "time": self.time,
            "score": self.score,
            "image_ids": list(self.image_ids),
        }


@dataclass(frozen=True, slots=True)
class ThinkStep:
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "think", "text": self.text}


@dataclass(frozen=True, slots=True)
class RetrieveStep:
    keywords: str
    start: str | None  # the window actually searched, after resolve_window
    end: str | None
    hits: tuple[HitRecord, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "retrieve",
            "keywords": self.keywords,
            "start": self.start,
            "end": self.end,
            "hits": [h.to_dict() for h in self.hits],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class AnswerStep:
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "answer", "text": self.text}


@dataclass(frozen=True, slots=True)
class FailureStep:
    """The model broke the protocol after the retry; `reply` is what it last wrote."""

    error: str
    reply: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "failure", "error": self.error, "reply": self.reply}


Step = ThinkStep | RetrieveStep | AnswerStep | FailureStep


@dataclass(frozen=True, slots=True)
class MemoryChange:
    """One operation the update phase applied (or decided against, op "noop")."""

    op: str  # add, update, invalidate, noop
    memory_type: str
    memory_id: int | None  # the memory it produced or touched
    content: str | None
    note: str | None = None  # why a proposed operation became a noop or was dropped

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "memory_type": self.memory_type,
            "memory_id": self.memory_id,
            "content": self.content,
            "note": self.note,
        }


@dataclass(slots=True)
class UpdateReport:
    """What one update job did: `status` is applied, queued (background mode, or waiting
    behind an earlier job) or failed (stays queued and is retried)."""

    job_id: int
    user_id: str
    kind: str  # "turn" or "session"
    status: str
    changes: list[MemoryChange] = field(default_factory=list)
    personality: dict[str, float] | None = None  # the state after the reading
    reading: dict[str, int] | None = None
    error: str | None = None
    calls: list[ModelCall] = field(default_factory=list)
    # What the readers repaired in the model's replies (agent/formats.py), never guesses.
    repairs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "repairs": list(self.repairs),
            "user_id": self.user_id,
            "kind": self.kind,
            "status": self.status,
            "changes": [c.to_dict() for c in self.changes],
            "reading": self.reading,
            "personality": self.personality,
            "error": self.error,
            "calls": [c.to_dict() for c in self.calls],
        }


@dataclass(slots=True)
class Trace:
    protocol: str
    steps: list[Step] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)
    updates: list[UpdateReport] = field(default_factory=list)
    failed: bool = False  # the answer is a fallback after a protocol failure
    # What the agent had to change in the model's answer before storing it (too long, NUL
    # characters, unpaired surrogates): the model's fault, said here, never the user's 400.
    notes: list[str] = field(default_factory=list)

    @property
    def retrievals(self) -> int:
        return sum(isinstance(s, RetrieveStep) for s in self.steps)

    def all_calls(self) -> list[ModelCall]:
        return [*self.calls, *(c for u in self.updates for c in u.calls)]

    def to_dict(self) -> dict[str, Any]:
        calls = self.all_calls()
        return {
            "format": TRACE_FORMAT,
            "protocol": self.protocol,
            "failed": self.failed,
            "notes": list(self.notes),
            "steps": [s.to_dict() for s in self.steps],
            "calls": [c.to_dict() for c in self.calls],
            "updates": [u.to_dict() for u in self.updates],
            "totals": {
                phase.value: {
                    "calls": sum(c.phase is phase for c in calls),
                    "prompt_tokens": sum(c.prompt_tokens for c in calls if c.phase is phase),
                    "completion_tokens": sum(
                        c.completion_tokens for c in calls if c.phase is phase
                    ),
                    "latency_s": round(sum(c.latency_s for c in calls if c.phase is phase), 4),
                }
                for phase in Phase
            },
        }
