"""The service's Prometheus metrics, served at `GET /metrics` (admin key; docs/service.md).

Each app owns one `Metrics` and with it one `CollectorRegistry`, never the process-wide
default: tests (and any embedding program) build many apps in one process, and a metric
registered twice in one registry is an error.

Three kinds of values:

- the HTTP histogram, observed by `MetricsMiddleware` for every request;
- values the chat path and the update worker report as things happen: the `count_*`
  methods, `model_call()` around a call of the model, or `metered(model)`, which does that
  for every call a ChatModel makes;
- values read when Prometheus scrapes (queue sizes, whether the update worker lives), by a
  collector that asks the service then: a stored number could be stale, a query cannot.

Label values come only from fixed sets (route templates, not paths; a known HTTP method or
`other`; kinds and reasons written in the code), because every distinct label value is a
new time series: a label fed from request data would grow without bound.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from personavlm.errors import (
    ModelConnectionError,
    ModelError,
    ModelResponseError,
    PersonaVLMError,
    ProtocolError,
)

if TYPE_CHECKING:
    from personavlm.memory.queue import QueueStatus
    from personavlm.models import ChatModel, Reply
    from personavlm.models import Message as ChatMessage

__all__ = [
    "CONTENT_TYPE",
    "MeteredModel",
    "Metrics",
    "MetricsMiddleware",
    "RouteLabels",
    "model_error_kind",
]

log = logging.getLogger("personavlm.server")

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the text exposition format
OTHER = "other"  # any method or path outside the fixed sets
PAGE = "page"  # a file of the web page (the static mount)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MODEL_ERROR_KINDS = ("connection", "response", "protocol", "model", OTHER)
# A chat turn's model call runs from well under a second (a short answer) to minutes (a
# local checkpoint on CPU); the default buckets stop at 10 s.
MODEL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Every metric of one app. The chat path reaches it as `service.metrics` (also
    `app.state.metrics`)."""

    def __init__(
        self,
        *,
        queue_status: Callable[[], QueueStatus],
        worker_alive: Callable[[], bool | None],
    ) -> None:
        self.registry = CollectorRegistry()
        self.http_request_seconds = Histogram(
            "personavlm_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer, by route template.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.model_inflight = Gauge(
            "personavlm_model_inflight",
            "Calls of the chat model running now.",
            registry=self.registry,
        )
        self.model_call_seconds = Histogram(
            "personavlm_model_call_duration_seconds",
            "Seconds one call of the chat model took, failed calls included.",
            buckets=MODEL_BUCKETS,
            registry=self.registry,
        )
        self.model_errors_total = Counter(
            "personavlm_model_errors",
            "Failed calls of the chat model, by kind (connection, response, protocol, ...).",
            ["kind"],
            registry=self.registry,
        )
        for kind in MODEL_ERROR_KINDS:  # at 0 from the start, so rate() sees the first one
            self.model_errors_total.labels(kind)
        self.chat_rejected_total = Counter(
            "personavlm_chat_rejected",
            "Chat requests refused before the model ran, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.update_jobs_failed_total = Counter(
            "personavlm_update_jobs_failed",
            "Update-queue jobs whose attempt failed (each attempt counts), by job kind.",
            ["kind"],
            registry=self.registry,
        )
        self.registry.register(ServiceStateCollector(queue_status, worker_alive))

    # ------------------------------------------------------------------ what callers report

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        label = method if method in METHODS else OTHER
        self.http_request_seconds.labels(label, route, str(status)).observe(seconds)

    @contextmanager
    def model_call(self) -> Iterator[None]:
        """Around one call of the model: counted in flight, timed, and a failure counted by
        `model_error_kind` (then re-raised)."""
        self.model_inflight.inc()
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.count_model_error(model_error_kind(exc))
            raise
        finally:
            self.model_call_seconds.observe(time.perf_counter() - started)
            self.model_inflight.dec()

    def count_model_error(self, kind: str) -> None:
        self.model_errors_total.labels(kind).inc()

    def count_chat_rejected(self, reason: str) -> None:
        """`reason`: a fixed word of the code (e.g. `busy`, `no_model`), never request data."""
        self.chat_rejected_total.labels(reason).inc()

    def count_update_job_failed(self, kind: str) -> None:
        """`kind`: the job's kind (agent/jobs.py), a fixed set."""
        self.update_jobs_failed_total.labels(kind).inc()

    def metered(self, model: ChatModel) -> MeteredModel:
        """`model`, with every `generate` call measured by `model_call()`."""
        return MeteredModel(model, self)

    # ------------------------------------------------------------------ the scrape

    def exposition(self) -> bytes:
        """Every metric in the text exposition format (reads the queue: blocking)."""
        return generate_latest(self.registry)


