"""One typed settings object, resolved once at the edge (CLI, server) from flags and env.

Where data lives, in order: `--db PATH|URL`; else PERSONAVLM_DB; else the SQLite file
`personavlm.db` under PERSONAVLM_HOME (default ~/.local/share/personavlm). A `postgresql://`
URL selects the PostgreSQL engine; its pictures go to PERSONAVLM_BLOBS, else
$PERSONAVLM_HOME/blobs (a SQLite store keeps them beside its file, in `<file>.blobs`).
Which chat model: `--model SPEC`, else PERSONAVLM_MODEL, else the bundled `local:smollm2`
(models/bundled.py); `none` in either place means no model (the service then runs memory-only
and answers chat with 503). Its API key: PERSONAVLM_API_KEY, else OPENAI_API_KEY.
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
    "DEFAULT_MODEL",
    "MODEL_CACHE_NAME",
    "NO_MODEL",
    "Settings",
    "api_key",
    "embedder_name",
    "home_dir",
    "load_settings",
    "model_cache_dir",
    "model_choice",
    "model_spec",
    "named_secret",
]

DEFAULT_EMBEDDER = "minilm"
# The model used when none is configured: tiny, bundled in a package, so a first start works
# offline. NO_MODEL, given as --model or PERSONAVLM_MODEL, asks for none at all.
DEFAULT_MODEL = "local:smollm2"
NO_MODEL = "none"
_DEFAULT_HOME = Path("~/.local/share/personavlm")
MODEL_CACHE_NAME = "models"  # under the home: GGUF models kept converted


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: Path | None  # the SQLite file; None for a PostgreSQL store
    home: Path
    embedder: str = DEFAULT_EMBEDDER
    db_url: str | None = None  # the PostgreSQL URL; None for a SQLite store
    blobs: Path | None = None  # PERSONAVLM_BLOBS, where given

    @property
    def location(self) -> str:
        """What MemoryStore.open takes: the SQLite file's path or the PostgreSQL URL."""
        if self.db_url is not None:
            return self.db_url
        assert self.db_path is not None
        return str(self.db_path)

    @property
    def model_cache(self) -> Path:
        """Where GGUF models are kept converted after their first load (models/gguf_cache.py)."""
        return self.home / MODEL_CACHE_NAME

    @property
    def blob_dir(self) -> Path:
        if self.blobs is not None:
            return self.blobs
        if self.db_path is None:
            return self.home / "blobs"
        return self.db_path.with_name(self.db_path.name + ".blobs")


def load_settings(
    *,
    db: str | None = None,
    embedder: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from explicit values first, then the environment, then defaults."""
    environ = os.environ if env is None else env
    home = home_dir(environ)
    location = db or environ.get("PERSONAVLM_DB") or str(home / "personavlm.db")
    blobs = environ.get("PERSONAVLM_BLOBS", "").strip()
    blob_dir = Path(blobs).expanduser().resolve() if blobs else None
    name = embedder_name(embedder, environ)
    if location.startswith(("postgresql://", "postgres://")):
        return Settings(db_path=None, home=home, embedder=name, db_url=location, blobs=blob_dir)
    return Settings(db_path=_sqlite_path(location), home=home, embedder=name, blobs=blob_dir)


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """PERSONAVLM_HOME, else ~/.local/share/personavlm."""
    environ = os.environ if env is None else env
    return Path(environ.get("PERSONAVLM_HOME") or _DEFAULT_HOME).expanduser()


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where GGUF models are kept converted (for commands that open no store)."""
    return home_dir(env) / MODEL_CACHE_NAME


def embedder_name(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--embedder, else PERSONAVLM_EMBEDDER, else minilm (for commands that open no store)."""
    environ = os.environ if env is None else env
    return explicit or environ.get("PERSONAVLM_EMBEDDER") or DEFAULT_EMBEDDER


def model_choice(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """--model, else PERSONAVLM_MODEL, else DEFAULT_MODEL; None when the one that decides
    says `none` (a flag of `none` wins over a model in the environment)."""
    environ = os.environ if env is None else env
    spec = (explicit or "").strip() or environ.get("PERSONAVLM_MODEL", "").strip() or DEFAULT_MODEL
    return None if spec.lower() == NO_MODEL else spec


def model_spec(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The model a command that needs one runs: `model_choice`, and ConfigError when it
    says `none`."""
    spec = model_choice(explicit, env)
    if spec is None:
        raise ConfigError(
            "this command needs a chat model, and --model / PERSONAVLM_MODEL says none: pass "
            "--model openai:<model>@<base_url> (an OpenAI-compatible server, e.g. "
            "openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1), hf:<path> (a local checkpoint "
            f"directory or .gguf file) or {DEFAULT_MODEL} (the bundled demonstration model, "
            "the default when PERSONAVLM_MODEL is unset)"
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
    if location.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///rel.db is relative, sqlite:////abs.db absolute.
        location = location.removeprefix("sqlite:///")
    elif "://" in location:
        raise ConfigError(
            f"unsupported database URL {location!r}; use a path, sqlite:///path or "
            "postgresql://user:password@host/database"
        )
    path = Path(location).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"--db {location!r} is a folder; give a file path such as {path}/memory.db"
        )
    return path.resolve()
