"""A `ChatModel` that runs a local transformers checkpoint in-process (`hf:<local path>`).

Two kinds of checkpoint:
- Qwen2-VL / Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, PersonaVLM's base and the
  released weights): text and images. Each `ImagePart` becomes
  `<|vision_start|><|image_pad|>...<|vision_end|>` exactly where it stands in the message, as
  in training (the reference code prepends images at inference; we do not). The image is
  resized to at most `max_pixels` (230400 by default, PersonaVLM's training setting) and
  patchified by `qwen_vision` with Pillow and numpy; it takes `grid_t * grid_h * grid_w /
  merge_size**2` `<|image_pad|>` tokens.
- any other local causal LM (`AutoModelForCausalLM`): text only; an image sent to it is a
  ConfigError saying the model has no vision tower.

The prompt comes from the checkpoint's chat template (the tokenizer's, else
`chat_template.jinja` / `chat_template.json` in the directory). A checkpoint without one gets
`chatml_prompt`, which writes what Qwen2.5-VL's own template writes (ChatML, the default
system message "You are a helpful assistant." when none is given, the vision markers in place).

Generation: greedy when `temperature == 0`, otherwise plain sampling at that temperature
(top-p 1, no top-k, whatever the checkpoint's generation_config says: Qwen ships top_k=1,
which would make "sampling" greedy); the checkpoint's other settings (repetition_penalty...)
apply. It stops at the tokenizer's EOS, the checkpoint's EOS ids and `<|im_end|>`;
`finish_reason` is "stop" there and "length" at `max_tokens`. Usage counts the real token
ids: the whole prompt (image pads included) and every generated token (the stop token
included, as vLLM counts). One generation runs at a time per model (a lock): Qwen-VL keeps
per-call rope state on the module.

`schema` (structured output): constrained decoding (`models/grammar.py`, llguidance as a
transformers LogitsProcessor): at each step only the tokens the schema's grammar allows next
keep their logits, so the reply is schema-valid JSON by construction, whatever the model. A
reply cut at `max_tokens` before the JSON closed is a ProtocolError (a ModelResponseError)
saying so. The reply is then checked as before (`check_json_reply`: it parses, has the
schema's top-level type and every top-level `required` key). The prompt is not changed: the
caller's protocol already asks for JSON.

GGUF files: `hf:path/to/model.gguf` loads through transformers' GGUF support (the `gguf`
package; the weights are de-quantised to float32 on load: about 25 s for the bundled 135M
model on 2 cores, most of it transformers reading the file's metadata), with the tokenizer
and chat template the file carries. GGUF models are text
only. `local:<name>` (models/bundled.py) names a GGUF file a package ships, and may cap the
tokens of one reply (`max_tokens_cap`: max_tokens becomes the smaller of the two).

torch, transformers and Pillow are imported when a model is built, never on import; missing
ones raise MissingDependencyError with the pip command. Nothing is ever downloaded: every
load is `local_files_only`.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personavlm.errors import (
    ConfigError,
    MissingDependencyError,
    ModelResponseError,
    ProtocolError,
    ValidationError,
)
from personavlm.models import deadline
from personavlm.models.base import ImagePart, Message, Reply, TextPart, Usage
from personavlm.models.gguf_cache import cached_checkpoint, store_checkpoint
from personavlm.models.qwen_vision import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    FloatArray,
    VisionPreprocessing,
    decode_image,
    preprocess_image,
)
from personavlm.models.schema_budget import fit_to_budget

# Shares of max_tokens a constrained reply's schema is bounded to, one try each: the whole,
# then half for a reply the whole was not enough for (see HFChatModel._generate_json).
BUDGET_SHARES = (1.0, 0.5)

log = logging.getLogger("personavlm.models")

if TYPE_CHECKING:
    import torch

    from personavlm.models.grammar import JsonConstraint, JsonGrammar

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "HF_OPTIONS",
    "INSTALL_LOCAL",
    "VISION_TOKENS",
    "EncodedPrompt",
    "HFChatModel",
    "chatml_prompt",
    "check_json_reply",
]

INSTALL_LOCAL = "pip install 'personavlm[local]' -c constraints.txt"
# What `personavlm.models.load("hf:<path>", **options)` accepts.
HF_OPTIONS = frozenset({"device", "dtype", "max_pixels", "min_pixels", "gguf_cache"})
# Qwen2.5-VL's template adds this when the conversation has no system message.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD = (
    "<|vision_start|>",
    "<|image_pad|>",
    "<|vision_end|>",
    "<|video_pad|>",
)
# Reserved strings a user's text may not hold: the pad count is what places the pixels.
VISION_TOKENS = (VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD)
IM_END = "<|im_end|>"
_IMAGE_BLOCK = f"{VISION_START}{IMAGE_PAD}{VISION_END}"
# model_type -> transformers class name, for the vision-language families whose image
# preprocessing `qwen_vision` implements.
_VISION_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_FENCE = re.compile(r"\A```(?:json)?\s*\n(.*?)\n?```\Z", re.DOTALL)
_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    """The exact inputs `generate` gives the model for a conversation.

    `prompt` is the rendered chat with one `<|image_pad|>` per image (before expansion, so it
    stays readable); `input_ids` has each expanded to `image_token_counts[i]` pads.
    """

    prompt: str
    input_ids: tuple[int, ...]
    image_grid_thw: tuple[tuple[int, int, int], ...]
    image_token_counts: tuple[int, ...]
    pixel_values: FloatArray | None


class HFChatModel:
    """A local transformers checkpoint answering in-process (see the module docstring).

    `path` is a directory holding config.json, the weights and the tokenizer. `device` is a
    torch device ("cpu", "cuda", "cuda:1", "mps"); `dtype` one of auto (the checkpoint's),
    float32, bfloat16, float16. `max_pixels`/`min_pixels` bound an image's resized area.
    `gguf_cache`: a folder where a GGUF file's de-quantised checkpoint is kept after its
    first load, so later loads skip the conversion (models/gguf_cache.py); None: none kept.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        spec: str | None = None,
        max_tokens_cap: int | None = None,
        gguf_cache: str | Path | None = None,
    ) -> None:
        source = _checkpoint_source(path)
        cache = Path(gguf_cache) if gguf_cache is not None and source.gguf_file else None
        converted = cached_checkpoint(source.path, cache) if cache is not None else None
        self._path = source.path
        self._spec = spec or f"hf:{self._path}"
        # What replies name: the path for hf: (as before), the spec alone for a named model.
        self._reply_model = spec or str(self._path)
        # A bundled model's own limit on one reply (models/bundled.py says why).
        self._max_tokens_cap = max_tokens_cap
        loaded = source if converted is None else _Source(converted)
        _require_local_stack(gguf=loaded.gguf_file is not None)
        torch_device = _torch_device(device)
        torch_dtype = _torch_dtype(dtype)
        config = _load_config(loaded)
        vision_class = _vision_class(self._path, config)
        self._tokenizer = _load_tokenizer(loaded)
        self._model = _load_model(loaded, vision_class, torch_dtype, torch_device)
        if cache is not None and converted is None:
            _keep_conversion(source.path, cache, self._model, self._tokenizer)
        self._device = torch_device
        self._template = _chat_template(loaded, self._tokenizer)
        self._vision: VisionPreprocessing | None = None
        # -1 matches no token id: a text-only model has no image placeholder.
        self._image_token_id = -1
        if vision_class is not None:
            self._vision = VisionPreprocessing.from_checkpoint(
                self._path, config.vision_config, min_pixels=min_pixels, max_pixels=max_pixels
            )
            self._image_token_id = _check_vision_tokens(self._path, config, self._tokenizer)
        self._stop_ids = _stop_ids(self._tokenizer, self._model)
        self._pass_mm_types = _accepts(self._model.forward, "mm_token_type_ids")
        self._lock = threading.Lock()
        self._grammar: JsonGrammar | None = None  # built at the first call with a schema

    @property
    def name(self) -> str:
        """The spec that `personavlm.models.load` turns back into this model."""
        return self._spec

    @property
    def path(self) -> Path:
        return self._path

    @property
    def has_vision(self) -> bool:
        """Whether this checkpoint reads images (a Qwen-VL vision tower)."""
        return self._vision is not None

    @property
    def vision(self) -> VisionPreprocessing | None:
        """The image preprocessing settings, or None for a text-only model."""
        return self._vision

    def __repr__(self) -> str:
        return f"HFChatModel({str(self._path)!r}, device={str(self._device)!r})"

    def encode(self, messages: Sequence[Message]) -> EncodedPrompt:
        """The prompt, token ids and image patches `generate` would use for `messages`."""
        if not messages:
            raise ValidationError("messages is empty; pass at least one Message")
        images = [part for m in messages for part in m.parts if isinstance(part, ImagePart)]
        if images and self._vision is None:
            raise ConfigError(
                f"model {self.name} has no vision tower (its config.json has no "
                f"vision_config), so it cannot read the {len(images)} image(s) in these "
                "messages; use a vision-language checkpoint (Qwen2.5-VL) or drop the images"
            )
        if self._vision is not None:
            _refuse_vision_tokens(messages)
        prompt = self._render(messages)
        if self._vision is None or not images:
            ids = self._tokenize(prompt)
            return EncodedPrompt(prompt, ids, (), (), None)
        return self._encode_images(prompt, images, self._vision)

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply:
        """One completion; with `schema`, decoded under the schema's grammar and checked (see
        the module docstring): schema-valid JSON, or ProtocolError when cut at max_tokens."""
        _check_call(max_tokens, temperature)
        capped = self._max_tokens_cap is not None and self._max_tokens_cap < max_tokens
        if self._max_tokens_cap is not None:
            max_tokens = min(max_tokens, self._max_tokens_cap)
        started = time.perf_counter()
        encoded = self.encode(messages)
        if schema is not None:
            return self._generate_json(encoded, schema, max_tokens, temperature, capped, started)
        with self._lock:
            generated = self._run(encoded, max_tokens, temperature, None)
        stopped = bool(generated) and generated[-1] in self._stop_ids
        content = generated[:-1] if stopped else generated
        return Reply(
            text=str(self._tokenizer.decode(content, skip_special_tokens=True)),
            usage=Usage(len(encoded.input_ids), len(generated)),
            model=self._reply_model,
            latency_s=time.perf_counter() - started,
            finish_reason="stop" if stopped or len(generated) < max_tokens else "length",
        )

    def _generate_json(
        self,
        encoded: EncodedPrompt,
        schema: Mapping[str, Any],
        max_tokens: int,
        temperature: float,
        capped: bool,
        started: float,
    ) -> Reply:
        """A constrained reply, its schema bounded to close within max_tokens
        (schema_budget.py). A reply still cut there (a model looping on one- or two-character
        tokens, "00:00:00:...") is written once more under bounds for half the budget; the
        second cut is the model's ProtocolError. Usage counts the tokens of both."""
        spent = 0
        for share in BUDGET_SHARES:
            budget = deadline.current()
            if budget is not None:  # a second try only while the request has time left
                budget.check()
            with self._lock:
                fitted = fit_to_budget(schema, max(1, int(max_tokens * share)))
                constraint = self._json_grammar().constraint(fitted)
                generated = self._run(encoded, max_tokens, temperature, constraint)
            spent += len(generated)
            stopped = bool(generated) and generated[-1] in self._stop_ids
            content = generated[:-1] if stopped else generated
            text = str(self._tokenizer.decode(content, skip_special_tokens=True))
            try:
                constraint.finish(generated, stopped, max_tokens, text, why=_cap_note(self, capped))
                break
            except ProtocolError:  # cut before the JSON closed
                if share == BUDGET_SHARES[-1]:
                    raise
        finish = "stop" if stopped or len(generated) < max_tokens else "length"
        return Reply(
            text=check_json_reply(text, schema, finish_reason=finish, max_tokens=max_tokens),
            usage=Usage(len(encoded.input_ids), spent),
            model=self._reply_model,
            latency_s=time.perf_counter() - started,
            finish_reason=finish,
        )

    def _json_grammar(self) -> JsonGrammar:
        # Built once, under the generation lock: llguidance reads the whole vocabulary.
        if self._grammar is None:
            from personavlm.models.grammar import JsonGrammar

            self._grammar = JsonGrammar(self._tokenizer, _logits_width(self._model), self._stop_ids)
        return self._grammar

    # -- prompt ------------------------------------------------------------------------------

    def _render(self, messages: Sequence[Message]) -> str:
        if self._template is None:
            return chatml_prompt(messages)
        conversation = [_template_message(m) for m in messages]
        try:
            rendered = self._tokenizer.apply_chat_template(
                conversation,
                chat_template=self._template,
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as exc:  # jinja2 errors, raise_exception() in templates
            raise ConfigError(
                f"the chat template of {self._path} failed on these messages "
                f"({type(exc).__name__}: {exc}); fix the template or the messages"
            ) from None
        if not isinstance(rendered, str):
            raise ConfigError(f"the chat template of {self._path} did not render to text")
        return rendered

    def _tokenize(self, text: str) -> tuple[int, ...]:
        # Templates write their own special tokens (BOS included where a model wants one).
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return tuple(int(i) for i in ids)

    def _encode_images(
        self, prompt: str, images: Sequence[ImagePart], vision: VisionPreprocessing
    ) -> EncodedPrompt:
        pieces = prompt.split(IMAGE_PAD)
        if len(pieces) - 1 != len(images):
            raise ConfigError(
                f"the chat template of {self._path} wrote {len(pieces) - 1} {IMAGE_PAD} "
                f"for {len(images)} image(s); its template must emit "
                f"{_IMAGE_BLOCK} for each content item of type 'image'"
            )
        processed = [preprocess_image(decode_image(image.data), vision) for image in images]
        counts = tuple(vision.tokens_for(p.grid_thw) for p in processed)
        expanded = pieces[0] + "".join(
            IMAGE_PAD * count + piece for count, piece in zip(counts, pieces[1:], strict=True)
        )
        ids = self._tokenize(expanded)
        found = sum(1 for i in ids if i == self._image_token_id)
        if found != sum(counts):
            raise ConfigError(
                f"the tokenizer of {self._path} does not read {IMAGE_PAD} as one token "
                f"({found} image tokens for {sum(counts)} expected); it must list it as a "
                "special token"
            )
        return EncodedPrompt(
            prompt=prompt,
            input_ids=ids,
            image_grid_thw=tuple(p.grid_thw for p in processed),
            image_token_counts=counts,
            pixel_values=np.concatenate([p.pixel_values for p in processed], axis=0),
        )

    # -- generation --------------------------------------------------------------------------

    def _run(
        self,
        encoded: EncodedPrompt,
        max_tokens: int,
        temperature: float,
        constraint: JsonConstraint | None = None,
    ) -> list[int]:
        import torch

        inputs = self._model_inputs(encoded)
        prompt_length = len(encoded.input_ids)
        budget = deadline.current()
        extra: dict[str, Any] = {}
        if budget is not None:
            budget.check()
            extra["stopping_criteria"] = _budget_stop(budget)
        if constraint is not None:
            # transformers runs the checkpoint's own processors (repetition penalty...) first
            # and these last, so the mask is the final word on which tokens may follow.
            extra["logits_processor"] = _processors(constraint)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs,
                **extra,
                **_sampling(max_tokens, temperature),
                eos_token_id=sorted(self._stop_ids),
                pad_token_id=_pad_id(self._tokenizer, self._stop_ids),
            )
        if budget is not None:
            budget.check()  # generation stopped early because the budget ran out
        return [int(i) for i in output[0, prompt_length:].tolist()]

    def _model_inputs(self, encoded: EncodedPrompt) -> dict[str, torch.Tensor]:
        import torch

        ids = torch.tensor([encoded.input_ids], dtype=torch.long, device=self._device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if encoded.pixel_values is None:
            return inputs
        inputs["pixel_values"] = torch.from_numpy(encoded.pixel_values).to(
            device=self._device, dtype=self._model.dtype
        )
        inputs["image_grid_thw"] = torch.tensor(
            encoded.image_grid_thw, dtype=torch.long, device=self._device
        )
        if self._pass_mm_types:
            # transformers >= 5 places the 3-D rope positions by these types (1 = image);
            # older versions find the images from the vision-start tokens themselves.
            inputs["mm_token_type_ids"] = torch.eq(ids, self._image_token_id).to(torch.int)
        return inputs


def chatml_prompt(messages: Sequence[Message]) -> str:
    """The prompt Qwen2.5-VL's chat template writes, for checkpoints that ship none.

    ChatML turns (`<|im_start|>role\\n...<|im_end|>\\n`), the default system message when
    the conversation does not open with one, each image as one vision block in place, and
    the open assistant turn the model continues.
    """
    out: list[str] = []
    if not messages or messages[0].role != "system":
        out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n")
    for message in messages:
        out.append(f"<|im_start|>{message.role}\n")
        for part in message.parts:
            out.append(part.text if isinstance(part, TextPart) else _IMAGE_BLOCK)
        out.append(f"{IM_END}\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def check_json_reply(
    text: str,
    schema: Mapping[str, Any],
    *,
    finish_reason: str | None = None,
    max_tokens: int | None = None,
) -> str:
    """`text` as the JSON `schema` asks for, or ModelResponseError saying what is wrong.

    A single surrounding ```json fence is removed (and the returned text is the JSON alone);
    the checks are: it parses, its top-level type matches an "object"/"array" schema, and
    every top-level `required` key is present. Deeper validation is the caller's.
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    cut = (
        f" (the reply was cut at max_tokens={max_tokens}; raise max_tokens)"
        if finish_reason == "length"
        else ""
    )
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ModelResponseError(
            f"the model's reply is not valid JSON ({exc}){cut}; it said: {_excerpt(text)!r}"
        ) from None
    expected = schema.get("type")
    kinds = {"object": dict, "array": list}
    if isinstance(expected, str) and expected in kinds and not isinstance(value, kinds[expected]):
        raise ModelResponseError(
            f"the model's reply is JSON of type {type(value).__name__}, but the schema asks "
            f"for an {expected}; it said: {_excerpt(text)!r}"
        )
    required = schema.get("required")
    if isinstance(value, dict) and isinstance(required, list | tuple):
        missing = [str(key) for key in required if key not in value]
        if missing:
            raise ModelResponseError(
                f"the model's JSON reply lacks the required key(s) {', '.join(missing)}"
                f"{cut}; it said: {_excerpt(text)!r}"
            )
    return body


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "..."


def _template_message(message: Message) -> dict[str, Any]:
    # Text-only messages go as a plain string: every chat template accepts that, while many
    # text-only ones (Llama, Mistral) do not understand content lists.
    if not any(isinstance(p, ImagePart) for p in message.parts):
        text = "".join(p.text for p in message.parts if isinstance(p, TextPart))
        return {"role": message.role, "content": text}
    content = [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
        for p in message.parts
    ]
    return {"role": message.role, "content": content}


def _refuse_vision_tokens(messages: Sequence[Message]) -> None:
    for message in messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                held = [token for token in VISION_TOKENS if token in part.text]
                if held:
                    raise ValidationError(
                        f"a {message.role} message's text holds the reserved vision "
                        f"token(s) {', '.join(held)}; images go in as ImagePart, and that "
                        "text must be removed or escaped"
                    )


def _budget_stop(budget: deadline.Budget) -> Any:
    """A stopping criterion that ends generation (after the current token) once the
    request's budget is spent or the request is cancelled."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _OutOfBudget(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            spent = budget.cancelled.is_set() or budget.remaining() <= 0
            return torch.full((input_ids.shape[0],), spent, device=input_ids.device)

    return StoppingCriteriaList([_OutOfBudget()])


def _processors(constraint: JsonConstraint) -> Any:
    from transformers import LogitsProcessorList

    return LogitsProcessorList([constraint.processor()])


def _logits_width(model: Any) -> int:
    """How many logits the model writes per step (its vocabulary, padding rows included)."""
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    config = model.config
    text = getattr(config, "text_config", None) or config
    return int(text.vocab_size)


def _sampling(max_tokens: int, temperature: float) -> dict[str, Any]:
    if temperature == 0:
        # Neutral values rather than None: None would be refilled from the checkpoint's
        # generation_config and trip transformers' "unused sampling flag" warnings.
        return {
            "max_new_tokens": max_tokens,
            "do_sample": False,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 50,
        }
    return {
        "max_new_tokens": max_tokens,
        "do_sample": True,
        "temperature": temperature,
        "top_p": 1.0,
        "top_k": 0,  # 0 disables top-k
    }


def _check_call(max_tokens: int, temperature: float) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValidationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not 0.0 <= temperature <= 2.0:
        raise ValidationError(f"temperature must be between 0 and 2, got {temperature!r}")


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a checkpoint's files are: a directory, or one GGUF file (in `path.parent`)."""

    path: Path  # the directory, or the .gguf file
    gguf_file: str | None = None

    @property
    def directory(self) -> str:
        return str(self.path.parent if self.gguf_file is not None else self.path)

    @property
    def options(self) -> dict[str, Any]:
        """What every from_pretrained call takes besides the directory: never a download,
        and the GGUF file's name when there is one."""
        options: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file is not None:
            options["gguf_file"] = self.gguf_file
        return options


def _keep_conversion(gguf: Path, cache: Path, model: Any, tokenizer: Any) -> None:
    # The model is loaded: a cache that cannot be written costs the next start its time,
    # nothing else, so it is a warning here, not a failure of this load.
    try:
        kept = store_checkpoint(gguf, cache, model, tokenizer)
    except OSError as exc:
        log.warning(
            "could not keep the converted %s in %s (%s); the next load converts it again",
            gguf.name,
            cache,
            exc,
        )
    else:
        log.info("kept the converted %s in %s for later loads", gguf.name, kept)


def _cap_note(model: HFChatModel, capped: bool) -> str:
    """Where max_tokens came from, for a cut reply's error, when not from the caller."""
    return f"the cap of {model.name}, which repeats itself rather than stop" if capped else ""


def _checkpoint_source(path: str | Path) -> _Source:
    if not str(path):
        raise ConfigError("hf: needs a checkpoint directory, e.g. hf:/models/Qwen2.5-VL-7B")
    location = Path(path).expanduser()
    if not location.exists():
        raise ConfigError(
            f"checkpoint {location} does not exist; hf: takes a local directory holding "
            "config.json, the weights and the tokenizer, or a .gguf file (nothing is "
            "downloaded)"
        )
    if location.is_file() and location.suffix.lower() == ".gguf":
        resolved = location.resolve()
        return _Source(resolved, resolved.name)
    if not location.is_dir() or not (location / "config.json").is_file():
        raise ConfigError(
            f"{location} is not a transformers checkpoint directory: it has no config.json; "
            "point hf: at the folder save_pretrained() wrote (or a downloaded model "
            "snapshot), or at a .gguf file"
        )
    return _Source(location.resolve())


def _require_local_stack(*, gguf: bool = False) -> None:
    missing = []
    modules = ("torch", "transformers", "PIL", *(("gguf", "accelerate") if gguf else ()))
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append("Pillow" if module == "PIL" else module)
    if missing:
        raise MissingDependencyError(
            f"the hf: backend needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; run: {INSTALL_LOCAL}"
        )


def _torch_device(device: str) -> torch.device:
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device ({exc}); use cpu, cuda, cuda:<n> or mps"
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for CUDA, but torch sees no GPU; use cpu")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for MPS, which is not available; use cpu")
    return chosen


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of: {', '.join(_DTYPES)}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def _load_config(source: _Source) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.directory, **source.options)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(
            f"could not read the model config of {source.path}: {exc}; it must be a "
            "config.json (or a GGUF file of an architecture) this transformers version "
            "understands"
        ) from None


