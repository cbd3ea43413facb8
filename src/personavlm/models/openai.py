"""A `ChatModel` over any OpenAI-compatible chat-completions server.

vLLM, SGLang, Ollama, the llama.cpp server and OpenAI itself all speak
`POST {base_url}/chat/completions`. Images travel inside the message as base64 data URLs,
in place, so the model sees them where the user put them. Transient failures (429, 5xx,
refused connections, timeouts) are retried with exponential backoff; everything else raises
at once with a message that says what to fix. No failure becomes an empty reply.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from personavlm.errors import (
    ConfigError,
    ModelConnectionError,
    ModelResponseError,
    ValidationError,
)
from personavlm.models import deadline
from personavlm.models.base import ImagePart, Message, Reply, TextPart, Usage
from personavlm.models.interruptible import interruptible_client

__all__ = ["MAX_REPLY_BYTES", "RETRYABLE_STATUSES", "OpenAIChatModel"]

# Statuses that mean "not now" rather than "not this request": rate limits and overload.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A server asking for a longer pause than this is treated as asking for this: a caller that
# really wants to wait longer can raise max_retries.
MAX_RETRY_AFTER_S = 30.0
# A chat completion is a few kilobytes; a server sending more than this is broken.
MAX_REPLY_BYTES = 16 * 1024 * 1024
# How much of a server's body goes into an error message.
_BODY_EXCERPT = 300


class OpenAIChatModel:
    """Chat completions from `model` served at `base_url` (which ends in `/v1` as a rule).

    `client` lets a caller share a connection pool or add transport settings; when it is not
    given the model owns one and `close()` releases it. `sleep` is what waits between
    retries (tests pass a recorder so backoff costs no time).
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_settings(model, base_url, timeout_s, max_retries, backoff_s)
        self._model = model
        self._base_url = base_url.rstrip("/")
        self._url = f"{self._base_url}/chat/completions"
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._owns_client = client is None
        self._client = client if client is not None else interruptible_client()
        self._sleep = sleep
        self._rng = random.Random()

    @property
    def name(self) -> str:
        """The spec that `personavlm.models.load` turns back into this model."""
        return f"openai:{self._model}@{self._base_url}"

    @property
    def model(self) -> str:
        return self._model

    @property
    def base_url(self) -> str:
        return self._base_url

    def __repr__(self) -> str:
        # Never the API key.
        return f"OpenAIChatModel({self._model!r}, {self._base_url!r})"

    def close(self) -> None:
        """Release the connection pool, if this model created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> OpenAIChatModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        schema: Mapping[str, Any] | None = None,
    ) -> Reply:
        """One completion; raises ModelConnectionError or ModelResponseError on failure."""
        payload = build_payload(
            self._model, messages, max_tokens=max_tokens, temperature=temperature, schema=schema
        )
        response, latency_s = self._post_with_retries(payload)
        return self._parse_reply(response, latency_s)

    # -- transport ---------------------------------------------------------------------------

    def _post_with_retries(self, payload: dict[str, Any]) -> tuple[httpx.Response, float]:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        attempts = self._max_retries + 1
        last_cause = ""
        unreachable = False
        for attempt in range(attempts):
            # The request's budget (models/deadline.py) bounds every try and every wait.
            timeout_s = deadline.remaining(self._timeout_s)
            started = time.perf_counter()
            try:
                response = self._post_once(payload, headers, timeout_s)
            except httpx.TimeoutException:
                last_cause, unreachable = f"no answer within {timeout_s:g} s", True
                retry_after = None
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                last_cause, unreachable = f"{type(exc).__name__}: {exc}", True
                retry_after = None
            else:
                latency_s = time.perf_counter() - started
                if response.status_code not in RETRYABLE_STATUSES:
                    return response, latency_s
                last_cause = f"HTTP {response.status_code}{self._server_said(response)}"
                unreachable = False
                retry_after = _retry_after_s(response)
            if attempt + 1 < attempts:
                self._pause(retry_after if retry_after is not None else self._backoff(attempt))
        budget = deadline.current()
        if budget is not None:  # a failure that is really the request's end says so
            budget.check()
        raise self._exhausted(attempts, last_cause, unreachable)

    def _post_once(
        self, payload: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> httpx.Response:
        """One POST whose body is read chunk by chunk, checking the request's budget between
        chunks: httpx's timeout is per read, so a server dripping bytes slower than that
        would otherwise hold the call for ever."""
        with self._client.stream(
            "POST", self._url, json=payload, headers=headers, timeout=timeout_s
        ) as streamed:
            body = bytearray()
            for chunk in streamed.iter_bytes():
                body += chunk
                deadline.remaining(self._timeout_s)  # raises once the budget is spent
                if len(body) > MAX_REPLY_BYTES:
                    raise ModelResponseError(
                        f"the model server at {self._url} sent more than {MAX_REPLY_BYTES} "
                        "bytes for one completion; it is misbehaving"
                    )
            return httpx.Response(
                streamed.status_code,
                headers=streamed.headers,
                content=bytes(body),
                request=streamed.request,
            )

    def _pause(self, seconds: float) -> None:
        if deadline.current() is None:
            self._sleep(seconds)
        else:  # wakes early (and raises) on cancellation or when the budget runs out
            deadline.wait(seconds)

    def _backoff(self, attempt: int) -> float:
        # Exponential, with up to 25% jitter so clients that failed together do not retry
        # together; successive delays still strictly increase.
        base = self._backoff_s * (2.0**attempt)
        return base * (1.0 + 0.25 * self._rng.random())

    def _exhausted(
        self, attempts: int, last_cause: str, unreachable: bool
    ) -> ModelConnectionError | ModelResponseError:
        tried = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if unreachable:
            return ModelConnectionError(
                f"could not reach the model server at {self._url} after {tried} "
                f"(last: {last_cause}); check that the server is running and the base URL "
                "is right, or retry later"
            )
        overloaded = ModelResponseError(
            f"the model server at {self._url} still failed after {tried} "
            f"(last: {last_cause}); it is overloaded or failing: retry later, "
            "or raise max_retries"
        )
        overloaded.transient = True  # 429 / 5xx: says nothing about the request itself
        return overloaded

    # -- answers ---------------------------------------------------------------------------

    def _parse_reply(self, response: httpx.Response, latency_s: float) -> Reply:
        if not response.is_success:
            raise self._status_error(response)
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise ModelResponseError(
                f"the model server at {self._url} answered HTTP {response.status_code} "
                "without a chat completion (no choices[0].message.content); it said: "
                f"{self._excerpt(response.text)!r}"
            )
        finish = choice.get("finish_reason")
        model = body.get("model")
        return Reply(
            text=text,
            usage=_usage(body.get("usage")),
            model=model if isinstance(model, str) and model else self._model,
            latency_s=latency_s,
            finish_reason=finish if isinstance(finish, str) else None,
        )

    def _status_error(self, response: httpx.Response) -> ModelResponseError:
        status = response.status_code
        said = self._server_said(response)
        if status == 404:
            return ModelResponseError(
                f"the model server at {self._url} answered HTTP 404 for model "
                f"{self._model!r}{said}; check the model name and the base URL "
                f"(OpenAI-compatible servers answer 404 for a model they do not serve; "
                f"GET {self._base_url}/models lists the ones they do)"
            )
        if status in (401, 403):
            sent = "the API key it was sent" if self._api_key else "a request without an API key"
            return ModelResponseError(
                f"the model server at {self._url} refused {sent} (HTTP {status}){said}; "
                "check the API key passed as api_key"
            )
        return ModelResponseError(
            f"the model server at {self._url} rejected the request with HTTP {status}{said}"
        )

    def _server_said(self, response: httpx.Response) -> str:
        """`: <the server's error message>`, or "" when the body says nothing useful."""
        message = _error_message(response)
        return f": {self._excerpt(message)}" if message else ""

    def _excerpt(self, text: str) -> str:
        # A server may echo the request's headers back; the key must not reach a log.
        if self._api_key:
            text = text.replace(self._api_key, "<api key>")
        text = " ".join(text.split())
        if len(text) > _BODY_EXCERPT:
            return text[:_BODY_EXCERPT] + "..."
        return text


def build_payload(
    model: str,
    messages: Sequence[Message],
    *,
    max_tokens: int,
    temperature: float,
    schema: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON body of one chat-completions request."""
    if not messages:
        raise ValidationError("messages is empty; pass at least one Message")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValidationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not 0.0 <= temperature <= 2.0:
        raise ValidationError(f"temperature must be between 0 and 2, got {temperature!r}")
    payload: dict[str, Any] = {
        "model": model,
        "messages": [_wire_message(m) for m in messages],
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    if schema is not None:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": dict(schema), "strict": True},
        }
    return payload