def model_error_kind(exc: BaseException) -> str:
    """A small fixed word for a failed model call; subclasses are checked before bases."""
    if isinstance(exc, ModelConnectionError):
        return "connection"
    if isinstance(exc, ProtocolError):
        return "protocol"
    if isinstance(exc, ModelResponseError):
        return "response"
    if isinstance(exc, ModelError):
        return "model"
    return OTHER


class MeteredModel:
    """A ChatModel that measures each call of the one it wraps (both phases of a turn, and
    the background worker's calls, go through the same model)."""

    def __init__(self, model: ChatModel, metrics: Metrics) -> None:
        self.model = model
        self.metrics = metrics

    @property
    def name(self) -> str:
        return self.model.name

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply:
        with self.metrics.model_call():
            return self.model.generate(
                messages, max_tokens=max_tokens, temperature=temperature, schema=schema
            )

    def close(self) -> None:
        # Backends with a connection pool have close(); the protocol does not require it.
        close: Callable[[], None] | None = getattr(self.model, "close", None)
        if close is not None:
            close()


class ServiceStateCollector(Collector):
    """Values read from the service at scrape time: the update queue and the worker."""

    def __init__(
        self,
        queue_status: Callable[[], QueueStatus],
        worker_alive: Callable[[], bool | None],
    ) -> None:
        self.queue_status = queue_status
        self.worker_alive = worker_alive

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Names only, so registering does not call the service (its store is not open yet).
        return [_queue_pending(), _queue_failed(), _worker_up()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families: list[GaugeMetricFamily] = []
        try:
            status = self.queue_status()
        except PersonaVLMError as exc:
            # The scrape still answers; a missing series is what alerts on `absent()` see.
            log.warning("metrics: the queue status is unavailable: %s", exc)
        else:
            families += [_queue_pending(status.pending), _queue_failed(status.failed)]
        alive = self.worker_alive()
        if alive is not None:  # None: no worker is meant to run (no model, --update inline)
            families.append(_worker_up(1.0 if alive else 0.0))
        return families


def _queue_pending(value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "personavlm_queue_pending", "Update jobs not done yet, failed ones included.", value
    )


def _queue_failed(value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "personavlm_queue_failed", "Pending update jobs whose last attempt failed.", value
    )


def _worker_up(value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "personavlm_worker_up", "1 while the background update worker runs, else 0.", value
    )


# ---------------------------------------------------------------------- the HTTP histogram


class RouteLabels:
    """The route label of a path: the template of the app's route it matches
    (`/v1/users/{user_id}/memories`), so the label set stays as small as the route table.

    Matched here rather than read from what the router chose, because the key check answers
    401 before routing: a refused request is still labelled with its route. The templates
    are the app's plain routes plus its OpenAPI paths (routers included into the app are not
    plain routes in every FastAPI version), read at the first request, once all exist.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def label(self, path: str, status: int) -> str:
        for pattern, template in self._compiled():
            if pattern.match(path):
                return template
        # No route: the page's files answered (any success), else an unknown path.
        return PAGE if status < 400 else OTHER

    def _compiled(self) -> list[tuple[re.Pattern[str], str]]:
        if self._patterns is None:
            templates = {r.path for r in self.app.routes if isinstance(r, Route)}
            templates |= set(self.app.openapi().get("paths", {}))
            # Fewer parameters first, so a fixed segment wins: were there a `/v1/users/me`,
            # it would not be counted as `/v1/users/{user_id}`.
            ordered = sorted(templates, key=lambda t: (t.count("{"), t))
            self._patterns = [(compile_path(t)[0], t) for t in ordered]
        return self._patterns


class MetricsMiddleware:
    """Times every HTTP request to the end of its answer (a streamed answer included) and
    records it by method, route template and status. Outside the key check, so 401s count."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: RouteLabels) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before its answer starts
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                route = self.routes.label(scope["path"], status)
                seconds = time.perf_counter() - started
                self.metrics.observe_request(scope["method"], route, status, seconds)

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the last byte leaves: a client's next request (a scrape) sees it.
                record()
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            record()  # the app failed or ended without a complete answer
