"""One typed settings object, resolved once at the edge (CLI, server) from flags and env.

Where data lives, in order: `--db PATH|URL`; else PERSONAVLM_DB; else the SQLite file
`personavlm.db` under PERSONAVLM_HOME (default ~/.local/share/personavlm). Which chat model:
`--model SPEC`, else PERSONAVLM_MODEL; its API key: PERSONAVLM_API_KEY, else OPENAI_API_KEY.
Nothing in the library reads the environment; it is handed a Settings (and a model spec/key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from personavlm.errors import ConfigError

__all__ = [
    "DEFAULT_EMBEDDER",
    "Settings",
    "api_key",
    "embedder_name",
    "load_settings",
    "model_spec",
    "named_secret",
]

DEFAULT_EMBEDDER = "minilm"
_DEFAULT_HOME = Path("~/.local/share/personavlm")


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: Path  # the SQLite file
    home: Path
    embedder: str = DEFAULT_EMBEDDER

    @property
    def blob_dir(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".blobs")


def load_settings(
    *,
    db: str | None = None,
    embedder: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from explicit values first, then the environment, then defaults."""
    environ = os.environ if env is None else env
    home = Path(environ.get("PERSONAVLM_HOME") or _DEFAULT_HOME).expanduser()
    location = db or environ.get("PERSONAVLM_DB") or str(home / "personavlm.db")
    return Settings(
        db_path=_sqlite_path(location), home=home, embedder=embedder_name(embedder, environ)
    )


def embedder_name(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--embedder, else PERSONAVLM_EMBEDDER, else minilm (for commands that open no store)."""
    environ = os.environ if env is None else env
    return explicit or environ.get("PERSONAVLM_EMBEDDER") or DEFAULT_EMBEDDER


def model_spec(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--model, else PERSONAVLM_MODEL; ConfigError when neither names a model."""
    environ = os.environ if env is None else env
    spec = (explicit or "").strip() or environ.get("PERSONAVLM_MODEL", "").strip()
    if not spec:
        raise ConfigError(
            "no chat model given: pass --model openai:<model>@<base_url> (an OpenAI-compatible "
            "server, e.g. openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1) or hf:<path> (a local "
            "checkpoint directory), or set PERSONAVLM_MODEL"
        )
    return spec


def api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The model server's API key: PERSONAVLM_API_KEY, else OPENAI_API_KEY, else None."""
    environ = os.environ if env is None else env
    for name in ("PERSONAVLM_API_KEY", "OPENAI_API_KEY"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def named_secret(name: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The value of the environment variable a config file names for a secret (a judge's
    API key), else the model API key (`api_key`). A named variable that is unset is a
    ConfigError: the config asked for it."""
    environ = os.environ if env is None else env
    if name is None:
        return api_key(environ)
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"the environment variable {name} (named in the config) is not set")
    return value


def _sqlite_path(location: str) -> Path:
    if location.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "PostgreSQL stores are not available in this version of personavlm; "
            "give a SQLite file path (or sqlite:///path) for --db / PERSONAVLM_DB"
        )
    if location.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///rel.db is relative, sqlite:////abs.db absolute.
        location = location.removeprefix("sqlite:///")
    elif "://" in location:
        raise ConfigError(f"unsupported database URL {location!r}; use a path or sqlite:///path")
    path = Path(location).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"--db {location!r} is a folder; give a file path such as {path}/memory.db"
        )
    return path.resolve()
