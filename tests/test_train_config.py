"""Training recipes (`personavlm.train.config`): TOML in, checked settings out, the paper's
hyper-parameters as defaults, every unknown key an error that names the closest one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from personavlm.errors import ValidationError
from personavlm.train.config import (
    GRPO_DEFAULTS,
    SFT_DEFAULTS,
    LoraSection,
    RecipeKind,
    RolloutSection,
    load_recipe,
    parse_recipe,
)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
JUDGE = {"model": "openai:judge@http://127.0.0.1:9/v1"}


def _table(kind: str = "sft", **extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "model": {"path": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "data": {"path": "data/train"},
        "train": {"output_dir": "runs/x"},
    }
    if kind == "grpo":
        table["judge"] = dict(JUDGE)
    return {**table, **extra}


def test_sft_defaults_are_the_papers() -> None:
    recipe = parse_recipe(_table(), kind="sft")
    assert recipe.kind == "sft"
    assert recipe.train["learning_rate"] == 2e-5
    assert recipe.train["output_dir"] == "runs/x"
    assert recipe.train == {**SFT_DEFAULTS, "output_dir": "runs/x"}
    assert recipe.model.dtype == "bfloat16" and recipe.model.freeze_vision
    assert recipe.model.max_pixels == 230400
    assert recipe.lora is None and recipe.judge is None and recipe.source is None
    assert recipe.data.path == "data/train" and recipe.data.limit is None


def test_grpo_defaults_are_the_papers() -> None:
    recipe = parse_recipe(_table("grpo"), kind="grpo")
    train = recipe.train
    assert train["learning_rate"] == 2e-6
    assert train["num_generations"] == 6
    assert train["beta"] == 0.01
    assert train["temperature"] == 1.0
    assert train == {**GRPO_DEFAULTS, "output_dir": "runs/x"}
    assert recipe.judge is not None and recipe.judge.model == JUDGE["model"]
    assert recipe.judge.attempts == 2
    assert recipe.rollout == RolloutSection()
    assert recipe.rollout.max_retrievals == 3
    # the reference's sampling and schedule (rl.sh)
    assert (train["top_p"], train["top_k"], train["repetition_penalty"]) == (0.9, 50, 1.05)
    assert train["lr_scheduler_type"] == "cosine_with_min_lr"
    assert train["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}
    assert train["warmup_steps"] == 0.05 and train["mask_truncated_completions"] is True
    assert recipe.rollout.max_turn_tokens == 1024
    assert recipe.model.freeze_vision and recipe.model.train_merger


def test_overrides_win() -> None:
    table = _table(
        "grpo",
        train={"output_dir": "o", "learning_rate": 1e-6, "num_generations": 4},
        lora={"r": 8, "target_modules": ["q_proj", "v_proj"]},
        rollout={"max_retrievals": 2, "force_retrieval": ["choice", "open"]},
        data={"path": "d", "limit": 5, "exclude_tasks": []},
    )
    recipe = parse_recipe(table, kind="grpo")
    assert recipe.train["learning_rate"] == 1e-6 and recipe.train["num_generations"] == 4
    assert recipe.train["beta"] == GRPO_DEFAULTS["beta"]
    assert recipe.lora == LoraSection(r=8, target_modules=("q_proj", "v_proj"))
    assert recipe.rollout.max_retrievals == 2
    assert recipe.rollout.force_retrieval == ("choice", "open")
    assert recipe.data.limit == 5 and recipe.data.exclude_tasks == ()
    sft = parse_recipe(_table(train={"output_dir": "o", "learning_rate": 1e-4}), kind="sft")
    assert sft.train["learning_rate"] == 1e-4
    assert SFT_DEFAULTS["learning_rate"] == 2e-5  # the defaults themselves are untouched


@pytest.mark.parametrize(
    ("kind", "key", "suggestion"),
    [
        ("sft", "learning_rat", "learning_rate"),
        ("grpo", "num_generation", "num_generations"),
    ],
)
def test_unknown_train_key_suggests_the_field(kind: str, key: str, suggestion: str) -> None:
    table = _table(kind, train={"output_dir": "o", key: 1})
    with pytest.raises(ValidationError) as raised:
        parse_recipe(table, kind=kind)  # type: ignore[arg-type]
    message = str(raised.value)
    assert repr(key) in message and f"did you mean {suggestion!r}" in message


def test_grpo_only_train_key_is_unknown_to_sft() -> None:
    with pytest.raises(ValidationError, match="'num_generations' is not a SFTConfig field"):
        parse_recipe(_table(train={"output_dir": "o", "num_generations": 6}), kind="sft")


def test_unknown_key_in_our_sections_suggests_the_setting() -> None:
    with pytest.raises(ValidationError, match=r"\[model\] has no setting 'dtyp'.*'dtype'"):
        parse_recipe(_table(model={"path": "m", "dtyp": "float16"}), kind="sft")
    with pytest.raises(ValidationError, match=r"\[lora\] has no setting 'rank'"):
        parse_recipe(_table(lora={"rank": 8}), kind="sft")


def test_unknown_section() -> None:
    with pytest.raises(ValidationError, match=r"unknown section.*'optimizer'"):
        parse_recipe(_table(optimizer={"name": "adam"}), kind="sft")
    # [judge] and [rollout] belong to GRPO recipes only.
    with pytest.raises(ValidationError, match=r"unknown section.*'judge'"):
        parse_recipe(_table(judge=dict(JUDGE)), kind="sft")


@pytest.mark.parametrize("section", ["model", "data"])
def test_missing_required_section(section: str) -> None:
    table = _table()
    del table[section]
    with pytest.raises(ValidationError, match=rf"needs a \[{section}\] section"):
        parse_recipe(table, kind="sft")


def test_grpo_needs_a_judge() -> None:
    table = _table("grpo")
    del table["judge"]
    with pytest.raises(ValidationError, match=r"\[judge\]"):
        parse_recipe(table, kind="grpo")


def test_judge_must_be_an_openai_server() -> None:
    with pytest.raises(ValidationError, match="openai:<model>@<base_url>"):
        parse_recipe(_table("grpo", judge={"model": "hf:/models/judge"}), kind="grpo")
    with pytest.raises(ValidationError, match="attempts"):
        parse_recipe(_table("grpo", judge={**JUDGE, "attempts": 0}), kind="grpo")


def test_bad_model_settings() -> None:
    with pytest.raises(ValidationError, match="dtype 'float8'"):
        parse_recipe(_table(model={"path": "m", "dtype": "float8"}), kind="sft")
    with pytest.raises(ValidationError, match="path is empty"):
        parse_recipe(_table(model={"path": "  "}), kind="sft")
    with pytest.raises(ValidationError, match="min_pixels"):
        parse_recipe(_table(model={"path": "m", "min_pixels": 10, "max_pixels": 5}), kind="sft")
    with pytest.raises(ValidationError, match=r"\[model\] must be a table"):
        parse_recipe(_table(model="Qwen"), kind="sft")


@pytest.mark.parametrize("dropout", [1.0, -0.1, 1.5])
def test_lora_dropout_out_of_range(dropout: float) -> None:
    with pytest.raises(ValidationError, match=r"\[lora\] dropout must be in \[0, 1\)"):
        parse_recipe(_table(lora={"dropout": dropout}), kind="sft")


def test_lora_dropout_edges_accepted() -> None:
    recipe = parse_recipe(_table(lora={"dropout": 0.0}), kind="sft")
    assert recipe.lora is not None and recipe.lora.dropout == 0.0


def test_data_limit_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="limit must be >= 1"):
        parse_recipe(_table(data={"path": "d", "limit": 0}), kind="sft")


def test_train_needs_output_dir() -> None:
    with pytest.raises(ValidationError, match="output_dir"):
        parse_recipe(_table(train={"learning_rate": 1e-5}), kind="sft")
    table = _table("grpo")
    del table["train"]
    with pytest.raises(ValidationError, match="output_dir"):
        parse_recipe(table, kind="grpo")
    with pytest.raises(ValidationError, match=r"\[train\] must be a table"):
        parse_recipe(_table(train="runs/x"), kind="sft")


def test_load_recipe_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "grpo.toml"
    path.write_text(
        "\n".join(
            [
                "[model]",
                'path = "runs/sft"',
                'dtype = "float32"',
                "[data]",
                'path = "data/train"',
                "[judge]",
                f'model = "{JUDGE["model"]}"',
                "[train]",
                'output_dir = "runs/grpo"',
                "beta = 0.04",
            ]
        ),
        encoding="utf-8",
    )
    recipe = load_recipe(path, kind="grpo")
    assert recipe.source == path and recipe.model.dtype == "float32"
    assert recipe.train["beta"] == 0.04 and recipe.train["num_generations"] == 6
    # Errors from the recipe name the file.
    path.write_text(path.read_text().replace("[judge]", "[judges]"), encoding="utf-8")
    with pytest.raises(ValidationError, match=rf"{path.name}: unknown section.*'judges'"):
        load_recipe(path, kind="grpo")


def test_load_recipe_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no recipe file"):
        load_recipe(tmp_path / "nope.toml", kind="sft")
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\npath = "unterminated\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="not valid TOML"):
        load_recipe(bad, kind="sft")


def test_repository_recipes_load() -> None:
    recipes = sorted(RECIPES.glob("*.toml"))
    assert len(recipes) >= 5, recipes  # the 7B SFT (full, LoRA), GRPO and two CPU recipes
    for path in recipes:
        kind: RecipeKind = "grpo" if "grpo" in path.name else "sft"
        recipe = load_recipe(path, kind=kind)
        assert recipe.kind == kind and recipe.train["output_dir"], path
