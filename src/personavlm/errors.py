"""Every exception personavlm raises, grouped by who has to act.

```
PersonaVLMError                  base of everything below
├── InputError                   the caller's input is wrong: fix the call or the file
│   ├── ValidationError          a value is malformed (time string, memory type, empty or
│   │                            over-long text, invalid UTF-8, missing image file, ...)
│   ├── NotFoundError            an id names nothing: user, memory, event, turn
│   └── ConflictError            the request contradicts what is stored (a turn id re-used
│       │                        with other content, undo of a memory changed since, turns
│       │                        out of time order)
│       └── UserGoneError        the user was deleted while the request ran (nothing of the
│                                request was stored; the user stays forgotten)
├── ConfigError                  the set-up is wrong: fix settings or the environment
│   ├── EmbedderMismatchError    the store was indexed with another text encoder
│   ├── SchemaVersionError       the database was written by a newer personavlm
│   └── MissingDependencyError   an optional extra is not installed
├── StoreError                   the database itself failed (I/O, lock held too long,
│                                corruption): nothing the caller sent is to blame
└── ModelError                   the model or its server failed or misbehaved: retry later,
    │                            or fix the server/model set-up
    ├── ModelConnectionError     the server could not be reached or did not answer in time
    │                            (after the client's retries)
    └── ModelResponseError       the server answered with an error (unknown model, bad API
        │                        key, still overloaded after retries) or with a reply that
        │                        is not a chat completion
        └── ProtocolError        the reply is a completion but breaks the agent's output
                                 protocol (tags or json) even after one retry with the error
```

Messages say what to do next. Nothing in personavlm turns one of these into an empty
result: a failed search raises, it never returns no hits.
"""

from __future__ import annotations

__all__ = [
    "LIBRARY_ERROR_CODES",
    "ConfigError",
    "ConflictError",
    "EmbedderMismatchError",
    "InputError",
    "MissingDependencyError",
    "ModelConnectionError",
    "ModelError",
    "ModelResponseError",
    "NotFoundError",
    "PersonaVLMError",
    "ProtocolError",
    "SchemaVersionError",
    "StoreError",
    "UserGoneError",
    "ValidationError",
]


class PersonaVLMError(Exception):
    """Base class of every error personavlm raises on purpose."""


class InputError(PersonaVLMError):
    """The caller's input is wrong; the message says which value and how to fix it."""


class ValidationError(InputError, ValueError):
    """A value is malformed or out of range."""


class NotFoundError(InputError, LookupError):
    """An id (user, memory, event, turn) names nothing in the store."""


class ConflictError(InputError):
    """The request contradicts the stored state; nothing was written."""


class UserGoneError(ConflictError):
    """The user was deleted while the request ran; nothing of it was stored."""


class ConfigError(PersonaVLMError):
    """Settings or environment are wrong."""


class EmbedderMismatchError(ConfigError):
    """The store's vectors were made by another encoder than the one configured."""


class SchemaVersionError(ConfigError):
    """The database schema is newer than this version of personavlm understands."""


class MissingDependencyError(ConfigError):
    """An optional dependency is missing; the message gives the pip command."""


class StoreError(PersonaVLMError):
    """The database failed for a reason that is not the caller's input."""


class ModelError(PersonaVLMError):
    """The chat model or its server failed or misbehaved: retry later, or fix its set-up."""

    # Set by the agent when the user's message was kept (as a failed turn) before this
    # error reached the caller: the user's words are never lost to a model's fault.
    kept_turn_id: int | None = None
    # True when the failure says nothing about the request (the server unreachable, slow,
    # overloaded): retrying the same request later may well work. False when the server
    # refused or could not handle this request: the same request fails again.
    transient: bool = False


class ModelConnectionError(ModelError, ConnectionError):
    """The model server was unreachable or timed out on every attempt."""

    transient = True


class ModelResponseError(ModelError):
    """The model server answered with an error, or with something that is not a reply."""


class ProtocolError(ModelResponseError):
    """The model's reply breaks the agent's output protocol (tags or json); `reply` is the
    text that broke it, when known."""

    def __init__(
        self, message: str, *, reply: str = "", replies: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.reply = reply
        # Every reply that broke it (the first try and the retry), kept with a dead job.
        self.replies = replies if replies is not None else ((reply,) if reply else ())


# The service's answer for each exception (status, code), and the client's way back from a code
# to the exception: the one table both server/errors.py and client/ read. First match wins,
# so subclasses come before their bases; the first row of a code is the class a client raises.
LIBRARY_ERROR_CODES: tuple[tuple[type[PersonaVLMError], int, str], ...] = (
    (UserGoneError, 410, "user_gone"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (ValidationError, 400, "validation_error"),
    (InputError, 400, "validation_error"),
    (ConfigError, 500, "config_error"),
    (StoreError, 503, "store_error"),
    (ModelError, 502, "model_error"),
)
