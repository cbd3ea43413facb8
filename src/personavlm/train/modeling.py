"""Loading a checkpoint for training: model, processor, vision tower frozen, LoRA config.

    loaded = load_for_training(recipe.model)
    loaded.model, loaded.processor, loaded.is_vlm

A checkpoint whose config has a `vision_config` is a vision-language model (Qwen2-VL /
Qwen2.5-VL class): it is loaded with its processor, whose image resolution is bounded by
max_pixels (230400 in the paper's training). Anything else is a text causal LM with its
tokenizer. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from personavlm.errors import ConfigError
from personavlm.train.config import LoraSection, ModelSection
from personavlm.train.deps import require_trl

__all__ = ["LoadedModel", "freeze_vision", "load_for_training", "lora_config"]

# Module names of vision towers in transformers' VLM classes.
_VISION_NAMES = ("visual", "vision_tower", "vision_model")


@dataclass
class LoadedModel:
    model: Any
    processor: Any  # a ProcessorMixin for a VLM, else the tokenizer
    is_vlm: bool
    frozen: int = 0  # parameters frozen (the vision tower)


def load_for_training(section: ModelSection) -> LoadedModel:
    require_trl()
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoTokenizer,
    )

    try:
        config = AutoConfig.from_pretrained(section.path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a model config at {section.path!r}: {exc}") from exc
    dtype = getattr(torch, section.dtype)
    is_vlm = getattr(config, "vision_config", None) is not None
    if is_vlm:
        model = AutoModelForImageTextToText.from_pretrained(section.path, dtype=dtype)
        processor = _processor(section, config.model_type)
        _bound_pixels(processor, section)
    else:
        model = AutoModelForCausalLM.from_pretrained(section.path, dtype=dtype)
        processor = AutoTokenizer.from_pretrained(section.path)
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:
        raise ConfigError(
            f"the tokenizer at {section.path!r} has no pad token; set one in its tokenizer_config"
        )
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer at {section.path!r} has no chat template")
    loaded = LoadedModel(model, processor, is_vlm)
    if section.freeze_vision:
        loaded.frozen = freeze_vision(model, train_merger=section.train_merger)
    return loaded


def _processor(section: ModelSection, model_type: str) -> Any:
    from transformers import AutoProcessor

    qwen = model_type in ("qwen2_vl", "qwen2_5_vl")
    try:
        processor = AutoProcessor.from_pretrained(section.path)  # type: ignore[no-untyped-call]
    except ImportError as exc:
        # Qwen's processor bundles a video processor that needs torchvision (there may be
        # no build of it for the machine); training reads no video: the same without it.
        if not qwen:
            raise ConfigError(f"cannot load the processor of {section.path!r}: {exc}") from exc
        return _image_only_processor(section)
    if getattr(processor, "image_processor", None) is None:
        if not qwen:
            raise ConfigError(f"{section.path!r} has no image processor for its vision model")
        return _image_only_processor(section)  # a checkpoint saved with that processor
    return processor


def _image_only_processor(section: ModelSection) -> Any:
    from transformers import AutoTokenizer
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
        """Qwen2(.5)-VL's processor with the Pillow image processor and no video."""

        def __init__(self, image_processor: Any, tokenizer: Any, chat_template: Any) -> None:
            ProcessorMixin.__init__(  # type: ignore[no-untyped-call]
                self, image_processor, tokenizer, chat_template=chat_template
            )
            self.video_processor = None
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    tokenizer = AutoTokenizer.from_pretrained(section.path)
    images = Qwen2VLImageProcessorPil(
        size={"shortest_edge": section.min_pixels, "longest_edge": section.max_pixels}
    )
    return ImageOnlyQwenProcessor(images, tokenizer, tokenizer.chat_template)


def _bound_pixels(processor: Any, section: ModelSection) -> None:
    # transformers 5 keeps the bounds in `size`; older versions in min/max_pixels.
    image_processor = processor.image_processor
    size = getattr(image_processor, "size", None)
    if isinstance(size, dict):
        size["shortest_edge"] = section.min_pixels
        size["longest_edge"] = section.max_pixels
    for name, value in (("min_pixels", section.min_pixels), ("max_pixels", section.max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)


def freeze_vision(model: Any, *, train_merger: bool = True) -> int:
    """Freezes every parameter under a vision tower (its merger too unless `train_merger`);
    returns how many were frozen."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if train_merger and ".merger." in f".{name}":
            continue
        if any(f".{part}." in f".{name}" for part in _VISION_NAMES):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def lora_config(section: LoraSection) -> Any:
    from peft import LoraConfig

    targets: Any = section.target_modules
    if isinstance(targets, tuple):
        targets = list(targets)
    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=targets,
        exclude_modules=section.exclude_modules,
        task_type="CAUSAL_LM",
    )
