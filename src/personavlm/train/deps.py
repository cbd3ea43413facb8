"""The train extra's packages, checked before use so a missing one says what to install."""

from __future__ import annotations

import importlib.util

from personavlm.errors import MissingDependencyError

__all__ = ["require_trl"]

_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "matplotlib")


def require_trl() -> None:
    """Raises MissingDependencyError naming the install command when a training package
    (torch, transformers, trl, peft, datasets, accelerate, matplotlib) is not installed."""
    missing = [name for name in _PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"training needs {', '.join(missing)}: pip install 'personavlm[train,local]' "
            "(with -c constraints.txt, so torch stays the build you have)"
        )
