"""Store performance: search latency at 1k/10k/100k memories, and ingest overhead over MiniLM.

    # smoke run (small sizes, a minute or two)
    .venv/bin/python bench/store_performance.py --quick

    # the measurement recorded in docs/benchmarks.md
    .venv/bin/python bench/store_performance.py --reuse-vectors --profile

    # the same without the shortcut: every store embeds its own turns while it is built
    .venv/bin/python bench/store_performance.py

What is measured (everything through the public MemoryStore API, on a SQLite file on disk):

Search latency. For each size N (--sizes) one store is built holding N turn-level episodic
memories of one user, through the real ingest path `store.append_turns`. The store is then
closed and reopened with a plain MiniLMEmbedder, and `store.search(user, query)` is timed with
the default types and k (semantic 4, episodic 2, procedural 2; fused BM25 + dense) for --queries
distinct questions, after 10 warm-up questions. Every timed call embeds its query with MiniLM
(nothing is cached for queries). Reported: p50/p95/p99/mean of the full call; the query
embedding alone (`encoder.encode([query])`, p50/p95); the same search with the query vector
looked up from a table ("store only", p50/p95), so the store's share is visible; the first
search after opening ("cold", it loads the user's vectors into memory); the process RSS (now,
and the peak from getrusage maxrss, which includes the model and every earlier size); the DB
file size. The three timings of one question are taken back to back (embed, full search, store
only), question after question, so drift on a shared machine hits all three alike.

With --reuse-vectors the distinct texts of the largest corpus are embedded once with MiniLM
up front, and the stores are built with a caching embedder (same name and dimension, returns
those vectors, refuses texts it was not given), so building the 100k store costs only the
store. Searching never goes through it: the store is reopened with the real encoder first.

Ingest throughput. --ingest-turns turns (the first ones of the same corpus). (a) bare encoder:
`MiniLMEmbedder().encode` on the texts the store would embed (`turn_index_text`), in chunks of
the store's INGEST_BATCH; (b) `store.append_turns(user, turns)` into a fresh store with the same
(warm) encoder; (c) the same with the vectors of (a) looked up from a table: the store's own
cost. The three are interleaved for --ingest-rounds rounds and the best time of each is kept.
Overhead = (t_store - t_encoder) / t_encoder * 100; (c) / (a) * 100 estimates the same share
directly.

The corpus is synthetic but shaped like chat: seeded, template-built turns over a vocabulary of
people, places, foods, pets, activities and feelings; user and assistant alternate; sessions of
a few to a couple of dozen turns, minutes apart, sessions an hour to days apart, all sizes spread
over about 12 months. Output: a Markdown section on stdout (paste into docs/benchmarks.md), the
raw numbers as JSON in --out and the Markdown next to it (.md).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from personavlm.embed import MiniLMEmbedder
from personavlm.embed.base import Vectors
from personavlm.memory.search import SHIPPED, Fusion, Method, RetrievalConfig
from personavlm.memory.store import INGEST_BATCH, MemoryStore
from personavlm.memory.turnlog import TurnInput
from personavlm.memory.unit import turn_index_text

USER = "maya"
USER_NAME = "Maya"
WARMUP_QUERIES = 10
SEED = 20240301
QUICK_SIZES = (200, 1000)
SPAN_DAYS = 365

# ----------------------------------------------------------------------------- corpus

PEOPLE = [
    ("Emma", "my sister", "she"),
    ("Raj", "my coworker", "he"),
    ("Lucia", "my best friend", "she"),
    ("Tom", "my brother", "he"),
    ("Aiko", "my neighbour", "she"),
    ("Daniel", "my manager", "he"),
    ("Priya", "my cousin", "she"),
    ("Marco", "my flatmate", "he"),
    ("Grandma Rose", "my grandmother", "she"),
    ("Uncle Ben", "my uncle", "he"),
    ("Sofia", "my yoga teacher", "she"),
    ("Kwame", "my running buddy", "he"),
    ("Hannah", "my old roommate", "she"),
    ("Jonas", "my partner", "he"),
    ("Mei", "my colleague from design", "she"),
    ("Oliver", "my nephew", "he"),
    ("Fatima", "my dentist", "she"),
    ("Leo", "my climbing partner", "he"),
    ("Chloe", "my niece", "she"),
    ("Ivan", "my landlord", "he"),
    ("Nora", "my therapist", "she"),
    ("Sam", "my childhood friend", "he"),
    ("Isabel", "my mum", "she"),
    ("George", "my dad", "he"),
    ("Yuki", "my language exchange partner", "she"),
    ("Mateo", "my teammate", "he"),
    ("Amara", "my book club friend", "she"),
    ("Felix", "my piano teacher", "he"),
    ("Zoe", "my gym friend", "she"),
    ("Omar", "my barber", "he"),
]
PLACES = [
    "the farmers market",
    "Lisbon",
    "the climbing gym",
    "Kyoto",
    "Grandma's house",
    "the office",
    "the lake cabin",
    "Barcelona",
    "the new ramen place downtown",
    "the botanical garden",
    "the dog park",
    "the library",
    "Edinburgh",
    "the beach at Brighton",
    "the jazz bar on Elm Street",
    "the hospital",
    "the airport",
    "the cinema",
    "the bakery around the corner",
    "the mountains near Innsbruck",
    "Copenhagen",
    "the night market",
    "the community pool",
    "the vet clinic",
    "the museum of modern art",
    "the Italian restaurant by the river",
    "the coworking space",
    "Marrakech",
    "the concert hall",
    "the campsite by the lake",
    "the bookshop cafe",
    "Seoul",
    "the tennis club",
    "the hardware store",
    "the wine bar",
    "the art studio",
]
FOODS = [
    "pad thai",
    "sourdough bread",
    "lemon tart",
    "mushroom risotto",
    "tacos al pastor",
    "sushi",
    "a spicy lentil curry",
    "pancakes with blueberries",
    "ramen",
    "shakshuka",
    "a vegan lasagne",
    "dumplings",
    "grilled sardines",
    "banana bread",
    "pho",
    "paella",
    "falafel wraps",
    "chocolate cake",
    "a Greek salad",
    "butter chicken",
    "bibimbap",
    "margherita pizza",
    "tiramisu",
    "clam chowder",
    "pasta carbonara",
    "kimchi fried rice",
    "apple crumble",
    "miso soup",
    "a cheese board",
    "gnocchi with pesto",
    "roast chicken",
    "poke bowls",
    "carrot cake",
    "empanadas",
    "tom yum soup",
    "pierogi",
]
PETS = [
    ("Bobby", "beagle", "him"),
    ("Luna", "cat", "her"),
    ("Pepper", "parrot", "her"),
    ("Max", "golden retriever", "him"),
    ("Biscuit", "hamster", "him"),
    ("Mochi", "rabbit", "her"),
    ("Shadow", "black cat", "him"),
    ("Daisy", "dachshund", "her"),
    ("Nemo", "goldfish", "him"),
    ("Olive", "tortoise", "her"),
    ("Rocky", "border collie", "him"),
    ("Ziggy", "gecko", "him"),
]
TRICKS = [
    "roll over",
    "give a high five",
    "fetch the newspaper",
    "open the fridge",
    "say hello",
    "play dead",
    "ring a little bell",
    "find hidden treats",
]
ACTIVITIES = [
    "hiking in the hills",
    "baking sourdough",
    "bouldering",
    "learning Japanese",
    "playing the piano",
    "running a half marathon",
    "painting watercolours",
    "doing yoga",
    "swimming laps",
    "gardening on the balcony",
    "knitting a scarf",
    "playing tennis",
    "cycling to work",
    "reading science fiction",
    "practising guitar",
    "learning to surf",
    "photographing birds",
    "writing a short story",
    "doing a pottery class",
    "volunteering at the food bank",
    "playing chess online",
    "training for a 10k",
    "salsa dancing",
    "building a bookshelf",
    "meditating every morning",
    "studying for the data science course",
    "restoring an old bike",
    "cooking Korean food",
    "going to spin class",
    "singing in the choir",
]
FEELINGS = [
    "happy",
    "exhausted",
    "anxious",
    "proud",
    "relaxed",
    "frustrated",
    "excited",
    "lonely",
    "grateful",
    "overwhelmed",
    "nostalgic",
    "motivated",
    "nervous",
    "calm",
    "annoyed",
    "hopeful",
    "sad",
    "energised",
    "bored",
    "content",
]
WHEN = [
    "yesterday",
    "last weekend",
    "this morning",
    "on Saturday",
    "last night",
    "on Tuesday evening",
    "two days ago",
    "last Friday",
    "over the holidays",
    "earlier today",
    "on Sunday afternoon",
    "last month",
]
FUTURE_WHEN = [
    "next week",
    "tomorrow",
    "this weekend",
    "next month",
    "on Friday",
    "after my exams",
    "in the spring",
    "when the weather gets better",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
WORK_MOODS = ["hectic", "quiet", "stressful", "surprisingly fun", "really slow", "non-stop"]
ADJECTIVES = ["wonderful", "lovely", "tough", "exciting", "relaxing", "intense", "fun"]

USER_TEMPLATES = [
    "I went to {place} with {person} {when} and we had {food}.",
    "{Person_full} and I spent the afternoon {activity} at {place}; I felt {feeling} afterwards.",
    "My {species} {pet} got sick {when}, so I took {pet_obj} to the vet near {place}.",
    "I'm trying to get better at {activity}. {When} I practised for {minutes} minutes and "
    "felt {feeling}.",
    "Can you remind me what {person} said about {food}? We talked about it at {place}.",
    "{When} I cooked {food} for {person}'s birthday and {pet} kept begging for some.",
    "I've been feeling {feeling} lately, mostly because work at {place} has been {work}.",
    "Do you think {activity} is a good idea for a weekend with {person}?",
    "I booked a trip to {place} in {month}; {person} might join if {pronoun} can get time off.",
    "Honestly, the {food} at {place} is the best thing I've eaten this year.",
    "{pet} learned a new trick {when}: {pet_subj} can now {trick}!",
    "I finally tried {activity} {when}. It was harder than I expected, but I felt {feeling}.",
    "{Person_full} recommended the {food} at {place}, I'm going to try it {future}.",
    "I told {person} about {activity} and {pronoun} wants to come along {future}.",
    "Ugh, I missed my {activity} session {when} because {pet} needed a walk.",
    "I want to start {activity} again; the last time I did it was at {place} in {month}.",
    "We adopted a {species} named {pet} {when}! I'm so {feeling}.",
    "My favourite food is still {food}, but {person} keeps trying to get me into {food2}.",
    "Work has been {work}; I'm thinking of taking a day off to go to {place} with {person}.",
    "{person} and I argued about money {when} and I still feel {feeling} about it.",
    "I ran into {person_full} at {place} {when}, we hadn't seen each other since {month}.",
    "Note to self: {person} is allergic to {food}, don't bring it to {place}.",
    "{When} was {adj}: {activity} in the morning, {food} for lunch, and a nap with {pet}.",
]
ASSISTANT_TEMPLATES = [
    "That sounds {adj}! How did {person} like the {food}?",
    "It's great that you're keeping up with {activity}. What's the next goal?",
    "I'm sorry {pet} was unwell. Did the vet say what was wrong with your {species}?",
    "Noted: you felt {feeling} after {activity}. Shall I remind you to do it again {future}?",
    "{place} in {month} sounds lovely. Would you like a few ideas for things to do there?",
    "Of course. Last time you mentioned {person} liked {food}; maybe bring some along?",
    "Feeling {feeling} is completely understandable. Do you want to talk about what happened "
    "with {person}?",
    "A {species} named {pet}, that's adorable! How is {pet_subj} settling in?",
    "Good luck with {activity} {future}! Let me know how it goes.",
    "I'll remember that you prefer {food} over {food2}.",
    "A day off at {place} sounds like a good idea after such a {work} stretch at work.",
    "Teaching {pet} to {trick} takes patience, well done!",
    "{person} sounds like a good friend. Did you two make plans for {future}?",
    "I've noted that {person} is allergic to {food}.",
]
USER_FILLERS = [
    "Anyway, that's my update.",
    "Also, it rained all day.",
    "By the way, {person} says hi.",
    "I should really sleep earlier.",
    "Not sure why I'm telling you this, haha.",
    "It's been a long week.",
]
ASSISTANT_FILLERS = [
    "I'm here if you want to talk more.",
    "Anything else on your mind today?",
    "Take care of yourself.",
]
QUERY_TEMPLATES = [
    "What is the name of my {species}?",
    "When did I last go to {place}?",
    "What did I eat with {person} at {place}?",
    "How did I feel after {activity}?",
    "Who did I go to {place} with?",
    "What did I cook for {person}'s birthday?",
    "Which trick did {pet} learn?",
    "When is my trip to {place}?",
    "What did {person} recommend I try at {place}?",
    "Did I ever try {activity}?",
    "What is my favourite food?",
    "Why was I feeling {feeling} about work?",
    "What did {person} say about {food}?",
    "Where did I go {activity} in {month}?",
    "Is {person} allergic to anything?",
    "What happened to {pet} at the vet?",
    "Who wants to come along for {activity}?",
    "When did {person} and I argue?",
    "What pet did I adopt and what is it called?",
    "Where did I run into {person}?",
]


def _slots(rng: random.Random) -> dict[str, str]:
    name, relation, pronoun = rng.choice(PEOPLE)
    pet, species, pet_obj = rng.choice(PETS)
    food, food2 = rng.sample(FOODS, 2)
    when = rng.choice(WHEN)
    return {
        "person": name,
        "person_full": f"{relation} {name}",
        "Person_full": f"{relation[0].upper()}{relation[1:]} {name}",
        "pronoun": pronoun,
        "place": rng.choice(PLACES),
        "food": food,
        "food2": food2,
        "pet": pet,
        "species": species,
        "pet_obj": pet_obj,
        "pet_subj": "he" if pet_obj == "him" else "she",
        "trick": rng.choice(TRICKS),
        "activity": rng.choice(ACTIVITIES),
        "feeling": rng.choice(FEELINGS),
        "when": when,
        "When": when[0].upper() + when[1:],
        "future": rng.choice(FUTURE_WHEN),
        "month": rng.choice(MONTHS),
        "minutes": str(rng.choice([10, 15, 20, 25, 30, 40, 45, 60, 90])),
        "work": rng.choice(WORK_MOODS),
        "adj": rng.choice(ADJECTIVES),
    }


def turn_texts(n: int, seed: int = SEED) -> list[tuple[str, str]]:
    """(role, text) of n turns; a prefix of a longer corpus is the shorter corpus."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        templates, fillers = (
            (USER_TEMPLATES, USER_FILLERS)
            if role == "user"
            else (ASSISTANT_TEMPLATES, ASSISTANT_FILLERS)
        )
        slots = _slots(rng)
        text = rng.choice(templates).format(**slots)
        if rng.random() < 0.3:
            text += " " + rng.choice(fillers).format(**slots)
        out.append((role, text))
    return out


