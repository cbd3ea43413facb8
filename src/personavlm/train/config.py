"""Recipe files: TOML in, checked settings out.

    recipe = load_recipe(Path("recipes/sft_qwen25vl_7b.toml"), kind="sft")

A recipe has our own sections, each checked here, and a `[train]` table passed to TRL's
SFTConfig / GRPOConfig after its keys are checked against that class's fields (a typo is an
error naming the closest field, never an ignored setting). The paper's hyper-parameters are
the defaults (PAPER.md section 5); a recipe overrides what it names.

```toml
[model]
path = "Qwen/Qwen2.5-VL-7B-Instruct"  # a local checkpoint folder or a hub id
dtype = "bfloat16"                      # float32 | bfloat16 | float16
freeze_vision = true                    # the vision tower is not trained (PAPER.md 5)
train_merger = true                     # ...but its merger is, as in the reference
max_pixels = 230400

[data]
path = "data/train"                     # a `personavlm train data` folder (or sft.json)

[lora]                                  # present: LoRA adapters instead of full training
r = 64

[train]                                 # any SFTConfig / GRPOConfig field
output_dir = "runs/sft"
```

GRPO recipes add `[judge]` (`model = "openai:<name>@<base url>"`, `api_key_env`,
`attempts`) and `[rollout]` (`max_retrievals`, `max_turn_tokens`, `force_retrieval`), and
`[data]` takes `exclude_tasks` and `limit`.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personavlm.errors import ValidationError

__all__ = [
    "GRPO_DEFAULTS",
    "SFT_DEFAULTS",
    "DataSection",
    "JudgeSection",
    "LoraSection",
    "ModelSection",
    "Recipe",
    "RolloutSection",
    "load_recipe",
    "parse_recipe",
]

RecipeKind = Literal["sft", "grpo"]

# PAPER.md section 5. Global batch 64 = per-device 1 x accumulation 8 x 8 GPUs (the GPU
# recipes); a single device gets the same global batch through accumulation 64.
SFT_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 64,
    "num_train_epochs": 1.0,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,  # a float below 1 is a share of the steps
    "max_length": 16384,
    "activation_checkpointing": True,  # transformers 5 name of gradient checkpointing
    "assistant_only_loss": True,
    "logging_steps": 1,
    "save_strategy": "epoch",
    "report_to": [],
}
# Group 6, lr 2e-6, KL beta 0.01, temperature 1.0; batch 72 = 12 prompts x 6 generations.
# Sampling and schedule as the reference's GRPO run (train/ms-swift-main/scripts/rl.sh):
# top_p 0.9, top_k 50, repetition penalty 1.05, cosine down to 0.1 of the peak rate after a
# 5% warm-up; completions cut at the length limit are left out of the loss (its over-long
# filter), so a rollout that ran out of tokens teaches nothing either way.
GRPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-6,
    "num_generations": 6,
    "beta": 0.01,
    "temperature": 1.0,
    "top_p": 0.9,
    "top_k": 50,
    "repetition_penalty": 1.05,
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
    "warmup_steps": 0.05,  # a float below 1 is a share of the steps
    "mask_truncated_completions": True,
    "per_device_train_batch_size": 6,
    "gradient_accumulation_steps": 12,
    "max_completion_length": 4096,  # all turns of one rollout: 4 turns x 1,024
    "num_train_epochs": 1.0,
    "activation_checkpointing": True,  # transformers 5 name of gradient checkpointing
    "logging_steps": 1,
    "save_strategy": "epoch",
    "report_to": [],
}
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True, slots=True)
class ModelSection:
    path: str
    dtype: str = "bfloat16"
    freeze_vision: bool = True
    # The merger (vision -> language projection) trains with the language model even when the
    # vision tower is frozen, as in the reference's SFT script (sft_PersonaVLM.sh).
    train_merger: bool = True
    max_pixels: int = 230400  # PAPER.md section 5
    min_pixels: int = 3136

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ValidationError("[model] path is empty; give a checkpoint folder or a hub id")
        if self.dtype not in _DTYPES:
            raise ValidationError(f"[model] dtype {self.dtype!r}: use one of {', '.join(_DTYPES)}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValidationError("[model] needs 0 < min_pixels <= max_pixels")


@dataclass(frozen=True, slots=True)
class DataSection:
    path: str
    exclude_tasks: tuple[str, ...] = ("Visual Detail Recall",)  # GRPO only (rollout.py)
    limit: int | None = None  # use the first N samples / prompts (smoke runs)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValidationError(f"[data] limit must be >= 1, got {self.limit}")


@dataclass(frozen=True, slots=True)
class LoraSection:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    # The vision tower stays untouched (PAPER.md 5); matched against module names.
    exclude_modules: str = r".*(visual|vision_tower|vision_model).*"

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValidationError("[lora] r and alpha must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValidationError(f"[lora] dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True, slots=True)
class JudgeSection:
    model: str  # openai:<model>@<base_url>
    api_key_env: str | None = None
    attempts: int = 2
    max_workers: int = 8

    def __post_init__(self) -> None:
        if not self.model.startswith("openai:"):
            raise ValidationError(
                f"[judge] model {self.model!r}: the judge is an OpenAI-compatible server, "
                "written openai:<model>@<base_url>"
            )
        if self.attempts < 1 or self.max_workers < 1:
            raise ValidationError("[judge] attempts and max_workers must be >= 1")


@dataclass(frozen=True, slots=True)
class RolloutSection:
    max_retrievals: int = 3  # PAPER.md section 4: four model turns
    max_turn_tokens: int = 1024  # the reference: 1,024 tokens per model turn (rl.sh)
    force_retrieval: tuple[str, ...] = ("choice",)  # PAPER.md section 8


@dataclass(frozen=True)
class Recipe:
    kind: RecipeKind
    model: ModelSection
    data: DataSection
    train: dict[str, Any]  # SFTConfig / GRPOConfig keyword arguments, defaults applied
    lora: LoraSection | None = None
    judge: JudgeSection | None = None
    rollout: RolloutSection = field(default_factory=RolloutSection)
    source: Path | None = None


_SECTIONS = {
    "sft": {"model", "data", "lora", "train"},
    "grpo": {"model", "data", "lora", "train", "judge", "rollout"},
}


def load_recipe(path: Path, *, kind: RecipeKind) -> Recipe:
    """The recipe at `path` (TOML); relative data and output paths stay relative to the
    working directory, as on a command line."""
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValidationError(f"no recipe file at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read the recipe {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return dataclasses.replace(parse_recipe(table, kind=kind), source=Path(path))
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc}") from exc


def parse_recipe(table: Mapping[str, Any], *, kind: RecipeKind) -> Recipe:
    unknown = set(table) - _SECTIONS[kind]
    if unknown:
        raise ValidationError(
            f"unknown section(s) {sorted(unknown)} in a {kind} recipe; "
            f"use {', '.join(sorted(_SECTIONS[kind]))}"
        )
    for required in ("model", "data"):
        if required not in table:
            raise ValidationError(f"a {kind} recipe needs a [{required}] section")
    judge = _section(JudgeSection, table, "judge") if "judge" in table else None
    if kind == "grpo" and judge is None:
        raise ValidationError("a grpo recipe needs a [judge] section (the reward's LLM judge)")
    return Recipe(
        kind=kind,
        model=_section(ModelSection, table, "model"),
        data=_section(DataSection, table, "data"),
        train=_train_args(table.get("train", {}), kind),
        lora=_section(LoraSection, table, "lora") if "lora" in table else None,
        judge=judge,
        rollout=_section(RolloutSection, table, "rollout")
        if "rollout" in table
        else RolloutSection(),
    )


def _section(cls: Any, table: Mapping[str, Any], name: str) -> Any:
    values = table[name]
    if not isinstance(values, Mapping):
        raise ValidationError(f"[{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise ValidationError(f"[{name}] has no setting {key!r}{_close(key, fields)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, AttributeError) as exc:  # a value of the wrong type
        raise ValidationError(f"[{name}] {exc}") from exc


def _close(key: str, names: Any) -> str:
    match = difflib.get_close_matches(key, list(names), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _train_args(values: Any, kind: RecipeKind) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ValidationError("[train] must be a table")
    names = _trl_fields(kind)
    for key in values:
        if key not in names:
            raise ValidationError(
                f"[train] {key!r} is not a {kind.upper()}Config field{_close(key, names)}"
            )
    defaults = SFT_DEFAULTS if kind == "sft" else GRPO_DEFAULTS
    merged = {**defaults, **dict(values)}
    if "output_dir" not in merged:
        raise ValidationError("[train] needs output_dir (where checkpoints and logs go)")
    return merged


def _trl_fields(kind: RecipeKind) -> set[str]:
    """SFTConfig / GRPOConfig field names (trl is imported here only, so reading a recipe
    without the train extra still says what is missing)."""
    from personavlm.train.deps import require_trl

    require_trl()
    from trl import GRPOConfig, SFTConfig

    cls = SFTConfig if kind == "sft" else GRPOConfig
    return {f.name for f in dataclasses.fields(cls)}
