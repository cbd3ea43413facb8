"""The account verbs of MemoryStore: users (register, export, forget), API keys,
personality, and re-indexing."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from personavlm.memory.keys import ApiKey
from personavlm.memory.personality_log import ReadingRecord
from personavlm.memory.store_core import StoreCore
from personavlm.memory.unit import Tx
from personavlm.memory.users import UserDeletion, remove_blobs
from personavlm.memory.validate import check_user_id
from personavlm.personality import PersonalityState, Reading, SkipRule
from personavlm.timeutil import local_now, parse_time

__all__ = ["AccountVerbs"]


class AccountVerbs(StoreCore):
    def has_user(self, user_id: str) -> bool:
        with self.reading() as tx:
            return tx.users.exists(user_id)

    def users(self) -> builtins.list[str]:
        with self.reading() as tx:
            return tx.users.ids()

    def create_user(self, user_id: str) -> bool:
        """Register a user with no data yet; False when the user exists already."""
        check_user_id(user_id)
        with self.transaction(user_id) as tx:
            return tx.users.ensure(user_id)

    def user_created_at(self, user_id: str) -> datetime:
        with self.reading() as tx:
            return tx.users.created_at(user_id)

    def user_epoch(self, user_id: str) -> int:
        """How often `user_id` was forgotten; work that captured it can tell, at its writes,
        whether the user was deleted in between (UserRepo.ensure)."""
        with self.reading() as tx:
            return tx.users.epoch(user_id)

    def delete_user(self, user_id: str) -> UserDeletion:
        """Forget the user: every row (turns, memories, history, personality, jobs, keys)
        and every picture no other user shows, blob files included."""
        check_user_id(user_id)
        # Serialised against every write: another user storing the same picture right now
        # must not lose its blob.
        with self.transaction() as tx:
            deletion, orphans = tx.users.delete(user_id)
        removed = remove_blobs(self.blobs, orphans)
        self._engine.after_forget()
        return replace(deletion, blobs=removed)

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything of the user as one JSON-ready document (memory/users.py)."""
        with self.reading() as tx:
            return tx.users.export(user_id, self.blobs)

    # ----------------------------------------------------------------- API keys

    def create_api_key(self, user_id: str | None, *, label: str = "") -> tuple[ApiKey, str]:
        """A new key for `user_id` (None: an admin key), and its secret, shown only now.
        A key for a user the store does not know yet registers the user."""
        with self._key_transaction(user_id) as tx:
            return tx.keys.create(user_id, label)

    def register_api_key(self, secret: str, user_id: str | None, *, label: str = "") -> ApiKey:
        """Store a key the caller chose (PERSONAVLM_ADMIN_KEY); idempotent."""
        with self._key_transaction(user_id) as tx:
            return tx.keys.register(secret, user_id, label)

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key with this secret, or None (unknown or revoked)."""
        with self.reading() as tx:
            return tx.keys.authenticate(secret)

    def api_keys(self, user_id: str | None) -> builtins.list[ApiKey]:
        """The user's keys (None: the admin keys), revoked ones included, without secrets."""
        with self.reading() as tx:
            if user_id is not None:
                tx.users.require(user_id)
            return tx.keys.listing(user_id)

    def revoke_api_key(self, key_id: int) -> ApiKey:
        with self.transaction() as tx:
            return tx.keys.revoke(key_id)

    def has_admin_key(self) -> bool:
        with self.reading() as tx:
            return tx.keys.has_admin()

    # ----------------------------------------------------------------- personality

    def record_personality(
        self,
        user_id: str,
        reading: Reading,
        *,
        turn_id: int | None = None,
        time: str | datetime | None = None,
        skip_rule: SkipRule | str | None = None,
    ) -> PersonalityState:
        """Absorb one momentary reading with the paper's schedule; every reading is kept."""
        check_user_id(user_id)
        when = local_now() if time is None else parse_time(time)
        with self.transaction(user_id) as tx:
            tx.users.ensure(user_id)
            return tx.personality.record(user_id, reading, turn_id, when, skip_rule)

    def personality(self, user_id: str) -> PersonalityState:
        with self.reading() as tx:
            tx.users.require(user_id)
            return tx.personality.current(user_id)

    def personality_readings(self, user_id: str) -> builtins.list[ReadingRecord]:
        with self.reading() as tx:
            tx.users.require(user_id)
            return tx.personality.readings(user_id)

    # ----------------------------------------------------------------- maintenance

    def reindex(self, *, batch_size: int = 256) -> int:
        """Re-embed every memory with this store's encoder; returns how many."""
        with self._engine.read() as conn:
            rows = self._engine.indexed_texts(conn)
        vectors = [
            vector
            for i in range(0, len(rows), batch_size)
            for vector in self._embed([text for _, text in rows[i : i + batch_size]])
        ]
        with self.transaction() as tx:
            self._engine.replace_vectors(
                tx.conn, [(row[0], v) for row, v in zip(rows, vectors, strict=True)]
            )
            tx.meta.set("encoder", self.embedder.name)
            tx.meta.set("encoder_dim", str(self.embedder.dim))
            tx.meta.set("vectors_generation", uuid.uuid4().hex)
        return len(rows)

    @contextmanager
    def _key_transaction(self, user_id: str | None) -> Iterator[Tx]:
        if user_id is not None:
            check_user_id(user_id)
        with self.transaction(user_id) as tx:
            if user_id is not None:
                tx.users.ensure(user_id)
            yield tx