def turn_times(n: int, seed: int = SEED) -> list[datetime]:
    """Non-decreasing times: sessions of 2-24 turns, 20 s to 4 min apart, sessions 61 min to
    several days apart, scaled so that any n spans about SPAN_DAYS days."""
    rng = random.Random(seed + 1)
    sessions = []
    left = n
    while left > 0:
        size = min(left, rng.randint(2, 24))
        sessions.append(size)
        left -= size
    mean_gap = max(timedelta(days=SPAN_DAYS) / max(len(sessions), 1), timedelta(minutes=90))
    spare = (mean_gap - timedelta(minutes=61)).total_seconds()
    now = datetime(2024, 1, 3, 8, 30)
    times: list[datetime] = []
    for index, size in enumerate(sessions):
        if index:
            now += timedelta(minutes=61, seconds=rng.expovariate(1.0 / spare))
        for turn in range(size):
            if turn:
                now += timedelta(seconds=rng.randint(20, 240))
            times.append(now.replace(microsecond=0))
    return times


def make_turns(n: int) -> list[TurnInput]:
    return [
        TurnInput.create(
            time=when,
            role=role,
            text=text,
            ext_id=f"t{i:07d}",
            speaker=USER_NAME if role == "user" else None,
        )
        for i, ((role, text), when) in enumerate(zip(turn_texts(n), turn_times(n), strict=True))
    ]


