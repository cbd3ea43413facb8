"""Helpers for the service tests: a config on a tmp SQLite store with the hashing encoder,
uvicorn in a thread on a free loopback port, small real pictures, key headers.

Fixtures stay in each test module (a few lines over these helpers), so nothing here needs
importing into a test's namespace by name.
"""

from __future__ import annotations

import base64
import io
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from personavlm.server import ServiceConfig, create_app

ADMIN_KEY = "pvk_test-admin-key-0123456789abcdef"
STARTUP_TIMEOUT_S = 15.0


def make_config(tmp_path: Path, **overrides: Any) -> ServiceConfig:
    """A service on `tmp_path/memory.db`, hashing encoder, a known admin key, no model."""
    values: dict[str, Any] = {
        "location": str(tmp_path / "memory.db"),
        "embedder": "hashing",
        "admin_key": ADMIN_KEY,
        "announce_admin_key": _no_announcement,
    }
    values.update(overrides)
    return ServiceConfig(**values)


def _no_announcement(secret: str) -> None:
    raise AssertionError("a test config has an admin key: none should be generated")


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn in a thread on 127.0.0.1, a free port; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise AssertionError("uvicorn stopped during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise AssertionError(f"uvicorn did not start within {STARTUP_TIMEOUT_S} s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        assert not thread.is_alive(), "uvicorn did not shut down"


@contextmanager
def served(config: ServiceConfig) -> Iterator[str]:
    with serving(create_app(config)) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def png_bytes(rgb: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    """A real PNG made with Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png(size: int, seed: int = 0) -> bytes:
    """A PNG that does not compress (random pixels): about 3 * size**2 bytes."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), rng.randbytes(3 * size * size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def make_user_key(client: httpx.Client, user_id: str) -> tuple[int, str]:
    """Create a key for `user_id` with the admin key; returns (key id, secret)."""
    answer = client.post(f"/v1/users/{user_id}/keys", headers=bearer(ADMIN_KEY), json={})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return int(body["id"]), str(body["key"])


def error_of(answer: httpx.Response) -> dict[str, Any]:
    """The `error` object of an error answer, after checking the shape every error has."""
    body = answer.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "type"}, error
    assert error["code"] == error["type"]
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)
