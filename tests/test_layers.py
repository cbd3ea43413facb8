"""The package's layers: imports point downward only (docs/architecture.md "Layers").

`LAYERS` below is the one statement of the order, bottom to top; the architecture doc points
here. Every module of the installed package is parsed (not imported), and every import in it
counts: at the top, inside functions, under `if TYPE_CHECKING:`. A deferred import is still a
dependency; deferring it only hides a cycle until the code runs.

A module belongs to a *unit*: its top-level module or subpackage (`personavlm.memory.store` is
in `memory`); the package's own `__init__` (its public re-exports) is the unit `__init__`.
Imports inside a unit are free. Across units an import must point to a lower layer; between
two units of the same layer it must be listed in `SIBLING_EDGES` with its reason.

The last tests hold the import-cost promise the layering exists for: the foundations and the
command line load without numpy or torch (checked in a fresh interpreter, since this one has
long loaded them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import personavlm

PACKAGE = "personavlm"
ROOT_UNIT = "__init__"

# Bottom to top. A unit may import any unit of a lower layer.
LAYERS: tuple[frozenset[str], ...] = (
    # The exception types: everything raises them.
    frozenset({"errors"}),
    # Shared foundations, each needing at most errors. `tasks` is the Persona-MME task table
    # that synth (writes questions) and bench (scores them) share; `testing` holds the fakes
    # shipped for users' tests; `data` is package data (the bundled sample); `lazy` loads
    # the packages' public names on first use.
    frozenset({"timeutil", "settings", "tasks", "testing", "data", "lazy"}),
    # Value types and leaf services the store uses.
    frozenset({"personality", "embed", "media"}),
    frozenset({"memory"}),
    # The public re-exports of `import personavlm` (errors, settings, personality, memory).
    frozenset({ROOT_UNIT}),
    # Chat models behind one seam; they know nothing of memory.
    frozenset({"models"}),
    frozenset({"agent"}),
    # Readers of other projects' data, and the replay of a history through the agent.
    frozenset({"interop"}),
    # Clients of the library: the benchmark harnesses and the persona simulator.
    frozenset({"bench", "synth"}),
    # Training uses bench and synth as libraries.
    frozenset({"train"}),
    # Entry points. Nothing imports them but themselves. `client` speaks to `server` over
    # HTTP only: it shares the error table through errors.py, never an import.
    frozenset({"cli", "server", "client"}),
)

# Imports between two units of one layer, allowed one direction at a time, each with why.
SIBLING_EDGES: Mapping[tuple[str, str], str] = {
    ("cli", "server"): "`personavlm serve` builds the service's app and runs it under uvicorn",
}


@dataclass(frozen=True, slots=True)
class Edge:
    """One import statement's target: `module` (at `path`:`line`) imports `target`."""

    module: str
    path: str
    line: int
    target: str


# --------------------------------------------------------------------- the checker


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def violations(
    edges: Iterable[Edge],
    layers: tuple[frozenset[str], ...] = LAYERS,
    siblings: Mapping[tuple[str, str], str] = SIBLING_EDGES,
) -> list[str]:
    """One line per import that points up, or sideways without being listed."""
    rank = {unit: index for index, layer in enumerate(layers) for unit in layer}
    found: list[str] = []
    for edge in edges:
        src, dst = unit_of(edge.module), unit_of(edge.target)
        if src == dst or rank[dst] < rank[src]:
            continue
        if rank[dst] == rank[src] and (src, dst) in siblings:
            continue
        why = (
            f"{dst} is above {src}"
            if rank[dst] > rank[src]
            else f"{src} and {dst} share a layer and {src} -> {dst} is not in SIBLING_EDGES"
        )
        found.append(f"{edge.path}:{edge.line}: {edge.module} imports {edge.target} ({why})")
    return found


def module_name(file: Path, package_dir: Path) -> str:
    parts = file.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a `from ... import` reads from, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _targets(
    tree: ast.AST, module: str, is_package: bool, known: frozenset[str]
) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):  # every statement: top level, functions, TYPE_CHECKING blocks
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            for alias in node.names:
                # `from personavlm import embed` imports a module; `... import __version__` not.
                child = f"{base}.{alias.name}"
                yield node.lineno, child if child in known else base


def edges_of(
    source: str, module: str, path: str, known: frozenset[str], *, is_package: bool = False
) -> list[Edge]:
    """The imports of one module's source that land inside the package."""
    tree = ast.parse(source, filename=path)
    return [
        Edge(module, path, line, target)
        for line, target in _targets(tree, module, is_package, known)
        if target == PACKAGE or target.startswith(PACKAGE + ".")
    ]


def package_dir() -> Path:
    return Path(personavlm.__file__).resolve().parent


def package_modules() -> dict[str, Path]:
    root = package_dir()
    return {module_name(file, root): file for file in sorted(root.rglob("*.py"))}


