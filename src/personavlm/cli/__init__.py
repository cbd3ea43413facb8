"""The `personavlm` command line: thin wrappers over the library, one module per group."""

from __future__ import annotations

from personavlm.cli.app import app, main

__all__ = ["app", "main"]
