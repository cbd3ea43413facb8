"""SFT on tiny random checkpoints built here: the loss goes down on a fixed tiny set, the
vision tower stays frozen, LoRA trains adapters only, and bad set-ups fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import write_png
from personavlm.errors import ValidationError
from personavlm.models.base import ImagePart, Message, TextPart
from personavlm.train.config import parse_recipe
from personavlm.train.samples import SampleWriter, load_samples, sample_from_messages
from personavlm.train.sft import run_sft, sft_dataset
from personavlm.train.tiny import build_tiny_checkpoint

SYSTEM = "Decide whether the latest exchange holds a memory."
EXCHANGES = [
    ("My dog is called Bobby.", '"decision": true\n"content": "Ana has a dog called Bobby."'),
    ("Tell me a joke.", '"decision": false\n"content": ""'),
    ("I moved to Leeds last year.", '"decision": true\n"content": "Ana lives in Leeds."'),
    ("What time is it?", '"decision": false\n"content": ""'),
]


def write_samples(out: Path, *, picture: Path | None = None) -> Path:
    writer = SampleWriter(out)
    for text, reply in EXCHANGES:
        parts: list[Any] = [TextPart(f"## Latest exchange\nUser: {text}\n")]
        if picture is not None:
            parts.append(ImagePart(picture.read_bytes(), "image/png"))
        messages = [Message.text("system", SYSTEM), Message("user", tuple(parts))]
        writer.add(
            sample_from_messages(
                messages, reply, kind="semantic", source="test",
                images_dir=writer.images_dir, sample_id=writer.next_id("semantic"),
            )
        )  # fmt: skip
    writer.finish({"test": True})
    return out


def texts() -> list[str]:
    return [SYSTEM, *[t for pair in EXCHANGES for t in pair]] * 10


def recipe(model: Path, data: Path, out: Path, **extra: Any) -> Any:
    table: dict[str, Any] = {
        "model": {"path": str(model), "dtype": "float32"},
        "data": {"path": str(data)},
        "train": {
            "output_dir": str(out), "use_cpu": True, "bf16": False, "max_steps": 12,
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
            "learning_rate": 5e-3, "lr_scheduler_type": "constant", "warmup_steps": 0,
            "max_length": 512, "activation_checkpointing": False, "save_strategy": "no",
            "logging_steps": 1, "seed": 0,
        },
    }  # fmt: skip
    for section, values in extra.items():
        table.setdefault(section, {}).update(values)
    return parse_recipe(table, kind="sft")


def losses(history: list[dict[str, Any]]) -> list[float]:
    return [float(h["loss"]) for h in history if "loss" in h]


def test_sft_lowers_the_loss_of_a_text_model(tmp_path: Path) -> None:
    model = build_tiny_checkpoint(tmp_path / "tiny", texts=texts(), hidden=32, layers=1)
    data = write_samples(tmp_path / "data")
    result = run_sft(recipe(model, data, tmp_path / "out"))
    curve = losses(result.log_history)
    assert result.steps == 12
    assert curve[-1] < 0.6 * curve[0], curve
    saved = tmp_path / "out"
    assert (saved / "model.safetensors").is_file()
    assert (saved / "curve.png").read_bytes().startswith(b"\x89PNG")
    logged = json.loads((saved / "log_history.json").read_text())
    assert losses(logged) == curve


def test_the_loss_is_on_the_assistant_turns_only(tmp_path: Path) -> None:
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template

    model = build_tiny_checkpoint(tmp_path / "tiny", texts=texts(), hidden=32, layers=1)
    data = sft_dataset(load_samples(write_samples(tmp_path / "data")), vlm=False)
    tokenizer = AutoTokenizer.from_pretrained(model)
    template = get_training_chat_template(tokenizer)
    assert template is not None  # TRL knows the Qwen template's training copy
    rendered = tokenizer.apply_chat_template(
        data[0]["messages"], chat_template=template, return_dict=True,
        return_assistant_tokens_mask=True,
    )  # fmt: skip
    trained = [
        t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"], strict=True) if m
    ]
    assert tokenizer.decode(trained).startswith('"decision": true')
    assert SYSTEM not in tokenizer.decode(trained)


def test_sft_of_a_vision_model_reads_the_pictures_and_keeps_the_tower_but_not_the_merger_frozen(
    tmp_path: Path,
) -> None:
    import torch
    from safetensors.torch import load_file

    picture = write_png(tmp_path / "p.png", size=56)
    model = build_tiny_checkpoint(tmp_path / "vl", texts=texts(), vision=True, hidden=64, layers=1)
    data = write_samples(tmp_path / "data", picture=picture)
    assert all(s.images for s in load_samples(data).samples)
    result = run_sft(recipe(model, data, tmp_path / "out", train={"max_steps": 8}))
    curve = losses(result.log_history)
    assert curve[-1] < curve[0], curve
    before, after = (
        load_file(model / "model.safetensors"),
        load_file(tmp_path / "out" / "model.safetensors"),
    )
    vision = [k for k in before if ".visual." in f".{k}" and ".merger." not in f".{k}"]
    merger = [k for k in before if ".visual." in f".{k}" and ".merger." in f".{k}"]
    text = [k for k in before if "layers.0.mlp" in k and ".visual." not in f".{k}"]
    assert vision and merger and text
    assert all(torch.equal(before[k], after[k]) for k in vision)
    # the merger trains with the language model, as in the reference (train_merger)
    assert any(not torch.equal(before[k], after[k]) for k in merger)
    assert any(not torch.equal(before[k], after[k]) for k in text)


def test_lora_trains_adapters_and_leaves_the_base_weights(tmp_path: Path) -> None:
    model = build_tiny_checkpoint(tmp_path / "tiny", texts=texts(), hidden=32, layers=1)
    data = write_samples(tmp_path / "data")
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    result = run_sft(recipe(model, data, tmp_path / "out", lora=lora, train={"max_steps": 4}))
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["r"] == 4
    assert (result.output_dir / "adapter_model.safetensors").is_file()
    assert not (result.output_dir / "model.safetensors").exists()


def test_pictures_for_a_text_model_are_refused_before_training(tmp_path: Path) -> None:
    picture = write_png(tmp_path / "p.png", size=28)
    model = build_tiny_checkpoint(tmp_path / "tiny", texts=texts(), hidden=32, layers=1)
    data = write_samples(tmp_path / "data", picture=picture)
    with pytest.raises(ValidationError, match="carry pictures but the model reads text only"):
        run_sft(recipe(model, data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
