"""The training recipes run end to end on a tiny model over a simulator world (CPU proof).

    .venv/bin/python bench/train_tiny.py --out bench/results/train-tiny

What it does, in order (everything under --out; earlier outputs there are replaced):

1. `data/`: training data from 6 simulated users (32k histories, seed 1) recorded through
   the real agent with the oracle teacher (`personavlm.train.world_samples`), embedded with
   the hashing embedder (no model download): SFT samples, RL prompts and the memory store
   the GRPO rollouts search.
2. `tiny/`: a tiny random Qwen2 text model (hidden 128, 2 layers, a 3000-token BPE trained
   on the samples' text; `personavlm.train.tiny`). It reads text only, so the SFT data is
   `sft-data/`, a copy of the samples without the ones carrying pictures (how many were
   left out is reported).
3. `sft/`: SFT (`personavlm.train.sft.run_sft`, the same code as `personavlm train sft`)
   for a few hundred CPU steps at a high learning rate, so that the model learns the reply
   formats (`<think>..</think><answer>..</answer>`, `<retrieve>`, memory tags). Batch 4,
   lr 3e-3 with a 10-step warm-up and cosine decay.
4. `grpo/`: GRPO (`personavlm.train.grpo.run_grpo`, as `personavlm train grpo`) from the
   SFT model: group 6, multi-turn rollouts with real retrieval against `data/memory.db`,
   the paper's reward r = f_acc * f_cons + 0.5 * f_format, sampling at temperature 0.7
   (paper: 1.0; the tiny model at 1.0 almost never writes a parseable step).
   THE JUDGE IS A SCRIPTED STAND-IN: no LLM judge can run on this machine, so an
   OpenAI-compatible server on 127.0.0.1 (`personavlm.testing.ScriptedOpenAIServer`)
   answers the judge prompts with deterministic rules, reached through the real
   `OpenAIJudge` + `OpenAIChatModel` client path. Consistency: 8 if the judged answer's
   text appears in the reasoning, else 3. Accuracy (open questions): 10 if the reference
   text appears in the answer, else 0. A choice answer's accuracy is its letter (no judge).
5. `report.json` (the numbers) and `curves.png` (SFT loss, GRPO reward, GRPO format rate,
   GRPO retrievals per rollout, per step).

It shows that the recipes, data, rollouts, reward and trainers work together and that the
model's behaviour moves; the tiny model knows nothing, and its scores mean nothing about
PersonaVLM's quality. Takes about 8 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Any

SFT_STEPS = 450
SFT_BATCH = 4
SFT_LR = 3e-3  # cosine to 0 after a 10-step warm-up
SFT_MAX_LENGTH = 3072
GRPO_STEPS = 20
GRPO_LR = 1e-4
GRPO_MAX_COMPLETION = 256
GRPO_TURN_TOKENS = 96
GRPO_TEMPERATURE = 0.7  # paper: 1.0; a tiny model at 1.0 almost never writes a clean step
CPU = {"use_cpu": True, "bf16": False, "activation_checkpointing": False, "report_to": []}
EDGE = 5  # "start" / "end" numbers are means over the first / last EDGE logged steps


def _section(text: str, head: str, nxt: str) -> str:
    match = re.search(re.escape(head) + r"\n(.*?)\n\n" + re.escape(nxt), text, re.S)
    return match.group(1).strip() if match else ""


def scripted_judge(request: dict[str, Any]) -> str:
    """The stand-in judge's deterministic score for one judge request."""
    content = request["messages"][-1]["content"]
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    answer = _section(content, "Assistant's answer:", "Score how well")
    if "Assistant's reasoning:" in content:  # consistency
        reasoning = _section(content, "Assistant's reasoning:", "Assistant's answer:")
        return "8" if answer and answer.lower() in reasoning.lower() else "3"
    reference = _section(content, "Reference answer:", "Assistant's answer:")
    return "10" if reference and reference.lower() in answer.lower() else "0"


