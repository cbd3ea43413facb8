"""`personavlm synth`: write a simulated Persona-MME benchmark (docs/synth.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from personavlm.cli.common import JsonOption, emit, fail_on_errors, progress_bar

__all__ = ["synth"]


def synth(
    out: Path = typer.Option(..., "--out", help="A new (or empty) folder to write into."),
    users: int = typer.Option(10, "--users", help="How many simulated users."),
    size: str = typer.Option(
        "32k", "--size", help="32k (20-100 turns per user) or 128k (100-500 turns per user)."
    ),
    seed: int = typer.Option(0, "--seed", help="Same seed and arguments, same bytes."),
    paraphrase_model: str | None = typer.Option(
        None,
        "--paraphrase-model",
        help="Reword every user turn with this model (openai:<model>@<base_url> or hf:<dir>), "
        "keeping names, places and pictures; a rewrite that drops one is not used.",
        show_default=False,
    ),
    as_json: bool = JsonOption,
) -> None:
    """Simulated users over weeks to months: histories with pictures, ground truth, and
    questions for all 13 Persona-MME tasks plus personality alignment pairs.

    Example: personavlm synth --out bench/synth-32k --users 20 --size 32k --seed 1
    """
    # Imported here: the simulator is an evaluation tool, not needed by other commands.
    from personavlm.synth import Paraphraser, synthesize

    with fail_on_errors():
        paraphraser = None
        if paraphrase_model is not None:
            from personavlm.cli.chat_cmd import load_model

            paraphraser = Paraphraser(load_model(paraphrase_model), name=paraphrase_model)
        with progress_bar(users, "simulating", as_json=as_json) as advance:
            summary = synthesize(
                out, users=users, size=size, seed=seed, paraphraser=paraphraser, progress=advance
            )
        emit(summary.to_dict(), as_json=as_json, text=_text(summary.to_dict()))


def _text(report: dict[str, object]) -> str:
    questions = report["questions"]
    assert isinstance(questions, dict)
    lines = [
        f"{report['users']} users ({report['size']}, seed {report['seed']}): "
        f"{report['turns']} turns, {report['images']} images, "
        f"{sum(questions.values())} questions in {report['out']} ({report['seconds']} s)"
    ]
    lines += [f"  {task}: {count}" for task, count in questions.items()]
    paraphrase = report["paraphrase"]
    if isinstance(paraphrase, dict):
        lines.append(
            f"paraphrased with {paraphrase['model']}: {paraphrase['rewritten']} turns rewritten, "
            f"{paraphrase['kept_original']} kept as written (the rewrite lost a fact or a picture)"
        )
    return "\n".join(lines)
