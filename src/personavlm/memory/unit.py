"""A unit of work: every repository on one transaction.

    with store.transaction("ann") as tx:
        turn = tx.append_turn("ann", indexed, actor="agent")
        tx.queue.enqueue("ann", "turn", {...})

Whatever happens inside the block commits together or not at all; callers with a workflow
of their own (the agent's exchange and update phase) compose the repositories this way
instead of asking the store for one verb per workflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from personavlm.embed.base import Vectors
from personavlm.memory.engine import Conn
from personavlm.memory.images import ImageRepo
from personavlm.memory.keys import KeyRepo
from personavlm.memory.memories import MemoryRepo
from personavlm.memory.meta import MetaRepo
from personavlm.memory.personality_log import PersonalityRepo
from personavlm.memory.queue import QueueRepo
from personavlm.memory.records import Turn
from personavlm.memory.turnlog import TurnInput, TurnRepo
from personavlm.memory.users import UserRepo

__all__ = ["IndexedTurn", "Tx", "turn_index_text"]


@dataclass(frozen=True, slots=True)
class IndexedTurn:
    """A turn with the text and vector of its turn-level episodic entry, computed before
    the transaction so the write lock is held briefly (MemoryStore.index_turns)."""

    turn: TurnInput
    text: str
    vector: Vectors


class Tx:
    """The repositories of one transaction (read-only when opened by MemoryStore.reading)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.memories = MemoryRepo(conn)
        self.turns = TurnRepo(conn)
        self.users = UserRepo(conn)
        self.images = ImageRepo(conn)
        self.keys = KeyRepo(conn)
        self.personality = PersonalityRepo(conn)
        self.queue = QueueRepo(conn)
        self.meta = MetaRepo(conn)

    def append_turn(self, user_id: str, indexed: IndexedTurn, actor: str) -> Turn | None:
        """Append a turn to the log with its episodic entry; None when it is stored already."""
        self.images.require(indexed.turn.image_ids)
        turn = self.turns.append(user_id, indexed.turn)
        if turn is not None:
            self.memories.add_turn_entry(user_id, turn, indexed.text, indexed.vector, actor)
        return turn


def turn_index_text(turn: TurnInput) -> str:
    """A turn-level episodic entry: who spoke, what they said, what their picture shows."""
    speaker = turn.speaker or turn.role
    text = f"{speaker}: {turn.text}".rstrip()
    if turn.caption:
        text += f"\n[image: {turn.caption}]"
    return text
