"""`personavlm bench ...`: retrieval recall, Persona-MME and PersonaMem accuracy."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import typer

from personavlm.agent.protocol import Protocol
from personavlm.cli.chat_cmd import (
    ModelOption,
    NoPemOption,
    PromptsOption,
    ProtocolOption,
    RetrievalChoice,
    RetrievalOption,
    SkipRuleChoice,
    SkipRuleOption,
    checked_prompts_dir,
    load_model,
)
from personavlm.cli.common import EmbedderOption, JsonOption, emit, fail_on_errors, progress_bar
from personavlm.errors import ValidationError
from personavlm.settings import embedder_name, model_spec

if TYPE_CHECKING:
    # The harnesses run on the store and the agent (numpy, httpx): each command imports what
    # it runs, so that `personavlm --help` loads none of it.
    from personavlm.bench.harness import UserPlan
    from personavlm.bench.runs import RunConfig
    from personavlm.models import ChatModel

__all__ = ["DEFAULT_K_TEXT", "app"]

# bench.retrieval.DEFAULT_KS as the --k default. Written out rather than imported because
# bench.retrieval loads the store; tests/test_bench_retrieval.py keeps the two equal.
DEFAULT_K_TEXT = "1,5,10,20"

app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@app.command()
def retrieval(
    data: Path = typer.Option(..., "--data", help="Benchmark JSON (docs/retrieval-benchmark.md)."),
    k: str = typer.Option(DEFAULT_K_TEXT, "--k", help="Comma-separated k values."),
    keep_db: Path | None = typer.Option(
        None,
        "--keep-db",
        help="Build the store at this path and keep it (default: a temporary "
        "folder, removed afterwards).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Also write report.json, report.md and recall_at_k.png here."
    ),
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """recall@k and hit@k of the shipped retriever, BM25 alone and dense alone.

    Example: personavlm bench retrieval --data tests/data/retrieval_small.json --k 1,5,10
    """
    from personavlm import embed
    from personavlm.bench.retrieval import load_dataset, run_benchmark
    from personavlm.memory.store import MemoryStore

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
        if out is not None:
            write_retrieval_report(out, report)
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


def write_retrieval_report(out: Path, report: dict[str, Any]) -> None:
    """report.json, report.md (the text table) and recall_at_k.png under `out`."""
    import json

    from personavlm.bench.charts import recall_curves

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(
        f"# Retrieval: {report['dataset']}\n\n```\n{format_report(report)}\n```\n",
        encoding="utf-8",
    )
    curves = {
        name: {k: result["overall"][f"recall@{k}"] for k in report["ks"]}
        for name, result in report["variants"].items()
    }
    recall_curves(out / "recall_at_k.png", f"{report['dataset']}: recall@k", curves)


# ------------------------------------------------------------------ question benchmarks


class Ablations(NamedTuple):
    """The agent's switches a question benchmark passes on (AgentConfig's fields)."""

    pem: bool
    skip_rule: str
    retrieval: str
    prompts: str | None = None  # a --prompts directory (rag mode)


OutOption = typer.Option(
    ...,
    "--out",
    help="Run directory: settings, store, records.jsonl, report.{json,md}, charts. Run the "
    "same command again to resume an interrupted run.",
)
ModeOption = typer.Option(
    "rag",
    "--mode",
    help="rag: the agent (replay with the update phase, then retrieve and answer); "
    "full-context: the raw history cut to --context-tokens; random and retrieval-only: "
    "baselines that need no model.",
)
MaxRetrievalsOption = typer.Option(3, "--max-retrievals", min=0, max=10)
ContextTokensOption = typer.Option(
    131_072, "--context-tokens", help="full-context budget: 32768 or 131072 in the paper."
)
TokenizerOption = typer.Option(
    None,
    "--tokenizer",
    help="full-context: count tokens with this tokenizer.json (or model directory); "
    "default: an estimate of 4 characters per token.",
)
ImageTokensOption = typer.Option(
    296, "--image-tokens", help="full-context: tokens one image costs (Qwen2.5-VL: 296)."
)
MaxTokensOption = typer.Option(1024, "--max-tokens", min=1, help="Longest reply, in tokens.")
SeedOption = typer.Option(0, "--seed", help="Seed of the random and baseline guesses.")


@app.command("persona-mme")
def persona_mme(
    data: Path = typer.Option(
        ..., "--data", help="Directory with Persona-MME.json (or questions.json) and samples/."
    ),
    out: Path = OutOption,
    mode: str = ModeOption,
    model: str | None = ModelOption,
    protocol: Protocol = ProtocolOption,
    questions: Path | None = typer.Option(
        None,
        "--questions",
        help="Questions file (default: DATA/Persona-MME.json, else DATA/questions.json).",
    ),
    users: int | None = typer.Option(None, "--users", min=1, help="Only the first N users."),
    max_retrievals: int = MaxRetrievalsOption,
    context_tokens: int = ContextTokensOption,
    tokenizer: Path | None = TokenizerOption,
    image_tokens: int = ImageTokensOption,
    max_tokens: int = MaxTokensOption,
    seed: int = SeedOption,
    no_pem: bool = NoPemOption,
    skip_rule: SkipRuleChoice = SkipRuleOption,
    retrieval: RetrievalChoice = RetrievalOption,
    prompts: str | None = PromptsOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """Persona-MME accuracy per task and aspect (PAPER.md section 6).

    Example: personavlm bench persona-mme --data synth32k --out runs/mme-rag --mode rag
    --model openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1
    """
    from personavlm.bench.persona_mme import load_persona_mme

    with fail_on_errors():
        config = _config(
            "persona-mme",
            data,
            mode,
            model,
            protocol,
            max_retrievals,
            context_tokens,
            tokenizer,
            image_tokens,
            max_tokens,
            seed,
            embedder,
            Ablations(not no_pem, skip_rule.value, retrieval.value, checked_prompts_dir(prompts)),
        )
        loaded = load_persona_mme(data, questions_file=questions, users=users)
        describe = {"questions_file": str(loaded.source), "question_records": loaded.questions}
        report = _run(loaded.plans, out, config, describe, as_json=as_json)
        emit(report, as_json=as_json, text=_summary(report, out))


@app.command()
def personamem(
    questions: Path = typer.Option(..., "--questions", help="questions_<size>.csv"),
    contexts: Path = typer.Option(..., "--contexts", help="shared_contexts_<size>.jsonl"),
    out: Path = OutOption,
    mode: str = ModeOption,
    model: str | None = ModelOption,
    protocol: Protocol = ProtocolOption,
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    session_exchanges: int = typer.Option(
        8, "--session-exchanges", min=1, help="Exchanges per synthetic session."
    ),
    max_retrievals: int = MaxRetrievalsOption,
    context_tokens: int = ContextTokensOption,
    tokenizer: Path | None = TokenizerOption,
    image_tokens: int = ImageTokensOption,
    max_tokens: int = MaxTokensOption,
    seed: int = SeedOption,
    no_pem: bool = NoPemOption,
    skip_rule: SkipRuleChoice = SkipRuleOption,
    retrieval: RetrievalChoice = RetrievalOption,
    prompts: str | None = PromptsOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """PersonaMem accuracy per question type, scored by option letter.

    Example: personavlm bench personamem --questions questions_32k.csv
    --contexts shared_contexts_32k.jsonl --out runs/pm --mode retrieval-only
    """
    from personavlm.bench.personamem import load_personamem

    with fail_on_errors():
        config = _config(
            "personamem",
            questions,
            mode,
            model,
            protocol,
            max_retrievals,
            context_tokens,
            tokenizer,
            image_tokens,
            max_tokens,
            seed,
            embedder,
            Ablations(not no_pem, skip_rule.value, retrieval.value, checked_prompts_dir(prompts)),
        )
        loaded = load_personamem(
            questions, contexts, session_exchanges=session_exchanges, limit=limit
        )
        describe = {
            "contexts_file": str(contexts),
            "cut_exchanges": loaded.cut_exchanges,
            "session_exchanges": session_exchanges,
        }
        report = _run(loaded.plans, out, config, describe, as_json=as_json)
        emit(report, as_json=as_json, text=_summary(report, out))


def _config(
    benchmark: str,
    data: Path,
    mode: str,
    model: str | None,
    protocol: Protocol,
    max_retrievals: int,
    context_tokens: int,
    tokenizer: Path | None,
    image_tokens: int,
    max_tokens: int,
    seed: int,
    embedder: str | None,
    ablations: Ablations,
) -> RunConfig:
    from personavlm.bench.runs import RunConfig

    # RunConfig checks the mode; an unknown one asks for no model, so it fails there first.
    needs_model = mode in ("rag", "full-context")
    return RunConfig(
        benchmark=benchmark,
        data=str(data.resolve()),
        mode=mode,
        embedder=embedder_name(embedder),
        model=model_spec(model) if needs_model else None,
        protocol=protocol.value,
        max_retrievals=max_retrievals,
        context_tokens=context_tokens,
        tokenizer=str(tokenizer.resolve()) if tokenizer else None,
        image_tokens=image_tokens,
        max_tokens=max_tokens,
        seed=seed,
        pem=ablations.pem,
        skip_rule=ablations.skip_rule,
        retrieval=ablations.retrieval,
        prompts=ablations.prompts,
    )


def _run(
    plans: tuple[UserPlan, ...],
    out: Path,
    config: RunConfig,
    describe: dict[str, Any],
    *,
    as_json: bool,
) -> dict[str, Any]:
    from personavlm import embed
    from personavlm.bench.runs import execute

    items = sum(len(p.items) for p in plans)
    with (
        _opened_model(config.model) as model,
        progress_bar(items, "questions", as_json=as_json) as advance,
    ):
        return execute(
            plans,
            out,
            config,
            model=model,
            embedder=embed.load(config.embedder),
            describe=describe,
            progress=advance,
        )


@contextmanager
def _opened_model(spec: str | None) -> Iterator[ChatModel | None]:
    if spec is None:
        yield None
        return
    model = load_model(spec)
    try:
        yield model
    finally:
        close: Callable[[], None] | None = getattr(model, "close", None)
        if close is not None:
            close()


def _summary(report: dict[str, Any], out: Path) -> str:
    scores = report["scores"]
    lines = [
        f"{report['benchmark']} ({report['config']['mode']}): {scores['items']} items, "
        f"overall {scores['robust']['overall']}% (reference parser "
        f"{scores['reference']['overall']}%), without alignment "
        f"{scores['robust']['overall_without_alignment']}%",
    ]
    lines += [f"  {aspect:<14} {value}%" for aspect, value in scores["robust"]["by_aspect"].items()]
    lines.append(f"report: {out / 'report.md'}")
    return "\n".join(lines)
