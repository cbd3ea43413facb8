"""Tiny random checkpoints for smoke runs of the recipes (no weights are downloaded).

    build_tiny_checkpoint(Path("runs/tiny"), texts=sample_texts, vision=True)

A byte-level BPE tokenizer is trained on `texts` (so the protocol's tags and the prompts'
words become a few tokens each) with Qwen's special tokens and Qwen2.5-VL's chat template,
and a Qwen2 causal LM (or a Qwen2.5-VL with a one-block vision tower) with random weights
is saved beside it. Such a model learns the shape of the replies in a few hundred CPU steps,
which is what a smoke run of SFT then GRPO needs to show; it knows nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from personavlm.train.deps import require_trl

__all__ = ["QWEN_VL_CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tiny_checkpoint"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2.5-VL-Instruct's chat template (chat_template.json of the released checkpoints): TRL
# knows its assistant-only training copy, and it is prefix-preserving (multi-turn rollouts).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def _text_config(vocab: int, ids: dict[str, int], hidden: int, layers: int, mrope: bool) -> Any:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0}
    heads = 4
    if mrope:
        half = hidden // heads // 2
        rope["mrope_section"] = [half - 2 * (half // 3), half // 3, half // 3]
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_parameters": rope,
        "tie_word_embeddings": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def build_tiny_checkpoint(
    directory: Path,
    *,
    texts: Iterable[str],
    vision: bool = False,
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 2000,
    seed: int = 0,
) -> Path:
    """A random Qwen2 (or Qwen2.5-VL, `vision`) checkpoint in `directory`."""
    require_trl()
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tokenizer = _tokenizer(texts, vocab_size)
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    text = _text_config(len(tokenizer), ids, hidden, layers, mrope=vision)
    torch.manual_seed(seed)
    model: Any
    if vision:
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config={
                "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                "out_hidden_size": hidden, "patch_size": 14, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [0],
            },
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )  # fmt: skip
        model = Qwen2_5_VLForConditionalGeneration(config)
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**text))
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"]
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if vision:
        _write_processor(directory)
    return directory


def _write_processor(directory: Path) -> None:
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 3136,
        "max_pixels": 230400,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = "Qwen2_5_VLProcessor"
    config_path.write_text(json.dumps(config))
