"""Where chat turns run: a bounded pool of their own, one deadline each, cancelled when the
client leaves.

A chat turn holds a thread for as long as the model takes (seconds to minutes). Run in the
server's shared thread pool, some dozens of slow turns would starve every other route (auth,
/healthz, the memory API) of threads. So turns run in this runner's own executor of
`max_inflight` threads, and a turn that finds them all busy is refused at once (429 with
Retry-After), not queued behind them. Each turn gets one budget of `model_timeout` seconds
for all its model calls, retries included (models/deadline.py); when its client disconnects
the budget is cancelled, so the model call stops at its next chunk or retry and the thread
comes back.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from personavlm.models import deadline
from personavlm.server.errors import ApiError, error_response

__all__ = ["CHAT_PATH", "ChatAdmissionMiddleware", "ChatRunner"]

CHAT_PATH = "/v1/chat/completions"

T = TypeVar("T")

# How often a waiting turn asks whether its client is still there.
_DISCONNECT_POLL_S = 0.25


class ChatRunner:
    def __init__(
        self,
        *,
        max_inflight: int,
        model_timeout_s: float,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.max_inflight = max_inflight
        self.model_timeout_s = model_timeout_s
        self._on_refused = on_refused
        self._executor = ThreadPoolExecutor(max_inflight, thread_name_prefix="personavlm-chat")
        self._lock = threading.Lock()
        self._inflight = 0
        self._typical_turn_s = 1.0  # moving average of a turn's time, for Retry-After
        # monotonic start of each turn running now, by a number of its own
        self._running_since: dict[int, float] = {}
        self._turn_numbers = itertools.count()

    def refuse_if_full(self) -> None:
        """ApiError 429 at once when every slot is taken: called before the request's body
        is read into a turn, so a refusal costs next to nothing (`run` checks again)."""
        with self._lock:
            if self._inflight >= self.max_inflight:
                self._refuse()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        work: Callable[[], T],
        *,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        """Run `work` (a whole chat turn) in the pool under one budget. Raises ApiError 429
        when every slot is busy; cancels the budget when `disconnected()` turns true or the
        caller is cancelled (a stream whose client left), then raises CancelledError."""
        self._take_slot()
        budget = deadline.new_budget(self.model_timeout_s)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, context.run, self._call, budget, work)
        try:
            if disconnected is None:
                return await asyncio.shield(future)
            return await self._until_done_or_gone(future, disconnected)
        except asyncio.CancelledError:
            budget.cancel()
            raise

    def _take_slot(self) -> None:
        with self._lock:
            if self._inflight >= self.max_inflight:
                self._refuse()
            self._inflight += 1

    def _refuse(self) -> None:
        if self._on_refused is not None:
            self._on_refused()
        raise ApiError(
            429,
            "model_busy",
            f"all {self.max_inflight} chat slots are busy with chat turns (--max-inflight); "
            "retry after the Retry-After seconds",
            headers={"Retry-After": str(self._retry_after())},
        )

    def _retry_after(self) -> int:
        # About how long a turn takes now, spread at random: a fixed 1 s made hundreds of
        # waiting clients come back in lock-step and crowd out every other route. A turn
        # still running for s seconds shows turns take at least s: before any has finished
        # (the average still at its 1 s prior) the refused would otherwise come back every
        # second for a whole slow-model call (a third of the slow-model run's refusals).
        now = time.monotonic()
        running = max((now - since for since in self._running_since.values()), default=0.0)
        typical = max(1.0, self._typical_turn_s, running)
        return max(1, round(typical * random.uniform(0.5, 1.5)))

    def _call(self, budget: deadline.Budget, work: Callable[[], T]) -> T:
        started = time.monotonic()
        with self._lock:
            number = next(self._turn_numbers)
            self._running_since[number] = started
        try:
            with deadline.active(budget):
                return work()
        finally:
            took = time.monotonic() - started
            with self._lock:  # the slot is free when the thread is, not when the client is
                self._inflight -= 1
                del self._running_since[number]
                self._typical_turn_s = 0.8 * self._typical_turn_s + 0.2 * took

    async def _until_done_or_gone(
        self, future: asyncio.Future[T], disconnected: Callable[[], Awaitable[bool]]
    ) -> T:
        while True:
            done, _ = await asyncio.wait({future}, timeout=_DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await disconnected():
                raise asyncio.CancelledError("the client disconnected")


class ChatAdmissionMiddleware:
    """Refuses a chat turn with 429 while every slot is busy, after the key is checked and
    before the body is read or validated: under a slow model most chat requests are
    refusals, and each must cost next to nothing and take no thread of the shared pool (a
    refusal in the route itself waited behind the memory routes for a thread: p95 0.7-1 s,
    docs/benchmarks.md). `ChatRunner.run` checks again when the turn takes its slot."""

    def __init__(self, app: ASGIApp, *, runner: ChatRunner, has_model: bool) -> None:
        self.app = app
        self.runner = runner
        self.has_model = has_model  # without a model the route answers 503, never 429

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.has_model
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == CHAT_PATH
        ):
            try:
                self.runner.refuse_if_full()
            except ApiError as exc:
                refusal = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
