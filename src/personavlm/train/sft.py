"""Supervised fine-tuning on TRL's SFTTrainer: `personavlm train sft --config FILE`.

    result = run_sft(load_recipe(Path("recipes/sft_qwen25vl_7b.toml"), kind="sft"))

The samples (`samples.py`) become chat conversations: pictures where their `<image>`
markers stood (a vision-language model) and the loss on the assistant turns only
(`assistant_only_loss`, through TRL's training copy of the model's chat template), so the
model learns its replies and not the prompts. Full training or LoRA (`[lora]`); the vision
tower is frozen by default. Writes the model and processor to `output_dir`, the trainer's
log to `log_history.json` and the loss curve to `curve.png`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personavlm.errors import ConfigError, ValidationError
from personavlm.train.config import Recipe
from personavlm.train.curves import training_curve
from personavlm.train.modeling import LoadedModel, load_for_training, lora_config
from personavlm.train.samples import IMAGE_MARKER, Sample, SampleDataset, load_samples

__all__ = ["TrainResult", "finish_run", "run_sft", "sft_dataset"]


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    steps: int
    log_history: list[dict[str, Any]]
    curve: Path | None

    def to_dict(self) -> dict[str, Any]:
        last: dict[str, Any] = next(
            (h for h in reversed(self.log_history) if "train_runtime" in h), {}
        )
        return {
            "output_dir": str(self.output_dir),
            "steps": self.steps,
            "curve": str(self.curve) if self.curve else None,
            "train_runtime_s": last.get("train_runtime"),
            "train_loss": last.get("train_loss"),
        }


def _content(text: str, vlm: bool) -> Any:
    if not vlm:
        return text
    blocks: list[dict[str, Any]] = []
    for index, piece in enumerate(text.split(IMAGE_MARKER)):
        if index:
            blocks.append({"type": "image", "text": None})
        if piece:
            blocks.append({"type": "text", "text": piece})
    return blocks


def _conversation(sample: Sample, vlm: bool) -> list[dict[str, Any]]:
    return [{"role": t.role, "content": _content(t.text, vlm)} for t in sample.turns]


def sft_dataset(dataset: SampleDataset, *, vlm: bool, limit: int | None = None) -> Any:
    """A `datasets.Dataset` of `messages` (and `images`, loaded lazily from their files)."""
    from datasets import Dataset, Image, Sequence

    samples = dataset.samples[:limit] if limit else dataset.samples
    if not samples:
        raise ValidationError("there are no samples to train on")
    with_images = sum(1 for s in samples if s.images)
    if with_images and not vlm:
        raise ValidationError(
            f"{with_images} of {len(samples)} samples carry pictures but the model reads text "
            "only; train a vision-language model, or build the data without pictures"
        )
    columns: dict[str, list[Any]] = {"messages": [_conversation(s, vlm) for s in samples]}
    if vlm:
        columns["images"] = [[str(dataset.image_path(i)) for i in s.images] for s in samples]
        return Dataset.from_dict(columns).cast_column("images", Sequence(Image()))
    return Dataset.from_dict(columns)


def run_sft(recipe: Recipe) -> TrainResult:
    if recipe.kind != "sft":
        raise ConfigError(f"run_sft needs an sft recipe, got {recipe.kind}")
    dataset = load_samples(Path(recipe.data.path))
    loaded = load_for_training(recipe.model)
    train_dataset = sft_dataset(dataset, vlm=loaded.is_vlm, limit=recipe.data.limit)
    trainer = _trainer(recipe, loaded, train_dataset)
    trainer.train()
    return finish_run(trainer, loaded, recipe, title="SFT")


def _trainer(recipe: Recipe, loaded: LoadedModel, train_dataset: Any) -> Any:
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**recipe.train)
    try:
        return SFTTrainer(
            model=loaded.model,
            args=args,
            train_dataset=train_dataset,
            processing_class=loaded.processor,
            peft_config=lora_config(recipe.lora) if recipe.lora else None,
        )
    except ValueError as exc:
        # TRL says what is wrong with the model/data combination (e.g. a chat template it
        # has no assistant-only training copy of); it is a set-up problem, not a crash.
        raise ConfigError(f"TRL refused the SFT set-up: {exc}") from exc


def finish_run(trainer: Any, loaded: LoadedModel, recipe: Recipe, *, title: str) -> TrainResult:
    """Saves the model and processor, the log history and the curve of a finished run."""
    output_dir = Path(recipe.train["output_dir"])
    trainer.save_model(str(output_dir))
    loaded.processor.save_pretrained(str(output_dir))
    history = list(trainer.state.log_history)
    (output_dir / "log_history.json").write_text(json.dumps(history, indent=1) + "\n")
    curve = training_curve(history, output_dir / "curve.png", title=title)
    return TrainResult(output_dir, int(trainer.state.global_step), history, curve)
