"""The service's outside: the OpenAPI schema validates and documents every route; the route
table of docs/service.md lists exactly the routes the app has; `personavlm serve` turns flags
and the environment into a ServiceConfig, and (slow) really serves from a subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from typer.testing import CliRunner

from personavlm.agent import Protocol
from personavlm.cli.app import app as cli
from personavlm.cli.serve_cmd import UpdateChoice, service_config
from personavlm.errors import ConfigError
from personavlm.server import create_app
from personavlm.server.config import MIB
from server_fixtures import make_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "service.md"
METHODS = {"get", "post", "put", "patch", "delete"}


def openapi(tmp_path: Path) -> dict[str, object]:
    return create_app(make_config(tmp_path)).openapi()


def test_the_openapi_schema_validates(tmp_path: Path) -> None:
    schema = openapi(tmp_path)
    validate(schema)  # raises on an invalid document
    assert "HTTPBearer" in schema["components"]["securitySchemes"]  # type: ignore[index]


def test_every_operation_has_a_tag_summary_and_unique_id(tmp_path: Path) -> None:
    schema = openapi(tmp_path)
    ids = []
    for path, item in schema["paths"].items():  # type: ignore[attr-defined]
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            assert operation.get("tags"), where
            assert operation.get("summary"), where
            ids.append(operation["operationId"])
            if path.startswith("/v1/"):
                assert operation.get("security") == [{"HTTPBearer": []}], where
                assert "401" in operation["responses"], where
    assert len(ids) == len(set(ids))


def test_documented_response_shapes_are_in_the_schema(tmp_path: Path) -> None:
    schema = openapi(tmp_path)
    listing = schema["paths"]["/v1/users/{user_id}/memories"]["get"]  # type: ignore[index]
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/MemoryPage"}
    chat = schema["paths"]["/v1/chat/completions"]["post"]  # type: ignore[index]
    assert "text/event-stream" in chat["responses"]["200"]["content"]


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_route_table_in_docs_lists_exactly_the_apps_routes(tmp_path: Path) -> None:
    documented = {
        (method, _normal(path))
        for method, path in re.findall(
            r"^\| `(GET|POST|PATCH|PUT|DELETE) (/\S*)`", DOCS.read_text(), re.M
        )
    }
    schema = openapi(tmp_path)
    served = {
        (method.upper(), _normal(path))
        for path, item in schema["paths"].items()  # type: ignore[attr-defined]
        for method in item
        if method in METHODS
    }
    served.add(("GET", "/"))  # the page (a static mount, not in the schema)
    assert documented == served


# ------------------------------------------------------------------ personavlm serve


def test_serve_config_from_flags(tmp_path: Path) -> None:
    config = service_config(
        db=str(tmp_path / "m.db"),
        embedder="hashing",
        model="openai:m@http://127.0.0.1:9/v1",
        host="0.0.0.0",
        port=9000,
        update=UpdateChoice.INLINE,
        protocol=Protocol.TAGS,
        max_body_mb=1.5,
        max_image_mb=0.5,
        env={"PERSONAVLM_HOME": str(tmp_path)},
    )
    assert config.location == str(tmp_path / "m.db")
    assert (config.embedder, config.model, config.model_api_key) == (
        "hashing",
        "openai:m@http://127.0.0.1:9/v1",
        None,
    )
    assert (config.host, config.port, config.update, config.protocol) == (
        "0.0.0.0",
        9000,
        "inline",
        Protocol.TAGS,
    )
    assert (config.max_body_bytes, config.max_image_bytes) == (int(1.5 * MIB), MIB // 2)
    assert config.admin_key is None


def test_serve_config_from_the_environment(tmp_path: Path) -> None:
    env = {
        "PERSONAVLM_HOME": str(tmp_path),
        "PERSONAVLM_DB": str(tmp_path / "env.db"),
        "PERSONAVLM_EMBEDDER": "hashing",
        "PERSONAVLM_MODEL": "openai:env-model@http://127.0.0.1:9/v1",
        "PERSONAVLM_API_KEY": "sk-model-key",
        "PERSONAVLM_ADMIN_KEY": "pvk_admin-from-the-environment-0000",
    }
    config = service_config(env=env)
    assert config.location == str(tmp_path / "env.db")
    assert config.embedder == "hashing"
    assert config.model == "openai:env-model@http://127.0.0.1:9/v1"
    assert config.model_api_key == "sk-model-key"
    assert config.admin_key == "pvk_admin-from-the-environment-0000"
    assert (config.host, config.port, config.update) == ("127.0.0.1", 8420, "background")
    assert (config.max_body_bytes, config.max_image_bytes) == (20 * MIB, 10 * MIB)
    flagged = service_config(model="hf:/models/x", env=env)  # a flag beats the environment
    assert flagged.model == "hf:/models/x"


def test_serve_config_defaults_to_the_bundled_model_and_none_means_none(tmp_path: Path) -> None:
    env = {"PERSONAVLM_HOME": str(tmp_path)}
    assert service_config(env=env).model == "local:smollm2"  # nothing configured
    for flag, environ in (("none", env), (None, {**env, "PERSONAVLM_MODEL": "none"})):
        config = service_config(model=flag, env=environ)
        assert config.model is None and config.model_api_key is None
    # a flag beats the environment both ways
    assert service_config(model="none", env={**env, "PERSONAVLM_MODEL": "hf:/m"}).model is None
    assert service_config(model="hf:/m", env={**env, "PERSONAVLM_MODEL": "none"}).model == "hf:/m"
    config = service_config(env=env)
    assert config.location == str(tmp_path / "personavlm.db")
    with pytest.raises(ConfigError, match="--max-body-mb"):
        service_config(max_body_mb=0, env=env)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        service_config(env={**env, "PERSONAVLM_ADMIN_KEY": "short"})


def test_serve_is_a_command_with_help() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--db", "--embedder", "--model", "--host", "--port", "--update", "--protocol"):
        assert flag in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_personavlm_serve_runs_and_prints_its_admin_key_once(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAVLM_")}
    env["PERSONAVLM_HOME"] = str(tmp_path / "home")
    command = [
        str(Path(sys.executable).with_name("personavlm")), "serve",
        "--db", str(tmp_path / "served.db"), "--embedder", "hashing", "--port", str(port),
        "--model", "none",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "personavlm serve did not come up in 30 s"
                time.sleep(0.1)
        assert health.json() == {
            "status": "ok",
            "problems": [],
            "engine": "sqlite",
            "model": False,
            "backend": None,
        }
        stderr = process.stderr
        assert stderr is not None
        key = ""
        while not key:
            line = stderr.readline()
            assert line, "no admin key printed"
            if "admin key:" in line:
                key = line.split("admin key:", 1)[1].strip()
        made = httpx.post(
            f"{url}/v1/users", json={"id": "ann"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert made.status_code == 201
        users = httpx.get(f"{url}/v1/users", headers={"Authorization": f"Bearer {key}"})
        assert [u["id"] for u in users.json()["data"]] == ["ann"]
    finally:
        process.send_signal(signal.SIGTERM)
        _out, rest = process.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM), rest
    assert "Application shutdown complete" in rest