def make_queries(n: int, seed: int = SEED + 2) -> list[str]:
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    limit = 1000 * (n + 1)
    while len(seen) < n and limit:
        seen[rng.choice(QUERY_TEMPLATES).format(**_slots(rng))] = None
        limit -= 1
    return list(seen)


# ----------------------------------------------------------------------------- encoders


class TableEmbedder:
    """Returns precomputed vectors for the texts it was given; refuses any other text."""

    def __init__(self, name: str, dim: int, texts: Sequence[str], vectors: Vectors) -> None:
        self.name = name
        self.dim = dim
        self._row = {text: i for i, text in enumerate(texts)}
        self._matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        assert self._matrix.shape == (len(texts), dim)

    def encode(self, texts: Sequence[str]) -> Vectors:
        try:
            rows = [self._row[t] for t in texts]
        except KeyError as exc:
            raise KeyError(f"TableEmbedder was not given the text {exc.args[0]!r}") from None
        return self._matrix[rows]


def encode_chunked(
    encoder: MiniLMEmbedder, texts: Sequence[str], progress: Callable[[int], None] | None = None
) -> Vectors:
    parts = []
    for offset in range(0, len(texts), INGEST_BATCH):
        parts.append(encoder.encode(texts[offset : offset + INGEST_BATCH]))
        if progress is not None:
            progress(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


# ----------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Progress:
    def __init__(self, label: str, total: int, every_s: float = 15.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.done = 0
        self.start = self.last = time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            log(f"  {self.label}: {self.done}/{self.total} ({rate:.0f}/s)")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def db_size_mib(path: Path) -> float:
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    ram = float("nan")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 2**20
    except OSError:
        pass
    import sentence_transformers
    import torch

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "ram_gib": round(ram, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sentence_transformers": sentence_transformers.__version__,
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------- search


def measure_search(
    n: int,
    *,
    workdir: Path,
    encoder: MiniLMEmbedder,
    table: TableEmbedder | None,
    queries: list[str],
    warmup: list[str],
    profile: bool,
    keep: bool,
) -> dict[str, Any]:
    turns = make_turns(n)
    path = workdir / f"search_{n}.db"
    builder = table if table is not None else encoder
    log(f"N={n}: building the store ({'precomputed vectors' if table else 'MiniLM'})")
    with MemoryStore.open(path, embedder=builder) as store:
        t0 = time.perf_counter()
        report = store.append_turns(USER, turns, progress=Progress(f"ingest {n}", n))
        build_s = time.perf_counter() - t0
    assert report.added == n, report
    log(f"N={n}: built in {build_s:.1f} s ({n / build_s:.0f} turns/s), {report.sessions} sessions")
    span_days = (turns[-1].time - turns[0].time).total_seconds() / 86400
    del turns
    size_mib = db_size_mib(path)

    query_table = TableEmbedder(encoder.name, encoder.dim, queries, encoder.encode(queries))
    rss_open = rss_mib()
    store = MemoryStore.open(path, embedder=encoder)
    try:
        t0 = time.perf_counter()
        store.search(USER, warmup[0])
        cold_ms = (time.perf_counter() - t0) * 1e3
        for q in warmup[1:]:
            store.search(USER, q)
        embed_ms, full_ms, store_ms = [], [], []
        hits = 0
        for q in queries:
            t0 = time.perf_counter()
            encoder.encode([q])
            t1 = time.perf_counter()
            result = store.search(USER, q)
            t2 = time.perf_counter()
            store.embedder = query_table  # the store-only pass: same search, vector looked up
            try:
                store.search(USER, q)
            finally:
                store.embedder = encoder
            t3 = time.perf_counter()
            embed_ms.append((t1 - t0) * 1e3)
            full_ms.append((t2 - t1) * 1e3)
            store_ms.append((t3 - t2) * 1e3)
            hits += len(result)
        rss_after = rss_mib()
        profile_text = None
        if profile:
            profile_text = profile_searches(store, queries[:20], query_table)
    finally:
        store.close()
    if not keep:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    full = percentiles(full_ms)
    log(
        f"N={n}: search p50 {full['p50']:.1f} ms, p95 {full['p95']:.1f} ms; "
        f"embed p50 {np.median(embed_ms):.1f} ms; store-only p50 {np.median(store_ms):.1f} ms"
    )
    return {
        "memories": n,
        "span_days": span_days,
        "build_s": build_s,
        "build_turns_per_s": n / build_s,
        "build_embedder": builder.name if table is None else "precomputed (TableEmbedder)",
        "queries": len(queries),
        "warmup_queries": len(warmup),
        "mean_hits_per_query": hits / len(queries),
        "search_ms": full,
        "embed_ms": percentiles(embed_ms),
        "store_only_ms": percentiles(store_ms),
        "cold_first_search_ms": cold_ms,
        "rss_before_open_mib": rss_open,
        "rss_after_mib": rss_after,
        "rss_growth_mib": rss_after - rss_open,
        "peak_rss_mib": peak_rss_mib(),
        "vector_cache_mib": n * encoder.dim * 4 / 2**20,
        "db_mib": size_mib,
        "raw": {"search_ms": full_ms, "embed_ms": embed_ms, "store_only_ms": store_ms},
        "profile": profile_text,
    }


def profile_searches(store: MemoryStore, queries: list[str], query_table: TableEmbedder) -> str:
    """cProfile of warm searches with the query vectors looked up: the store's own time."""
    encoder = store.embedder
    store.embedder = query_table
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        for q in queries:
            store.search(USER, q)
        profiler.disable()
    finally:
        store.embedder = encoder
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    out.write(f"cProfile of {len(queries)} warm store-only searches, by own time\n")
    stats.sort_stats("tottime").print_stats(15)
    out.write("by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


# ----------------------------------------------------------------------------- ingest


def measure_ingest(
    n: int, *, workdir: Path, encoder: MiniLMEmbedder, rounds: int
) -> dict[str, Any]:
    turns = make_turns(n)
    texts = [turn_index_text(t) for t in turns]
    encoder.encode(texts[:INGEST_BATCH])  # warm: weights loaded, kernels and allocator hot
    times: dict[str, list[float]] = {"encoder": [], "store": [], "store_only": []}
    table: TableEmbedder | None = None
    for r in range(rounds):
        t0 = time.perf_counter()
        vectors = encode_chunked(encoder, texts)
        times["encoder"].append(time.perf_counter() - t0)
        if table is None:
            table = TableEmbedder(encoder.name, encoder.dim, texts, vectors)
        for variant, embedder in (("store", encoder), ("store_only", table)):
            path = workdir / f"ingest_{variant}_{r}.db"
            with MemoryStore.open(path, embedder=embedder) as store:
                t0 = time.perf_counter()
                report = store.append_turns(USER, turns)
                times[variant].append(time.perf_counter() - t0)
            assert report.added == n, report
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        log(
            f"ingest round {r + 1}/{rounds}: encoder {times['encoder'][-1]:.2f} s, "
            f"store {times['store'][-1]:.2f} s, store only {times['store_only'][-1]:.2f} s"
        )
    best = {k: min(v) for k, v in times.items()}
    return {
        "turns": n,
        "batch": INGEST_BATCH,
        "rounds": rounds,
        "method": f"interleaved encoder/store/store-only, {rounds} rounds, best time of each",
        "seconds": times,
        "best_s": best,
        "turns_per_s": {k: n / v for k, v in best.items()},
        "overhead_pct": (best["store"] - best["encoder"]) / best["encoder"] * 100,
        "store_only_share_pct": best["store_only"] / best["encoder"] * 100,
        "mean_chars": sum(map(len, texts)) / n,
    }


# ----------------------------------------------------------------------------- report


def describe(config: RetrievalConfig) -> str:
    if config.method is not Method.FUSED:
        return f"{config.method.value} only, depth {config.depth}"
    if config.fusion is Fusion.RRF:
        how = f"reciprocal-rank fusion k={config.rrf_k}"
    else:
        how = "score fusion"
    return (
        f"BM25 + dense, {how}, weights {config.bm25_weight:g} : {config.dense_weight:g}, "
        f"depth {config.depth}"
    )


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "## Store performance",
        "",
        f"Measured {result['date']} with `{result['command']}` "
        f"(bench/store_performance.py; raw numbers in `{result['out']}`).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM; Python {m['python']}, "
        f"SQLite {m['sqlite']}, numpy {m['numpy']}, torch {m['torch']} "
        f"({m['torch_threads']} threads), sentence-transformers {m['sentence_transformers']}. "
        "The machine was shared with other work while this ran (1-minute load average "
        f"{result['loadavg_start'][0]:.1f} at the start, {result['loadavg_end'][0]:.1f} at the "
        "end): expect noise.",
        "",
        "Corpus: synthetic chat turns (seeded templates over people, places, foods, pets, "
        "activities, feelings), user/assistant alternating, in sessions of 2-24 turns; one "
        "user; every turn is one episodic memory (`append_turns`)."
        + "".join(
            f" {s['memories']:,} turns span {s['span_days']:.0f} days."
            for s in result.get("search", [])
        ),
        "",
    ]
    if result.get("search"):
        first = result["search"][0]
        built = (
            "built from vectors embedded once up front (`--reuse-vectors`: build time is the "
            "store alone)"
            if result["reuse_vectors"]
            else "built through `append_turns` with MiniLM embedding each turn"
        )
        lines += [
            "### Search latency, one user",
            "",
            f"`store.search(user, query)` with the defaults (semantic 4, episodic 2, "
            f"procedural 2; shipped retrieval: {result.get('retrieval', 'fused BM25 + dense')}), "
            f"{first['queries']} distinct questions after "
            f"{first['warmup_queries']} warm-up ones, query embedded by MiniLM in every call. "
            f"Stores {built}, then reopened with the plain encoder. *embed* is "
            "`encoder.encode([query])` alone; *store only* is the same search with the query "
            "vector looked up, so *search* ≈ *embed* + *store only*. *cold* is the first search "
            "after opening (loads the user's vectors). RSS: process after the searches "
            "(model included; in brackets the growth since the store was opened, mostly the "
            "in-memory vector matrix) / peak so far (getrusage maxrss).",
            "",
            "| memories | search p50 | p95 | p99 | mean | embed p50 / p95 | "
            "store only p50 / p95 | cold | RSS now / peak | DB file | build |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in result["search"]:
            f, e, o = s["search_ms"], s["embed_ms"], s["store_only_ms"]
            lines.append(
                f"| {s['memories']:,} | {f['p50']:.1f} ms | {f['p95']:.1f} ms | "
                f"{f['p99']:.1f} ms | {f['mean']:.1f} ms | {e['p50']:.1f} / {e['p95']:.1f} ms | "
                f"{o['p50']:.1f} / {o['p95']:.1f} ms | {s['cold_first_search_ms']:.0f} ms | "
                f"{s['rss_after_mib']:.0f} (+{s['rss_growth_mib']:.0f}) / "
                f"{s['peak_rss_mib']:.0f} MiB | "
                f"{s['db_mib']:.0f} MiB | {s['build_s']:.1f} s |"
            )
        goal = next((s for s in result["search"] if s["memories"] == 10_000), None)
        if goal is not None:
            p95 = goal["search_ms"]["p95"]
            verdict = "met" if p95 < 30 else "**not met**"
            lines += [
                "",
                f"Goal p95 < 30 ms at 10k memories: {p95:.1f} ms, {verdict} (query embedding "
                f"alone p95 {goal['embed_ms']['p95']:.1f} ms, the store alone p95 "
                f"{goal['store_only_ms']['p95']:.1f} ms).",
            ]
        if result.get("reuse_vectors") and result.get("corpus_embed_s"):
            lines += [
                "",
                f"Embedding the {result['corpus_distinct_texts']:,} distinct corpus texts once "
                f"took {result['corpus_embed_s']:.0f} s "
                f"({result['corpus_distinct_texts'] / result['corpus_embed_s']:.0f} texts/s).",
            ]
        lines.append("")
    ing = result.get("ingest")
    if ing:
        best, rate = ing["best_s"], ing["turns_per_s"]
        overhead = ing["overhead_pct"]
        spread = max(
            (max(ing["seconds"][key]) - min(ing["seconds"][key])) / min(ing["seconds"][key]) * 100
            for key in ("encoder", "store")
        )
        verdict = "met" if overhead < 20 else "**not met**"
        if overhead < 0 or spread > abs(overhead):
            verdict = (
                f"inconclusive: the rounds of one path differ by up to {spread:.0f}%, more "
                "than the difference measured; the store-alone share below is the reliable "
                "figure"
            )
        lines += [
            "### Ingest throughput",
            "",
            f"{ing['turns']:,} turns (mean {ing['mean_chars']:.0f} characters), embedded in "
            f"chunks of {ing['batch']} (the store's INGEST_BATCH); {ing['method']}.",
            "",
            "| path | time | turns/s |",
            "|---|---:|---:|",
            f"| bare encoder: `MiniLMEmbedder().encode` | {best['encoder']:.2f} s | "
            f"{rate['encoder']:.0f} |",
            f"| `store.append_turns` with MiniLM | {best['store']:.2f} s | {rate['store']:.0f} |",
            f"| `store.append_turns`, vectors looked up (store alone) | "
            f"{best['store_only']:.2f} s | {rate['store_only']:.0f} |",
            "",
            f"Store overhead over the encoder: (t_store - t_encoder) / t_encoder = "
            f"{overhead:.1f}% (goal < 20%: {verdict}); the store alone costs "
            f"{ing['store_only_share_pct']:.1f}% of the encoder's time. Every round: "
            + "; ".join(
                f"{label} " + ", ".join(f"{t:.2f}" for t in ing["seconds"][key]) + " s"
                for key, label in (
                    ("encoder", "encoder"),
                    ("store", "store"),
                    ("store_only", "store alone"),
                )
            )
            + ".",
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="memories per store for search latency, comma-separated (default 1000,10000,100000)",
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size")
    parser.add_argument("--ingest-turns", type=int, default=3000)
    parser.add_argument("--ingest-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/store_performance.json"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: sizes {QUICK_SIZES}, 30 queries, 300 ingest turns",
    )
    parser.add_argument(
        "--reuse-vectors",
        action="store_true",
        help="embed the corpus once and build every store from those vectors",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile 20 warm store-only searches at the largest size (stderr and JSON)",
    )
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores go")
    parser.add_argument("--keep", action="store_true", help="keep the search stores")
    parser.add_argument(
        "--render", type=Path, default=None, help="print the Markdown of a saved JSON and exit"
    )
    args = parser.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        args.size_list = list(QUICK_SIZES)
        args.queries = min(args.queries, 30)
        args.ingest_turns = min(args.ingest_turns, 300)
    if min(args.size_list) < 1 or args.queries < 1 or args.ingest_turns < 1:
        parser.error("sizes, --queries and --ingest-turns must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render is not None:
        print(markdown(json.loads(args.render.read_text())))
        return
    command = shlex.join([".venv/bin/python", "bench/store_performance.py", *sys.argv[1:]])
    encoder = MiniLMEmbedder()
    t0 = time.perf_counter()
    encoder.encode(["warm up the model"])
    log(f"MiniLM loaded in {time.perf_counter() - t0:.1f} s")
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "out": str(args.out),
        "machine": machine(),
        "reuse_vectors": args.reuse_vectors,
        "seed": SEED,
        "loadavg_start": os.getloadavg(),
        "retrieval": describe(SHIPPED),
    }
    workdir = Path(tempfile.mkdtemp(prefix="store_perf_", dir=args.workdir))
    try:
        if not args.skip_ingest:
            log(f"ingest throughput on {args.ingest_turns} turns")
            result["ingest"] = measure_ingest(
                args.ingest_turns, workdir=workdir, encoder=encoder, rounds=args.ingest_rounds
            )
        if not args.skip_search:
            queries = make_queries(args.queries + WARMUP_QUERIES)
            warmup, timed = queries[:WARMUP_QUERIES], queries[WARMUP_QUERIES:]
            table = None
            if args.reuse_vectors:
                largest = max(args.size_list)
                texts = list(dict.fromkeys(turn_index_text(t) for t in make_turns(largest)))
                log(f"embedding {len(texts)} distinct corpus texts once (--reuse-vectors)")
                t0 = time.perf_counter()
                vectors = encode_chunked(encoder, texts, Progress("embed corpus", len(texts)))
                result["corpus_embed_s"] = time.perf_counter() - t0
                result["corpus_distinct_texts"] = len(texts)
                table = TableEmbedder(encoder.name, encoder.dim, texts, vectors)
                del vectors
            largest = max(args.size_list)
            result["search"] = [
                measure_search(
                    n,
                    workdir=workdir,
                    encoder=encoder,
                    table=table,
                    queries=timed,
                    warmup=warmup,
                    profile=args.profile and n == largest,
                    keep=args.keep,
                )
                for n in args.size_list
            ]
            for s in result["search"]:
                if s["profile"]:
                    print(s["profile"], file=sys.stderr)
    finally:
        if args.keep:
            log(f"stores kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    text = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
