"""One benchmark run in a directory: settings, store, record log, report. Resumable.

    run = RunConfig(benchmark="persona-mme", data="data/", mode="rag", model="openai:...")
    report = execute(plans, Path("runs/mme-rag"), run, model=model, embedder=embedder)

The run directory holds:
    run.json          the settings (format 1); a second run into the same directory must use
                      the same settings, so resumed records never mix two set-ups
    memory.db (+ blobs/)  the store the histories were replayed into
    records.jsonl     one record per answered item (bench/harness.py)
    report.json       versions, seed, model, settings, data sizes, ingestion tally, scores
    report.md         the same as Markdown tables
    accuracy_by_aspect.png

Interrupt it at any point and run the same command again: it continues where it stopped.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from personavlm import __version__
from personavlm.agent import AgentConfig, Assistant
from personavlm.bench.harness import (
    AgentIngest,
    Ingestor,
    RawIngest,
    Reader,
    RecordLog,
    UserPlan,
    run_plans,
)
from personavlm.bench.readers import (
    AgentReader,
    FullContextReader,
    RandomReader,
    RetrievalOnlyReader,
    load_counter,
)
from personavlm.bench.scoring import PARSERS, expected_random, markdown_table, summarize
from personavlm.embed import Embedder
from personavlm.errors import ConflictError, ValidationError
from personavlm.memory.store import MemoryStore
from personavlm.models.base import ChatModel

__all__ = ["MODES", "RUN_FORMAT", "Mode", "RunConfig", "execute"]

RUN_FORMAT = 1
Mode = Literal["rag", "full-context", "random", "retrieval-only"]
MODES: tuple[str, ...] = ("rag", "full-context", "random", "retrieval-only")
_NEEDS_MODEL = ("rag", "full-context")


@dataclass(frozen=True, slots=True)
class RunConfig:
    benchmark: str
    data: str
    mode: str
    embedder: str
    model: str | None = None
    protocol: str = "json"
    max_retrievals: int = 3
    context_tokens: int = 131_072  # the paper's 128k setting
    tokenizer: str | None = None
    image_tokens: int = 296
    max_tokens: int = 1024
    temperature: float = 0.0
    seed: int = 0
    # The agent's switches (AgentConfig; docs/evaluation.md): the paper's ablations and the
    # reference's behaviours. Runs written before they existed ran with these defaults.
    pem: bool = True
    skip_rule: str = "paper"
    retrieval: str = "ours"
    prompts: str | None = None  # a directory of prompt templates (rag mode); None: ours

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValidationError(f"--mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.mode in _NEEDS_MODEL and not self.model:
            raise ValidationError(
                f"--mode {self.mode} asks a model: pass --model (e.g. "
                "openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1) or set PERSONAVLM_MODEL"
            )


# Fields added to RunConfig after its first runs, with the value those runs used.
_DEFAULTS: dict[str, Any] = {
    "pem": True,
    "skip_rule": "paper",
    "retrieval": "ours",
    "prompts": None,
}


def execute(
    plans: Sequence[UserPlan],
    out_dir: Path,
    config: RunConfig,
    *,
    model: ChatModel | None,
    embedder: Embedder,
    describe: Mapping[str, Any],
    progress: Callable[[int], None] = lambda _n: None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark in `out_dir`; writes and returns the report."""
    _claim_run_dir(out_dir, config)
    log = RecordLog(out_dir / "records.jsonl")
    with MemoryStore.open(out_dir / "memory.db", embedder=embedder) as store:
        ingestor, reader, assistant = _parts(config, store, model)
        try:
            run_plans(plans, ingestor, reader, log, progress=progress)
        finally:
            if assistant is not None:
                assistant.close()
        records = [log.records[i.id] for p in plans for i in p.items]
        report = _report(config, records, plans, ingestor, describe)
    write_report(out_dir, report)
    return report


def _claim_run_dir(out_dir: Path, config: RunConfig) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "run.json"
    wanted = asdict(config)
    if not path.exists():
        if any(out_dir.iterdir()):
            raise ConflictError(
                f"{out_dir} is not empty and holds no run.json: give a new or empty --out"
            )
        payload = {"format": RUN_FORMAT, "personavlm": __version__, "config": wanted}
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored.get("format") != RUN_FORMAT:
        raise ConflictError(f"{path}: run format {stored.get('format')} is not {RUN_FORMAT}")
    known = _DEFAULTS | stored["config"]  # a key a run.json predates holds its default
    differ = sorted(k for k in wanted if known.get(k) != wanted[k])
    if differ:
        shown = ", ".join(f"{k}: {known.get(k)!r} -> {wanted[k]!r}" for k in differ)
        raise ConflictError(
            f"{out_dir} holds a run with other settings ({shown}); resume with the same "
            "settings or give a new --out"
        )


