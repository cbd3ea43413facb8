"""`personavlm serve`: the HTTP service (docs/service.md) under uvicorn.

Flags and the environment are resolved here, once, into a `ServiceConfig` (the app reads no
environment): the store from --db / PERSONAVLM_DB / PERSONAVLM_HOME, the encoder from
--embedder / PERSONAVLM_EMBEDDER, the chat model from --model / PERSONAVLM_MODEL with its key
from PERSONAVLM_API_KEY / OPENAI_API_KEY, the admin key from PERSONAVLM_ADMIN_KEY, the
largest picture from --max-image-pixels / PERSONAVLM_MAX_IMAGE_PIXELS. FastAPI and uvicorn
(the `server` extra) are imported only when the command runs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from personavlm.agent.protocol import Protocol
from personavlm.cli.chat_cmd import PromptsOption, checked_prompts_dir
from personavlm.cli.common import DbOption, EmbedderOption, fail_on_errors
from personavlm.errors import ConfigError, MissingDependencyError
from personavlm.media.blobs import DEFAULT_MAX_PIXELS
from personavlm.settings import api_key, load_settings, model_choice

if TYPE_CHECKING:
    from personavlm.server import ServiceConfig

__all__ = [
    "ADMIN_KEY_ENV",
    "MAX_IMAGE_PIXELS_ENV",
    "UpdateChoice",
    "require_server_extra",
    "run",
    "serve",
    "service_config",
]

ADMIN_KEY_ENV = "PERSONAVLM_ADMIN_KEY"
MAX_IMAGE_PIXELS_ENV = "PERSONAVLM_MAX_IMAGE_PIXELS"
MIB = 1024 * 1024


class UpdateChoice(StrEnum):
    BACKGROUND = "background"
    INLINE = "inline"


def serve(
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    model: str | None = typer.Option(
        None,
        "--model",
        help="Chat model: openai:<model>@<base_url>, hf:<checkpoint dir or .gguf>, "
        "local:smollm2 (bundled, tiny), or none (the memory API and the page work, chat "
        "answers 503). Default: $PERSONAVLM_MODEL, else local:smollm2.",
        show_default=False,
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8420, "--port", help="Port to listen on."),
    update: UpdateChoice = typer.Option(
        UpdateChoice.BACKGROUND,
        "--update",
        help="background: update memory after answering (a worker thread); inline: before.",
    ),
    protocol: Protocol = typer.Option(
        Protocol.JSON, "--protocol", help="json (any instruction model) or tags (PersonaVLM)."
    ),
    max_body_mb: float = typer.Option(20.0, "--max-body-mb", help="Largest request body."),
    max_image_mb: float = typer.Option(10.0, "--max-image-mb", help="Largest picture."),
    max_image_pixels: int | None = typer.Option(
        None,
        "--max-image-pixels",
        help="Largest picture in pixels (width x height); larger ones are refused with 400. "
        f"Default: ${MAX_IMAGE_PIXELS_ENV}, else 40000000.",
        show_default=False,
    ),
    max_inflight: int = typer.Option(
        8,
        "--max-inflight",
        help="Chat turns running at once (a slot is held for the whole turn); more get 429.",
    ),
    model_timeout: float = typer.Option(
        120.0,
        "--model-timeout",
        help="Seconds one chat turn may spend on the model in all (retries included); "
        "past that the turn fails with 502 and the message is kept.",
    ),
    prompts: str | None = PromptsOption,
) -> None:
    """Serve the personalised model, the memory API and the web page over HTTP.

    The admin key is $PERSONAVLM_ADMIN_KEY, or generated on the first start and printed once
    on stderr. Make user keys with it: POST /v1/users/{id}/keys.

    Example: personavlm serve --db memory.db --model openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1
    """
    with fail_on_errors():
        config = service_config(
            db=db,
            embedder=embedder,
            model=model,
            host=host,
            port=port,
            update=update,
            protocol=protocol,
            max_body_mb=max_body_mb,
            max_image_mb=max_image_mb,
            max_image_pixels=max_image_pixels,
            max_inflight=max_inflight,
            model_timeout=model_timeout,
            prompts=prompts,
        )
        if config.model is not None:
            from personavlm import models

            # Here, not in the app's start-up, where uvicorn would print a traceback instead
            # of the one line that says what to install.
            models.preflight(config.model)
        run(config)


def service_config(
    *,
    db: str | None = None,
    embedder: str | None = None,
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8420,
    update: UpdateChoice = UpdateChoice.BACKGROUND,
    protocol: Protocol = Protocol.JSON,
    max_body_mb: float = 20.0,
    max_image_mb: float = 10.0,
    max_image_pixels: int | None = None,
    max_inflight: int = 8,
    model_timeout: float = 120.0,
    prompts: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceConfig:
    """Flags and the environment as one ServiceConfig (`env` defaults to os.environ)."""
    environ = os.environ if env is None else env
    require_server_extra()
    from personavlm.server import ServiceConfig

    settings = load_settings(db=db, embedder=embedder, env=environ)
    # None only when asked for (--model none): the memory API and the page work, chat 503.
    spec = model_choice(model, environ)
    admin_key = environ.get(ADMIN_KEY_ENV, "").strip() or None
    return ServiceConfig(
        location=settings.location,
        embedder=settings.embedder,
        blob_dir=settings.blob_dir,
        model=spec,
        model_api_key=api_key(environ) if spec else None,
        model_cache=settings.model_cache,
        prompts=checked_prompts_dir(prompts),
        admin_key=admin_key,
        host=host,
        port=port,
        update=update.value,
        protocol=protocol,
        max_body_bytes=_bytes(max_body_mb, "--max-body-mb"),
        max_image_bytes=_bytes(max_image_mb, "--max-image-mb"),
        max_image_pixels=_pixel_limit(max_image_pixels, environ),
        max_inflight=max_inflight,
        model_timeout_s=model_timeout,
    )


def run(config: ServiceConfig) -> None:
    """Start uvicorn on the app; returns when it stops (Ctrl-C, SIGTERM)."""
    require_server_extra()
    import uvicorn

    from personavlm.server import create_app

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")


def require_server_extra() -> None:
    """MissingDependencyError naming the extra, rather than an ImportError deep inside."""
    for name in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(
                f"the service needs the server extra ({name} is missing): "
                "pip install 'personavlm[server]' -c constraints.txt"
            )


def _pixel_limit(flag: int | None, environ: Mapping[str, str]) -> int:
    """max_image_pixels from the flag, else the environment, else the blob store's default.
    ConfigError names where a bad value came from."""
    if flag is not None:
        value, source = flag, "--max-image-pixels"
    else:
        raw = environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        source = MAX_IMAGE_PIXELS_ENV
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{source} must be a whole number of pixels, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{source} must be at least 1 pixel, got {value}")
    return value


def _bytes(megabytes: float, flag: str) -> int:
    if megabytes <= 0:
        raise ConfigError(f"{flag} must be more than 0, got {megabytes}")
    return int(megabytes * MIB)
