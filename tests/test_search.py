"""Retrieval: hard time window, exclusions, types and k, hits with turns and images, freshness
across store handles, encoder mismatch and re-index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import write_png
from personavlm.embed import Embedder, HashingEmbedder
from personavlm.errors import EmbedderMismatchError, NotFoundError, ValidationError
from personavlm.memory import MemoryStore, MemoryType, Method, RetrievalConfig, TurnInput
from personavlm.memory.search import Fusion, query_terms

ALL_METHODS = [
    RetrievalConfig(method=Method.BM25),
    RetrievalConfig(method=Method.DENSE),
    RetrievalConfig(method=Method.FUSED, fusion=Fusion.RRF),
    RetrievalConfig(method=Method.FUSED, fusion=Fusion.SCORE, bm25_weight=0.3, dense_weight=0.7),
]

# The store contract: every test here runs on SQLite and on PostgreSQL (conftest.py).
STORE_CONTRACT = True


def _facts(store: MemoryStore) -> dict[str, int]:
    ids = {}
    for when, text in [
        ("2024-01-10 09:00", "Ann went skiing in the Alps with her brother"),
        ("2024-03-15 09:00", "Ann went skiing in Norway with colleagues"),
        ("2024-06-20 09:00", "Ann went swimming in the lake with her dog"),
    ]:
        ids[when[:7]] = store.add("ann", "semantic", text, time=when).id
    return ids


@pytest.mark.parametrize("config", ALL_METHODS, ids=lambda c: f"{c.method}-{c.fusion}")
def test_time_window_is_a_hard_filter_before_ranking(
    store: MemoryStore, config: RetrievalConfig
) -> None:
    ids = _facts(store)
    hits = store.search(
        "ann",
        "skiing in the Alps with her brother",
        types=["semantic"],
        k=4,
        start="2024-03-01 00:00",
        end="2024-12-31 23:59",
        config=config,
    )
    # The best match lies outside the window: it must not appear at all, not merely rank low.
    assert ids["2024-01"] not in {h.memory.id for h in hits}
    assert hits and all(h.memory.event_start.month >= 3 for h in hits)
    only_before = store.search(
        "ann", "skiing", types=["semantic"], end="2024-02-01 00:00", config=config
    )
    assert [h.memory.id for h in only_before] == [ids["2024-01"]]


@pytest.mark.parametrize("config", ALL_METHODS, ids=lambda c: f"{c.method}-{c.fusion}")
def test_exclude_ids_removes_memories_before_ranking(
    store: MemoryStore, config: RetrievalConfig
) -> None:
    ids = _facts(store)
    first = store.search("ann", "skiing Alps brother", types=["semantic"], k=1, config=config)
    assert [h.memory.id for h in first] == [ids["2024-01"]]
    again = store.search(
        "ann",
        "skiing Alps brother",
        types=["semantic"],
        k=3,
        exclude_ids=[ids["2024-01"]],
        config=config,
    )
    assert ids["2024-01"] not in [h.memory.id for h in again] and again


def test_default_types_and_k_follow_the_paper(store: MemoryStore) -> None:
    for i in range(6):
        store.add("ann", "semantic", f"fact {i} about hiking")
        store.add("ann", "episodic", f"episode {i} about hiking")
        store.add("ann", "procedural", f"hikes on day {i}", key=f"routine {i}")
        store.add("ann", "core", f"core {i} hiking", key=f"core {i}")
    hits = store.search("ann", "hiking")
    counts = {t: sum(h.memory.type is t for h in hits) for t in MemoryType}
    assert counts == {
        MemoryType.SEMANTIC: 4,
        MemoryType.EPISODIC: 2,
        MemoryType.PROCEDURAL: 2,
        MemoryType.CORE: 0,
    }
    custom = store.search("ann", "hiking", types=["core", "semantic"], k={"semantic": 1})
    assert [h.memory.type for h in custom].count(MemoryType.SEMANTIC) == 1
    assert [h.memory.type for h in custom].count(MemoryType.CORE) == 4
    assert len(store.search("ann", "hiking", types=["episodic"], k=5)) == 5


def test_only_active_memories_are_retrieved(store: MemoryStore) -> None:
    old = store.add("ann", "semantic", "Ann's favourite colour is green")
    new = store.update("ann", old.id, content="Ann's favourite colour is blue")
    gone = store.add("ann", "semantic", "Ann's favourite colour was red once")
    store.delete("ann", gone.id)
    ended = store.add("ann", "semantic", "Ann's favourite colour is yellow at work")
    store.invalidate("ann", ended.id)
    for config in ALL_METHODS:
        hits = store.search("ann", "favourite colour", types=["semantic"], config=config)
        assert [h.memory.id for h in hits] == [new.id]


def test_hits_carry_source_turns_and_images(store: MemoryStore, tmp_path: Path) -> None:
    image = store.store_image(write_png(tmp_path / "bobby.png"), caption="a beagle on grass")
    store.append_turns(
        "ann",
        [
            TurnInput.create(
                time="2024-03-24 11:20",
                role="user",
                text="Look who joined the hike!",
                ext_id="t1",
                speaker="Ann",
                caption="a beagle on grass",
                image_ids=(image.id,),
            ),
            TurnInput.create(
                time="2024-03-24 11:21", role="assistant", text="What a happy dog!", ext_id="t2"
            ),
        ],
    )
    hits = store.search("ann", "beagle on the grass", types=["episodic"], k=1)
    assert len(hits) == 1
    hit = hits[0]
    assert [t.ext_id for t in hit.turns] == ["t1"]
    assert hit.turns[0].speaker == "Ann" and hit.turns[0].image_ids == (image.id,)
    assert [i.id for i in hit.images] == [image.id]
    assert store.blobs.read(hit.images[0].id) == (tmp_path / "bobby.png").read_bytes()
    assert hit.ranks.keys() <= {"bm25", "dense"} and hit.ranks


def test_a_second_handle_sees_writes_of_the_first(
    open_store: Callable[..., MemoryStore],
) -> None:
    # Two handles stand for two processes: the vector cache of one must notice the other's
    # adds, updates and deletes.
    writer, reader = open_store(), open_store()
    first = writer.add("ann", "semantic", "Ann plays the cello")
    dense = RetrievalConfig(method=Method.DENSE)
    assert [h.memory.id for h in reader.search("ann", "cello", config=dense)] == [first.id]
    second = writer.update("ann", first.id, content="Ann plays the viola now")
    assert [h.memory.id for h in reader.search("ann", "cello viola", config=dense)] == [second.id]
    writer.delete("ann", second.id)
    assert reader.search("ann", "viola", config=dense) == []


def test_search_input_errors(store: MemoryStore) -> None:
    store.add("ann", "semantic", "fact")
    with pytest.raises(NotFoundError, match="no user 'nobody'"):
        store.search("nobody", "fact")
    with pytest.raises(ValidationError, match="query: is empty"):
        store.search("ann", "   ")
    with pytest.raises(ValidationError, match="unknown memory type 'facts'"):
        store.search("ann", "fact", types=["facts"])
    with pytest.raises(ValidationError, match=r"k for semantic must be an integer in 1\.\.1000"):
        store.search("ann", "fact", k={"semantic": 0})
    with pytest.raises(ValidationError, match="start is after end"):
        store.search("ann", "fact", start="2024-05-01 00:00", end="2024-04-01 00:00")
    with pytest.raises(ValidationError, match="expected 'YYYY-MM-DD HH:MM'"):
        store.search("ann", "fact", start="yesterday")


def test_stop_word_query_still_searches_densely(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", "what it was")
    assert query_terms("what was it?") == []
    assert [h.memory.id for h in store.search("ann", "what was it?", types=["semantic"])] == [
        fact.id
    ]


def test_fts_query_syntax_in_user_text_is_inert(store: MemoryStore) -> None:
    fact = store.add("ann", "semantic", 'Ann said NEAR the end: "quoted" AND (brackets)*')
    hits = store.search(
        "ann",
        'NEAR( "quoted" AND (brackets)* OR -x ^y',
        types=["semantic"],
        config=RetrievalConfig(method=Method.BM25),
    )
    assert [h.memory.id for h in hits] == [fact.id]


def test_other_encoder_is_refused_until_reindex(open_store: Callable[..., MemoryStore]) -> None:
    with open_store(HashingEmbedder(256)) as store:
        store.add("ann", "semantic", "Ann collects stamps")
    with pytest.raises(EmbedderMismatchError, match="personavlm reindex"):
        open_store(HashingEmbedder(64))
    with open_store(HashingEmbedder(64), check_embedder=False) as store:
        assert store.reindex() == 1
    with open_store(HashingEmbedder(64)) as store:
        hits = store.search("ann", "stamps", config=RetrievalConfig(method=Method.DENSE))
        assert [h.memory.content for h in hits] == ["Ann collects stamps"]


@pytest.mark.slow
def test_minilm_finds_paraphrases_that_share_no_word(
    open_store: Callable[..., MemoryStore], minilm: Embedder
) -> None:
    with open_store(minilm) as store:
        target = store.add("ann", "semantic", "Ann adopted a kitten in March")
        store.add("ann", "semantic", "Ann bought a new road bike")
        store.add("ann", "semantic", "Ann's brother lives in Madrid")
        hits = store.search("ann", "when did I get my cat?", types=["semantic"], k=1)
        assert [h.memory.id for h in hits] == [target.id]
