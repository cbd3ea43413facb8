"""Tiny random transformers checkpoints built on the spot (no weights can be downloaded).

- a byte-level BPE tokenizer trained here on a few hundred sentences, with Qwen's special
  tokens (`<|endoftext|>` first, so it is id 0 as the pad, like Qwen's tokenizer puts it
  first among its specials), saved with Qwen2.5-VL's chat template;
- `build_qwen_vl`: a Qwen2.5-VL with a 64-wide, 1-layer language model and a 1-block vision
  tower, Qwen's image geometry (patch 14, merge 2, temporal 2) and a generation_config like
  Qwen's (top_k=1, top_p=0.001, repetition_penalty 1.05);
- `build_text_lm`: a 1-layer Qwen2 causal LM whose final norm is zeroed, so every logit is 0
  and greedy decoding always picks token 0 (`<|endoftext|>`): whether it stops at once or
  runs to max_tokens is decided by the stop ids alone, which makes both finish reasons
  deterministic.

transformers and tokenizers are imported inside the builders, so collecting the tests does
not import torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# The special tokens and Qwen2.5-VL's chat template are the training smoke runs' too.
from personavlm.train.tiny import QWEN_VL_CHAT_TEMPLATE, SPECIAL_TOKENS

_TEXT = (
    "the a my user assistant remembers likes photo dog cat Bobby park walk morning evening "
    "system you are helpful look at this picture and tell me what is in it please coffee "
    "hike weekend friend sister birthday cake red blue green garden book reads writes"
)
_WORDS = tuple(_TEXT.split(" "))


def _sentences(count: int = 300) -> list[str]:
    # Deterministic, varied enough for BPE merges; no randomness so the vocabulary is stable.
    n = len(_WORDS)
    return [" ".join(_WORDS[(i * 7 + j * (i % 5 + 1)) % n] for j in range(9)) for i in range(count)]


def build_tokenizer(chat_template: str | None = QWEN_VL_CHAT_TEMPLATE) -> Any:
    """A PreTrainedTokenizerFast over a freshly trained byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_sentences(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def token_ids(tokenizer: Any) -> dict[str, int]:
    return {token: int(tokenizer.convert_tokens_to_ids(token)) for token in SPECIAL_TOKENS}


def build_qwen_vl(directory: Path) -> Path:
    """A random Qwen2.5-VL checkpoint in `directory` (weights, tokenizer, preprocessor)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer()
    ids = token_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(len(tokenizer), ids, mrope=True),
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=True,
        temperature=0.1,
        top_k=1,
        top_p=0.001,
        repetition_penalty=1.05,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return directory


def build_text_lm(directory: Path, *, stop_on_endoftext: bool) -> Path:
    """A 1-layer Qwen2 causal LM that always predicts token 0 (see the module docstring)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    ids = token_ids(tokenizer)
    config = Qwen2Config(**_text_config(len(tokenizer), ids, mrope=False))
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    stops = [ids["<|im_end|>"]] + ([ids["<|endoftext|>"]] if stop_on_endoftext else [])
    model.generation_config = GenerationConfig(
        eos_token_id=stops, pad_token_id=ids["<|endoftext|>"]
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def without_chat_template(source: Path, directory: Path) -> Path:
    """A copy of the checkpoint at `source` whose tokenizer has no chat template."""
    shutil.copytree(source, directory)
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    (directory / "chat_template.json").unlink(missing_ok=True)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    return directory


def _text_config(vocab_size: int, ids: dict[str, int], *, mrope: bool) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0}
    if mrope:
        rope["mrope_section"] = [2, 3, 3]  # sums to head_dim / 2 = 64 / 4 / 2
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": rope,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
