"""personavlm: long-term memory, reasoning over memories, and an evolving personality for any
chat model (an implementation of PersonaVLM, CVPR 2026).

The memory engine is the centre: `MemoryStore` (four memory types with history and undo, the
turn log, hybrid time-aware search) and the personality value types of the paper's PEM.

The names below are loaded on first use (PEP 562): importing a light module such as
`personavlm.errors` runs this file first, and must not pull in the memory engine (numpy, the
encoders) with it. Type checkers read the `TYPE_CHECKING` block instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from personavlm.lazy import lazy_getattr

if TYPE_CHECKING:
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

# Where each public name lives; it must match the TYPE_CHECKING block (test_project checks it).
_SOURCES: dict[str, str] = {
    **dict.fromkeys(
        (
            "ConfigError",
            "ConflictError",
            "EmbedderMismatchError",
            "InputError",
            "MissingDependencyError",
            "ModelConnectionError",
            "ModelError",
            "ModelResponseError",
            "NotFoundError",
            "PersonaVLMError",
            "SchemaVersionError",
            "StoreError",
            "ValidationError",
        ),
        "personavlm.errors",
    ),
    **dict.fromkeys(
        (
            "Hit",
            "Memory",
            "MemoryEvent",
            "MemoryStatus",
            "MemoryStore",
            "MemoryType",
            "RetrievalConfig",
            "Turn",
            "TurnInput",
        ),
        "personavlm.memory",
    ),
    **dict.fromkeys(
        ("PersonalityState", "Reading", "SkipRule", "Traits"), "personavlm.personality"
    ),
    **dict.fromkeys(("Settings", "load_settings"), "personavlm.settings"),
}


if not TYPE_CHECKING:
    # Hidden from type checkers: a module __getattr__ would make them accept any attribute
    # of this module (a typo included), typed `object`.
    __getattr__ = lazy_getattr(__name__, _SOURCES, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
