"""The core every store verb stands on: the engine, the encoder, the blob store, and units of
work (memory/unit.py) on one transaction. MemoryStore (memory/store.py) is this core plus its
verb groups: memories (store_memories.py), the log (store_log.py), accounts (store_accounts.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from personavlm.embed.base import Embedder, Vectors
from personavlm.errors import EmbedderMismatchError
from personavlm.media.blobs import DEFAULT_MAX_PIXELS, BlobStore, check_max_pixels
from personavlm.memory import search
from personavlm.memory.engine import Engine
from personavlm.memory.opening import claim_encoder, open_engine
from personavlm.memory.unit import Tx

__all__ = ["StoreCore", "user_scope"]


def user_scope(user_id: str) -> str:
    """The write scope of one user's data (memory/engine.py Engine.write)."""
    return f"user:{user_id}"


class StoreCore:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        blobs: BlobStore,
        *,
        retrieval: search.RetrievalConfig = search.SHIPPED,
    ) -> None:
        self._engine = engine
        self.embedder = embedder
        self.blobs = blobs
        self.retrieval = retrieval

    @classmethod
    def open(
        cls,
        location: str | Path,
        *,
        embedder: Embedder,
        blob_dir: Path | None = None,
        retrieval: search.RetrievalConfig = search.SHIPPED,
        check_embedder: bool = True,
        create: bool = True,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Self:
        """Open the store at `location` (a SQLite file, or a postgresql:// URL), creating it
        unless `create` is False (memory/opening.py says what is refused and why). Pictures
        over `max_image_pixels` are refused (media/blobs.py)."""
        check_max_pixels(max_image_pixels)  # before the engine opens: a bad limit opens nothing
        engine, blobs = open_engine(location, dim=embedder.dim, blob_dir=blob_dir, create=create)
        pictures = BlobStore(blobs, max_pixels=max_image_pixels)
        store = cls(engine, embedder, pictures, retrieval=retrieval)
        try:
            claim_encoder(engine, embedder, check=check_embedder)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        """Where the data lives: the SQLite file, or the PostgreSQL URL without password."""
        return self._engine.location

    @property
    def engine_kind(self) -> str:
        return self._engine.kind

    @contextmanager
    def transaction(self, user_id: str | None = None) -> Iterator[Tx]:
        """A unit of work: the repositories on one write transaction, serialised with every
        other write of `user_id` (None: with every write at all)."""
        with self._engine.write(None if user_id is None else user_scope(user_id)) as conn:
            yield Tx(conn)

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """The repositories on one read snapshot."""
        with self._engine.read() as conn:
            yield Tx(conn)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        vectors = self.embedder.encode(texts)
        if vectors.shape != (len(texts), self.embedder.dim):
            raise EmbedderMismatchError(
                f"encoder {self.embedder.name!r} returned shape {vectors.shape}, "
                f"expected ({len(texts)}, {self.embedder.dim})"
            )
        return vectors
