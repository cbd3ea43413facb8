"""personavlm: long-term memory, reasoning over memories, and an evolving personality for any
chat model (an implementation of PersonaVLM, CVPR 2026).

The memory engine is the centre: `MemoryStore` (four memory types with history and undo, the
turn log, hybrid time-aware search) and the personality value types of the paper's PEM.
"""

from personavlm.errors import (
    ConfigError,
    ConflictError,
    EmbedderMismatchError,
    InputError,
    MissingDependencyError,
    ModelConnectionError,
    ModelError,
    ModelResponseError,
    NotFoundError,
    PersonaVLMError,
    SchemaVersionError,
    StoreError,
    ValidationError,
)
from personavlm.memory import (
    Hit,
    Memory,
    MemoryEvent,
    MemoryStatus,
    MemoryStore,
    MemoryType,
    RetrievalConfig,
    Turn,
    TurnInput,
)
from personavlm.personality import PersonalityState, Reading, SkipRule, Traits
from personavlm.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConflictError",
    "EmbedderMismatchError",
    "Hit",
    "InputError",
    "Memory",
    "MemoryEvent",
    "MemoryStatus",
    "MemoryStore",
    "MemoryType",
    "MissingDependencyError",
    "ModelConnectionError",
    "ModelError",
    "ModelResponseError",
    "NotFoundError",
    "PersonaVLMError",
    "PersonalityState",
    "Reading",
    "RetrievalConfig",
    "SchemaVersionError",
    "Settings",
    "SkipRule",
    "StoreError",
    "Traits",
    "Turn",
    "TurnInput",
    "ValidationError",
    "__version__",
    "load_settings",
]
