"""API keys, stored hashed: the admin key(s) and per-user keys of the service.

A key is `pvk_` + 43 url-safe characters (256 random bits). Only its sha256 is stored, with the
first 12 characters as a `prefix` so a person can tell keys apart in a listing. A slow
password hash would buy nothing here: the secret is random, not chosen by a person, so there is
no dictionary to slow down. Revoking keeps the row (who had access, and until when).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from personavlm.errors import ConflictError, NotFoundError, ValidationError
from personavlm.memory.engine import Conn
from personavlm.timeutil import from_storage, to_storage, to_storage_or_none, utc_now

__all__ = ["KEY_PREFIX", "ApiKey", "KeyRepo", "new_secret", "shown_prefix"]

KEY_PREFIX = "pvk_"
# What of a secret is kept in view (to tell keys apart in listings): 4 characters after the
# scheme. More would shrink the search for a short key's rest (a 16-character admin key with
# 12 characters known is recovered from its sha256 in seconds).
_SHOWN_AFTER_SCHEME = 4
_COLUMNS = "id, user_id, label, prefix, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    user_id: str | None  # None: an admin key
    label: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.user_id is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "admin": self.is_admin,
            "label": self.label,
            "prefix": self.prefix,
            "created_at": to_storage(self.created_at),
            "revoked_at": to_storage_or_none(self.revoked_at),
        }


def shown_prefix(secret: str) -> str:
    """The part of a secret stored in view: the scheme and 4 characters, or 4 characters."""
    scheme = KEY_PREFIX if secret.startswith(KEY_PREFIX) else ""
    return secret[: len(scheme) + _SHOWN_AFTER_SCHEME]


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRepo:
    """The api_keys table: keys stored as hashes, created, checked, listed, revoked."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def create(self, user_id: str | None, label: str) -> tuple[ApiKey, str]:
        secret = new_secret()
        return self.register(secret, user_id, label), secret

    def register(self, secret: str, user_id: str | None, label: str) -> ApiKey:
        """Store `secret`'s hash for `user_id` (None: admin); the existing record when it is
        stored already for the same owner."""
        conn = self._conn
        _check_secret(secret)
        if len(label) > 200:
            raise ValidationError("a key label has at most 200 characters")
        digest = _digest(secret)
        row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE hash = ?", (digest,)).fetchone()
        if row is not None:
            found = _from_row(row)
            if found.user_id != user_id or found.revoked_at is not None:
                raise ValidationError(
                    "this key is already registered for another owner or was revoked; "
                    "generate a new one"
                )
            return found
        row = conn.execute(
            "INSERT INTO api_keys(hash, user_id, label, prefix, created_at) VALUES (?, ?, ?, ?, ?) "
            f"RETURNING {_COLUMNS}",
            (digest, user_id, label, shown_prefix(secret), to_storage(utc_now())),
        ).fetchone()
        return _from_row(row)

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key with this secret; None for an unknown or revoked one."""
        conn = self._conn
        if not secret:
            return None
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL",
            (_digest(secret),),
        ).fetchone()
        return None if row is None else _from_row(row)

    def listing(self, user_id: str | None) -> list[ApiKey]:
        conn = self._conn
        if user_id is None:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE user_id IS NULL ORDER BY id"
            )
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY id", (user_id,)
            )
        return [_from_row(row) for row in rows]

    def revoke(self, key_id: int) -> ApiKey:
        conn = self._conn
        live_admins = conn.execute(
            "SELECT id FROM api_keys WHERE user_id IS NULL AND revoked_at IS NULL"
        ).fetchall()
        if [int(r[0]) for r in live_admins] == [key_id]:
            raise ConflictError(
                f"key {key_id} is the last live admin key: revoking it would lock every admin "
                "out; create another admin key first, then revoke this one"
            )
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL "
            f"RETURNING {_COLUMNS}",
            (to_storage(utc_now()), key_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no live API key {key_id}")
        return _from_row(row)

    def has_admin(self) -> bool:
        conn = self._conn
        row = conn.execute(
            "SELECT 1 FROM api_keys WHERE user_id IS NULL AND revoked_at IS NULL LIMIT 1"
        ).fetchone()
        return row is not None


def _check_secret(secret: str) -> None:
    # An admin key from the environment may be anything; demand enough of it to be a secret.
    if len(secret) < 16 or any(c.isspace() for c in secret) or not secret.isprintable():
        raise ValidationError(
            "an API key needs at least 16 printable characters and no spaces; "
            "leave PERSONAVLM_ADMIN_KEY unset to have one generated"
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=int(row[0]),
        user_id=row[1],
        label=row[2],
        prefix=row[3],
        created_at=from_storage(row[4]),
        revoked_at=None if row[5] is None else from_storage(row[5]),
    )
