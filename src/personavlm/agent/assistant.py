"""Assistant: a chat model made into a long-term personal assistant (PAPER.md sections 1-4).

    store = MemoryStore.open("memory.db", embedder=personavlm.embed.load("minilm"))
    model = personavlm.models.load("openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1")
    with Assistant(store, model, AgentConfig(protocol="tags")) as assistant:
        reply = assistant.respond("ann", "What is my dog called?", images=["bobby.png"])
        print(reply.answer, reply.trace.to_dict())

`respond` runs the response phase (context, think/retrieve/answer, at most `max_retrievals`
searches), then stores the exchange and its update job in one transaction. With
`update="inline"` the update phase runs right away and its report is in the trace; with
`update="background"` a worker thread runs it and `respond` returns as soon as the exchange is
stored; with `update="queue"` it is only queued, for a `personavlm worker` process. Either way
the job is durable: see agent/worker.py.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from personavlm.agent import reference
from personavlm.agent.calls import CallSettings
from personavlm.agent.context import response_message
from personavlm.agent.exchange import (
    Exchange,
    close_session,
    fit_reply,
    record_exchange,
    record_unanswered,
)
from personavlm.agent.protocol import Protocol
from personavlm.agent.respond import SearchFn, run_response
from personavlm.agent.retrieval import (
    ReferenceQuery,
    RetrievalMode,
    check_retrieval,
    reference_hits,
)
from personavlm.agent.templates import Templates
from personavlm.agent.trace import Trace, UpdateReport
from personavlm.agent.update import (
    MAX_MEMORY_CHARS,
    MAX_SESSION_OPS,
    MAX_TURN_OPS,
    UpdatePhase,
)
from personavlm.agent.worker import BackgroundWorker, Worker
from personavlm.errors import ConflictError, ModelError, ValidationError
from personavlm.media.blobs import ImageSource
from personavlm.memory.records import DEFAULT_K, Hit, ImageRef, MemoryType
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import SESSION_GAP, TurnInput
from personavlm.memory.validate import check_text, check_user_id
from personavlm.models.base import ChatModel, Message
from personavlm.personality import PersonalityState, SkipRule, check_skip_rule
from personavlm.timeutil import TimeWindow, local_now, parse_time, to_storage

__all__ = ["AgentConfig", "Assistant", "Response"]

# inline: run the update before respond returns; background: a worker thread in this process
# runs it; queue: only queue it (a `personavlm worker` process runs the queue).
UpdateMode = Literal["inline", "background", "queue"]

_RETRIEVED_TYPES = (MemoryType.SEMANTIC, MemoryType.EPISODIC, MemoryType.PROCEDURAL)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    protocol: Protocol | str = Protocol.JSON
    max_retrievals: int = 3  # PAPER.md section 4: training allows 3
    k: Mapping[str, int] = field(
        default_factory=lambda: {t.value: DEFAULT_K[t] for t in _RETRIEVED_TYPES}
    )
    max_tokens: int = 1024
    temperature: float = 0.0
    update: UpdateMode = "inline"
    # What one update job may write (agent/update.py says why these numbers); the excess is
    # dropped with a note in the update report.
    max_turn_ops: int = MAX_TURN_OPS
    max_session_ops: int = MAX_SESSION_OPS
    max_memory_chars: int = MAX_MEMORY_CHARS
    # Attempts before an update job is dead-lettered (agent/worker.py).
    max_attempts: int = 3
    # The paper's ablations and the reference's behaviours (docs/evaluation.md). pem=False:
    # readings are never absorbed and the prompt shows the neutral start; skip_rule: which
    # neutral readings PEM skips (personality/pem.py); retrieval: agent/retrieval.py.
    pem: bool = True
    skip_rule: SkipRule | str = SkipRule.PAPER
    retrieval: RetrievalMode | str = RetrievalMode.OURS
    # A directory of prompt templates replacing the package's by file name (agent/
    # templates.py; docs/reference-format.md lists the placeholders); checked when the
    # Assistant is built.
    prompts: str | None = None

    def __post_init__(self) -> None:
        if str(self.protocol) not in Protocol._value2member_map_:
            raise ValidationError(f"protocol must be 'tags' or 'json', got {self.protocol!r}")
        object.__setattr__(self, "protocol", Protocol(str(self.protocol)))
        if not isinstance(self.max_retrievals, int) or not 0 <= self.max_retrievals <= 10:
            raise ValidationError(
                f"max_retrievals must be an integer in 0..10, got {self.max_retrievals!r}"
            )
        if self.update not in ("inline", "background", "queue"):
            raise ValidationError(
                f"update must be 'inline', 'background' or 'queue', got {self.update!r}"
            )
        if self.max_tokens < 1:
            raise ValidationError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not isinstance(self.pem, bool):
            raise ValidationError(f"pem must be true or false, got {self.pem!r}")
        object.__setattr__(self, "skip_rule", check_skip_rule(self.skip_rule))
        object.__setattr__(self, "retrieval", check_retrieval(str(self.retrieval)))

    def ablations(self) -> dict[str, object]:
        """The switches a run's report records."""
        return {
            "pem": self.pem,
            "skip_rule": str(self.skip_rule),
            "retrieval": str(self.retrieval),
        }


