"""`personavlm memory ...`: the store's verbs on the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from personavlm.cli.common import (
    MAX_ROW_ID,
    DbOption,
    EmbedderOption,
    JsonOption,
    check_count,
    emit,
    fail_on_errors,
    open_store,
    stored_id,
)
from personavlm.errors import ValidationError
from personavlm.timeutil import to_storage

if TYPE_CHECKING:
    from personavlm.memory.records import Hit, Memory, MemoryEvent

__all__ = ["app"]

app = typer.Typer(help="Add, inspect, change and search one user's memories.", no_args_is_help=True)

UserOption = typer.Option(..., "--user", help="Whose memories.")
TimeOption = typer.Option(
    None,
    "--time",
    help="When it became true, 'YYYY-MM-DD HH:MM' (default: now).",
    show_default=False,
)


@app.command()
def add(
    content: str = typer.Argument(..., help="The memory text."),
    user: str = UserOption,
    memory_type: str = typer.Option(..., "--type", help="core | semantic | episodic | procedural"),
    key: str | None = typer.Option(None, "--key", help="Slot name, for core and procedural."),
    keywords: str = typer.Option("", "--keywords", help="Comma-separated keywords."),
    time: str | None = TimeOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Add a memory (for core/procedural, supersedes the key's current one).

    Example: personavlm memory add --user ann --type core --key "favourite drink" "Coca-Cola"
    """
    with fail_on_errors(), open_store(db, embedder, create=True) as store:
        memory = store.add(
            user, memory_type, content, key=key, keywords=_split(keywords), time=time, actor="cli"
        )
        emit(memory.to_dict(), as_json=as_json, text=format_memory(memory))


