"""Shared fixtures: real SQLite stores in tmp_path; the weight-free hashing encoder by default,
the bundled MiniLM where retrieval quality is the point (loaded once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MemoryStore]:
    with MemoryStore.open(tmp_path / "memory.db", embedder=HashingEmbedder()) as opened:
        yield opened


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
