"""Readers for other projects' data formats: Persona-MME user histories."""

from personavlm.interop.persona_mme import (
    IMAGE_MARKER,
    History,
    HistoryTurn,
    load_history,
    parse_history,
)

__all__ = ["IMAGE_MARKER", "History", "HistoryTurn", "load_history", "parse_history"]
