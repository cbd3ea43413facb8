"""The evaluation numbers that need no language model, on simulated users.

    .venv/bin/python bench/evaluation.py                  # 32k and 128k, MiniLM, about 5 min
    .venv/bin/python bench/evaluation.py --users 4 --sizes 32k   # a quick look

For each size: `personavlm synth` writes a seeded world (Persona-MME layout + retrieval.json),
then
- the retrieval benchmark (shipped / BM25 / dense) on its retrieval.json, evidence = the
  user turns that state each answer;
- the Persona-MME harness with the two baselines that need no model: `random` and
  `retrieval-only` (the option nearest the retrieved memories).
Everything goes to bench/results/evaluation/<size>/ (git-ignored): the data, the run
directories with report.json / report.md / charts, and summary.md with the tables that
docs/benchmarks.md quotes. The model-driven modes (rag, full-context) need a served model:
run `personavlm bench persona-mme --mode rag --model ...` on a machine that has one.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from personavlm import embed
from personavlm.bench.persona_mme import load_persona_mme
from personavlm.bench.retrieval import load_dataset, run_benchmark
from personavlm.bench.runs import RunConfig, execute
from personavlm.cli.bench_cmd import format_report, write_retrieval_report
from personavlm.memory import MemoryStore
from personavlm.synth import synthesize

OUT = Path(__file__).resolve().parent / "results" / "evaluation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=None, help="users per size")
    parser.add_argument("--sizes", default="32k,128k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedder", default="minilm")
    args = parser.parse_args()
    encoder = embed.load(args.embedder)
    summary = []
    for size in args.sizes.split(","):
        users = args.users or {"32k": 20, "128k": 8}[size]
        summary.append(run_size(size, users, args.seed, encoder))
    text = "\n\n".join(summary)
    (OUT / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def run_size(size: str, users: int, seed: int, encoder: embed.Embedder) -> str:
    root = OUT / size
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.perf_counter()
    synth = synthesize(root / "data", users=users, size=size, seed=seed)
    synth_s = time.perf_counter() - started
    lines = [
        f"## {size}: {users} users, seed {seed}",
        "",
        f"synth: {synth.turns} turns, {synth.images} images, "
        f"{sum(synth.questions.values())} questions in {synth_s:.1f} s",
        "",
    ]
    lines += _retrieval(root, encoder)
    for mode in ("random", "retrieval-only"):
        lines += _persona_mme(root, mode, encoder)
    return "\n".join(lines)


def _retrieval(root: Path, encoder: embed.Embedder) -> list[str]:
    dataset = load_dataset(root / "data" / "retrieval.json")
    started = time.perf_counter()
    with MemoryStore.open(root / "retrieval.db", embedder=encoder) as store:
        report = run_benchmark(dataset, store, ks=[1, 5, 10, 20])
    write_retrieval_report(root / "retrieval", report)
    took = time.perf_counter() - started
    by_task = report["variants"]["shipped"]["by_category"]
    rows = [
        f"| {task} | {v['questions']} | {v['recall@5']:.3f} | {v['recall@10']:.3f} |"
        for task, v in by_task.items()
    ]
    return [
        f"### Retrieval ({took:.0f} s incl. ingest)",
        "",
        "```",
        format_report(report),
        "```",
        "",
        "| task (shipped) | questions | R@5 | R@10 |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ]


def _persona_mme(root: Path, mode: str, encoder: embed.Embedder) -> list[str]:
    data = root / "data"
    loaded = load_persona_mme(data)
    config = RunConfig(benchmark="persona-mme", data=str(data), mode=mode, embedder=encoder.name)
    started = time.perf_counter()
    report = execute(
        loaded.plans, root / f"mme-{mode}", config, model=None, embedder=encoder, describe={}
    )
    took = time.perf_counter() - started
    scores = report["scores"]["robust"]
    expected = report["random_expected"]
    counts = scores["counts"]["by_task"]
    aspects = " | ".join(f"{a} {v:.1f}" for a, v in scores["by_aspect"].items() if v is not None)
    return [
        f"### Persona-MME, {mode} ({took:.0f} s)",
        "",
        f"overall {scores['overall']:.2f}%, without alignment "
        f"{scores['overall_without_alignment']:.2f}% (uniform guess: {expected['overall']}% / "
        f"{expected['overall_without_alignment']}%); {report['scores']['items']} items",
        "",
        aspects,
        "",
        "| task | items | accuracy % |",
        "|---|---:|---:|",
        *[f"| {t} | {counts[t]} | {v:.1f} |" for t, v in scores["by_task"].items()],
        "",
    ]


if __name__ == "__main__":
    main()
