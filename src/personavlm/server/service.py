"""Service: what the app holds while it runs (the store, the model, the Assistant).

Opened by the app's lifespan and closed by it; routes reach it through `request.app.state`.
Opening registers the configured admin key (idempotent: only its hash is stored) or, when the
store has no admin key and none was configured, generates one and hands it to
`config.announce_admin_key` once.

`metrics` (server/metrics.py) exist from the start; a scrape reads the queue and the worker
through the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from personavlm import embed, models
from personavlm.agent import AgentConfig, Assistant
from personavlm.agent.worker import release_orphaned_claims
from personavlm.embed.batching import BatchingEmbedder
from personavlm.errors import ConfigError
from personavlm.memory import MemoryStore
from personavlm.models import ChatModel
from personavlm.server.chat_runner import ChatRunner
from personavlm.server.config import ServiceConfig
from personavlm.server.errors import model_not_configured
from personavlm.server.metrics import Metrics

__all__ = ["Service", "ServiceDep", "get_service"]


class Service:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._store: MemoryStore | None = None
        self._model: ChatModel | None = None
        self._assistant: Assistant | None = None
        # The store is opened later: the queue is read through the property at each scrape.
        self.metrics = Metrics(
            queue_status=lambda: self.store.queue_status(), worker_alive=self.worker_alive
        )
        self.chat_runner = ChatRunner(
            max_inflight=config.max_inflight,
            model_timeout_s=config.model_timeout_s,
            on_refused=lambda: self.metrics.count_chat_rejected("busy"),
        )

    def open(self) -> None:
        store = MemoryStore.open(
            self.config.location,
            # Requests embed one short text each: merged into shared passes under load.
            embedder=BatchingEmbedder(embed.load(self.config.embedder)),
            blob_dir=self.config.blob_dir,
            max_image_pixels=self.config.max_image_pixels,
        )
        self._store = store
        try:
            # Load the encoder now, before /healthz says ok: lazily it cost the first search
            # (and the first update job after a restart) 6-7 s (docs/benchmarks.md).
            store.embedder.encode(["warm up"])
            self._ensure_admin_key(store)
            # Jobs claimed by a worker that died here (kill -9, a reboot) run again now, not
            # when their lease runs out.
            release_orphaned_claims(store)
            if self.config.model is not None:
                self._model = self.metrics.metered(_load_model(self.config))
                agent = AgentConfig(
                    protocol=self.config.protocol,
                    update=self.config.update,
                    prompts=self.config.prompts,
                )
                self._assistant = Assistant(store, self._model, agent)
                self._assistant.worker.on_failure = lambda report: (
                    self.metrics.count_update_job_failed(report.kind)
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.chat_runner.close()
        if self._assistant is not None:
            self._assistant.close()  # stops the worker; queued jobs stay queued
            self._assistant = None
        if self._model is not None:
            close: Callable[[], None] | None = getattr(self._model, "close", None)
            if close is not None:
                close()
            self._model = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> MemoryStore:
        if self._store is None:
            raise ConfigError("the service is not running (its store is closed)")
        return self._store

    @property
    def has_model(self) -> bool:
        return self.config.model is not None

    @property
    def assistant(self) -> Assistant:
        """The Assistant; answers 503 model_not_configured when no model is attached."""
        if self._assistant is None:
            raise model_not_configured()
        return self._assistant

    def worker_alive(self) -> bool | None:
        """Whether the background update worker runs; None where none is meant to (no model,
        or `--update inline`): the `personavlm_worker_up` gauge is then left out."""
        return None if self._assistant is None else self._assistant.worker_alive

    def wake_worker(self) -> None:
        """Have the background worker look at the queue now (a job was put back in it)."""
        if self._assistant is not None:
            self._assistant.wake_worker()

    def health(self) -> tuple[str, list[str]]:
        """("ok" | "degraded", why): degraded while the update worker is down or restarting."""
        problems = []
        if self._assistant is not None and (problem := self._assistant.worker_problem) is not None:
            problems.append(problem)
        return ("degraded" if problems else "ok"), problems

    def _ensure_admin_key(self, store: MemoryStore) -> None:
        if self.config.admin_key is not None:
            store.register_api_key(self.config.admin_key, None, label="PERSONAVLM_ADMIN_KEY")
        elif not store.has_admin_key():
            _record, secret = store.create_api_key(None, label="generated at first start")
            self.config.announce_admin_key(secret)


def _load_model(config: ServiceConfig) -> ChatModel:
    # Only the OpenAI-compatible backend takes a key and a network timeout (each try gets at
    # most the request's whole budget; the budget itself bounds the tries together); the
    # in-process one keeps a GGUF file converted for the next start.
    spec = config.model
    assert spec is not None
    options: dict[str, object] = {}
    if spec.startswith("openai:"):
        options = {"api_key": config.model_api_key, "timeout_s": config.model_timeout_s}
    elif spec.startswith(("hf:", "local:")) and config.model_cache is not None:
        options = {"gguf_cache": config.model_cache}
    return models.load(spec, **options)


def get_service(request: Request) -> Service:
    service = request.app.state.service
    assert isinstance(service, Service)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
