"""`personavlm keys create|list|revoke` on the store directly: the secret is printed once
and authenticates; listing shows no secret; revoking needs the right owner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from personavlm.cli.app import app
from personavlm.embed import HashingEmbedder
from personavlm.memory.store import MemoryStore


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "keys.db")


def keys(db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["keys", *args, "--db", db, "--embedder", "hashing"])
    return result.exit_code, result.output


def create(db: str, *owner: str) -> dict[str, object]:
    code, out = keys(db, "create", *owner, "--label", "laptop", "--json")
    assert code == 0, out
    made: dict[str, object] = json.loads(out)
    return made


def test_create_prints_a_secret_that_authenticates_and_listing_hides_it(db: str) -> None:
    made = create(db, "--user", "ann")
    secret = str(made["key"])
    assert secret.startswith("pvk_") and made["user_id"] == "ann"
    with MemoryStore.open(db, embedder=HashingEmbedder()) as store:
        key = store.authenticate(secret)
    assert key is not None and key.user_id == "ann"
    code, out = keys(db, "list", "--user", "ann", "--json")
    assert code == 0 and secret not in out
    assert [k["id"] for k in json.loads(out)] == [made["id"]]


def test_text_output_shows_the_secret_once(db: str) -> None:
    code, out = keys(db, "create", "--user", "bob")
    assert code == 0 and out.splitlines()[0].startswith("pvk_")
    code, listing = keys(db, "list", "--user", "bob")
    assert code == 0 and out.splitlines()[0] not in listing and "live" in listing


def test_revoke_refuses_another_owners_key_then_revokes(db: str) -> None:
    made = create(db, "--user", "ann")
    create(db, "--user", "bob")
    code, out = keys(db, "revoke", str(made["id"]), "--user", "bob")
    assert code == 2 and "no key" in out
    code, out = keys(db, "revoke", str(made["id"]), "--user", "ann", "--json")
    assert code == 0 and json.loads(out)["revoked_at"] is not None
    with MemoryStore.open(db, embedder=HashingEmbedder()) as store:
        assert store.authenticate(str(made["key"])) is None


def test_admin_keys_and_owner_flags(db: str) -> None:
    made = create(db, "--admin")
    assert made["admin"] is True and made["user_id"] is None
    assert keys(db, "list", "--user", "ann", "--admin")[0] == 2
    assert keys(db, "list")[0] == 2
    code, out = keys(db, "list", "--user", "nobody")
    assert code == 2, out
