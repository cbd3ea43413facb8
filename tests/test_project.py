"""The project's promises about itself: the public API, and CI running the README's command."""

from __future__ import annotations

import re
from pathlib import Path

import personavlm

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_explicit_and_importable() -> None:
    assert sorted(personavlm.__all__) == personavlm.__all__
    for name in personavlm.__all__:
        assert hasattr(personavlm, name), name


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.+?)\n```", readme, flags=re.S)
    test_commands = [c for c in commands if "pytest" in c]
    assert len(test_commands) == 1, "the README gives exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_commands[0].strip() in ci.splitlines()
