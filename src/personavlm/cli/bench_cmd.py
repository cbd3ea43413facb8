"""`personavlm bench ...`: measurements that need no model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from personavlm import embed
from personavlm.bench.retrieval import DEFAULT_KS, load_dataset, run_benchmark
from personavlm.cli.common import EmbedderOption, JsonOption, emit, fail_on_errors, progress_bar
from personavlm.errors import ValidationError
from personavlm.memory.store import MemoryStore
from personavlm.settings import embedder_name

__all__ = ["app"]

app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@app.command()
def retrieval(
    data: Path = typer.Option(..., "--data", help="Benchmark JSON (docs/retrieval-benchmark.md)."),
    k: str = typer.Option(",".join(map(str, DEFAULT_KS)), "--k", help="Comma-separated k values."),
    keep_db: Path | None = typer.Option(
        None,
        "--keep-db",
        help="Build the store at this path and keep it (default: a temporary "
        "folder, removed afterwards).",
    ),
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """recall@k and hit@k of the shipped retriever, BM25 alone and dense alone.

    Example: personavlm bench retrieval --data tests/data/retrieval_small.json --k 1,5,10
    """
    with fail_on_errors():
        ks = _ks(k)
        dataset = load_dataset(data)
        encoder = embed.load(embedder_name(embedder))
        with tempfile.TemporaryDirectory(prefix="personavlm-bench-") as scratch:
            path = keep_db or Path(scratch) / "bench.db"
            if path.exists():
                raise ValidationError(f"--keep-db {path} exists; the benchmark needs a fresh store")
            with (
                MemoryStore.open(path, embedder=encoder) as store,
                progress_bar(dataset.turn_count, "ingesting", as_json=as_json) as advance,
            ):
                report = run_benchmark(dataset, store, ks=ks, progress=advance)
        emit(report, as_json=as_json, text=format_report(report))


def format_report(report: dict[str, object]) -> str:
    ks = report["ks"]
    assert isinstance(ks, list)
    variants = report["variants"]
    assert isinstance(variants, dict)
    head = (
        f"{report['dataset']}: {report['questions']} questions, {report['turns']} turns, "
        f"encoder {report['encoder']}"
    )
    columns = [f"R@{k}" for k in ks] + [f"H@{k}" for k in ks] + ["p50 ms"]
    lines = [head, f"{'variant':<10}" + "".join(f"{c:>8}" for c in columns)]
    for name, result in variants.items():
        overall = result["overall"]
        values = [overall[f"recall@{k}"] for k in ks] + [overall[f"hit@{k}"] for k in ks]
        cells = "".join(f"{v:>8.3f}" for v in values) + f"{result['latency_ms']['p50']:>8.1f}"
        lines.append(f"{name:<10}{cells}")
    return "\n".join(lines)


def _ks(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValidationError(f"--k takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValidationError(f"--k values must be positive, got {text!r}")
    return values