@app.command()
def get(
    memory_id: int = typer.Argument(...),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one memory.  Example: personavlm memory get --user ann 12"""
    with fail_on_errors(), open_store(db, embedder) as store:
        memory = store.get(user, stored_id(memory_id, "memory", user))
        emit(memory.to_dict(), as_json=as_json, text=format_memory(memory))


@app.command("list")
def list_memories(
    user: str = UserOption,
    memory_type: list[str] | None = typer.Option(None, "--type", help="Repeat for several."),
    status: str = typer.Option(
        "active", "--status", help="active | superseded | invalidated | deleted | all"
    ),
    key: str | None = typer.Option(None, "--key"),
    start: str | None = typer.Option(None, "--start", help="Event time from, 'YYYY-MM-DD HH:MM'."),
    end: str | None = typer.Option(None, "--end", help="Event time up to."),
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """List memories in event-time order.

    Example: personavlm memory list --user ann --type semantic --start "2024-03-01 00:00"
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        memories = store.list(
            user,
            types=memory_type or None,
            status=None if status == "all" else status,
            key=key,
            start=start,
            end=end,
            limit=check_count(limit, "--limit", least=1),
            offset=check_count(offset, "--offset", least=0),
        )
        emit(
            [m.to_dict() for m in memories],
            as_json=as_json,
            text="\n".join(format_memory(m) for m in memories) or "(no memories)",
        )


@app.command()
def update(
    memory_id: int = typer.Argument(...),
    user: str = UserOption,
    content: str | None = typer.Option(None, "--content", help="The new text."),
    keywords: str | None = typer.Option(None, "--keywords", help="New comma-separated keywords."),
    time: str | None = TimeOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Write a new version that supersedes the memory.

    Example: personavlm memory update --user ann 12 --content "Ann's dog Bobby is a beagle"
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        memory = store.update(
            user,
            stored_id(memory_id, "memory", user),
            content=content,
            keywords=None if keywords is None else _split(keywords),
            time=time,
            actor="cli",
        )
        emit(memory.to_dict(), as_json=as_json, text=format_memory(memory))


@app.command()
def invalidate(
    memory_id: int = typer.Argument(...),
    user: str = UserOption,
    time: str | None = typer.Option(None, "--time", help="When it stopped being true."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Mark a memory no longer true (kept in history).

    Example: personavlm memory invalidate --user ann 12 --time "2024-05-01 09:00"
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        memory_id = stored_id(memory_id, "memory", user)
        memory = store.invalidate(user, memory_id, time=time, actor="cli")
        emit(memory.to_dict(), as_json=as_json, text=format_memory(memory))


@app.command()
def delete(
    memory_id: int = typer.Argument(...),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Delete a memory (undo can bring it back).  Example: personavlm memory delete --user ann 12"""
    with fail_on_errors(), open_store(db, embedder) as store:
        memory = store.delete(user, stored_id(memory_id, "memory", user), actor="cli")
        emit(memory.to_dict(), as_json=as_json, text=format_memory(memory))


@app.command()
def history(
    memory_id: int = typer.Argument(...),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Every change to a memory.  Example: personavlm memory history --user ann 12"""
    with fail_on_errors(), open_store(db, embedder) as store:
        events = store.history(user, stored_id(memory_id, "memory", user))
        emit(
            [e.to_dict() for e in events],
            as_json=as_json,
            text="\n".join(format_event(e) for e in events),
        )


@app.command()
def undo(
    event_id: int = typer.Argument(..., help="An event id from `memory history`."),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Undo one change (the undo is itself an event, so it can be undone).

    Example: personavlm memory undo --user ann 31
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        event_id = stored_id(event_id, "memory event", user)
        event = store.undo(user, event_id, actor="cli")
        emit(event.to_dict(), as_json=as_json, text=format_event(event))


@app.command()
def timeline(
    memory_id: int = typer.Argument(...),
    user: str = UserOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """The versions of a memory with their validity, oldest first.

    Example: personavlm memory timeline --user ann 12
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        chain = store.timeline(user, stored_id(memory_id, "memory", user))
        emit(
            [m.to_dict() for m in chain],
            as_json=as_json,
            text="\n".join(format_memory(m) for m in chain),
        )


@app.command()
def search(
    query: str = typer.Argument(...),
    user: str = UserOption,
    memory_type: list[str] | None = typer.Option(
        None, "--type", help="Repeat for several (default: semantic, episodic, procedural)."
    ),
    k: int | None = typer.Option(
        None, "--k", help="Hits per type (default: semantic 4, episodic 2, procedural 2)."
    ),
    start: str | None = typer.Option(None, "--start", help="Only memories from this time on."),
    end: str | None = typer.Option(None, "--end", help="Only memories up to this time."),
    exclude: str = typer.Option("", "--exclude", help="Comma-separated memory ids to skip."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Hybrid search over a user's memories, time window applied before ranking.

    Example: personavlm memory search --user ann "what is my dog called?" --k 3
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        hits = store.search(
            user,
            query,
            types=memory_type or None,
            k=k,
            start=start,
            end=end,
            exclude_ids=_ids(exclude),
        )
        emit(
            [h.to_dict() for h in hits],
            as_json=as_json,
            text="\n".join(format_hit(h) for h in hits) or "(no hits)",
        )


def format_memory(m: Memory) -> str:
    key = f" [{m.key}]" if m.key else ""
    until = f" until {to_storage(m.valid_to)}" if m.valid_to else ""
    return (
        f"#{m.id} {m.type.value}{key} v{m.version} {m.status.value} "
        f"from {to_storage(m.valid_from)}{until}: {m.content}"
    )


def format_event(e: MemoryEvent) -> str:
    undoes = f" (undoes event {e.undoes})" if e.undoes else ""
    touched = ", ".join(f"#{mid}" for mid in sorted(e.changes))
    return f"event {e.id} {e.op.value}{undoes} by {e.actor} at {to_storage(e.time)}: {touched}"


def format_hit(h: Hit) -> str:
    when = to_storage(h.memory.event_start)
    return f"{h.score:.4f}  #{h.memory.id} {h.memory.type.value} {when}  {h.memory.content}"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ids(text: str) -> list[int]:
    try:
        found = [int(part) for part in _split(text)]
    except ValueError:
        raise ValidationError(f"--exclude takes comma-separated memory ids, got {text!r}") from None
    # An id past int64 would reach the engines' filters (SQL, numpy) and overflow there.
    if any(not 1 <= i <= MAX_ROW_ID for i in found):
        raise ValidationError(f"--exclude takes memory ids in 1..{MAX_ROW_ID}, got {text!r}")
    return found
