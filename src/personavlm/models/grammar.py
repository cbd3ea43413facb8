"""JSON-schema-constrained decoding for the in-process backend (`hf:`, `local:`).

At every step of `generate`, a transformers `LogitsProcessor` asks llguidance which tokens
may come next under the schema's grammar and sets every other logit to -inf, so the reply
is JSON the schema accepts by construction: the model cannot write prose, a fence, a missing
key, a trait of 7 or an op the schema does not list. When the grammar is complete, only a
stop token is allowed, so generation ends there.

Why llguidance (docs/benchmarks.md, "Constrained decoding"): no dependencies (xgrammar
pulls triton and apache-tvm-ffi), grammars built in about a millisecond from the schema
(outlines-core builds a token-level automaton over the whole vocabulary first), every JSON
Schema feature the agent's schemas use (integer minimum/maximum included), and a mask in
tens of microseconds per token on CPU.

Completion within `max_tokens` comes from the schema, not the grammar: the backend hands in
a copy bounded to the budget (schema_budget.py). Where that still runs out (a model writing
one character a token), the reply is incomplete JSON; `JsonConstraint.finish` turns that
into a ProtocolError (a ModelResponseError: the model's fault) saying so, never a silently
truncated reply.

llguidance is imported when the first constraint is built (the `local` extra carries it);
a missing one is a MissingDependencyError with the pip command.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from personavlm.errors import ConfigError, MissingDependencyError, ModelResponseError, ProtocolError

if TYPE_CHECKING:
    import llguidance
    import torch

__all__ = ["INSTALL_GRAMMAR", "JsonConstraint", "JsonGrammar"]

INSTALL_GRAMMAR = "pip install 'personavlm[local]' -c constraints.txt"


# One fixed layout, `{"key": value, "key": value}`: flexible whitespace would let a small
# model spend its tokens on newlines and indentation, even loop on them until max_tokens.
_LAYOUT = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


class JsonGrammar:
    """The constrained-decoding state shared by every call of one model: its tokenizer as
    llguidance reads it, and each schema's compiled grammar (checked once, then cached).

    `vocab_size` is the width of the model's logits (it may exceed the tokenizer's length:
    padded embedding rows are never allowed); `stop_ids` are the tokens that end a reply.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int]) -> None:
        llg = _llguidance()
        import llguidance.hf

        try:
            self._tokenizer = llguidance.hf.from_tokenizer(
                tokenizer, n_vocab=vocab_size, eos_token=sorted(stop_ids)
            )
        except ValueError as exc:  # a slow (Python) tokenizer has no Rust form to share
            raise ConfigError(
                f"constrained decoding needs a fast tokenizer (tokenizer.json): {exc}"
            ) from None
        self._llg = llg
        self._vocab_size = vocab_size
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()
        # Masks are computed on one thread of our own: llguidance's default shared pool
        # competes with torch's threads for the cores; on 2 CPUs that cost 8 ms per decoding
        # step of SmolLM2-135M when idle, and once 292 ms instead of 51 (docs/benchmarks.md).
        self._executor = llg.LLExecutor(num_threads=1)

    def constraint(self, schema: Mapping[str, Any]) -> JsonConstraint:
        """A fresh constraint for one generation (a matcher keeps per-reply state)."""
        grammar = self._grammar(schema)
        matcher = self._llg.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ConfigError(f"the JSON schema cannot be compiled: {matcher.get_error()}")
        return JsonConstraint(matcher, self._executor, self._vocab_size)

    def _grammar(self, schema: Mapping[str, Any]) -> str:
        # Not sorted: the grammar writes properties in the schema's order (think first).
        key = json.dumps(schema)
        with self._lock:
            cached = self._grammars.get(key)
        if cached is not None:
            return cached
        try:
            bounded = json.dumps(_bounded(schema))
            grammar = str(self._llg.LLMatcher.grammar_from_json_schema(bounded, overrides=_LAYOUT))
        except ValueError as exc:
            raise ConfigError(f"the JSON schema is not a JSON object: {exc}") from None
        failed, messages = self._llg.LLMatcher.validate_grammar_with_warnings(
            grammar, self._tokenizer
        )
        if failed:
            # A feature llguidance does not implement: a caller's bug, found before decoding.
            raise ConfigError(
                f"constrained decoding does not support this JSON schema: {messages[0]}"
            )
        with self._lock:
            self._grammars[key] = grammar
        return grammar


