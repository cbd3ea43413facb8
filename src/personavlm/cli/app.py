"""`personavlm` top-level commands: chat, ingest, worker, status, reindex, and the memory /
personality / bench groups."""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from pathlib import Path

import typer

from personavlm.agent.protocol import Protocol
from personavlm.cli import (
    bench_cmd,
    chat_cmd,
    jobs_cmd,
    keys_cmd,
    mcp_cmd,
    memory_cmd,
    models_cmd,
    personality_cmd,
    serve_cmd,
    synth_cmd,
    train_cmd,
)
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
from personavlm.settings import model_spec

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
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(models_cmd.app, name="models")
app.add_typer(train_cmd.app, name="train")
app.command()(chat_cmd.chat)
app.command()(chat_cmd.worker)
app.command()(chat_cmd.status)
app.command()(synth_cmd.synth)
app.command()(serve_cmd.serve)
app.command()(mcp_cmd.mcp)


class IngestFormat(StrEnum):
    JSONL = "jsonl"
    PERSONA_MME = "persona-mme"


def sample_conversation() -> Path:
    """The bundled sample: a month of one user's chats, with one photo."""
    return Path(str(resources.files("personavlm.data").joinpath("sample_conversation.jsonl")))


@app.command()
def ingest(
    file: Path | None = typer.Argument(
        None,
        help="JSONL of turns: {id, time, role, speaker?, text, images?, caption?}; with "
        "--format persona-mme, a Persona-MME history JSON.",
    ),
    user: str = typer.Option(..., "--user", help="Whose memory the turns go into."),
    sample: bool = typer.Option(False, "--sample", help="Ingest the bundled sample instead."),
    file_format: IngestFormat = typer.Option(
        IngestFormat.JSONL,
        "--format",
        help="jsonl: append turns to the log. persona-mme: replay a benchmark history through "
        "the assistant's update phase (needs --model).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="persona-mme only: the chat model that runs the update phase, "
        "openai:<model>@<base_url> or hf:<dir>. Default: $PERSONAVLM_MODEL.",
        show_default=False,
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="persona-mme only: the folder holding the history's images "
        "(default: the history file's folder).",
        show_default=False,
    ),
    protocol: Protocol | None = typer.Option(
        None,
        "--protocol",
        help="persona-mme only: how the model writes updates, json (default) or tags.",
        show_default=False,
    ),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Append turns to a user's log and make each retrievable. Idempotent by turn id.

    With --format persona-mme, every exchange of the history is recorded in order and its
    stored reply replayed through the update phase (personality, semantic memory; sessions
    close on the 60-minute rule, the last one at the end). A failed update does not stop the
    ingest: it stays queued for `personavlm worker`.

    Example: personavlm ingest --user ann chats.jsonl
    (or: personavlm ingest --format persona-mme --user u017 u017.json --model openai:m@URL)
    """
    from personavlm.memory.ingest import ingest_file

    with fail_on_errors():
        if (file is None) == (not sample):
            raise ValidationError("give either a FILE or --sample")
        if file_format is IngestFormat.PERSONA_MME:
            if sample:
                raise ValidationError("--sample is a jsonl file; give a history FILE instead")
            assert file is not None
            _ingest_history(file, user, model, images, protocol, db, embedder, as_json)
            return
        if model is not None or images is not None or protocol is not None:
            raise ValidationError("--model, --images and --protocol apply to --format persona-mme")
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
            f"user {user!r} has {report.sessions} sessions ({store.location})",
        )


def _ingest_history(
    path: Path,
    user: str,
    model: str | None,
    images: Path | None,
    protocol: Protocol | None,
    db: str | None,
    embedder: str | None,
    as_json: bool,
) -> None:
    from personavlm.interop import load_history

    spec = model_spec(model)
    history = load_history(path, image_dir=images)  # checked whole before anything is written
    with (
        open_store(db, embedder, create=True) as store,
        progress_bar(history.turn_count, "replaying", as_json=as_json) as advance,
    ):
        report = chat_cmd.ingest_persona_mme(
            store, user, history, spec=spec, protocol=protocol or Protocol.JSON, progress=advance
        )
    emit(report, as_json=as_json, text=chat_cmd.persona_mme_text(report))


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
