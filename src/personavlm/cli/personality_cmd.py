"""`personavlm personality ...`: the user's Big Five state and its trajectory."""

from __future__ import annotations

import typer

from personavlm.cli.common import (
    DbOption,
    EmbedderOption,
    JsonOption,
    emit,
    fail_on_errors,
    open_store,
)
from personavlm.personality import Reading, render
from personavlm.timeutil import to_storage

__all__ = ["app"]

app = typer.Typer(help="The user's evolving Big Five personality (PEM).", no_args_is_help=True)
UserOption = typer.Option(..., "--user", help="Whose personality.")


@app.command()
def show(
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """The current state as the assistant sees it.

    Example: personavlm personality show --user ann
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        state = store.personality(user)
        emit(
            state.to_dict(),
            as_json=as_json,
            text=render(state) + f"\n(readings absorbed: {state.step})",
        )


@app.command()
def record(
    user: str = UserOption,
    openness: int = typer.Option(..., "--openness", "-o", min=1, max=5),
    conscientiousness: int = typer.Option(..., "--conscientiousness", "-c", min=1, max=5),
    extraversion: int = typer.Option(..., "--extraversion", "-e", min=1, max=5),
    agreeableness: int = typer.Option(..., "--agreeableness", "-a", min=1, max=5),
    neuroticism: int = typer.Option(..., "--neuroticism", "-n", min=1, max=5),
    time: str | None = typer.Option(None, "--time", help="'YYYY-MM-DD HH:MM' (default: now)."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Absorb one momentary reading (1-5 each) with the paper's schedule.

    Example: personavlm personality record --user ann -o 4 -c 3 -e 2 -a 4 -n 3
    """
    with fail_on_errors(), open_store(db, embedder, create=True) as store:
        reading = Reading(openness, conscientiousness, extraversion, agreeableness, neuroticism)
        state = store.record_personality(user, reading, time=time)
        emit(
            state.to_dict(),
            as_json=as_json,
            text=render(state),
        )


@app.command()
def history(
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Every reading with the state after it.  Example: personavlm personality history --user ann"""
    with fail_on_errors(), open_store(db, embedder) as store:
        records = store.personality_readings(user)
        lines = [
            f"{to_storage(r.time)} read {list(r.reading.as_tuple())} -> "
            f"{[round(v, 2) for v in r.state_after.traits.as_tuple()]}"
            f"{'' if r.absorbed else ' (skipped)'}"
            for r in records
        ]
        emit([r.to_dict() for r in records], as_json=as_json, text="\n".join(lines) or "(none)")
