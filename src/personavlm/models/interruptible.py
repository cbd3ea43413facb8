"""An httpx client whose blocked reads a cancelled request can interrupt.

A model server that takes a minute before its first byte leaves the calling thread inside
`recv` for that minute; checking a flag between chunks cannot end that wait. So the model
clients open their connections through this network backend, which hands each new socket to
the request's budget (models/deadline.py): cancelling the request shuts the socket down,
the blocked read returns, and the thread is free at once. Connections are not kept alive,
so every request's socket is opened, and registered, in the request's own thread; a model
call takes seconds, a new connection milliseconds.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from personavlm.models import deadline

__all__ = ["interruptible_client"]


class _RegisteringBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        _register(stream)
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        _register(stream)
        return stream

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _register(stream: httpcore.NetworkStream) -> None:
    budget = deadline.current()
    sock = stream.get_extra_info("socket")
    if budget is None or not isinstance(sock, socket.socket):
        return

    def shut() -> None:
        # Wakes a thread blocked in recv on it; a socket closed already has nobody waiting.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    budget.on_cancel(shut)


def interruptible_client() -> httpx.Client:
    transport = httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    # httpx takes no network backend of its own; its pool (httpcore) does.
    pool = transport._pool
    pool._network_backend = _RegisteringBackend(pool._network_backend)
    return httpx.Client(transport=transport)
