"""One time budget per request, honoured by every model call made on its behalf.

    with deadline(60.0) as budget:          # the service, per chat request
        assistant.respond(...)               # every model call checks budget.remaining()
    budget.cancel()                          # from another thread: the client went away

The budget travels in a context variable, so it follows the request into the agent and the
model backends (and into worker threads started with `contextvars.copy_context().run`)
without threading a parameter through every call. Backends use `remaining()` as their
network timeouts, stop waiting between retries when it runs out or the request is
cancelled, and check it between the bytes of a reply, so a server that drips one byte every
few seconds cannot hold a request past its deadline by more than one such gap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from personavlm.errors import ModelConnectionError

__all__ = [
    "Budget",
    "ModelCancelledError",
    "active",
    "current",
    "deadline",
    "new_budget",
    "remaining",
    "wait",
]


class ModelCancelledError(ModelConnectionError):
    """The request the model call served was cancelled (its client went away)."""


@dataclass
class Budget:
    seconds: float
    ends_at: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    _on_cancel: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self) -> float:
        return self.ends_at - time.monotonic()

    def cancel(self) -> None:
        """Cancel the request: every waiting call wakes (its socket is shut by the hook its
        backend registered) and raises ModelCancelledError."""
        with self._lock:
            self.cancelled.set()
            hooks, self._on_cancel = self._on_cancel, []
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run `hook` when the request is cancelled (at once if it is already)."""
        with self._lock:
            if not self.cancelled.is_set():
                self._on_cancel.append(hook)
                return
        hook()

    def check(self) -> None:
        """ModelCancelledError or ModelConnectionError when the request may not go on."""
        if self.cancelled.is_set():
            raise ModelCancelledError("the request was cancelled (its client disconnected)")
        if self.remaining() <= 0:
            raise ModelConnectionError(
                f"the model did not finish within the request's {self.seconds:g} s budget "
                "(--model-timeout, retries included); the model server is too slow or stuck"
            )


_CURRENT: ContextVar[Budget | None] = ContextVar("personavlm_model_budget", default=None)


def new_budget(seconds: float) -> Budget:
    return Budget(seconds, time.monotonic() + seconds)


@contextmanager
def deadline(seconds: float) -> Iterator[Budget]:
    """Model calls inside the block share `seconds` in all (retries and waits included)."""
    with active(new_budget(seconds)) as budget:
        yield budget


@contextmanager
def active(budget: Budget) -> Iterator[Budget]:
    """Make an existing budget the current one (in the thread that does the work, when the
    budget was made where the request is watched)."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def current() -> Budget | None:
    return _CURRENT.get()


def remaining(cap: float) -> float:
    """The time a call may take now: `cap`, or less when the request's budget says so.
    Raises when the budget is spent or the request cancelled."""
    budget = _CURRENT.get()
    if budget is None:
        return cap
    budget.check()
    return min(cap, budget.remaining())


def wait(seconds: float) -> None:
    """Sleep `seconds` (a backoff), waking early to raise when the request is cancelled or
    its budget runs out first."""
    budget = _CURRENT.get()
    if budget is None:
        time.sleep(seconds)
        return
    budget.cancelled.wait(min(seconds, max(budget.remaining(), 0.0)))
    budget.check()