def package_edges() -> list[Edge]:
    modules = package_modules()
    known = frozenset(modules)
    root = package_dir().parent
    return [
        edge
        for module, file in modules.items()
        for edge in edges_of(
            file.read_text(encoding="utf-8"),
            module,
            str(file.relative_to(root)),
            known,
            is_package=file.name == "__init__.py",
        )
    ]


# --------------------------------------------------------------------- the package


def test_no_module_imports_upward() -> None:
    found = violations(package_edges())
    assert not found, "imports against the layer order (tests/test_layers.py LAYERS):\n" + (
        "\n".join(found)
    )


def test_every_unit_has_exactly_one_layer() -> None:
    placed = [unit for layer in LAYERS for unit in layer]
    assert len(placed) == len(set(placed)), "a unit is listed in two layers"
    present = {unit_of(module) for module in package_modules()}
    assert present - set(placed) == set(), "new modules or packages: place them in LAYERS"
    assert set(placed) - present == set(), "LAYERS names units that no longer exist"


def test_sibling_edges_join_one_layer_and_are_used() -> None:
    used = {(unit_of(e.module), unit_of(e.target)) for e in package_edges()}
    for src, dst in SIBLING_EDGES:
        assert any({src, dst} <= layer for layer in LAYERS), (src, dst)
        assert (src, dst) in used, f"{src} -> {dst} is allowed but no longer happens: drop it"


# --------------------------------------------------------------------- the checker itself

FAKE_LAYERS = (
    frozenset({"errors"}),
    frozenset({"memory"}),
    frozenset({"bench", "synth", "interop"}),
)
FAKE_SIBLINGS = {("bench", "interop"): "reads the histories"}


def _edge(module: str, target: str, line: int = 7) -> Edge:
    return Edge(module, module.replace(".", "/") + ".py", line, target)


def test_checker_flags_an_upward_import_with_module_line_and_target() -> None:
    found = violations(
        [_edge("personavlm.memory.store", "personavlm.bench.mcq", line=12)],
        FAKE_LAYERS,
        FAKE_SIBLINGS,
    )
    assert found == [
        "personavlm/memory/store.py:12: personavlm.memory.store imports personavlm.bench.mcq "
        "(bench is above memory)"
    ]


def test_checker_flags_unlisted_siblings_and_allows_listed_ones() -> None:
    edges = [
        _edge("personavlm.synth.core", "personavlm.bench.mcq"),
        _edge("personavlm.bench.persona_mme", "personavlm.interop.persona_mme"),
        _edge("personavlm.interop.replay", "personavlm.bench.harness"),  # listed one way only
    ]
    found = violations(edges, FAKE_LAYERS, FAKE_SIBLINGS)
    assert [line.split(":")[0] for line in found] == [
        "personavlm/synth/core.py",
        "personavlm/interop/replay.py",
    ]
    assert "synth and bench share a layer" in found[0]


def test_checker_allows_downward_and_same_unit_imports() -> None:
    edges = [
        _edge("personavlm.bench.mcq", "personavlm.errors"),
        _edge("personavlm.memory.store", "personavlm.memory.records"),
        _edge("personavlm.bench.runs", "personavlm.memory"),
    ]
    assert violations(edges, FAKE_LAYERS, FAKE_SIBLINGS) == []


def test_checker_reads_deferred_relative_and_from_package_imports() -> None:
    source = "\n".join(
        [
            "from typing import TYPE_CHECKING",
            "import personavlm.errors",
            "from personavlm import embed, __version__",
            "from . import records",
            "from ..bench.mcq import Item",
            "if TYPE_CHECKING:",
            "    from personavlm.agent import Assistant",
            "def run() -> None:",
            "    import personavlm.cli.app",
            "import numpy",
        ]
    )
    known = frozenset(
        {"personavlm", "personavlm.embed", "personavlm.memory.records", "personavlm.bench.mcq"}
    )
    edges = edges_of(source, "personavlm.memory.store", "store.py", known)
    assert [(e.line, e.target) for e in edges] == [
        (2, "personavlm.errors"),
        (3, "personavlm.embed"),
        (3, "personavlm"),
        (4, "personavlm.memory.records"),
        (5, "personavlm.bench.mcq"),
        (7, "personavlm.agent"),
        (9, "personavlm.cli.app"),
    ]


# --------------------------------------------------------------------- import cost


def _modules_loaded_by(statement: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` a fresh interpreter has loaded after running `statement`."""
    code = f"import sys; {statement}; print([n for n in {names!r} if n in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(ast.literal_eval(done.stdout.strip()))


HEAVY = ("numpy", "torch", "sentence_transformers", "transformers", "httpx")


def test_the_foundations_load_without_numpy() -> None:
    statement = "import personavlm.errors, personavlm.settings, personavlm.timeutil"
    assert _modules_loaded_by(statement + ", personavlm.tasks", HEAVY) == []


def test_the_command_line_loads_without_numpy_or_torch() -> None:
    # `personavlm --help` builds every command: what the app module imports, every run pays.
    assert _modules_loaded_by("import personavlm.cli.app", HEAVY) == []
