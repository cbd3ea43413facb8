"""Fakes for the library's seams, shipped so users can test against them too.

`ScriptedOpenAIServer` is a real HTTP server on loopback that speaks the part of the OpenAI
API personavlm uses (`POST /v1/chat/completions`, `GET /v1/models`). A test scripts what it
answers with a handler, so the real client, its retries and its error handling all run:

    with ScriptedOpenAIServer(scripted("Hello!", ScriptedResponse(status=503))) as server:
        model = OpenAIChatModel("any", server.base_url)
        ...
        assert server.requests[0]["messages"][0]["content"] == "Hi"

A handler that raises (a failed assertion in it, or `scripted` called once too often) is
answered with HTTP 500 carrying the exception's text, and the `with` block re-raises it as an
AssertionError on exit, so a client that swallowed the 500 cannot hide it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

__all__ = [
    "Handler",
    "ScriptedOpenAIServer",
    "ScriptedResponse",
    "chat_completion",
    "count_words",
    "scripted",
]


@dataclass(frozen=True)
class ScriptedResponse:
    """One scripted answer.

    `body` is sent as given: a dict as JSON, a str or bytes verbatim (to script malformed
    answers). Without a body, a status below 400 sends a well-formed chat completion of
    `text`, and an error status sends an OpenAI-style `{"error": {...}}`. The server waits
    `delay_s` before answering (to script latency or timeouts); with `drip_s` it then sends
    the body one byte every `drip_s` seconds (a server that is alive but hopelessly slow);
    with `truncate_to` it announces the whole body but sends only that many bytes and
    closes (a reply cut off mid-way).
    """

    status: int = 200
    body: Mapping[str, Any] | str | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    text: str = ""
    drip_s: float = 0.0
    truncate_to: int | None = None


Handler = Callable[[dict[str, Any]], "str | ScriptedResponse"]


def count_words(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


def _prompt_words(request: Mapping[str, Any]) -> int:
    total = 0
    messages = request.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += count_words(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += count_words(part["text"])
    return total


_completion_ids = itertools.count(1)


def chat_completion(text: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """A well-formed `chat.completion` answering `request` with `text`, usage in words."""
    prompt, completion = _prompt_words(request), count_words(text)
    model = request.get("model")
    return {
        "id": f"chatcmpl-scripted-{next(_completion_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else "scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "scripted_error", "code": status}}


def scripted(*replies: str | ScriptedResponse) -> Handler:
    """A handler answering with `replies` in order; one call too many fails the test."""
    pending = deque(replies)
    lock = threading.Lock()

    def handler(request: dict[str, Any]) -> str | ScriptedResponse:
        with lock:
            if pending:
                return pending.popleft()
        excerpt = json.dumps(request)[:200]
        raise AssertionError(
            f"the scripted server was called more times than scripted "
            f"({len(replies)} replies); unexpected request: {excerpt}"
        )

    return handler


class _HTTPServer(ThreadingHTTPServer):
    owner: ScriptedOpenAIServer


class _RequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no keep-alive thread outlives its answer and
    # stop() can join every handler thread promptly.
    protocol_version = "HTTP/1.0"
    # A client that connects and sends nothing must not hold stop() forever.
    timeout = 10

    @property
    def owner(self) -> ScriptedOpenAIServer:
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output is no place for an access log."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._send(404, _error_body(404, f"no route GET {self.path}"), {})
            return
        data = [{"id": m, "object": "model", "owned_by": "scripted"} for m in self.owner.models]
        self._send(200, {"object": "list", "data": data}, {})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error_body(404, f"no route POST {self.path}"), {})
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._send(400, _error_body(400, "the request body is not a JSON object"), {})
            return
        self.owner._record(request, {k.lower(): v for k, v in self.headers.items()})
        answer = self.owner._answer(request)
        # Wait on the stop event, not time.sleep: stop() must not sit out a scripted delay.
        if answer.delay_s > 0 and self.owner._stopping.wait(answer.delay_s):
            return
        self._send(answer.status, self._body(answer, request), answer.headers, answer)

    @staticmethod
    def _body(answer: ScriptedResponse, request: dict[str, Any]) -> Mapping[str, Any] | str | bytes:
        if answer.body is not None:
            return answer.body
        if answer.status >= 400:
            try:
                phrase = HTTPStatus(answer.status).phrase
            except ValueError:
                phrase = "error"
            return _error_body(answer.status, phrase)
        return chat_completion(answer.text, request)

    def _send(
        self,
        status: int,
        body: Mapping[str, Any] | str | bytes,
        headers: Mapping[str, str],
        answer: ScriptedResponse | None = None,
    ) -> None:
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self._write_body(data, answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing is owed to it

    def _write_body(self, data: bytes, answer: ScriptedResponse | None) -> None:
        if answer is not None and answer.truncate_to is not None:
            data = data[: answer.truncate_to]
        if answer is None or answer.drip_s <= 0:
            self.wfile.write(data)
            return
        for index in range(len(data)):
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            if self.owner._stopping.wait(answer.drip_s):
                return


class ScriptedOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 (an OS-chosen port) answering via `handler`.

    Every chat request's JSON is kept in `requests` and its headers in `headers`, in arrival
    order. `handler_errors` holds what the handler raised.
    """

    def __init__(self, handler: Handler, *, models: Sequence[str] = ("scripted",)) -> None:
        self._handler = handler
        self.models = tuple(models)
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`; still answers after stop() (for error messages)."""
        if self._port is None:
            raise RuntimeError("the scripted server is not started; use start() or `with`")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of every chat request body received so far."""
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        """A snapshot of the chat requests' headers (names lower-cased), aligned with `requests`."""
        with self._lock:
            return list(self._headers)

    @property
    def handler_errors(self) -> list[BaseException]:
        with self._lock:
            return list(self._errors)

    def start(self) -> ScriptedOpenAIServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _RequestHandler)
        httpd.owner = self
        self._port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake any delayed answers, and join the server's threads."""
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        errors = self.handler_errors
        if exc is None and errors:
            raise AssertionError(
                f"the scripted server's handler failed {len(errors)} time(s); "
                f"first: {type(errors[0]).__name__}: {errors[0]}"
            ) from errors[0]

    def _record(self, request: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(request)
            self._headers.append(headers)

    def _answer(self, request: dict[str, Any]) -> ScriptedResponse:
        try:
            answer = self._handler(request)
            if isinstance(answer, str):
                return ScriptedResponse(text=answer)
            if isinstance(answer, ScriptedResponse):
                return answer
            raise TypeError(f"the handler returned {answer!r}, not a str or ScriptedResponse")
        except Exception as exc:  # a failing handler is the test's failure: report it
            with self._lock:
                self._errors.append(exc)
            message = f"{type(exc).__name__}: {exc}"
            return ScriptedResponse(status=500, body=_error_body(500, message))
