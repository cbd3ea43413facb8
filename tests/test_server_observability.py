"""Observability and page hardening over real HTTP on loopback: /metrics for the admin key
only, request counts by route template (never a raw id), queue gauges read at scrape time,
the security headers on the page, the API and its errors, and /docs served from this app.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from personavlm.errors import ModelConnectionError, ProtocolError, StoreError
from personavlm.memory.queue import QueueStatus
from personavlm.memory.store import MemoryStore
from personavlm.server import create_app
from personavlm.server.headers import PAGE_CSP
from personavlm.server.metrics import Metrics
from server_fixtures import ADMIN_KEY, bearer, error_of, make_config, make_user_key, serving

ADMIN = bearer(ADMIN_KEY)
MAX_BODY = 4096
REQUESTS = "personavlm_http_request_duration_seconds_count"


@dataclass
class Running:
    app: FastAPI
    client: httpx.Client

    @property
    def store(self) -> MemoryStore:
        store = self.app.state.service.store
        assert isinstance(store, MemoryStore)
        return store

    def scrape(self) -> str:
        answer = self.client.get("/metrics", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        return answer.text


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    app = create_app(make_config(tmp_path, max_body_bytes=MAX_BODY))
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield Running(app, client)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def value(text: str, name: str, **labels: str) -> float | None:
    found = [v for got, v in samples(text, name) if got == labels]
    return found[0] if found else None


def requests(text: str, method: str, route: str, status: int) -> float:
    return value(text, REQUESTS, method=method, route=route, status=str(status)) or 0.0


# ---------------------------------------------------------------------------- /metrics


def test_metrics_need_the_admin_key(running: Running) -> None:
    client = running.client
    _key_id, ann_key = make_user_key(client, "ann")
    for headers in ({}, bearer("pvk_not-a-key-of-this-store-000000")):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "unauthorized"
        assert "personavlm_" not in refused.text
    forbidden = client.get("/metrics", headers=bearer(ann_key))
    assert forbidden.status_code == 403
    assert "admin key" in error_of(forbidden)["message"]
    assert "# TYPE personavlm_http_request_duration_seconds histogram" in running.scrape()


def test_requests_are_counted_by_route_template(running: Running) -> None:
    client = running.client
    for user in ("ann", "bob"):
        assert client.post("/v1/users", json={"id": user}, headers=ADMIN).status_code == 201
        listed = client.get(f"/v1/users/{user}/memories", headers=ADMIN)
        assert listed.status_code == 200
    assert client.get("/v1/users/ann/memories/424242", headers=ADMIN).status_code == 404
    assert client.get("/v1/users/ann/memories").status_code == 401  # no key
    assert client.get("/v1/no/such/route").status_code == 401
    assert client.get("/no-such-file.txt").status_code == 404
    assert client.get("/").status_code == 200
    assert client.request("BREW", "/healthz").status_code == 405

    text = running.scrape()

    memories = "/v1/users/{user_id}/memories"
    assert requests(text, "GET", memories, 200) == 2
    assert requests(text, "POST", "/v1/users", 201) == 2
    assert requests(text, "GET", memories + "/{memory_id}", 404) == 1
    assert requests(text, "GET", memories, 401) == 1  # refused before routing, still labelled
    assert requests(text, "GET", "other", 401) == 1
    assert requests(text, "GET", "other", 404) == 1
    assert requests(text, "GET", "page", 200) == 1
    assert requests(text, "other", "/healthz", 405) == 1
    routes = {labels["route"] for labels, _ in samples(text, REQUESTS)}
    assert not any("ann" in r or "bob" in r or "424242" in r for r in routes), routes


def test_queue_gauges_are_read_at_scrape_time(running: Running) -> None:
    client = running.client
    assert client.post("/v1/users", json={"id": "ann"}, headers=ADMIN).status_code == 201
    first = running.scrape()
    assert value(first, "personavlm_queue_pending") == 0
    assert value(first, "personavlm_queue_failed") == 0
    assert samples(first, "personavlm_worker_up") == []  # no model: no worker meant to run

    with running.store.transaction("ann") as tx:
        for n in range(2):
            tx.queue.enqueue("ann", "observability-test", {"n": n})
    assert value(running.scrape(), "personavlm_queue_pending") == 2

    job = running.store.claim_job("test-worker")
    assert job is not None
    running.store.fail_job(job, "failed on purpose")
    failed = running.scrape()
    assert value(failed, "personavlm_queue_pending") == 2
    assert value(failed, "personavlm_queue_failed") == 1


def test_what_the_chat_path_reports_is_exposed() -> None:
    """The API the chat path and the worker call, on a Metrics of its own."""
    metrics = Metrics(queue_status=_no_queue, worker_alive=lambda: True)
    with metrics.model_call():
        assert value(_text(metrics), "personavlm_model_inflight") == 1
    for error in (ModelConnectionError("down"), ProtocolError("no answer tag"), KeyError("x")):
        with pytest.raises(type(error)), metrics.model_call():
            raise error
    metrics.count_chat_rejected("busy")
    metrics.count_update_job_failed("session")

    text = _text(metrics)
    assert value(text, "personavlm_model_inflight") == 0
    assert value(text, "personavlm_model_call_duration_seconds_count") == 4
    for kind in ("connection", "protocol", "other"):
        assert value(text, "personavlm_model_errors_total", kind=kind) == 1
    assert value(text, "personavlm_chat_rejected_total", reason="busy") == 1
    assert value(text, "personavlm_update_jobs_failed_total", kind="session") == 1
    assert value(text, "personavlm_worker_up") == 1
    # The queue could not be read: the scrape still answers, without the queue gauges.
    assert samples(text, "personavlm_queue_pending") == []


def _no_queue() -> QueueStatus:
    raise StoreError("the database is gone (on purpose)")


def _text(metrics: Metrics) -> str:
    return metrics.exposition().decode()


# ---------------------------------------------------------------------------- headers


def assert_hardened(answer: httpx.Response, csp: str = PAGE_CSP) -> None:
    where = f"{answer.request.method} {answer.request.url.path} -> {answer.status_code}"
    assert answer.headers.get("x-content-type-options") == "nosniff", where
    assert answer.headers.get("content-security-policy") == csp, where
    assert answer.headers.get("x-frame-options") == "DENY", where
    assert answer.headers.get("referrer-policy") == "no-referrer", where


def test_the_page_policy_allows_only_this_origin() -> None:
    directives = dict(d.strip().split(" ", 1) for d in PAGE_CSP.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["img-src"] == "'self' data: blob:"  # picked pictures, fetched pictures
    assert "unsafe" not in PAGE_CSP and "http" not in PAGE_CSP and "*" not in PAGE_CSP


def test_every_answer_carries_the_security_headers(running: Running) -> None:
    client = running.client
    page = [client.get(path) for path in ("/", "/app.js", "/style.css", "/no-such-file.txt")]
    assert [a.status_code for a in page] == [200, 200, 200, 404]
    api = [
        client.get("/healthz"),
        client.get("/openapi.json"),
        client.get("/v1/me", headers=ADMIN),
        client.get("/v1/me"),  # 401
        client.get("/v1/users/ann/memories/1", headers=ADMIN),  # 404 of the API
        client.post("/healthz"),  # 405
        client.post("/v1/users", headers=ADMIN, content=b"x" * (2 * MAX_BODY)),  # 413
        client.get("/metrics", headers=ADMIN),
    ]
    assert [a.status_code for a in api] == [200, 200, 200, 401, 404, 405, 413, 200]
    for answer in page + api:
        assert_hardened(answer)


def test_an_unexpected_error_is_answered_with_the_headers(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette answers an exception outside every middleware; the 500 still carries them."""

    def broken(_secret: str) -> None:
        raise RuntimeError("a bug in the key lookup (on purpose)")

    monkeypatch.setattr(running.store, "authenticate", broken)
    answer = running.client.get("/v1/me", headers=ADMIN)
    assert answer.status_code == 500
    assert error_of(answer)["code"] == "internal_error"
    assert_hardened(answer)


# ---------------------------------------------------------------------------- /docs


def test_docs_load_only_files_of_this_server(running: Running) -> None:
    client = running.client
    docs = client.get("/docs")
    assert docs.status_code == 200
    html = docs.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", html)  # the schema Swagger UI loads
    assert {"/docs/assets/swagger-ui-bundle.js", "/openapi.json"} <= set(urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is off-origin"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert_hardened(asset)
    assert "cdn" not in html and "http://" not in html and "https://" not in html

    # Only the one inline script runs, allowed by its hash; the rest is the page's policy.
    inline = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    csp = docs.headers["content-security-policy"]
    assert f"script-src 'self' 'sha256-{digest}'" in csp
    assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY"


def test_docs_assets_are_the_listed_files_only(running: Running) -> None:
    client = running.client
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith("text/javascript")  # nosniff needs it
    css = client.get("/docs/assets/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    for other in ("redoc.standalone.js", "index.html", "..%2F..%2Fpyproject.toml"):
        assert client.get(f"/docs/assets/{other}").status_code == 404, other