def _wire_message(message: Message) -> dict[str, Any]:
    parts = message.parts
    # A lone text part goes as a plain string: every server accepts that form, while some
    # (older llama.cpp builds, some Ollama versions) reject part lists for system messages.
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return {"role": message.role, "content": parts[0].text}
    return {"role": message.role, "content": [_wire_part(p) for p in parts]}


def _wire_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    encoded = base64.b64encode(part.data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{part.mime};base64,{encoded}"}}


def _usage(raw: object) -> Usage:
    if not isinstance(raw, dict):
        return Usage(0, 0)

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return Usage(count("prompt_tokens"), count("completion_tokens"))


def _retry_after_s(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds, capped; None when absent or an HTTP date."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative: ignore the header
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def _error_message(response: httpx.Response) -> str:
    """The server's own words: `{"error": {"message"}}`, `{"error": "..."}`, `{"detail"}`."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text


def _check_settings(
    model: str, base_url: str, timeout_s: float, max_retries: int, backoff_s: float
) -> None:
    if not model:
        raise ConfigError("the model name is empty; give the name the server serves it under")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"base URL {base_url!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"base URL {base_url!r} must be http(s)://host[:port]/..., "
            "e.g. http://127.0.0.1:8000/v1"
        )
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if not backoff_s >= 0:
        raise ConfigError(f"backoff_s must be >= 0, got {backoff_s!r}")