def _vision_class(path: Path, config: Any) -> str | None:
    """The class of a supported vision-language model, None for a text-only one."""
    if getattr(config, "vision_config", None) is None:
        return None
    model_type = getattr(config, "model_type", None)
    if model_type not in _VISION_CLASSES:
        raise ConfigError(
            f"{path} is a vision-language model of type {model_type!r}, whose image "
            f"preprocessing hf: does not implement (it supports {', '.join(_VISION_CLASSES)}); "
            "serve it with vLLM or SGLang and use openai:<model>@<base_url>"
        )
    return _VISION_CLASSES[model_type]


def _load_tokenizer(source: _Source) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.directory, **source.options)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(
            f"could not load the tokenizer of {source.path}: {exc}; the directory must hold "
            "the tokenizer files (tokenizer.json, tokenizer_config.json), or the GGUF file "
            "its tokenizer"
        ) from None


def _load_model(source: _Source, vision_class: str | None, dtype: Any, device: torch.device) -> Any:
    import transformers

    cls: Any = (
        getattr(transformers, vision_class)
        if vision_class is not None
        else transformers.AutoModelForCausalLM
    )
    # transformers renamed torch_dtype to dtype in 4.56.
    dtype_key = "dtype" if _transformers_at_least(4, 56) else "torch_dtype"
    try:
        model: Any = cls.from_pretrained(source.directory, **source.options, **{dtype_key: dtype})
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(
            f"could not load the weights of {source.path} as {getattr(cls, '__name__', cls)}: {exc}"
        ) from None
    return model.to(device).eval()


