"""`personavlm train ...`: training data, SFT and GRPO (docs/training.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from personavlm.cli.common import EmbedderOption, JsonOption, emit, fail_on_errors, progress_bar

__all__ = ["app"]

app = typer.Typer(
    help="Training: SFT samples and RL prompts from simulated worlds, SFT and GRPO with TRL.",
    no_args_is_help=True,
)

ConfigOption = typer.Option(..., "--config", help="The recipe (TOML); see recipes/.")


@app.command("data")
def data(
    out: Path = typer.Option(..., "--out", help="A new folder for the samples and prompts."),
    users: int = typer.Option(20, "--users", help="How many simulated users."),
    size: str = typer.Option("32k", "--size", help="32k or 128k histories."),
    seed: int = typer.Option(0, "--seed", help="The simulator's seed."),
    teacher: str | None = typer.Option(
        None,
        "--teacher",
        help="Distil this model (openai:<model>@<base_url> or hf:<dir>) instead of the "
        "simulator's ground truth; its trajectories are kept only where it answered right.",
        show_default=False,
    ),
    no_mix: bool = typer.Option(
        False, "--no-mix", help="Keep every sample instead of the paper's 44/10/46 mix."
    ),
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """SFT samples (reasoning, personality, memory extraction) and RL prompts, recorded
    from the real agent replaying simulated users.

    Example: personavlm train data --out data/train --users 20 --size 32k --seed 1
    """
    from personavlm import embed
    from personavlm.settings import embedder_name
    from personavlm.train.world_samples import PAPER_MIX, build_training_data

    with fail_on_errors():
        model = None
        if teacher is not None:
            from personavlm.cli.chat_cmd import load_model

            model = load_model(teacher)
        encoder = embed.load(embedder_name(embedder))
        with progress_bar(users, "recording", as_json=as_json) as advance:
            manifest = build_training_data(
                out,
                users=users,
                size=size,
                seed=seed,
                embedder=encoder,
                teacher=model,
                mix=None if no_mix else PAPER_MIX,
                progress=advance,
            )
        emit(manifest, as_json=as_json, text=_data_text(manifest, out))


def _data_text(manifest: dict[str, Any], out: Path) -> str:
    lines = [f"{manifest['samples']} SFT samples in {out} ({manifest['teacher']})"]
    lines += [f"  {kind}: {n}" for kind, n in manifest["counts"].items()]
    lines.append(f"mix: {manifest['mix']}")
    lines += [f"  rejected, {why}: {n}" for why, n in manifest["rejected"].items()]
    return "\n".join(lines)


@app.command("import")
def import_samples(
    source: Path = typer.Argument(..., help="A reference-format SFT JSON file."),
    out: Path = typer.Option(..., "--out", help="A new dataset folder."),
    as_json: bool = JsonOption,
) -> None:
    """Import samples in the reference SFT format
    ([{"conversations": [{"from", "value"}], "image": [...]}]): checked, pictures copied.

    Example: personavlm train import persona_sft.json --out data/imported
    """
    from personavlm.errors import ValidationError
    from personavlm.train.samples import copy_dataset, load_samples

    with fail_on_errors():
        if out.exists():
            raise ValidationError(f"{out} exists; import into a new folder")
        manifest = copy_dataset(load_samples(source), out, source=str(source))
        emit(manifest, as_json=as_json, text=f"{manifest['samples']} samples imported to {out}")


@app.command("sft")
def sft(config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Supervised fine-tuning with TRL's SFTTrainer (full or LoRA, vision tower frozen).

    Example: personavlm train sft --config recipes/sft_qwen25vl_7b.toml
    Several GPUs: accelerate launch --config_file recipes/accelerate/zero3.yaml \\
        -m personavlm train sft --config recipes/sft_qwen25vl_7b.toml
    """
    from personavlm.train.config import load_recipe
    from personavlm.train.sft import run_sft

    with fail_on_errors():
        result = run_sft(load_recipe(config, kind="sft"))
        emit(result.to_dict(), as_json=as_json, text=_result_text(result.to_dict()))


@app.command("grpo")
def grpo(config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """GRPO with TRL's GRPOTrainer: multi-turn retrieval rollouts against the data's memory
    store, the paper's reward with an OpenAI-compatible judge.

    Example: personavlm train grpo --config recipes/grpo_qwen25vl_7b.toml
    """
    from personavlm import models
    from personavlm.errors import ConfigError
    from personavlm.settings import named_secret
    from personavlm.train.config import load_recipe
    from personavlm.train.grpo import run_grpo
    from personavlm.train.reward import OpenAIJudge

    with fail_on_errors():
        recipe = load_recipe(config, kind="grpo")
        if recipe.judge is None:
            raise ConfigError("a grpo recipe needs a [judge] section")
        judge_model = models.load(
            recipe.judge.model, api_key=named_secret(recipe.judge.api_key_env)
        )
        judge = OpenAIJudge(judge_model, attempts=recipe.judge.attempts)
        result = run_grpo(recipe, judge)
        report = {**result.to_dict(), "judge": judge.stats.__dict__}
        emit(report, as_json=as_json, text=_result_text(report))


@app.command("tiny-model")
def tiny_model(
    out: Path = typer.Option(..., "--out", help="A folder for the checkpoint."),
    data: Path = typer.Option(
        ..., "--data", help="A training-data folder: the tokenizer is trained on its samples' text."
    ),
    vision: bool = typer.Option(False, "--vision", help="A Qwen2.5-VL instead of a Qwen2."),
    as_json: bool = JsonOption,
) -> None:
    """A tiny random checkpoint for smoke runs of the recipes on a CPU (it knows nothing).

    Example: personavlm train tiny-model --out runs/tiny --data data/train
    """
    from personavlm.train.samples import load_samples
    from personavlm.train.tiny import build_tiny_checkpoint

    with fail_on_errors():
        texts = [t.text for s in load_samples(data).samples for t in s.turns]
        build_tiny_checkpoint(out, texts=texts, vision=vision)
        emit({"out": str(out), "vision": vision}, as_json=as_json, text=f"tiny checkpoint in {out}")


def _result_text(report: dict[str, Any]) -> str:
    lines = [f"trained {report['steps']} steps into {report['output_dir']}"]
    if report.get("train_loss") is not None:
        lines.append(f"mean training loss {report['train_loss']:.4f}")
    lines.append(f"curve: {report['curve'] or 'not drawn (no step was logged)'}")
    if "judge" in report:
        lines.append(f"judge: {report['judge']}")
    return "\n".join(lines)
