"""The project's promises about itself: the public API, and CI running the README's command."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import personavlm

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_explicit_and_importable() -> None:
    assert sorted(personavlm.__all__) == personavlm.__all__
    for name in personavlm.__all__:
        assert hasattr(personavlm, name), name


def _lazy_packages() -> list[str]:
    """The package's __init__ files that load their names on first use (PEP 562)."""
    source = Path(personavlm.__file__).parent
    return [
        ".".join(init.parent.relative_to(source.parent).parts)
        for init in sorted(source.rglob("__init__.py"))
        if "lazy_getattr(" in init.read_text(encoding="utf-8")
    ]


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    blocks = [
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    ]
    return {
        alias.name: node.module or ""
        for block in blocks
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


@pytest.mark.parametrize("package", _lazy_packages())
def test_lazy_names_are_the_names_type_checkers_see(package: str) -> None:
    # A lazy __init__ states each name twice: for mypy (TYPE_CHECKING) and for __getattr__.
    module = importlib.import_module(package)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    assert _type_checking_imports(tree) == module._SOURCES
    for name in module._SOURCES:
        assert name in dir(module)
        assert getattr(module, name) is getattr(
            importlib.import_module(module._SOURCES[name]), name
        )


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.+?)\n```", readme, flags=re.S)
    test_commands = [c for c in commands if "pytest" in c]
    assert len(test_commands) == 1, "the README gives exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_commands[0].strip() in ci.splitlines()
