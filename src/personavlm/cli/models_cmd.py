"""`personavlm models ...`: the bundled models, and where their files are.

`personavlm models path local:smollm2` prints the GGUF file the spec names, for running the
same file through another runtime (llama.cpp's server, docs/models.md) and attaching it
back with `--model openai:<name>@<url>`.
"""

from __future__ import annotations

import typer

from personavlm.cli.common import JsonOption, emit, fail_on_errors
from personavlm.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(help="Chat models: the bundled ones and their files.", no_args_is_help=True)


@app.command()
def path(
    spec: str = typer.Argument(..., help="A local:<name> spec (or hf:<path> to resolve it)."),
) -> None:
    """The model file a spec names, on one line (exit 3 when it is not installed).

    Example: python -m llama_cpp.server --model "$(personavlm models path local:smollm2)"
    """
    from pathlib import Path

    from personavlm.models.bundled import bundled_path

    with fail_on_errors():
        scheme, colon, rest = spec.partition(":")
        if scheme == "local" and colon:
            typer.echo(str(bundled_path(rest)))
        elif scheme == "hf" and colon and Path(rest).expanduser().exists():
            typer.echo(str(Path(rest).expanduser().resolve()))
        else:
            raise ConfigError(
                f"{spec!r} names no local model file; give local:<name> (personavlm models "
                "list) or hf:<existing path>"
            )


@app.command("list")
def list_models(as_json: bool = JsonOption) -> None:
    """The bundled models: spec, whether installed, what it is, how to install it."""
    from personavlm.models.bundled import BUNDLED, bundled_path

    rows = []
    for name, model in sorted(BUNDLED.items()):
        try:
            where: str | None = str(bundled_path(name))
        except ConfigError:
            where = None
        rows.append(
            {
                "spec": f"local:{name}",
                "installed": where is not None,
                "path": where,
                "description": model.description,
                "install": model.install,
            }
        )
    text = "\n".join(
        f"{r['spec']}  {'installed' if r['installed'] else 'not installed: ' + str(r['install'])}"
        f"  ({r['description']})"
        for r in rows
    )
    emit(rows, as_json=as_json, text=text)
