"""`personavlm mcp`: the MCP server over stdio, for desktop clients (Claude Desktop, Cursor)
that start it as a subprocess (docs/integrations.md has their config).

It opens the store itself, like every command here, and serves one user: --user (or
PERSONAVLM_USER). With a key (--key or PERSONAVLM_SERVICE_KEY) the key is checked against the
store first, as the service would: an unknown or revoked key, or one user's key with another
--user, stops it before it serves anything; a user's key alone names its user. The tools are
those of /mcp in `personavlm serve` (server/mcp_server.py). stdout is the protocol: nothing
else is written there; errors go to stderr.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import typer

from personavlm.cli.common import DbOption, EmbedderOption, fail_on_errors, open_store
from personavlm.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from personavlm.memory.store import MemoryStore

__all__ = ["KEY_ENV", "USER_ENV", "mcp", "resolve_user"]

USER_ENV = "PERSONAVLM_USER"
KEY_ENV = "PERSONAVLM_SERVICE_KEY"


def mcp(
    user: str | None = typer.Option(
        None,
        "--user",
        envvar=USER_ENV,
        help="Whose memory the tools reach. Default: $PERSONAVLM_USER, else the user of --key.",
        show_default=False,
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        envvar=KEY_ENV,
        help="An API key of the store to check first (a user's key, or the admin key). "
        "Default: $PERSONAVLM_SERVICE_KEY.",
        show_default=False,
    ),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
) -> None:
    """Serve a user's memory to an MCP client over stdio (add, search, history, undo, ...).

    Example (what a client's config runs): personavlm mcp --user ann --db ~/memory.db
    """
    with fail_on_errors():
        require_mcp_extra()
        from personavlm.server.mcp_server import OneUserAccess, build_mcp_server

        with open_store(db, embedder, create=True) as store:
            served = resolve_user(user, None if key is None else _key_owner(store, key))
            build_mcp_server(OneUserAccess(store, served)).run("stdio")


def resolve_user(user: str | None, key_owner: tuple[str | None] | None) -> str:
    """The user to serve from --user and the checked key's owner (None: no key; (None,): the
    admin key). ConfigError when they disagree or neither names one."""
    if key_owner is not None and key_owner[0] is not None:
        owner = key_owner[0]
        if user is not None and user != owner:
            raise ConfigError(
                f"--key belongs to user {owner!r} and reaches only that user's data, "
                f"not {user!r}: drop --user or use that user's key"
            )
        return owner
    if user is None:
        raise ConfigError(
            f"name the user to serve: --user ID (or {USER_ENV})"
            + (", since --key is the admin key" if key_owner is not None else "")
        )
    return user


def _key_owner(store: MemoryStore, secret: str) -> tuple[str | None]:
    found = store.authenticate(secret.strip())
    if found is None:
        raise ConfigError(f"--key / {KEY_ENV}: unknown or revoked API key in {store.location}")
    return (found.user_id,)


def require_mcp_extra() -> None:
    """MissingDependencyError naming the extra, rather than an ImportError deep inside. The
    MCP server is part of the service's package, so the extra is the server's plus mcp."""
    for name in ("mcp", "fastapi", "prometheus_client", "fastapi_offline"):
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(
                f"the MCP server needs the mcp extra ({name} is missing): "
                "pip install 'personavlm[mcp]' -c constraints.txt"
            )
