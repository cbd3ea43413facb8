"""Retrieval benchmark: recall@k and hit@k of the store's search against evidence turns.

Dataset format (docs/retrieval-benchmark.md):

    {"name": "...",
     "conversations": [{"id": "c1", "turns": [{"id": "t1", "time": "YYYY-MM-DD HH:MM",
                        "speaker": "Ann", "text": "...", "caption": "optional"}]}],
     "questions": [{"id": "q1", "conversation": "c1", "question": "...", "time": "optional",
                    "category": "optional", "evidence": ["t1", "t7"]}]}

Each conversation is ingested through the raw ingestion path (turn-level episodic entries) as
its own user of one fresh store; each question is searched (episodic memory, asked at its
`time`: later turns are outside the window) with every variant on the same store. A turn whose
speaker is "assistant" (any case) is stored with role assistant, every other with role user.

recall@k = share of the question's evidence turns among the first k retrieved turns;
hit@k = 1 if any evidence turn is among them. Both are averaged per category and overall.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personavlm.errors import ValidationError
from personavlm.memory.records import MemoryType
from personavlm.memory.search import SHIPPED, Method, RetrievalConfig
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.timeutil import parse_time

__all__ = [
    "DEFAULT_KS",
    "REPORT_FORMAT",
    "Dataset",
    "Question",
    "default_variants",
    "load_dataset",
    "run_benchmark",
]

DEFAULT_KS = (1, 5, 10, 20)
REPORT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    conversation: str
    question: str
    time: str | None
    category: str
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    conversations: dict[str, list[TurnInput]]
    questions: list[Question]

    @property
    def turn_count(self) -> int:
        return sum(len(turns) for turns in self.conversations.values())


def default_variants() -> dict[str, RetrievalConfig]:
    """What `personavlm bench retrieval` reports: the shipped retriever and each half alone."""
    return {
        "shipped": SHIPPED,
        "bm25": SHIPPED.with_method(Method.BM25),
        "dense": SHIPPED.with_method(Method.DENSE),
    }


def load_dataset(path: Path) -> Dataset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"cannot read benchmark data {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: expected a JSON object with conversations and questions")
    conversations = {
        str(conv.get("id")): _conversation_turns(path, conv)
        for conv in _list(data, "conversations", path)
    }
    questions = [_question(path, q, conversations) for q in _list(data, "questions", path)]
    if not questions:
        raise ValidationError(f"{path}: no questions")
    return Dataset(str(data.get("name", path.stem)), conversations, questions)


def run_benchmark(
    dataset: Dataset,
    store: MemoryStore,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    variants: Mapping[str, RetrievalConfig] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Ingest the dataset into `store` (which should be empty) and score every variant."""
    if not ks or any(k < 1 for k in ks):
        raise ValidationError(f"k values must be positive integers, got {list(ks)}")
    variants = variants or default_variants()
    for conversation, turns in dataset.conversations.items():
        store.append_turns(conversation, turns, progress=progress)
    results = {
        name: _score_variant(dataset, store, config, sorted(set(ks)))
        for name, config in variants.items()
    }
    return {
        "format": REPORT_FORMAT,
        "dataset": dataset.name,
        "conversations": len(dataset.conversations),
        "turns": dataset.turn_count,
        "questions": len(dataset.questions),
        "encoder": store.embedder.name,
        "ks": sorted(set(ks)),
        "variants": results,
    }


def _score_variant(
    dataset: Dataset, store: MemoryStore, config: RetrievalConfig, ks: list[int]
) -> dict[str, Any]:
    per_question: list[tuple[str, dict[str, float]]] = []
    latencies = []
    for q in dataset.questions:
        started = time.perf_counter()
        hits = store.search(
            q.conversation,
            q.question,
            types=[MemoryType.EPISODIC],
            k=max(ks),
            end=q.time,
            config=config,
        )
        latencies.append((time.perf_counter() - started) * 1000)
        ranked = list(dict.fromkeys(t.ext_id for h in hits for t in h.turns))
        per_question.append((q.category, _metrics(ranked, q.evidence, ks)))
    categories = sorted({c for c, _ in per_question})
    return {
        "overall": _mean([m for _, m in per_question]),
        "by_category": {
            c: _mean([m for cat, m in per_question if cat == c])
            | {"questions": _count(per_question, c)}
            for c in categories
        },
        "latency_ms": {
            "p50": statistics.median(latencies),
            "p95": _percentile(latencies, 95),
        },
    }


def _metrics(
    ranked: list[str | None], evidence: tuple[str, ...], ks: list[int]
) -> dict[str, float]:
    wanted = set(evidence)
    out = {}
    for k in ks:
        found = wanted.intersection(ranked[:k])
        out[f"recall@{k}"] = len(found) / len(wanted)
        out[f"hit@{k}"] = 1.0 if found else 0.0
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.fmean(r[key] for r in rows), 4) for key in rows[0]}


def _count(rows: list[tuple[str, dict[str, float]]], category: str) -> int:
    return sum(1 for c, _ in rows if c == category)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


def _list(data: dict[str, Any], field: str, path: Path) -> list[dict[str, Any]]:
    value = data.get(field)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValidationError(f"{path}: {field!r} must be a list of objects")
    return value


def _conversation_turns(path: Path, conv: dict[str, Any]) -> list[TurnInput]:
    conv_id = conv.get("id")
    turns = conv.get("turns")
    if not isinstance(conv_id, str) or not isinstance(turns, list) or not turns:
        raise ValidationError(f"{path}: each conversation needs a string 'id' and a list of turns")
    out = []
    for turn in turns:
        try:
            speaker = turn.get("speaker")
            role = "assistant" if str(speaker).lower() == "assistant" else "user"
            out.append(
                TurnInput.create(
                    time=turn["time"],
                    role=role,
                    text=turn["text"],
                    ext_id=turn["id"],
                    speaker=speaker,
                    caption=turn.get("caption"),
                )
            )
        except (KeyError, AttributeError) as exc:
            raise ValidationError(
                f"{path}: conversation {conv_id!r}: a turn lacks {exc}; turns need id, time, text"
            ) from exc
        except ValidationError as exc:
            raise ValidationError(f"{path}: conversation {conv_id!r}: {exc}") from exc
    return out


def _question(path: Path, q: dict[str, Any], conversations: dict[str, list[TurnInput]]) -> Question:
    qid = q.get("id")
    conv = q.get("conversation")
    if conv not in conversations:
        raise ValidationError(f"{path}: question {qid!r} names unknown conversation {conv!r}")
    evidence = q.get("evidence")
    if not isinstance(evidence, list) or not evidence:
        raise ValidationError(f"{path}: question {qid!r} needs a non-empty evidence list")
    known = {t.ext_id for t in conversations[conv]}
    missing = [e for e in evidence if e not in known]
    if missing:
        raise ValidationError(f"{path}: question {qid!r}: evidence {missing} not in {conv!r}")
    when = q.get("time")
    if when is not None:
        parse_time(when, field=f"question {qid!r} time")
    if not isinstance(q.get("question"), str) or not q["question"].strip():
        raise ValidationError(f"{path}: question {qid!r} has no question text")
    return Question(
        id=str(qid),
        conversation=conv,
        question=q["question"],
        time=when,
        category=str(q.get("category") or "all"),
        evidence=tuple(evidence),
    )
