"""`personavlm keys ...`: make, list and revoke API keys on the store directly.

The admin's way to hand out keys without running the service or calling it with curl. A
secret is printed once, at creation: only its sha256 is stored (memory/keys.py), so a lost
secret cannot be shown again, only revoked and replaced. Revoking keeps the row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from personavlm.cli.common import (
    DbOption,
    EmbedderOption,
    JsonOption,
    emit,
    fail_on_errors,
    open_store,
    stored_id,
)
from personavlm.errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from personavlm.memory.keys import ApiKey

__all__ = ["app"]

app = typer.Typer(help="API keys of the service: create, list, revoke.", no_args_is_help=True)
UserOption = typer.Option(
    None, "--user", help="Whose keys (a user id). Give this or --admin.", show_default=False
)
AdminOption = typer.Option(False, "--admin", help="The admin keys instead of a user's.")


@app.command()
def create(
    user: str | None = UserOption,
    admin: bool = AdminOption,
    label: str = typer.Option("", "--label", help="A note to tell keys apart in listings."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """A new key; its secret is printed now and never again.

    A key for a user the store does not know yet registers the user.

    Example: personavlm keys create --user ann --label laptop
    """
    with fail_on_errors():
        owner = _owner(user, admin)
        with open_store(db, embedder, check_embedder=False, create=True) as store:
            key, secret = store.create_api_key(owner, label=label)
        emit(
            {**key.to_dict(), "key": secret},
            as_json=as_json,
            text=f"{secret}\n(key {key.id} for {_whose(key)}; the secret is shown only now)",
        )


@app.command("list")
def list_keys(
    user: str | None = UserOption,
    admin: bool = AdminOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """The user's (or the admin) keys, revoked ones included, without secrets.

    Example: personavlm keys list --user ann
    """
    with fail_on_errors():
        owner = _owner(user, admin)
        with open_store(db, embedder, check_embedder=False) as store:
            keys = store.api_keys(owner)
        emit([k.to_dict() for k in keys], as_json=as_json, text=_table(keys))


@app.command()
def revoke(
    key_id: int = typer.Argument(..., help="The key's id (see `personavlm keys list`)."),
    user: str | None = UserOption,
    admin: bool = AdminOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Revoke one key of the user (or an admin key); requests with it get 401 from now on.

    The owner is asked for so that a mistyped id cannot revoke someone else's key.

    Example: personavlm keys revoke 7 --user ann
    """
    with fail_on_errors():
        owner = _owner(user, admin)
        with open_store(db, embedder, check_embedder=False) as store:
            key_id = stored_id(key_id, "key", owner)
            if not any(k.id == key_id for k in store.api_keys(owner)):
                raise NotFoundError(f"no key {key_id} for {_owner_words(owner)}")
            key = store.revoke_api_key(key_id)
        emit(key.to_dict(), as_json=as_json, text=f"revoked key {key.id} ({key.prefix}...)")


def _owner(user: str | None, admin: bool) -> str | None:
    """The keys' owner: a user id, or None for the admin keys; exactly one must be given."""
    if admin == (user is not None):
        raise ValidationError("give exactly one of --user USER or --admin")
    return user


def _owner_words(owner: str | None) -> str:
    return "the admin" if owner is None else f"user {owner!r}"


def _whose(key: ApiKey) -> str:
    return _owner_words(key.user_id)


def _table(keys: list[ApiKey]) -> str:
    if not keys:
        return "no keys"
    lines = []
    for key in keys:
        state = "live" if key.revoked_at is None else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
        label = f"  {key.label}" if key.label else ""
        lines.append(
            f"{key.id:>5}  {key.prefix}...  {key.created_at:%Y-%m-%d %H:%M}  {state}{label}"
        )
    return "\n".join(lines)
