"""`personavlm` top-level commands: ingest, reindex, and the memory / personality / bench
groups."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer

from personavlm.cli import bench_cmd, memory_cmd, personality_cmd
from personavlm.cli.common import (
    DbOption,
    EmbedderOption,
    JsonOption,
    emit,
    fail_on_errors,
    open_store,
    progress_bar,
)
from personavlm.errors import ValidationError
from personavlm.memory.ingest import ingest_file

__all__ = ["app", "main"]

app = typer.Typer(
    name="personavlm",
    help="Long-term memory and personality for any chat model (PersonaVLM).\n\n"
    "Example: personavlm ingest --user demo --sample && "
    'personavlm memory search --user demo "what is my dog called?"',
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(memory_cmd.app, name="memory")
app.add_typer(personality_cmd.app, name="personality")
app.add_typer(bench_cmd.app, name="bench")


def sample_conversation() -> Path:
    """The bundled sample: a month of one user's chats, with one photo."""
    return Path(str(resources.files("personavlm.data").joinpath("sample_conversation.jsonl")))


@app.command()
def ingest(
    file: Path | None = typer.Argument(
        None, help="JSONL of turns: {id, time, role, speaker?, text, images?, caption?}."
    ),
    user: str = typer.Option(..., "--user", help="Whose memory the turns go into."),
    sample: bool = typer.Option(False, "--sample", help="Ingest the bundled sample instead."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Append turns to a user's log and make each retrievable. Idempotent by turn id.

    Example: personavlm ingest --user ann chats.jsonl
    """
    with fail_on_errors():
        if (file is None) == (not sample):
            raise ValidationError("give either a FILE or --sample")
        path = sample_conversation() if sample else file
        assert path is not None
        with (
            open_store(db, embedder, create=True) as store,
            progress_bar(_line_count(path), "ingesting", as_json=as_json) as advance,
        ):
            report = ingest_file(store, user, path, progress=advance)
        emit(
            report.to_dict(),
            as_json=as_json,
            text=f"{report.added} turns added, {report.skipped} already stored; "
            f"user {user!r} has {report.sessions} sessions ({store.path})",
        )


@app.command()
def reindex(
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-embed every memory with the configured encoder (after changing encoders).

    Example: personavlm reindex --db memory.db --embedder minilm
    """
    with fail_on_errors(), open_store(db, embedder, check_embedder=False) as store:
        count = store.reindex()
        emit(
            {"reindexed": count, "encoder": store.embedder.name},
            as_json=as_json,
            text=f"re-embedded {count} memories with {store.embedder.name}",
        )


def _line_count(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0  # read_turns_file reports the real error


def main() -> None:
    app()
