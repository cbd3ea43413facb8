"""Chat models, chosen by a spec string: `openai:<model>@<base_url>` or `hf:<local path>`.

`openai:` reaches any OpenAI-compatible server (vLLM, SGLang, Ollama, the llama.cpp server,
OpenAI). `hf:` runs a local transformers checkpoint in-process: Qwen2-VL / Qwen2.5-VL with
images in place, or any causal LM for text (`models/hf.py`; needs the `local` extra, imported
only when such a model is built, so importing this package never loads torch). The library
reads no environment: the API key and other options are passed in by the caller (the CLI).
"""

from __future__ import annotations

from typing import Any

from personavlm.errors import ConfigError
from personavlm.models.base import (
    IMAGE_MIMES,
    ChatModel,
    ImagePart,
    Message,
    Part,
    Reply,
    Role,
    TextPart,
    Usage,
)
from personavlm.models.hf import HF_OPTIONS, HFChatModel
from personavlm.models.openai import OpenAIChatModel

__all__ = [
    "IMAGE_MIMES",
    "MODEL_SCHEMES",
    "ChatModel",
    "HFChatModel",
    "ImagePart",
    "Message",
    "OpenAIChatModel",
    "Part",
    "Reply",
    "Role",
    "TextPart",
    "Usage",
    "load",
]

MODEL_SCHEMES = ("openai", "hf")

_OPENAI_OPTIONS = frozenset({"api_key", "timeout_s", "max_retries", "backoff_s", "client", "sleep"})


def load(spec: str, **options: Any) -> ChatModel:
    """The model a spec names; `options` go to the backend.

    `openai:<model>@<base_url>` splits on the last `@`, so model names may hold `:` and `/`
    (`openai:Qwen/Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1`); options api_key,
    timeout_s, max_retries, ... `hf:<local path>` takes everything after the first `:` as a
    checkpoint directory (`hf:/models/PersonaVLM`, `hf:~/ckpt`); options device, dtype,
    max_pixels, min_pixels.
    """
    scheme, colon, rest = spec.partition(":")
    if scheme == "openai" and colon:
        return _load_openai(spec, rest, options)
    if scheme == "hf" and colon:
        return _load_hf(spec, rest, options)
    raise ConfigError(
        f"unknown model spec {spec!r}; known backends: openai (openai:<model>@<base_url>, "
        "e.g. openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1), hf (hf:<local checkpoint "
        "directory>, e.g. hf:/models/Qwen2.5-VL-7B-Instruct)"
    )


def _load_openai(spec: str, rest: str, options: dict[str, Any]) -> OpenAIChatModel:
    model, at, base_url = rest.rpartition("@")
    if not at or not model or not base_url:
        raise ConfigError(
            f"model {spec!r} must read openai:<model>@<base_url>, "
            "e.g. openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1"
        )
    unknown = sorted(set(options) - _OPENAI_OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown option(s) for the openai backend: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_OPENAI_OPTIONS))}"
        )
    return OpenAIChatModel(model, base_url, **options)


def _load_hf(spec: str, path: str, options: dict[str, Any]) -> HFChatModel:
    if not path:
        raise ConfigError(
            f"model {spec!r} must read hf:<local checkpoint directory>, "
            "e.g. hf:/models/Qwen2.5-VL-7B-Instruct"
        )
    unknown = sorted(set(options) - HF_OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown option(s) for the hf backend: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(HF_OPTIONS))}"
        )
    return HFChatModel(path, **options)
