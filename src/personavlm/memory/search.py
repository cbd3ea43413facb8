"""Hybrid retrieval: a lexical and a dense retriever (the engine's indexes), fused.

For each memory type asked for, both retrievers rank only the memories that pass the hard
filters — active, of that type, event time overlapping the TimeWindow, not excluded — so the
time window restricts candidates before ranking, never after (the reference code computed the
window and then did not apply it, PAPER.md section 4). The two ranked lists are fused by
a weighted sum of their scores (BM25 scaled by the list's best score, cosine as is), 1 : 3 in
favour of the dense side. That is the setting that measured best of 16 (BM25 and dense alone,
reciprocal-rank fusion with several k and weights, score fusion with several weights) on the
hand-made conversational sets; plain RRF 1:1 lost to dense alone at recall@10 there.
docs/benchmarks.md has the table; bench/retrieval_variants.py re-runs it.

The retrievers themselves belong to the engine (memory/engine.py): SQLite ranks lexically by
FTS5's BM25 and densely with an in-process matrix; PostgreSQL by ts_rank and pgvector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from personavlm.embed.base import Vectors
from personavlm.errors import ValidationError
from personavlm.memory.engine import Conn, SearchFilter
from personavlm.memory.records import DEFAULT_K, Hit, MemoryType
from personavlm.memory.unit import Tx
from personavlm.memory.validate import check_memory_type
from personavlm.timeutil import TimeWindow

__all__ = [
    "SHIPPED",
    "Fusion",
    "Method",
    "Query",
    "Ranked",
    "RetrievalConfig",
    "hydrate",
    "plan",
    "query_terms",
    "retrieve",
]


class Method(StrEnum):
    FUSED = "fused"
    BM25 = "bm25"
    DENSE = "dense"


class Fusion(StrEnum):
    RRF = "rrf"  # weighted reciprocal rank: sum_i w_i / (rrf_k + rank_i)
    SCORE = "score"  # weighted sum of scores, BM25 scaled by the list's best score


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    method: Method = Method.FUSED
    fusion: Fusion = Fusion.SCORE
    bm25_weight: float = 0.25
    dense_weight: float = 0.75
    rrf_k: int = 60  # used by Fusion.RRF only
    # How deep each retriever's list goes before fusion; memories below both lists' depth
    # cannot be returned.
    depth: int = 100

    def with_method(self, method: Method) -> RetrievalConfig:
        return replace(self, method=method)


SHIPPED = RetrievalConfig()


@dataclass(frozen=True, slots=True)
class Ranked:
    memory_id: int
    score: float
    ranks: dict[str, int]


@dataclass(frozen=True, slots=True)
class Query:
    """One search, validated: what to look for, where, and how many per type."""

    user_id: str
    text: str
    vector: Vectors | None  # None when the method needs no dense side
    plan: tuple[tuple[MemoryType, int], ...]  # (type, k) in the order hits are returned
    window: TimeWindow
    exclude: frozenset[int]
    config: RetrievalConfig


def retrieve(conn: Conn, query: Query) -> list[Ranked]:
    """The top k memories of each planned type, best first within a type.

    One matrix-vector product serves every type; each type's candidates are fused on their
    own, so a crowded type cannot push a sparse one out of its k.
    """
    types = [memory_type for memory_type, _ in query.plan]
    method = query.config.method
    where = SearchFilter(query.user_id, query.window, query.exclude, query.config.depth)
    lexical = None
    if method in (Method.FUSED, Method.BM25):
        terms = query_terms(query.text)
        # Nothing but stop words: lexical search has nothing to say.
        lexical = conn.engine.lexical(conn, terms, types, where) if terms else {}
    dense = None
    if method in (Method.FUSED, Method.DENSE):
        assert query.vector is not None
        dense = conn.engine.dense(conn, query.vector, types, where)
    weights = {"bm25": query.config.bm25_weight, "dense": query.config.dense_weight}
    ranked: list[Ranked] = []
    for memory_type, k in query.plan:
        lists: dict[str, list[tuple[int, float]]] = {}
        if lexical is not None:
            lists["bm25"] = lexical.get(memory_type, [])
        if dense is not None:
            lists["dense"] = dense.get(memory_type, [])
        if query.config.fusion is Fusion.SCORE:
            ranked.extend(_fuse_scores(lists, weights)[:k])
        else:
            ranked.extend(_fuse_ranks(lists, weights, query.config.rrf_k)[:k])
    return ranked


def plan(
    types: Iterable[MemoryType | str] | None, k: Mapping[MemoryType | str, int] | int | None
) -> tuple[tuple[MemoryType, int], ...]:
    """(type, k) per type searched: the paper's three types and k's unless asked otherwise."""
    kinds = (
        [MemoryType.SEMANTIC, MemoryType.EPISODIC, MemoryType.PROCEDURAL]
        if types is None
        else [check_memory_type(t) for t in types]
    )
    if isinstance(k, int):
        per_type = {kind: k for kind in kinds}
    else:
        given = {check_memory_type(t): n for t, n in (k or {}).items()}
        per_type = {kind: given.get(kind, DEFAULT_K[kind]) for kind in kinds}
    for kind, n in per_type.items():
        if not isinstance(n, int) or n < 1 or n > 1000:
            raise ValidationError(f"k for {kind.value} must be an integer in 1..1000, got {n!r}")
    return tuple(per_type.items())


def hydrate(tx: Tx, user_id: str, ranked: list[Ranked]) -> list[Hit]:
    """Hits with their memories, source turns and pictures, in ranked order."""
    memories = {r.memory_id: tx.memories.get(user_id, r.memory_id) for r in ranked}
    turn_ids = sorted({t for m in memories.values() for t in m.source_turn_ids})
    turns = tx.turns.by_ids(turn_ids)
    image_ids = sorted(
        {i for m in memories.values() for i in m.image_ids}
        | {i for t in turns.values() for i in t.image_ids}
    )
    images = tx.images.by_ids(image_ids)
    hits = []
    for r in ranked:
        memory = memories[r.memory_id]
        own_turns = tuple(turns[t] for t in memory.source_turn_ids)
        own_images = dict.fromkeys(
            [*memory.image_ids, *(i for t in own_turns for i in t.image_ids)]
        )
        hits.append(
            Hit(
                memory=memory,
                score=r.score,
                turns=own_turns,
                images=tuple(images[i] for i in own_images),
                ranks=r.ranks,
            )
        )
    return hits


def _fuse_ranks(
    lists: Mapping[str, list[tuple[int, float]]], weights: Mapping[str, float], rrf_k: int
) -> list[Ranked]:
    contributions = {
        name: [(mid, weights[name] / (rrf_k + rank)) for rank, (mid, _) in enumerate(ids, 1)]
        for name, ids in lists.items()
    }
    return _combine(lists, contributions)


def _fuse_scores(
    lists: Mapping[str, list[tuple[int, float]]], weights: Mapping[str, float]
) -> list[Ranked]:
    contributions = {}
    for name, scored in lists.items():
        top = max((score for _, score in scored), default=0.0)
        # BM25 is unbounded: scale by the list's best so it is comparable with a cosine.
        scale = 1.0 / top if name == "bm25" and top > 0 else 1.0
        contributions[name] = [(mid, weights[name] * score * scale) for mid, score in scored]
    return _combine(lists, contributions)


def _combine(
    lists: Mapping[str, list[tuple[int, float]]],
    contributions: Mapping[str, list[tuple[int, float]]],
) -> list[Ranked]:
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, ids in lists.items():
        for rank, (memory_id, _) in enumerate(ids, start=1):
            ranks.setdefault(memory_id, {})[name] = rank
    for items in contributions.values():
        for memory_id, value in items:
            scores[memory_id] = scores.get(memory_id, 0.0) + value
    # Ties (equal fused score) go to the newer memory: later statements win by default.
    order = sorted(scores, key=lambda mid: (-scores[mid], -mid))
    return [Ranked(mid, scores[mid], ranks[mid]) for mid in order]


# A short English stop list: these words match most memories, so they add scoring work on
# large stores and almost nothing to the ranking.
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "myself",
        "of",
        "on",
        "or",
        "our",
        "ours",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "too",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
    ]
)
_TERM = re.compile(r"\w+", re.UNICODE)


def query_terms(text: str) -> list[str]:
    """Distinct lower-case words of the query, stop words dropped, in order."""
    seen: dict[str, None] = {}
    for word in _TERM.findall(text.lower()):
        if word not in _STOP and word not in seen:
            seen[word] = None
    return list(seen)