@dataclass(frozen=True, slots=True)
class Response:
    answer: str
    trace: Trace
    exchange: Exchange

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "user_turn_id": self.exchange.user_turn.id,
            "assistant_turn_id": self.exchange.assistant_turn.id,
            "time": to_storage(self.exchange.user_turn.time),
            "trace": self.trace.to_dict(),
        }


class _UserLock:
    """A user's lock; weakly held, so users that stopped talking cost nothing."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()


class Assistant:
    def __init__(
        self, store: MemoryStore, model: ChatModel, config: AgentConfig | None = None
    ) -> None:
        self.store = store
        self.model = model
        self.config = config or AgentConfig()
        self.settings = CallSettings(self.config.max_tokens, self.config.temperature)
        protocol = Protocol(str(self.config.protocol))
        self.templates = Templates.load(self.config.prompts)
        phase = UpdatePhase(
            store,
            model,
            protocol,
            self.settings,
            max_turn_ops=self.config.max_turn_ops,
            max_session_ops=self.config.max_session_ops,
            max_memory_chars=self.config.max_memory_chars,
            pem=self.config.pem,
            skip_rule=SkipRule(str(self.config.skip_rule)),
            templates=self.templates,
        )
        self.worker = Worker(store, phase, max_attempts=self.config.max_attempts)
        self._user_locks: weakref.WeakValueDictionary[str, _UserLock] = (
            weakref.WeakValueDictionary()
        )
        self._locks_guard = threading.Lock()
        self._background: BackgroundWorker | None = None
        if self.config.update == "background":
            self._background = BackgroundWorker(self.worker)
            self._background.start()

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wake_worker(self) -> None:
        """Have the background worker (if one runs here) look at the queue now."""
        if self._background is not None:
            self._background.notify()

    @property
    def worker_alive(self) -> bool | None:
        """Whether the background worker thread runs (None: none runs in this process)."""
        return None if self._background is None else self._background.alive

    @property
    def worker_problem(self) -> str | None:
        """Why the background worker is not healthy (None: healthy, or none runs here)."""
        return None if self._background is None else self._background.problem

    def close(self) -> None:
        """Stop the background worker; later updates are only queued (pending jobs stay
        queued for the next worker)."""
        if self._background is not None:
            self._background.stop()
            self._background = None

    # ------------------------------------------------------------------ the turn

    def respond(
        self,
        user_id: str,
        text: str,
        images: Sequence[ImageSource] = (),
        time: str | datetime | None = None,
    ) -> Response:
        """Answer one message; the exchange is stored and its update queued (and run, inline).

        Without `time` the exchange takes its time when it is stored, so overlapping calls of
        one user are appended in the order they finish; with `time` the user's calls run one
        at a time (each checks its time against the log before asking the model). A model
        that fails raises ModelError after the message is kept as a failed turn
        (`error.kept_turn_id`); a user deleted meanwhile raises UserGoneError, storing
        nothing."""
        with self._turns_of(user_id, serialised=time is not None):
            epoch = self.store.user_epoch(user_id)
            when, refs = self._incoming(user_id, text, images, time)
            user_turn = TurnInput.create(
                time=when, role="user", text=text, image_ids=tuple(r.id for r in refs)
            )
            try:
                answer, trace = self._respond(user_id, text, refs, when)
            except ModelError as exc:
                kept = record_unanswered(
                    self.store, user_id, user_turn, epoch=epoch, stamp_now=time is None
                )
                exc.kept_turn_id = kept.id
                raise
            answer, trace.notes = fit_reply(answer)
            reply_turn = TurnInput.create(time=when, role="assistant", text=answer)
            exchange = record_exchange(
                self.store, user_id, user_turn, reply_turn, epoch=epoch, stamp_now=time is None
            )
        assert exchange is not None  # new turns have no ids, so they are always stored
        trace.updates = self._after_exchange(user_id, exchange)
        return Response(exchange.assistant_turn.text, trace, exchange)

    def ask(
        self,
        user_id: str,
        text: str,
        images: Sequence[ImageSource] = (),
        time: str | datetime | None = None,
    ) -> tuple[str, Trace]:
        """The response phase alone: answer from memory as of `time` and store nothing (no
        turn, no update). For evaluation, where a question must not change what is known."""
        when, refs = self._incoming(user_id, text, images, time)
        return self._respond(user_id, text, refs, when)

    def record(
        self,
        user_id: str,
        text: str,
        answer: str,
        *,
        images: Sequence[ImageSource] = (),
        time: str | datetime,
        ext_id: str | None = None,
    ) -> tuple[Exchange | None, list[UpdateReport]]:
        """Store an exchange that happened elsewhere (an imported history: the stored reply is
        replayed, no response phase) and run or queue its update like `respond` does.
        Idempotent by `ext_id` (turn ids `<ext_id>:user` and `<ext_id>:assistant`)."""
        check_user_id(user_id)
        check_text(text, field="user text", allow_empty=bool(images))
        check_text(answer, field="assistant reply", allow_empty=True)
        when = parse_time(time)
        refs = [self.store.store_image(source) for source in images]
        user_turn = TurnInput.create(
            time=when,
            role="user",
            text=text,
            image_ids=tuple(r.id for r in refs),
            ext_id=None if ext_id is None else f"{ext_id}:user",
        )
        reply = TurnInput.create(
            time=when,
            role="assistant",
            text=answer,
            ext_id=None if ext_id is None else f"{ext_id}:assistant",
        )
        exchange = record_exchange(self.store, user_id, user_turn, reply)
        if exchange is None:
            return None, []
        return exchange, self._after_exchange(user_id, exchange)

    def close_session(self, user_id: str) -> list[UpdateReport]:
        """Close the user's current session now: summarise it (inline) or queue that."""
        job_id = close_session(self.store, user_id)
        if job_id is None:
            return []
        if self.config.update != "inline":
            if self._background is not None:
                self._background.notify()
            return [UpdateReport(job_id, user_id, "session", "queued")]
        return self.worker.drain(user_id, ignore_backoff=True)

    def run_pending(
        self, user_id: str | None = None, *, ignore_backoff: bool = False
    ) -> list[UpdateReport]:
        """Run queued update jobs now (all users, or one), until none is runnable."""
        return self.worker.drain(user_id, ignore_backoff=ignore_backoff)

    # ------------------------------------------------------------------ internals

    def _incoming(
        self,
        user_id: str,
        text: str,
        images: Sequence[ImageSource],
        time: str | datetime | None,
    ) -> tuple[datetime, list[ImageRef]]:
        check_user_id(user_id)
        check_text(text, field="message", allow_empty=bool(images))
        when = local_now() if time is None else parse_time(time)
        if time is not None:  # without a time, the exchange is stamped when it is stored
            self._check_order(user_id, when)
        return when, [self.store.store_image(source) for source in images]

    def _respond(
        self, user_id: str, text: str, refs: Sequence[ImageRef], when: datetime
    ) -> tuple[str, Trace]:
        protocol = Protocol(str(self.config.protocol))
        trace = Trace(protocol.value)
        messages = [self._context(user_id, text, refs, when)]
        if protocol is Protocol.JSON:  # the tags weights were trained without a system prompt
            limit = str(self.config.max_retrievals)
            system = self.templates.text("response_json", MaxRetrievals=limit)
            messages.insert(0, Message.text("system", system))
        answer = run_response(
            self.model,
            messages,
            self._searcher(user_id, text, when),
            protocol=protocol,
            max_retrievals=self.config.max_retrievals,
            settings=self.settings,
            trace=trace,
            blobs=self.store.blobs,
            templates=self.templates,
        )
        return answer, trace

    def _after_exchange(self, user_id: str, exchange: Exchange) -> list[UpdateReport]:
        if self.config.update != "inline":
            if self._background is not None:
                self._background.notify()
            return [UpdateReport(exchange.job_id, user_id, "turn", "queued")]
        # Inline: run this user's queue now, earlier failed jobs included (the caller is
        # waiting for the update anyway, and a model that recovered should catch up).
        reports = self.worker.drain(user_id, ignore_backoff=True)
        if not any(r.job_id == exchange.job_id for r in reports):
            blocked = next((r for r in reports if r.status == "failed"), None)
            note = f"waits behind failed job {blocked.job_id}" if blocked else "still queued"
            reports.append(UpdateReport(exchange.job_id, user_id, "turn", "queued", error=note))
        return reports

    @contextmanager
    def _turns_of(self, user_id: str, *, serialised: bool) -> Iterator[None]:
        """The user's lock when `serialised` (explicit times: one call at a time per user)."""
        if not serialised:
            yield
            return
        with self._locks_guard:
            lock = self._user_locks.setdefault(user_id, _UserLock())
        with lock.lock:
            yield

    def _check_order(self, user_id: str, when: datetime) -> None:
        latest = self.store.latest_turn(user_id) if self.store.has_user(user_id) else None
        if latest is not None and when < latest.time:
            raise ConflictError(
                f"message time {to_storage(when)} is before user {user_id!r}'s latest turn "
                f"at {to_storage(latest.time)}; conversation time only moves forward"
            )

    def _context(
        self, user_id: str, text: str, refs: Sequence[ImageRef], when: datetime
    ) -> Message:
        known = self.store.has_user(user_id)
        core = self.store.list(user_id, types=["core"], limit=1000) if known else []
        tracked = known and self.config.pem  # without PEM the prompt shows the neutral start
        personality = self.store.personality(user_id) if tracked else PersonalityState.initial()
        recent = self.store.turns(user_id, start=when - SESSION_GAP, end=when) if known else []
        ids = list(dict.fromkeys(i for t in recent for i in t.image_ids))
        recent_images = {ref.id: ref for ref in self.store.images(ids)}
        if Protocol(str(self.config.protocol)) is Protocol.TAGS:
            return reference.step_message(
                self.templates,
                core=core,
                personality=personality,
                recent=recent,
                recent_images=recent_images,
                query=text,
                query_images=refs,
                time=when,
                blobs=self.store.blobs,
            )
        return response_message(
            core=core,
            personality=personality,
            recent=recent,
            recent_images=recent_images,
            query=text,
            query_images=refs,
            time=when,
            blobs=self.store.blobs,
        )

    def _searcher(self, user_id: str, text: str, when: datetime) -> SearchFn:
        mode = RetrievalMode(str(self.config.retrieval))
        if mode is RetrievalMode.NONE:
            return lambda _words, _window, _seen: []
        if mode is RetrievalMode.OURS:
            return lambda words, window, seen: self._search(user_id, words, window, seen)
        query = ReferenceQuery(user_id, text, when, self.config.k)

        def search(words: str, window: TimeWindow, seen: frozenset[int]) -> list[Hit]:
            if not self.store.has_user(user_id):
                return []  # a first message: there is no memory to search yet
            return reference_hits(self.store, query, words, window, seen)

        return search

    def _search(
        self,
        user_id: str,
        keywords: str,
        window: TimeWindow,
        seen: frozenset[int],
    ) -> list[Hit]:
        if not self.store.has_user(user_id):
            return []  # a first message: there is no memory to search yet
        return self.store.search(
            user_id,
            keywords,
            types=list(self.config.k),
            k=dict(self.config.k),
            window=window,
            exclude_ids=seen,
        )
