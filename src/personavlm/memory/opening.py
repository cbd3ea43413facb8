"""Opening a store: which engine a location names, where its pictures live, and the claim
on the encoder its vectors came from."""

from __future__ import annotations

from pathlib import Path

from personavlm.embed.base import Embedder
from personavlm.errors import ConfigError, EmbedderMismatchError
from personavlm.memory.engine import Engine
from personavlm.memory.sqlite import SqliteEngine
from personavlm.memory.unit import Tx

__all__ = ["claim_encoder", "default_blob_dir", "is_postgres_url", "open_engine"]


def is_postgres_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def default_blob_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".blobs")


def open_engine(
    location: str | Path, *, dim: int, blob_dir: Path | None, create: bool
) -> tuple[Engine, Path]:
    """The engine for `location` and the blob folder.

    ConfigError for a PostgreSQL store without a blob folder, and for a missing SQLite file
    when create is False (read-only callers: a typo in a path must not conjure up an empty
    store)."""
    if is_postgres_url(str(location)):
        from personavlm.memory.postgres import PostgresEngine

        if blob_dir is None:
            raise ConfigError(
                "a PostgreSQL store keeps its pictures in a folder: give blob_dir "
                "(the CLI uses $PERSONAVLM_HOME/blobs)"
            )
        return PostgresEngine(str(location), dim=dim, create=create), blob_dir
    db_path = Path(location)
    if not create and not db_path.is_file():
        raise ConfigError(
            f"no personavlm store at {db_path}: check --db / PERSONAVLM_DB, or add or "
            "ingest something first"
        )
    return SqliteEngine(db_path, dim=dim), blob_dir or default_blob_dir(db_path)


def claim_encoder(engine: Engine, embedder: Embedder, *, check: bool) -> None:
    """Record the encoder in a new store; in an existing one, EmbedderMismatchError when its
    vectors came from another encoder (unless check is False: only `reindex` does that)."""
    with engine.write() as conn:
        meta = Tx(conn).meta
        name, dim = meta.get("encoder"), meta.get("encoder_dim")
        if name is None:
            meta.set("encoder", embedder.name)
            meta.set("encoder_dim", str(embedder.dim))
            return
    if check and (name, dim) != (embedder.name, str(embedder.dim)):
        raise EmbedderMismatchError(
            f"{engine.location} was indexed with encoder {name!r} ({dim}-d) but the configured "
            f"encoder is {embedder.name!r} ({embedder.dim}-d). Either configure "
            f"the store's encoder, or re-embed every memory with the new one: "
            f"`personavlm reindex --db {engine.location} --embedder <name>`"
        )
