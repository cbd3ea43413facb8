"""What every command shares: the --db/--embedder options, opening the store, output, and
mapping library errors to exit codes (2 input, 3 configuration, 4 storage, 5 model).

The command modules import only this, typer and foundations at the top: `personavlm --help`
builds every command, and must not load the store, the encoders or the agent (numpy, torch,
httpx). What a command needs to run it imports inside its function (tests/test_layers.py
checks that importing the CLI loads neither numpy nor torch).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from personavlm.errors import (
    ConfigError,
    InputError,
    ModelError,
    NotFoundError,
    PersonaVLMError,
    StoreError,
    ValidationError,
)
from personavlm.settings import Settings, load_settings

if TYPE_CHECKING:
    from personavlm.memory.store import MemoryStore

__all__ = [
    "DbOption",
    "EmbedderOption",
    "JsonOption",
    "check_count",
    "emit",
    "fail_on_errors",
    "open_store",
    "progress_bar",
    "stored_id",
]

DbOption = typer.Option(
    None,
    "--db",
    help="SQLite file (or sqlite:///path), or a postgresql://user:password@host/db URL. "
    "Default: $PERSONAVLM_DB, else $PERSONAVLM_HOME/personavlm.db (~/.local/share/personavlm).",
    show_default=False,
)
EmbedderOption = typer.Option(
    None,
    "--embedder",
    help="Text encoder: minilm (default, bundled; run in numpy here), minilm-numpy or "
    "hashing[-DIM]. "
    "Default: $PERSONAVLM_EMBEDDER, else minilm.",
    show_default=False,
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")

# Row ids and SQL counts are signed 64-bit on both engines; a larger int reaching the driver
# is an OverflowError with a traceback, not an answer. (server/pagination.py says the same
# for the service; the CLI must not import the server to print its help.)
MAX_ROW_ID = 2**63 - 1

EXIT_CODES: tuple[tuple[type[PersonaVLMError], int], ...] = (
    (InputError, 2),
    (ConfigError, 3),
    (StoreError, 4),
    (ModelError, 5),
)


def stored_id(value: int, what: str, user_id: str | None = None) -> int:
    """An id from the command line: NotFoundError (exit 2) for one outside 1..MAX_ROW_ID,
    which no row can have, worded like the store's answer for a missing row."""
    if not 1 <= value <= MAX_ROW_ID:
        owner = "" if user_id is None else f" for user {user_id!r}"
        raise NotFoundError(f"no {what} {value}{owner} (ids are 1..{MAX_ROW_ID})")
    return value


def check_count(value: int, flag: str, *, least: int) -> int:
    """A count or offset flag: ValidationError (exit 2) outside least..MAX_ROW_ID."""
    if not least <= value <= MAX_ROW_ID:
        raise ValidationError(f"{flag} must be in {least}..{MAX_ROW_ID}, got {value}")
    return value


def settings(db: str | None, embedder: str | None) -> Settings:
    return load_settings(db=db, embedder=embedder)


@contextmanager
def open_store(
    db: str | None,
    embedder: str | None,
    *,
    check_embedder: bool = True,
    create: bool = False,
) -> Iterator[MemoryStore]:
    """Open the configured store; only commands that write new data pass create=True."""
    from personavlm import embed
    from personavlm.memory.store import MemoryStore

    resolved = settings(db, embedder)
    store = MemoryStore.open(
        resolved.location,
        embedder=embed.load(command_line_encoder(resolved.embedder)),
        blob_dir=resolved.blob_dir,
        check_embedder=check_embedder,
        create=create,
    )
    try:
        yield store
    finally:
        store.close()


def command_line_encoder(name: str) -> str:
    """`minilm` runs in numpy for a command: the same vectors and name as the torch encoder,
    without the 4 s of importing torch and sentence-transformers (docs/benchmarks.md)."""
    return "minilm-numpy" if name in ("minilm", "all-MiniLM-L6-v2") else name


@contextmanager
def fail_on_errors() -> Iterator[None]:
    """Print a library error as one line and exit with its group's code."""
    try:
        yield
    except PersonaVLMError as exc:
        code = next((c for kind, c in EXIT_CODES if isinstance(exc, kind)), 1)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code) from None


@contextmanager
def progress_bar(length: int, label: str, *, as_json: bool) -> Iterator[Callable[[int], None]]:
    """A bar on stderr for people at a terminal; nothing for --json or pipes."""
    if as_json or not sys.stderr.isatty():
        yield lambda _done: None
        return
    with typer.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def emit(data: Any, *, as_json: bool, text: str) -> None:
    if as_json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        typer.echo(text)