def _edge(values: list[float], last: bool) -> float | None:
    part = values[-EDGE:] if last else values[:EDGE]
    return round(sum(part) / len(part), 4) if part else None


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _curves(sft_log: list[dict[str, Any]], grpo_log: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from personavlm.train.curves import series

    panels = [
        ("SFT loss", sft_log, "loss"),
        ("GRPO reward (scripted judge)", grpo_log, "reward"),
        ("GRPO format rate", grpo_log, "reward/format_rate"),
        ("GRPO retrievals per rollout", grpo_log, "rollout/retrievals"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    for axis, (title, log, key) in zip(axes, panels, strict=True):
        steps, values = series(log, key)
        axis.plot(steps, values, marker="o" if len(steps) < 40 else None, linewidth=1.5)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle("Tiny Qwen2 on a simulator world: SFT then GRPO (CPU)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_sft_data(data: Path, out: Path) -> tuple[int, int]:
    """A copy of `data`'s samples without those carrying pictures: (kept, left out)."""
    from personavlm.train.samples import Sample, SampleWriter, load_samples

    dataset = load_samples(data)
    writer = SampleWriter(out)
    left_out = 0
    for sample in dataset.samples:
        if sample.images:
            left_out += 1
            continue
        writer.add(Sample(sample.id, sample.kind, sample.turns, (), sample.source))
    writer.finish({"source": str(data), "left_out_with_pictures": left_out})
    return len(writer.samples), left_out


def sft_stage(out: Path, *, steps: int, lr: float) -> tuple[Any, float]:
    """SFT of `out/tiny` on `out/sft-data` into `out/sft`: (result, seconds)."""
    from personavlm.train.config import parse_recipe
    from personavlm.train.sft import run_sft

    recipe = parse_recipe(
        {
            "model": {"path": str(out / "tiny"), "dtype": "float32"},
            "data": {"path": str(out / "sft-data")},
            "train": {
                **CPU,
                "output_dir": str(out / "sft"),
                "max_steps": steps,
                "per_device_train_batch_size": SFT_BATCH,
                "gradient_accumulation_steps": 1,
                "learning_rate": lr,
                "lr_scheduler_type": "cosine",
                "warmup_steps": 10,
                "max_length": SFT_MAX_LENGTH,
                "logging_steps": 5,
                "save_strategy": "no",
                "seed": 0,
            },
        },
        kind="sft",
    )
    started = time.perf_counter()
    return run_sft(recipe), time.perf_counter() - started


def grpo_stage(out: Path, *, steps: int, lr: float) -> tuple[Any, dict[str, Any], float]:
    """GRPO from `out/sft` over `out/data`, judged by the scripted stand-in on loopback."""
    from personavlm.models.openai import OpenAIChatModel
    from personavlm.testing import ScriptedOpenAIServer
    from personavlm.train.config import parse_recipe
    from personavlm.train.grpo import run_grpo
    from personavlm.train.reward import OpenAIJudge

    recipe = parse_recipe(
        {
            "model": {"path": str(out / "sft"), "dtype": "float32"},
            "data": {"path": str(out / "data")},
            "judge": {"model": "openai:judge@http://127.0.0.1:1/v1", "max_workers": 4},
            "rollout": {"max_retrievals": 3, "max_turn_tokens": GRPO_TURN_TOKENS},
            "train": {
                **CPU,
                "output_dir": str(out / "grpo"),
                "max_steps": steps,
                "num_generations": 6,
                "per_device_train_batch_size": 6,
                "gradient_accumulation_steps": 1,
                "learning_rate": lr,
                "lr_scheduler_type": "constant",
                "temperature": GRPO_TEMPERATURE,
                "max_completion_length": GRPO_MAX_COMPLETION,
                "logging_steps": 1,
                "save_strategy": "no",
                "seed": 0,
            },
        },
        kind="grpo",
    )
    started = time.perf_counter()
    with ScriptedOpenAIServer(scripted_judge, models=("judge",)) as server:
        judge = OpenAIJudge(OpenAIChatModel("judge", server.base_url, max_retries=0))
        result = run_grpo(recipe, judge)
        stats = judge.stats
        info = {
            "judge_calls": stats.calls,
            "judge_requests": len(server.requests),
            "judge_fallbacks": stats.fallbacks,
            "judge_handler_errors": [repr(e) for e in server.handler_errors],
        }
    return result, info, time.perf_counter() - started


def make_report(
    args: argparse.Namespace,
    out: Path,
    manifest: dict[str, Any],
    rl_manifest: dict[str, Any],
    sft_data: tuple[int, int],
    sft_run: tuple[Any, float],
    grpo_run: tuple[Any, float],
    judge_info: dict[str, Any],
    *,
    data_s: float,
    total_s: float,
) -> dict[str, Any]:
    """report.json's content: the data, the model, and each stage's numbers."""
    from personavlm.train.curves import series

    kept, left_out = sft_data
    (sft, sft_s), (grpo, grpo_s) = sft_run, grpo_run

    losses = series(sft.log_history, "loss")[1]
    reward = series(grpo.log_history, "reward")[1]
    fmt = series(grpo.log_history, "reward/format_rate")[1]
    retrievals = series(grpo.log_history, "rollout/retrievals")[1]
    answered = series(grpo.log_history, "reward/answered_rate")[1]
    return {
        "command": "python bench/train_tiny.py --out " + str(out),
        "judge": "SCRIPTED STAND-IN on 127.0.0.1 (no LLM judge runs here): consistency 8 if "
        "the answer text appears in the reasoning else 3; open-question accuracy 10 if the "
        "reference text appears in the answer else 0; choice-question accuracy by letter",
        "machine": _machine(),
        "data": {
            "users": 6,
            "size": "32k",
            "samples": manifest["samples"],
            "counts": manifest["counts"],
            "samples_with_pictures_left_out": left_out,
            "sft_samples": kept,
            "rl_prompts": rl_manifest["prompts"],
            "build_s": round(data_s, 1),
        },
        "model": {"kind": "Qwen2 (random init)", "hidden": 128, "layers": 2, "vocab": 3000},
        "sft": {
            "steps": sft.steps,
            "batch": SFT_BATCH,
            "learning_rate": args.sft_lr,
            "max_length": SFT_MAX_LENGTH,
            "time_s": round(sft_s, 1),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
        },
        "grpo": {
            "steps": grpo.steps,
            "num_generations": 6,
            "batch": 6,
            "learning_rate": args.grpo_lr,
            "max_completion_length": GRPO_MAX_COMPLETION,
            "max_turn_tokens": GRPO_TURN_TOKENS,
            "temperature": GRPO_TEMPERATURE,
            "time_s": round(grpo_s, 1),
            "edge_steps": EDGE,
            "reward_start": _edge(reward, last=False),
            "reward_end": _edge(reward, last=True),
            "format_rate_start": _edge(fmt, last=False),
            "format_rate_end": _edge(fmt, last=True),
            "answered_rate_start": _edge(answered, last=False),
            "answered_rate_end": _edge(answered, last=True),
            "format_rate_max": max(fmt) if fmt else None,
            "mean_retrievals": round(sum(retrievals) / len(retrievals), 4) if retrievals else None,
            **judge_info,
        },
        "total_s": round(total_s, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/train-tiny"))
    parser.add_argument("--sft-steps", type=int, default=SFT_STEPS)
    parser.add_argument("--sft-lr", type=float, default=SFT_LR)
    parser.add_argument("--grpo-steps", type=int, default=GRPO_STEPS)
    parser.add_argument("--grpo-lr", type=float, default=GRPO_LR)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from personavlm.embed import HashingEmbedder
    from personavlm.train.samples import load_samples
    from personavlm.train.tiny import build_tiny_checkpoint
    from personavlm.train.world_samples import build_training_data

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("data", "sft-data", "tiny", "sft", "grpo"):
        shutil.rmtree(out / name, ignore_errors=True)
    started = time.perf_counter()

    # (a) data from the simulator world
    manifest = build_training_data(
        out / "data", users=6, size="32k", seed=1, embedder=HashingEmbedder()
    )
    rl_manifest = json.loads((out / "data" / "rl_manifest.json").read_text())
    data_s = time.perf_counter() - started

    # (b) the tiny text model, and SFT data without pictures
    texts = [t.text for s in load_samples(out / "data").samples for t in s.turns]
    build_tiny_checkpoint(
        out / "tiny", texts=texts, vision=False, hidden=128, layers=2, vocab_size=3000
    )
    kept, left_out = build_sft_data(out / "data", out / "sft-data")

    # (c) SFT
    sft, sft_s = sft_stage(out, steps=args.sft_steps, lr=args.sft_lr)

    # (d) GRPO from the SFT model, the stand-in judge on loopback
    grpo, judge_info, grpo_s = grpo_stage(out, steps=args.grpo_steps, lr=args.grpo_lr)

    # (e) report and curves
    report = make_report(
        args, out, manifest, rl_manifest, (kept, left_out), (sft, sft_s), (grpo, grpo_s),
        judge_info, data_s=data_s, total_s=time.perf_counter() - started,
    )  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    _curves(sft.log_history, grpo.log_history, out / "curves.png")
    _print_summary(report, out)
    return report


def _print_summary(report: dict[str, Any], out: Path) -> None:
    d, s, g = report["data"], report["sft"], report["grpo"]
    print(
        f"data: {d['samples']} samples ({d['samples_with_pictures_left_out']} with pictures "
        f"left out, {d['sft_samples']} for SFT), {d['rl_prompts']} RL prompts\n"
        f"SFT: {s['steps']} steps in {s['time_s']} s, loss {s['first_loss']} -> {s['last_loss']}\n"
        f"GRPO (scripted stand-in judge): {g['steps']} steps in {g['time_s']} s, "
        f"reward {g['reward_start']} -> {g['reward_end']}, "
        f"format rate {g['format_rate_start']} -> {g['format_rate_end']}, "
        f"mean retrievals {g['mean_retrievals']}, judge fallbacks {g['judge_fallbacks']}\n"
        f"total {report['total_s']} s; {out / 'report.json'}, {out / 'curves.png'}"
    )


if __name__ == "__main__":
    main()
