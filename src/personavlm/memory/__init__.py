"""The memory engine: the store, its records, retrieval settings and the turn log."""

from personavlm.memory.keys import ApiKey
from personavlm.memory.records import (
    DEFAULT_K,
    EventOp,
    Hit,
    ImageRef,
    IngestReport,
    Memory,
    MemoryEvent,
    MemoryStatus,
    MemoryType,
    Turn,
)
from personavlm.memory.search import SHIPPED, Method, RetrievalConfig
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import SESSION_GAP, TurnInput
from personavlm.memory.users import UserDeletion

__all__ = [
    "DEFAULT_K",
    "SESSION_GAP",
    "SHIPPED",
    "ApiKey",
    "EventOp",
    "Hit",
    "ImageRef",
    "IngestReport",
    "Memory",
    "MemoryEvent",
    "MemoryStatus",
    "MemoryStore",
    "MemoryType",
    "Method",
    "RetrievalConfig",
    "Turn",
    "TurnInput",
    "UserDeletion",
]
