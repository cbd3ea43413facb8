"""Prompt templates: the package's texts, or a directory of the user's own, checked at start.

Every prompt the agent sends is a template `agent/prompts/<name>.txt` with `{Placeholder}`
slots (the reference's own syntax, so its prompts run verbatim). `Templates.load(directory)`
reads the package's templates and replaces each one the directory holds a file for; every
template's slots must be exactly the documented set of its prompt (`PLACEHOLDERS`, described
in docs/reference-format.md), so a missing or misspelt slot, or a file named after no prompt,
is a ConfigError when the agent is built, not at its first model call.

A slot is `{` + a Python identifier + `}`; every other brace is text (`{"think": ...}` in the
json prompts stays as written). A value may hold pictures: `render` takes text or message
parts per slot and returns the parts in order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from personavlm.errors import ConfigError
from personavlm.models.base import Part, TextPart

__all__ = ["PLACEHOLDERS", "SLOT", "Templates", "Value"]

_TRAIT_SLOTS = ("Openness", "Conscientiousness", "Extraversion", "Agreeableness", "Neuroticism")

# Prompt name -> the slots its template must use, each exactly once or more, and no other.
# The tags prompts' slot names are the reference's (PersonaVLM/prompts.py).
PLACEHOLDERS: Mapping[str, frozenset[str]] = {
    "response_tags": frozenset(("UserProfile", *_TRAIT_SLOTS, "DialogHistory", "UserQuery")),
    "retrieval_tags": frozenset(("ProceduralMemory", "SemanticMemory", "DialogHistory")),
    "personality_tags": frozenset(("UserProfile", "DialogHistory", "UserQuery")),
    "semantic_tags": frozenset(("UserProfile", "DialogHistory", "UserQuery")),
    "episodic_tags": frozenset(("UserProfile", "DialogHistory")),
    "core_tags": frozenset(("UserProfile", "DialogHistory")),
    "procedural_tags": frozenset(("UserProfile", "CurrentProceduralMemory", "DialogHistory")),
    "response_json": frozenset(("MaxRetrievals",)),
    "update_json": frozenset(),
    "episodic_json": frozenset(),
    "consolidate_json": frozenset(),
}

SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# A slot's value: plain text, or message parts (text and pictures in order).
Value = str | Sequence[Part]


@dataclass(frozen=True, slots=True)
class Templates:
    """Every prompt template by name, checked; `source` says where the overrides came from."""

    texts: Mapping[str, str]
    source: str = "package"

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Templates:
        """The package's templates, with those `directory` holds (`<name>.txt`) in their
        place. ConfigError names the file and what is wrong with it."""
        texts = {name: _packaged(name) for name in PLACEHOLDERS}
        if directory is None:
            return cls(texts)
        folder = Path(directory)
        if not folder.is_dir():
            raise ConfigError(f"--prompts {folder}: not a directory")
        for path in sorted(folder.glob("*.txt")):
            if path.stem not in PLACEHOLDERS:
                raise ConfigError(
                    f"{path}: names no prompt; the prompts are {', '.join(sorted(PLACEHOLDERS))}"
                )
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot be read as UTF-8 text: {exc}") from exc
            check(path.stem, text, where=str(path))
            texts[path.stem] = text
        return cls(texts, str(folder))

    def text(self, name: str, **values: str) -> str:
        """Template `name` filled with text values."""
        parts = self.render(name, values)
        return "".join(p.text for p in parts if isinstance(p, TextPart))

    def render(self, name: str, values: Mapping[str, Value]) -> list[Part]:
        """Template `name` with each slot replaced by its value, as parts in order (adjacent
        text merged). A value for a slot the template lacks, or a slot without a value, is a
        ConfigError: the caller and the documented slots disagree."""
        template = self.texts[name].strip()
        wanted = PLACEHOLDERS[name]
        if set(values) != wanted:
            raise ConfigError(
                f"prompt {name} takes {sorted(wanted)}, the agent gave {sorted(values)}"
            )
        parts: list[Part] = []
        position = 0
        for match in SLOT.finditer(template):
            _add_text(parts, template[position : match.start()])
            value = values[match.group(1)]
            if isinstance(value, str):
                _add_text(parts, value)
            else:
                for part in value:
                    if isinstance(part, TextPart):
                        _add_text(parts, part.text)
                    else:
                        parts.append(part)
            position = match.end()
        _add_text(parts, template[position:])
        return parts


def check(name: str, text: str, *, where: str) -> None:
    """ConfigError unless `text` uses exactly the slots of prompt `name`."""
    used = set(SLOT.findall(text))
    wanted = PLACEHOLDERS[name]
    unknown, missing = sorted(used - wanted), sorted(wanted - used)
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}")
        if missing:
            problems.append(f"missing placeholder(s) {', '.join('{' + m + '}' for m in missing)}")
        allowed = ", ".join("{" + w + "}" for w in sorted(wanted)) or "none"
        raise ConfigError(f"{where}: {'; '.join(problems)}; prompt {name} takes {allowed}")


def _packaged(name: str) -> str:
    text = resources.files("personavlm.agent").joinpath("prompts", f"{name}.txt").read_text()
    check(name, text, where=f"package prompt {name}.txt")
    return text


def _add_text(parts: list[Part], text: str) -> None:
    if not text:
        return
    if parts and isinstance(parts[-1], TextPart):
        parts[-1] = TextPart(parts[-1].text + text)
    else:
        parts.append(TextPart(text))
