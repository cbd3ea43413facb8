"""MemoryStore: the multi-user memory database and its verbs, a composition root.

    store = MemoryStore.open("memory.db", embedder=personavlm.embed.load("minilm"))
    m = store.add("ann", "semantic", "Ann's dog is called Bobby", time="2024-03-02 10:00")
    store.search("ann", "what is my dog's name?")
    store.update("ann", m.id, content="Ann's dog is called Bobby; he is a beagle")
    store.history("ann", m.id); store.undo("ann", event_id)

Each verb validates its input, embeds what it needs (outside any transaction), then runs
one unit of work over the repositories (memory/unit.py): it happens whole or not at all. The
SQL lives in the repositories; the verbs only compose them, in three groups: memories
(store_memories.py), the turn log, pictures and the job queue (store_log.py), users, keys and
personality (store_accounts.py), all on one core (store_core.py: open, transaction,
reading). Callers with a workflow of their own use `store.transaction(user)` directly (the
agent's exchange and update phase, agent/).
"""

from __future__ import annotations

from personavlm.memory.store_accounts import AccountVerbs
from personavlm.memory.store_core import user_scope
from personavlm.memory.store_log import INGEST_BATCH, LogVerbs
from personavlm.memory.store_memories import MemoryVerbs

__all__ = ["INGEST_BATCH", "MemoryStore", "user_scope"]


class MemoryStore(MemoryVerbs, LogVerbs, AccountVerbs):
    """The store: every verb of the three groups on one engine, encoder and blob store."""