class JsonConstraint:
    """Masks the logits of one generation to the tokens the schema allows next.

    transformers calls `mask` once per step with every token so far; the token it picked at
    the previous step is the last of `input_ids`, so the matcher consumes that first.
    """

    def __init__(
        self, matcher: llguidance.LLMatcher, executor: llguidance.LLExecutor, vocab_size: int
    ) -> None:
        self._matcher = matcher
        self._executor = executor
        self._vocab_size = vocab_size
        # One bit per token in 32-bit words, as llguidance writes it.
        self._bitmask = np.zeros((1, (vocab_size + 31) // 32), dtype=np.int32)
        self._started = False

    def mask(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if self._started:
            self._matcher.consume_token(int(input_ids[0, -1]))
        self._started = True
        if self._matcher.is_error():
            # Cannot happen while every step was masked; kept loud rather than decoding on.
            raise ModelResponseError(
                f"constrained decoding lost its place: {self._matcher.get_error()}"
            )
        row_bytes = self._bitmask.shape[1] * 4
        self._executor.unsafe_compute_mask_ptr(
            [(self._matcher, 0)], self._bitmask.ctypes.data, row_bytes, 1
        )
        # Bit i of the little-endian words allows token i.
        allowed = np.unpackbits(self._bitmask.view(np.uint8)[0], bitorder="little")
        banned = torch.from_numpy(allowed[: scores.shape[-1]] == 0).to(scores.device)
        return scores.masked_fill(banned, float("-inf"))

    def processor(self) -> Any:
        """This constraint as a transformers LogitsProcessor (for `generate`)."""
        from transformers import LogitsProcessor

        constraint = self

        class _Constrained(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                return constraint.mask(input_ids, scores)

        return _Constrained()

    def finish(
        self, generated: list[int], stopped: bool, max_tokens: int, text: str, *, why: str = ""
    ) -> None:
        """After generation: ProtocolError when the reply was cut before the JSON was done.

        `generated` holds every token picked (the stop token included when `stopped`): the
        last one was never shown to `mask`, so it is consumed here before asking whether the
        grammar is complete. `why` says where max_tokens came from, when not the caller.
        """
        if generated and not stopped:
            self._matcher.consume_token(generated[-1])
        if stopped or self._matcher.is_accepting():
            return
        excerpt = " ".join(text.split())[:200]
        advice = why or "raise max_tokens"
        raise ProtocolError(
            f"the model's JSON reply was cut at max_tokens={max_tokens} before it was "
            f"complete (constrained decoding keeps it valid, not short); {advice}; "
            f"it said: {excerpt!r}",
            reply=text,
        )


# JSON's safe integers (what every JSON parser holds exactly, and far beyond any id or count
# the agent reads). llguidance refuses the full 64-bit range.
_INT_RANGE = {"minimum": -(2**53 - 1), "maximum": 2**53 - 1}


def _bounded(schema: Any) -> Any:
    """The schema with every integer given JSON's safe range where it has no bound of its own.

    Stricter than the schema only for numbers nothing downstream could hold; it matters for
    decoding: an unbounded integer lets a small model write digits until max_tokens (seen
    with SmolLM2-135M on the memory id of an update)."""
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: _bounded(value) for key, value in schema.items()}
    kinds = out.get("type")
    if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
        for key, bound in _INT_RANGE.items():
            out.setdefault(key, bound)
    return out


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise MissingDependencyError(
            "constrained decoding (a schema passed to an hf:/local: model) needs llguidance, "
            f"which is not installed; run: {INSTALL_GRAMMAR}"
        ) from None
    return llguidance
