"""Hybrid retrieval: BM25 (SQLite FTS5) and dense cosine (the store's encoder), fused.

For each memory type asked for, both retrievers rank only the memories that pass the hard
filters — active, of that type, event time overlapping [start, end], not excluded — so the
time window restricts candidates before ranking, never after (the reference code computed the
window and then did not apply it, PAPER.md section 4). The two ranked lists are fused by
a weighted sum of their scores (BM25 scaled by the list's best score, cosine as is), 1 : 3 in
favour of the dense side. That is the setting that measured best of 16 (BM25 and dense alone,
reciprocal-rank fusion with several k and weights, score fusion with several weights) on the
hand-made conversational sets; plain RRF 1:1 lost to dense alone at recall@10 there.
docs/benchmarks.md has the table; bench/retrieval_variants.py re-runs it.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import numpy as np

from personavlm.embed.base import Vectors
from personavlm.memory.records import MemoryType
from personavlm.memory.vectors import VectorIndex
from personavlm.timeutil import to_storage

__all__ = [
    "SHIPPED",
    "Fusion",
    "Method",
    "Ranked",
    "RetrievalConfig",
    "fts_tags",
    "rank_type",
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


def fts_tags(user_id: str, memory_type: MemoryType) -> str:
    """The tag tokens a memory's FTS row carries: one for its user, one for its type."""
    return f"{_user_token(user_id)} t{memory_type.value}"


def rank_type(
    conn: sqlite3.Connection,
    vectors: VectorIndex,
    *,
    user_id: str,
    memory_type: MemoryType,
    query_text: str,
    query_vector: Vectors | None,
    k: int,
    start: datetime | None,
    end: datetime | None,
    exclude: frozenset[int],
    config: RetrievalConfig,
) -> list[Ranked]:
    """The top k memories of one type for the query, best first."""
    lists: dict[str, list[tuple[int, float]]] = {}
    if config.method in (Method.FUSED, Method.BM25):
        lists["bm25"] = _bm25(conn, user_id, memory_type, query_text, start, end, exclude, config)
    if config.method in (Method.FUSED, Method.DENSE):
        assert query_vector is not None
        lists["dense"] = _dense(
            conn, vectors, user_id, memory_type, query_vector, start, end, exclude, config
        )
    weights = {"bm25": config.bm25_weight, "dense": config.dense_weight}
    if config.fusion is Fusion.SCORE:
        return _fuse_scores(lists, weights)[:k]
    return _fuse_ranks(lists, weights, config.rrf_k)[:k]


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


def _bm25(
    conn: sqlite3.Connection,
    user_id: str,
    memory_type: MemoryType,
    text: str,
    start: datetime | None,
    end: datetime | None,
    exclude: frozenset[int],
    config: RetrievalConfig,
) -> list[tuple[int, float]]:
    terms = query_terms(text)
    if not terms:  # nothing but stop words: lexical search has nothing to say
        return []
    match = (
        f"tags : ({_user_token(user_id)} AND t{memory_type.value}) AND text : ("
        + " OR ".join(f'"{term}"' for term in terms)
        + ")"
    )
    sql = (
        "SELECT memory_fts.rowid, -bm25(memory_fts, 0.0, 1.0) "
        "FROM memory_fts JOIN memories m ON m.id = memory_fts.rowid "
        "WHERE memory_fts MATCH ? AND m.status = 'active'"
    )
    params: list[object] = [match]
    if start is not None:
        sql += " AND m.event_end >= ?"
        params.append(to_storage(start))
    if end is not None:
        sql += " AND m.event_start <= ?"
        params.append(to_storage(end))
    if exclude:
        sql += " AND m.id NOT IN (SELECT value FROM json_each(?))"
        params.append("[" + ",".join(str(i) for i in sorted(exclude)) + "]")
    # Column weights: the tags column must not contribute to the score.
    sql += " ORDER BY bm25(memory_fts, 0.0, 1.0), m.id DESC LIMIT ?"
    params.append(config.depth)
    return [(row[0], float(row[1])) for row in conn.execute(sql, params)]


def _dense(
    conn: sqlite3.Connection,
    vectors: VectorIndex,
    user_id: str,
    memory_type: MemoryType,
    query: Vectors,
    start: datetime | None,
    end: datetime | None,
    exclude: frozenset[int],
    config: RetrievalConfig,
) -> list[tuple[int, float]]:
    cached, cosines = vectors.scores(conn, user_id, query)
    keep = vectors.mask(cached, memory_type, start, end, exclude)
    candidates = np.flatnonzero(keep)
    if len(candidates) == 0:
        return []
    depth = min(config.depth, len(candidates))
    picked = candidates[np.argpartition(-cosines[candidates], depth - 1)[:depth]]
    # Best cosine first; among equal cosines the newer memory first.
    order = picked[np.lexsort((-cached.ids[picked], -cosines[picked]))]
    return [(int(cached.ids[i]), float(cosines[i])) for i in order]


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


def _user_token(user_id: str) -> str:
    # A hex digest is one token under any tokenizer, whatever characters the id has.
    return "u" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:20]