def _transformers_at_least(major: int, minor: int) -> bool:
    import transformers

    parts = re.findall(r"\d+", transformers.__version__)[:2]
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def _chat_template(source: _Source, tokenizer: Any) -> str | None:
    """The checkpoint's chat template: the tokenizer's (a GGUF file's included), else the
    processor's files beside the weights (a GGUF file's folder is not its checkpoint)."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own:
        return own
    if source.gguf_file is not None:
        return None
    path = source.path
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    as_json = path / "chat_template.json"
    if as_json.is_file():
        try:
            template = json.loads(as_json.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ConfigError(f"{as_json} is not a JSON object with chat_template: {exc}") from None
        if isinstance(template, str) and template:
            return template
    return None


def _check_vision_tokens(path: Path, config: Any, tokenizer: Any) -> int:
    """The image pad id, after checking tokenizer and model agree on the vision tokens."""
    expected = {
        IMAGE_PAD: getattr(config, "image_token_id", None),
        VISION_START: getattr(config, "vision_start_token_id", None),
        VISION_END: getattr(config, "vision_end_token_id", None),
    }
    for token, config_id in expected.items():
        token_id = tokenizer.convert_tokens_to_ids(token)
        if config_id is None or token_id != config_id:
            raise ConfigError(
                f"checkpoint {path}: the tokenizer maps {token} to {token_id!r} but the "
                f"model config expects {config_id!r}; tokenizer and weights do not match"
            )
    return int(expected[IMAGE_PAD])  # type: ignore[arg-type]  # checked not None above


def _stop_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(i) for i in configured)
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    # ChatML closes every turn with <|im_end|>; stop there even if the checkpoint forgot it.
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    if not ids:
        raise ConfigError(
            "the checkpoint names no end-of-sequence token (tokenizer eos_token, "
            "generation_config eos_token_id) and has no <|im_end|>; generation could not stop"
        )
    return frozenset(ids)


def _pad_id(tokenizer: Any, stop_ids: frozenset[int]) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if isinstance(pad, int) else min(stop_ids)


def _accepts(function: Any, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
