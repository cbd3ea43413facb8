"""ServiceConfig: everything `create_app` needs, resolved by the caller (the CLI) beforehand.

The service reads no environment: `personavlm serve` (cli/serve_cmd.py) turns flags and
PERSONAVLM_* variables into one of these, and tests build one directly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from personavlm.agent import Protocol
from personavlm.errors import ConfigError
from personavlm.media.blobs import DEFAULT_MAX_PIXELS, check_max_pixels

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MIB",
    "STATIC_DIR",
    "ServiceConfig",
    "UpdateMode",
    "print_admin_key",
]

MIB = 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
# The web page's files (index.html and what it loads), shipped inside the package.
STATIC_DIR = Path(__file__).with_name("static")

# background: the update phase runs in a worker thread after the answer is sent;
# inline: it runs before the answer returns (slower replies, usage counts its calls too).
UpdateMode = Literal["background", "inline"]


def print_admin_key(secret: str) -> None:
    """The default way to hand over a generated admin key: once, on stderr."""
    print(
        "personavlm: generated the admin key (shown only now; the store keeps a hash):\n"
        f"personavlm: admin key: {secret}",
        file=sys.stderr,
        flush=True,
    )


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    location: str  # a SQLite file path, or a postgresql:// URL
    embedder: str = "minilm"  # a name for personavlm.embed.load
    blob_dir: Path | None = None  # None: the store's default (beside a SQLite file)
    model: str | None = None  # a model spec for personavlm.models.load; None: no chat
    model_api_key: str | None = None  # for openai: specs
    # A directory of prompt templates replacing the package's (agent/templates.py).
    prompts: str | None = None
    # Where a GGUF model (hf:*.gguf, local:) is kept converted after its first load.
    model_cache: Path | None = None
    admin_key: str | None = None  # registered (hashed) at start; None: generate if none
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    update: UpdateMode = "background"
    protocol: Protocol = Protocol.JSON
    max_body_bytes: int = 20 * MIB
    max_image_bytes: int = 10 * MIB
    # Pictures with more pixels are refused before they are stored (media/blobs.py).
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    served_model: str = "personavlm"  # the model id /v1/models lists and replies carry
    # Chat turns running at once (held for the whole turn); more are refused with 429.
    max_inflight: int = 8
    # One budget per chat turn for all its model calls, retries and waits included.
    model_timeout_s: float = 120.0
    static_dir: Path = STATIC_DIR
    # Called once with a newly generated admin key (the store had none and none was given).
    announce_admin_key: Callable[[str], None] = field(default=print_admin_key, repr=False)

    def __post_init__(self) -> None:
        if not self.location.strip():
            raise ConfigError("the service needs a store location (--db / PERSONAVLM_DB)")
        if self.update not in ("background", "inline"):
            raise ConfigError(f"update must be 'background' or 'inline', got {self.update!r}")
        object.__setattr__(self, "protocol", _protocol(self.protocol))
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if not 1 <= self.max_inflight <= 1024:
            raise ConfigError(f"max_inflight must be in 1..1024, got {self.max_inflight}")
        if not 0 < self.model_timeout_s <= 3600:
            raise ConfigError(
                f"model timeout must be in (0, 3600] seconds, got {self.model_timeout_s}"
            )
        for name in ("max_body_bytes", "max_image_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 byte, got {getattr(self, name)}")
        check_max_pixels(self.max_image_pixels)
        if self.admin_key is not None and not _usable_secret(self.admin_key):
            raise ConfigError(
                "PERSONAVLM_ADMIN_KEY needs at least 16 characters, printable, no spaces: use "
                "a long random value, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`, or leave it unset to have one generated"
            )


def _usable_secret(secret: str) -> bool:
    # The store's own rule for keys (memory/keys.py), checked here to fail as a ConfigError.
    return len(secret) >= 16 and secret.isprintable() and not any(c.isspace() for c in secret)


def _protocol(value: object) -> Protocol:
    if str(value) not in Protocol._value2member_map_:
        raise ConfigError(f"protocol must be 'json' or 'tags', got {value!r}")
    return Protocol(str(value))
