"""Shared fixtures: real stores — a SQLite file in tmp_path, and in the store contract suites
(modules that set STORE_CONTRACT = True) also a fresh PostgreSQL + pgvector database of a
throw-away cluster (tests/pg_cluster.py); the weight-free hashing encoder by default, the
bundled MiniLM where retrieval quality is the point (loaded once per session)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_script import AgentScript
from personavlm.embed import Embedder, HashingEmbedder, MiniLMEmbedder
from personavlm.memory import MemoryStore
from personavlm.models import OpenAIChatModel
from personavlm.testing import ScriptedOpenAIServer


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing a test runs may touch the real ~/.local/share/personavlm.
    monkeypatch.setenv("PERSONAVLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PERSONAVLM_DB", raising=False)
    monkeypatch.delenv("PERSONAVLM_EMBEDDER", raising=False)


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The store contract: every test of these modules runs on both engines.
    if getattr(metafunc.module, "STORE_CONTRACT", False) and (
        "store_location" in metafunc.fixturenames
    ):
        metafunc.parametrize("store_location", ENGINES, indirect=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    from pg_cluster import running_cluster

    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the test's store lives: a SQLite file, or a fresh PostgreSQL database."""
    engine = getattr(request, "param", "sqlite")
    if engine == "sqlite":
        yield str(tmp_path / "memory.db")
        return
    cluster = request.getfixturevalue("pg_cluster")
    with cluster.database() as url:
        yield url


@pytest.fixture
def open_store(store_location: str, tmp_path: Path) -> Iterator[Callable[..., MemoryStore]]:
    """Opens (more) handles on the test's store; all are closed after the test."""
    opened: list[MemoryStore] = []

    def open_(embedder: Embedder | None = None, **options: Any) -> MemoryStore:
        options.setdefault("blob_dir", tmp_path / "memory.db.blobs")
        handle = MemoryStore.open(store_location, embedder=embedder or HashingEmbedder(), **options)
        opened.append(handle)
        return handle

    yield open_
    for handle in opened:
        handle.close()


@pytest.fixture
def store(open_store: Callable[..., MemoryStore]) -> MemoryStore:
    return open_store()


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    embedder = MiniLMEmbedder()
    embedder.encode(["warm up"])
    return embedder


@pytest.fixture
def script() -> AgentScript:
    """The scripted model's behaviour; a test sets its handlers (tests/agent_script.py)."""
    return AgentScript()


@pytest.fixture
def server(script: AgentScript) -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(script) as running:
        yield running


@pytest.fixture
def model(server: ScriptedOpenAIServer) -> OpenAIChatModel:
    """The real OpenAI client against the scripted server, without retries."""
    return OpenAIChatModel("scripted", server.base_url, max_retries=0)
