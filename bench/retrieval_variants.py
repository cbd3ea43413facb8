"""Compare retrieval variants on a benchmark set, to choose what ships as SHIPPED.

    .venv/bin/python bench/retrieval_variants.py --data bench/data/retrieval_handmade.json \
        --data tests/data/retrieval_small.json --out bench/results/variants.json

Ingests each dataset once with the bundled MiniLM encoder, then scores every variant below on
the same store with `personavlm.bench.retrieval` (recall@k / hit@k against evidence turns).
Prints one Markdown table per dataset; docs/benchmarks.md records the outcome.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from personavlm import embed
from personavlm.bench.retrieval import load_dataset, run_benchmark
from personavlm.memory.search import SHIPPED, Fusion, Method, RetrievalConfig
from personavlm.memory.store import MemoryStore

BASE = RetrievalConfig()


def _score(bm25_weight: float) -> RetrievalConfig:
    return replace(
        BASE, fusion=Fusion.SCORE, bm25_weight=bm25_weight, dense_weight=round(1 - bm25_weight, 2)
    )


VARIANTS: dict[str, RetrievalConfig] = {
    "bm25": replace(BASE, method=Method.BM25),
    "dense": replace(BASE, method=Method.DENSE),
    "rrf k60 1:1": replace(BASE, fusion=Fusion.RRF, rrf_k=60, bm25_weight=1.0, dense_weight=1.0),
    "rrf k60 2:1": replace(BASE, fusion=Fusion.RRF, rrf_k=60, bm25_weight=2.0, dense_weight=1.0),
    "rrf k60 1:2": replace(BASE, fusion=Fusion.RRF, rrf_k=60, bm25_weight=1.0, dense_weight=2.0),
    "rrf k10 1:1": replace(BASE, fusion=Fusion.RRF, rrf_k=10, bm25_weight=1.0, dense_weight=1.0),
    "rrf k10 1:2": replace(BASE, fusion=Fusion.RRF, rrf_k=10, bm25_weight=1.0, dense_weight=2.0),
    "rrf k10 1:3": replace(BASE, fusion=Fusion.RRF, rrf_k=10, bm25_weight=1.0, dense_weight=3.0),
    "rrf k5 1:2": replace(BASE, fusion=Fusion.RRF, rrf_k=5, bm25_weight=1.0, dense_weight=2.0),
    "score 0.5:0.5": _score(0.5),
    "score 0.4:0.6": _score(0.4),
    "score 0.3:0.7": _score(0.3),
    "score 0.25:0.75": _score(0.25),
    "score 0.2:0.8": _score(0.2),
    "score 0.1:0.9": _score(0.1),
    "shipped": SHIPPED,
}
KS = (1, 5, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    encoder = embed.load("minilm")
    reports = {}
    for path in args.data:
        dataset = load_dataset(path)
        with (
            tempfile.TemporaryDirectory() as scratch,
            MemoryStore.open(Path(scratch) / "bench.db", embedder=encoder) as store,
        ):
            report = run_benchmark(dataset, store, ks=KS, variants=VARIANTS)
        reports[dataset.name] = report
        print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=2))


def markdown(report: dict) -> str:
    head = (
        f"**{report['dataset']}**: {report['questions']} questions, {report['turns']} turns, "
        f"{report['encoder']}\n\n"
        "| variant | R@1 | R@5 | R@10 | R@20 | H@5 | H@10 |\n|---|---|---|---|---|---|---|"
    )
    rows = []
    for name, result in report["variants"].items():
        o = result["overall"]
        rows.append(
            f"| {name} | {o['recall@1']:.3f} | {o['recall@5']:.3f} | {o['recall@10']:.3f} | "
            f"{o['recall@20']:.3f} | {o['hit@5']:.3f} | {o['hit@10']:.3f} |"
        )
    categories = report["variants"]["shipped"]["by_category"]
    cat_head = (
        "\n\n| category (R@10) | " + " | ".join(categories) + " |\n|---|" + "---|" * len(categories)
    )
    cat_rows = [
        f"| {name} | "
        + " | ".join(f"{r['by_category'][c]['recall@10']:.3f}" for c in categories)
        + " |"
        for name, r in report["variants"].items()
    ]
    return head + "\n" + "\n".join(rows) + cat_head + "\n" + "\n".join(cat_rows) + "\n"


if __name__ == "__main__":
    main()
