"""Package `__init__`s that load their public names on first use (PEP 562).

`import personavlm.errors` runs `personavlm/__init__.py` first; if that imported the store it
would load numpy and the store for every command, `--help` included. So the package files
that re-export heavy modules (the root, agent/, models/) name where each public name lives
and load it when it is first asked for. Type checkers read each file's `TYPE_CHECKING`
block instead (tests/test_project.py keeps the two lists equal).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    module: str, sources: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], object]:
    """A module `__getattr__` importing the module that holds a public name on first
    access, then caching the name in `namespace` (later lookups never come back here)."""

    def __getattr__(name: str) -> object:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value: object = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    return __getattr__