def _parts(
    config: RunConfig, store: MemoryStore, model: ChatModel | None
) -> tuple[Ingestor, Reader, Assistant | None]:
    if config.mode == "rag":
        assert model is not None
        agent = AgentConfig(
            protocol=config.protocol,
            max_retrievals=config.max_retrievals,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            update="inline",
            pem=config.pem,
            skip_rule=config.skip_rule,
            retrieval=config.retrieval,
            prompts=config.prompts,
        )
        assistant = Assistant(store, model, agent)
        return AgentIngest(assistant), AgentReader(assistant), assistant
    reader: Reader
    if config.mode == "full-context":
        assert model is not None
        reader = FullContextReader(
            store,
            model,
            budget=config.context_tokens,
            counter=load_counter(Path(config.tokenizer) if config.tokenizer else None),
            image_tokens=config.image_tokens,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
        )
    elif config.mode == "random":
        reader = RandomReader(config.seed)
    else:
        reader = RetrievalOnlyReader(store, seed=config.seed)
    return RawIngest(store), reader, None


def _report(
    config: RunConfig,
    records: list[dict[str, Any]],
    plans: Sequence[UserPlan],
    ingestor: Ingestor,
    describe: Mapping[str, Any],
) -> dict[str, Any]:
    choices = {i.id: len(i.choices) for p in plans for i in p.items}
    scores = summarize(records)
    return {
        "format": RUN_FORMAT,
        "personavlm": __version__,
        "python": platform.python_version(),
        "benchmark": config.benchmark,
        "config": asdict(config),
        "data": dict(describe)
        | {
            "users": len(plans),
            "exchanges": sum(len(p.exchanges) for p in plans),
            "items": len(records),
        },
        "ingest": ingestor.tally(),
        "random_expected": {
            "overall": expected_random(records, choices),
            "overall_without_alignment": expected_random(
                [r for r in records if r["kind"] != "alignment"], choices
            ),
        },
        "scores": scores,
    }


def write_report(out_dir: Path, report: Mapping[str, Any]) -> None:
    """report.json, report.md and accuracy_by_aspect.png."""
    (out_dir / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text(report_markdown(report) + "\n", encoding="utf-8")
    from personavlm.bench.charts import accuracy_bars

    scores = report["scores"]
    groups = {
        f"{parser} parser": {
            **{a: v for a, v in scores[parser]["by_aspect"].items() if v is not None},
            "Overall": scores[parser]["overall"] or 0.0,
        }
        for parser in PARSERS
    }
    accuracy_bars(
        out_dir / "accuracy_by_aspect.png",
        f"{report['benchmark']} ({report['config']['mode']}): accuracy per aspect",
        groups,
    )


def report_markdown(report: Mapping[str, Any]) -> str:
    config = report["config"]
    scores = report["scores"]
    random_expected = report["random_expected"]
    head = [
        f"# {report['benchmark']}: {config['mode']}",
        "",
        f"- data: `{config['data']}` ({report['data']['users']} users, "
        f"{report['data']['exchanges']} exchanges, {report['data']['items']} items)",
        f"- model: {config['model'] or '(none)'}; protocol {config['protocol']}; "
        f"embedder {config['embedder']}; seed {config['seed']}",
        f"- switches: PEM {'on' if config.get('pem', True) else 'off'}; skip rule "
        f"{config.get('skip_rule', 'paper')}; retrieval {config.get('retrieval', 'ours')}; "
        f"prompts {config.get('prompts') or 'the package'}",
        f"- personavlm {report['personavlm']}, Python {report['python']}",
        f"- overall (robust / reference parser): {_pct(scores['robust']['overall'])} / "
        f"{_pct(scores['reference']['overall'])}; unparsed answers: "
        f"{scores['unparsed']['robust']} / {scores['unparsed']['reference']}",
        f"- a uniform random guess would score {random_expected['overall']}% overall, "
        f"{random_expected['overall_without_alignment']}% without alignment",
        f"- model calls per item: {scores['model_calls']['per_item']}; protocol failures: "
        f"{scores['failed']}; baseline guesses: {scores['guessed']}",
        "",
    ]
    return "\n".join(head + [markdown_table(scores, p) + "\n" for p in PARSERS])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"
