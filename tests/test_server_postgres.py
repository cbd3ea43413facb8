"""The service on the PostgreSQL engine, end to end over real HTTP: the admin key registered
in PostgreSQL, a user key, memory writes and search, a chat turn with a picture through the
official client, export, and forgetting the user (rows in PostgreSQL, blob files on disk).

The store contract suites already run every store verb on both engines; this checks that the
service wires the PostgreSQL engine in (`--db postgresql://...`) and that nothing in it
assumes a SQLite file.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agent_script import AgentScript, answer, op, update
from helpers import connect
from personavlm.testing import ScriptedOpenAIServer
from server_fixtures import ADMIN_KEY, bearer, data_url, make_config, png_bytes, served

pytestmark = pytest.mark.postgres

PICTURE = png_bytes((20, 140, 60), size=16)


def test_service_on_postgres_end_to_end(
    tmp_path: Path, pg_cluster: Any, script: AgentScript, server: ScriptedOpenAIServer
) -> None:
    script.respond = lambda req: answer("A green square, like your garden.")
    script.update = lambda req: update([op("add", "Ann's garden is green", attach_images=True)])
    blobs = tmp_path / "pictures"
    with pg_cluster.database() as url:
        config = make_config(
            tmp_path,
            location=url,
            blob_dir=blobs,
            model=f"openai:scripted@{server.base_url}",
            update="inline",
        )
        with served(config) as base, httpx.Client(base_url=base) as http:
            assert http.get("/healthz").json()["engine"] == "postgres"
            made = http.post("/v1/users/ann/keys", json={"label": "t"}, headers=bearer(ADMIN_KEY))
            key = made.json()["key"]
            ann = bearer(key)
            fact = http.post(
                "/v1/users/ann/memories",
                json={"type": "semantic", "content": "Ann grows tomatoes"},
                headers=ann,
            )
            assert fact.status_code == 201
            hits = http.post("/v1/users/ann/search", json={"query": "tomatoes"}, headers=ann)
            assert hits.json()["data"][0]["memory"]["content"] == "Ann grows tomatoes"

            client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
            reply = client.chat.completions.create(
                model="personavlm",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What does my garden look like?"},
                            {"type": "image_url", "image_url": {"url": data_url(PICTURE)}},
                        ],
                    }
                ],
            )
            assert reply.choices[0].message.content == "A green square, like your garden."
            listed = http.get("/v1/users/ann/memories?type=semantic", headers=ann).json()
            assert {m["content"] for m in listed["data"]} == {
                "Ann grows tomatoes",
                "Ann's garden is green",
            }
            exported = http.get("/v1/users/ann/export", headers=ann).json()
            (picture,) = exported["images"]
            assert base64.b64decode(picture["data_base64"]) == PICTURE
            assert len(exported["turns"]) == 2

            blob_files = [p for p in blobs.rglob("*") if p.is_file()]
            assert len(blob_files) == 1
            gone = http.delete("/v1/users/ann", headers=bearer(ADMIN_KEY))
            assert gone.status_code == 200, gone.text
            assert gone.json()["blobs"] == 1
            assert not blob_files[0].exists()
            assert http.get("/v1/users/ann/memories", headers=ann).status_code == 401
        with connect(url) as conn:
            for table in ("users", "memories", "turns", "memory_events", "api_keys", "images"):
                where = "id" if table == "users" else "user_id"
                if table == "images":
                    count = conn.execute("SELECT count(*) FROM images").fetchone()[0]
                else:
                    count = conn.execute(
                        f"SELECT count(*) FROM {table} WHERE {where} = 'ann'"
                    ).fetchone()[0]
                assert count == 0, table
