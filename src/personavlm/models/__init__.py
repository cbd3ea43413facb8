"""Chat models, chosen by a spec string: `openai:<model>@<base_url>`, `hf:<local path>` or
`local:<name>`.

`openai:` reaches any OpenAI-compatible server (vLLM, SGLang, Ollama, the llama.cpp server,
OpenAI). `hf:` runs a local transformers checkpoint in-process: Qwen2-VL / Qwen2.5-VL with
images in place, any causal LM for text, or a GGUF file (`models/hf.py`; needs the `local`
extra, imported only when such a model is built, so importing this package never loads
torch); a schema is enforced by constrained decoding (`models/grammar.py`). `local:` names a
model file a package ships (`models/bundled.py`: `local:smollm2`), run like `hf:`. The
library reads no environment: the API key and other options are passed in by the caller.

The two backends load on first use (PEP 562): code that only needs the message types
(`personavlm.models.base`, imported by the agent, the simulator and training) must not pay for
httpx and numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personavlm.errors import ConfigError, MissingDependencyError
from personavlm.lazy import lazy_getattr
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

if TYPE_CHECKING:
    from personavlm.models.hf import HFChatModel
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
    "preflight",
    "public_spec",
]

MODEL_SCHEMES = ("openai", "hf", "local")

# Where each lazily loaded name lives; it must match the TYPE_CHECKING block (test_project
# checks it).
_SOURCES = {"HFChatModel": "personavlm.models.hf", "OpenAIChatModel": "personavlm.models.openai"}

_OPENAI_OPTIONS = frozenset({"api_key", "timeout_s", "max_retries", "backoff_s", "client", "sleep"})


if not TYPE_CHECKING:
    # Hidden from type checkers: a module __getattr__ would make them accept any attribute
    # of this module (a typo included), typed `object`.
    __getattr__ = lazy_getattr(__name__, _SOURCES, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    if scheme == "local" and colon:
        return _load_local(rest, options)
    raise ConfigError(
        f"unknown model spec {spec!r}; known backends: openai (openai:<model>@<base_url>, "
        "e.g. openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1), hf (hf:<local checkpoint "
        "directory or .gguf file>, e.g. hf:/models/Qwen2.5-VL-7B-Instruct), local (a "
        "bundled model: local:smollm2)"
    )


def preflight(spec: str) -> None:
    """What `load(spec)` will need, checked cheaply before a service starts (loading nothing):
    the bundled model's package for `local:`, the local stack's packages for `hf:`/`local:`.
    ConfigError / MissingDependencyError say what to install."""
    scheme, _colon, rest = spec.partition(":")
    if scheme not in ("hf", "local"):
        return
    needed = ["torch", "transformers", "llguidance"]
    if scheme == "local":
        from personavlm.models.bundled import bundled_path

        bundled_path(rest)
        needed += ["gguf", "accelerate"]
    elif rest.lower().endswith(".gguf"):
        needed += ["gguf", "accelerate"]  # transformers reads GGUF only with both
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"the model {spec} needs {', '.join(missing)}, not installed; run: "
            "pip install 'personavlm[local]' -c constraints.txt"
        )


def public_spec(spec: str | None) -> str | None:
    """What a spec may show to anyone (a health check, the page): the backend and the
    model's name, never a filesystem path or a server address. `hf:/models/ckpt` becomes
    `hf:ckpt`, `openai:m@http://host/v1` becomes `openai:m`; `local:` specs are names."""
    if spec is None:
        return None
    scheme, _colon, rest = spec.partition(":")
    if scheme == "openai":
        # Up to the first @: a URL with user:password@ in it must not show either.
        return f"openai:{rest.partition('@')[0]}"
    if scheme == "hf":
        return f"hf:{Path(rest.rstrip('/')).name}"
    if scheme == "local":
        return spec
    return scheme


def _load_openai(spec: str, rest: str, options: dict[str, Any]) -> OpenAIChatModel:
    from personavlm.models.openai import OpenAIChatModel

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


def _load_local(name: str, options: dict[str, Any]) -> HFChatModel:
    from personavlm.models.bundled import BUNDLED, bundled_path

    path = bundled_path(name)  # ConfigError naming the pip command when it is missing
    cap = BUNDLED[name].max_tokens
    return _load_hf(
        f"local:{name}", str(path), options, spec_name=f"local:{name}", max_tokens_cap=cap
    )


def _load_hf(
    spec: str,
    path: str,
    options: dict[str, Any],
    *,
    spec_name: str | None = None,
    max_tokens_cap: int | None = None,
) -> HFChatModel:
    from personavlm.models.hf import HF_OPTIONS, HFChatModel

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
    return HFChatModel(path, spec=spec_name, max_tokens_cap=max_tokens_cap, **options)
