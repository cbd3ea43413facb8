"""The agent on the command line: `personavlm chat`, `worker`, `status`, and the Persona-MME
replay behind `personavlm ingest --format persona-mme`.

Thin like every command: parse flags and input lines, build an `Assistant`, print its traces
and update reports. The chat model comes from `--model` or PERSONAVLM_MODEL and its key from
PERSONAVLM_API_KEY / OPENAI_API_KEY (settings.py); the library never reads the environment.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from personavlm.agent.protocol import Protocol
from personavlm.cli.common import (
    DbOption,
    EmbedderOption,
    JsonOption,
    emit,
    fail_on_errors,
    open_store,
)
from personavlm.errors import (
    ConfigError,
    InputError,
    ModelError,
    NotFoundError,
    PersonaVLMError,
    StoreError,
    ValidationError,
)
from personavlm.settings import api_key, model_cache_dir, model_spec
from personavlm.timeutil import display_time, parse_time

if TYPE_CHECKING:
    # At run time the agent, the store and the models are imported inside the functions that
    # use them: `personavlm --help` builds these commands and must not load numpy or httpx.
    from personavlm.agent import AgentConfig, Assistant, Response, Trace, UpdateReport
    from personavlm.interop import History
    from personavlm.memory.queue import QueueStatus
    from personavlm.memory.store import MemoryStore
    from personavlm.models import ChatModel

__all__ = [
    "ChatInput",
    "ModelOption",
    "ProtocolOption",
    "chat",
    "ingest_persona_mme",
    "persona_mme_text",
    "render_steps",
    "render_updates",
    "status",
    "worker",
]

ModelOption = typer.Option(
    None,
    "--model",
    help="Chat model: openai:<model>@<base_url> (any OpenAI-compatible server), "
    "hf:<checkpoint dir or .gguf file>, or local:smollm2 (bundled, tiny: a demonstration). "
    "Default: $PERSONAVLM_MODEL, else local:smollm2. API key: $PERSONAVLM_API_KEY, "
    "else $OPENAI_API_KEY.",
    show_default=False,
)
ProtocolOption = typer.Option(
    Protocol.JSON,
    "--protocol",
    help="How the model writes its steps: json (any instruction model), or tags (the "
    "PersonaVLM weights' format).",
)


class SkipRuleChoice(StrEnum):  # personality/pem.py SkipRule, without importing it here
    PAPER = "paper"
    REFERENCE = "reference"


class RetrievalChoice(StrEnum):  # agent/retrieval.py RetrievalMode
    OURS = "ours"
    REFERENCE = "reference"
    NONE = "none"


NoPemOption = typer.Option(
    False,
    "--no-pem",
    help="The paper's ablation without PEM: personality readings are not absorbed and the "
    "prompt shows the neutral start (3.0 on every trait).",
)
SkipRuleOption = typer.Option(
    SkipRuleChoice.PAPER,
    "--skip-rule",
    help="Which neutral readings PEM skips: paper (a reading of all 3s) or reference (each "
    "trait read as 3, as the authors' code does). Fixed per user at the first reading.",
)
RetrievalOption = typer.Option(
    RetrievalChoice.OURS,
    "--retrieval",
    help="What a retrieval searches: ours (the model's keywords in its window), reference "
    "(keywords and the raw message, the better match kept, the last 60 minutes left out: "
    "what the released weights were trained with) or none (no memory: an ablation).",
)


PromptsOption = typer.Option(
    None,
    "--prompts",
    help="A directory of prompt templates (<name>.txt, {Placeholder} slots) replacing the "
    "package's by name: the reference's own, a fine-tune's (docs/reference-format.md). A "
    "missing or unknown placeholder stops the command before any model call.",
)


def checked_prompts_dir(prompts: str | None) -> str | None:
    """A --prompts directory, its templates checked now (a missing or unknown placeholder
    stops the command with one line, before a model loads or a service starts), as an
    absolute path to record."""
    if prompts is None:
        return None
    from personavlm.agent.templates import Templates

    Templates.load(prompts)
    return str(Path(prompts).resolve())


class UpdateChoice(StrEnum):
    INLINE = "inline"
    BACKGROUND = "background"
    QUEUE = "queue"


_PREVIEW_CHARS = 100
_COMMANDS = "/image PATH, /time YYYY-MM-DD HH:MM, /close, /quit (a line starting // sends a /)"


# --------------------------------------------------------------------- model and assistant


def load_model(spec: str) -> ChatModel:
    """The model a spec names; openai: specs get the API key from the environment."""
    from personavlm import models

    options: dict[str, object] = {}
    if spec.startswith("openai:"):
        options = {"api_key": api_key()}
    elif spec.startswith(("hf:", "local:")):  # a GGUF file is kept converted for next time
        options = {"gguf_cache": model_cache_dir()}
    if spec.startswith("local:"):
        # The default when nothing is configured: say what loads, and why it takes a while.
        typer.echo(
            f"loading the bundled model {spec} (a tiny demonstration; about 25 s on 2 cores "
            "the first time, then kept converted; attach a real one with --model, see "
            "docs/models.md)",
            err=True,
        )
    return models.load(spec, **options)


@contextmanager
def running_assistant(store: MemoryStore, spec: str, config: AgentConfig) -> Iterator[Assistant]:
    """An Assistant over `store`; its worker thread and the model are closed on exit."""
    from personavlm.agent import Assistant

    model = load_model(spec)
    try:
        with Assistant(store, model, config) as assistant:
            yield assistant
    finally:
        close: Callable[[], None] | None = getattr(model, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------- chat input lines


@dataclass(frozen=True, slots=True)
class Say:
    """A message for the assistant, with the images and time the directives before it set."""

    text: str
    images: tuple[Path, ...] = ()
    time: datetime | None = None  # None: now


@dataclass(frozen=True, slots=True)
class CloseSession:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Noted:
    """A directive was taken in (/image, /time): `text` acknowledges it at a terminal."""

    text: str


Command = Say | CloseSession | Quit | Noted


class ChatInput:
    """Reads chat input lines; `/image PATH` and `/time ...` apply to the next message."""

    def __init__(self) -> None:
        self._images: list[Path] = []
        self._time: datetime | None = None

    def read(self, line: str) -> Command | None:
        """The command a line gives (None for a blank line); InputError for a bad line."""
        text = line.strip()
        if not text:
            return None
        if text.startswith("//"):
            return self._say(text[1:])
        if not text.startswith("/"):
            return self._say(text)
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name == "/image":
            return self._image(argument)
        if name == "/time":
            return self._set_time(argument)
        if name in ("/close", "/quit"):
            if argument:
                raise ValidationError(f"{name} takes no argument, got {argument!r}")
            return CloseSession() if name == "/close" else Quit()
        raise ValidationError(f"unknown command {name!r}; known: {_COMMANDS}")

    def leftover(self) -> str | None:
        """The directives still waiting for a message, described; None when none are."""
        waiting = [f"/image {p}" for p in self._images]
        if self._time is not None:
            waiting.append(f"/time {self._time:%Y-%m-%d %H:%M}")
        return ", ".join(waiting) or None

    def _say(self, text: str) -> Say:
        message = Say(text, tuple(self._images), self._time)
        self._images, self._time = [], None
        return message

    def _image(self, argument: str) -> Noted:
        if not argument:
            raise ValidationError("/image needs a file path: /image PATH")
        path = Path(argument.strip("\"'")).expanduser()
        if not path.is_file():
            raise ValidationError(f"/image: no image file at {path}")
        self._images.append(path)
        return Noted(f"(image {path} goes with the next message)")

    def _set_time(self, argument: str) -> Noted:
        if not argument:
            raise ValidationError("/time needs a time: /time YYYY-MM-DD HH:MM")
        self._time = parse_time(argument, field="/time")
        return Noted(f"(next message at {display_time(self._time)})")


# --------------------------------------------------------------------- showing a turn


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _PREVIEW_CHARS else flat[: _PREVIEW_CHARS - 3] + "..."


def _label(text: str, color: str) -> str:
    return typer.style(text, fg=color, bold=True)


def render_steps(trace: Trace) -> list[str]:
    """Think, retrieve and failure steps as lines (the answer is shown apart)."""
    from personavlm.agent import FailureStep, RetrieveStep, ThinkStep

    lines: list[str] = []
    for step in trace.steps:
        if isinstance(step, ThinkStep):
            lines.append(f"{_label('think', 'blue')} {step.text}")
        elif isinstance(step, RetrieveStep):
            window = f"{step.start or 'any time'} .. {step.end or 'now'}"
            if step.start is None and step.end is None:
                window = "any time"
            lines.append(f"{_label('retrieve', 'cyan')} {step.keywords!r}  window: {window}")
            lines += [f"    note: {note}" for note in step.notes]
            lines += [
                f"    #{hit.memory_id} {hit.type} {hit.time or '-'}  {_preview(hit.content)}"
                for hit in step.hits
            ] or ["    (no memories found)"]
        elif isinstance(step, FailureStep):
            lines.append(f"{_label('failure', 'red')} {step.error}")
            if step.reply:
                lines.append(f"    the model wrote: {_preview(step.reply)}")
    return lines


def render_updates(reports: Iterable[UpdateReport]) -> list[str]:
    """What each update job did: its status, every memory change, the personality after."""
    lines: list[str] = []
    for report in reports:
        color = {"applied": "green", "failed": "red"}.get(report.status, "yellow")
        head = f"{_label('update', color)} {report.kind} job {report.job_id}: {report.status}"
        if report.error:
            head += f" ({report.error.splitlines()[0]})"
        lines.append(head)
        for change in report.changes:
            target = f" #{change.memory_id}" if change.memory_id is not None else ""
            line = f"    {change.op} {change.memory_type}{target}"
            if change.content:
                line += f": {_preview(change.content)}"
            if change.note:
                line += f"  [{change.note}]"
            lines.append(line)
        if report.personality is not None:
            traits = ", ".join(f"{k} {v:.2f}" for k, v in report.personality.items())
            lines.append(f"    personality: {traits}")
    return lines


@dataclass(frozen=True, slots=True)
class TurnPrinter:
    as_json: bool

    def response(self, response: Response) -> None:
        if self.as_json:
            self._line(response.to_dict())
            return
        for line in render_steps(response.trace):
            typer.echo(line)
        typer.echo(f"{_label('assistant>', 'magenta')} {response.answer}")
        for line in render_updates(response.trace.updates):
            typer.echo(line)
        typer.echo()

    def closed(self, reports: list[UpdateReport]) -> None:
        if self.as_json:
            self._line({"closed": True, "updates": [r.to_dict() for r in reports]})
            return
        typer.echo(_label("session closed", "yellow"))
        for line in render_updates(reports) or ["    (nothing to summarise)"]:
            typer.echo(line)
        typer.echo()

    @staticmethod
    def _line(data: dict[str, Any]) -> None:
        typer.echo(json.dumps(data, ensure_ascii=False))  # click flushes: fine for co-processes


# --------------------------------------------------------------------- chat


def _execute(assistant: Assistant, user: str, command: Command, out: TurnPrinter) -> None:
    if isinstance(command, Say):
        out.response(
            assistant.respond(user, command.text, images=command.images, time=command.time)
        )
    elif isinstance(command, CloseSession):
        reports = assistant.close_session(user) if assistant.store.has_user(user) else []
        out.closed(reports)


_ERROR_GROUPS: tuple[type[PersonaVLMError], ...] = (InputError, ConfigError, StoreError, ModelError)


def _at_line(number: int, exc: PersonaVLMError) -> PersonaVLMError:
    """The error with its input line number in front, kept in its exit-code group."""
    kind = next((k for k in _ERROR_GROUPS if isinstance(exc, k)), PersonaVLMError)
    return kind(f"line {number}: {exc}")


def _run_script(assistant: Assistant, user: str, lines: Iterable[str], out: TurnPrinter) -> None:
    """One message per line, answered as it is read (so another program can drive the chat
    line by line); a bad line stops the chat with its line number, after the turns before it
    were answered and stored."""
    reader = ChatInput()
    number = 0
    for number, line in enumerate(lines, 1):
        try:
            command = reader.read(line)
            if isinstance(command, Quit):
                return
            if command is not None:
                _execute(assistant, user, command, out)
        except PersonaVLMError as exc:
            raise _at_line(number, exc) from exc
    leftover = reader.leftover()
    if leftover is not None:
        raise ValidationError(f"line {number}: {leftover} waits for a message, but none follows")


def _run_interactive(assistant: Assistant, user: str, out: TurnPrinter) -> None:
    with suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    reader = ChatInput()
    typer.echo(f"chatting as {user!r} with {assistant.model.name}; commands: {_COMMANDS}")
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        try:
            command = reader.read(line)
            if isinstance(command, Quit):
                return
            if isinstance(command, Noted):
                typer.echo(typer.style(command.text, dim=True))
            elif command is not None:
                _execute(assistant, user, command, out)
        except InputError as exc:  # a typo at a terminal: say so and go on
            typer.echo(f"error: {exc}", err=True)
        except KeyboardInterrupt:
            typer.echo("\n(interrupted)", err=True)
            return


def _pending_note(store: MemoryStore, user: str, *, background: bool, as_json: bool) -> None:
    if not store.has_user(user):
        return
    queue = store.queue_status(user)
    if queue.pending == 0 and not background:
        return
    text = (
        f"{queue.pending} update(s) still pending for {user!r}"
        + (f", {queue.failed} failed" if queue.failed else "")
        + (f"; run `personavlm worker --user {user}` to apply them" if queue.pending else "")
    )
    typer.echo(text, err=as_json)


def chat(
    user: str = typer.Option(..., "--user", help="Who is talking."),
    model: str | None = ModelOption,
    protocol: Protocol = ProtocolOption,
    max_retrievals: int = typer.Option(
        3, "--max-retrievals", help="Memory searches allowed per answer (0-10)."
    ),
    update: UpdateChoice = typer.Option(
        UpdateChoice.INLINE,
        "--update",
        help="inline: update memory after each answer; background: in a worker thread "
        "(what is left at exit stays queued for `personavlm worker`); queue: only queue "
        "updates, for a `personavlm worker` process.",
    ),
    no_pem: bool = NoPemOption,
    skip_rule: SkipRuleChoice = SkipRuleOption,
    retrieval: RetrievalChoice = RetrievalOption,
    prompts: str | None = PromptsOption,
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object per turn (Response.to_dict()) per line."
    ),
) -> None:
    """Talk to the assistant: it remembers, retrieves and adapts to the user.

    At a terminal: a prompt. Piped: one message per line. Lines starting with /image PATH
    or /time YYYY-MM-DD HH:MM apply to the next message; /close closes the session; /quit
    or end of input exits. Each turn shows the reasoning steps, the memories retrieved, the
    answer and what the update changed.

    Example: personavlm chat --user ann --model openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1
    """
    from personavlm.agent import AgentConfig

    with fail_on_errors():
        background = update is not UpdateChoice.INLINE
        config = AgentConfig(
            protocol=protocol,
            max_retrievals=max_retrievals,
            update=update.value,
            pem=not no_pem,
            skip_rule=skip_rule.value,
            retrieval=retrieval.value,
            prompts=prompts,
        )
        spec = model_spec(model)
        out = TurnPrinter(as_json)
        with (
            open_store(db, embedder, create=True) as store,
            running_assistant(store, spec, config) as assistant,
        ):
            if sys.stdin.isatty():
                _run_interactive(assistant, user, out)
            else:
                _run_script(assistant, user, sys.stdin, out)
            assistant.close()  # background: stop the worker; its pending jobs stay queued
            _pending_note(store, user, background=background, as_json=as_json)


# --------------------------------------------------------------------- worker


def _report_line(report: UpdateReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    ops = Counter(change.op for change in report.changes)
    detail = ", ".join(f"{n} {op}" for op, n in sorted(ops.items())) or "no memory changes"
    if report.status == "failed" and report.error:
        detail = report.error.splitlines()[0]
    typer.echo(f"{report.kind} job {report.job_id}: {report.status}: {detail}")


class _StopFlag:
    """Set by the first SIGINT/SIGTERM (finish the job in hand, then stop); a second SIGINT
    aborts at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.wake = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()
        self.wake.set()
        typer.echo("stopping after the job in hand (Ctrl-C again to abort)", err=True)


def _serve(assistant: Assistant, user: str | None, poll_s: float, as_json: bool) -> None:
    """Run jobs as they come until SIGINT/SIGTERM; one line per job run."""
    flag = _StopFlag()
    previous = {sig: signal.signal(sig, flag) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assistant.worker.serve(
            flag.stop,
            wake=flag.wake,
            poll_s=poll_s,
            on_report=lambda report: _report_line(report, as_json),
            user_id=user,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def worker(
    model: str | None = ModelOption,
    protocol: Protocol = ProtocolOption,
    once: bool = typer.Option(
        False, "--once", help="Run what is queued now (failed jobs too, without waiting) and exit."
    ),
    user: str | None = typer.Option(None, "--user", help="Only this user's jobs."),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between looks at an empty queue."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object (UpdateReport) per job run, per line."
    ),
) -> None:
    """Run queued memory updates (after --update background, a failed update, or a restart).

    Without --once it keeps running until Ctrl-C or SIGTERM, finishing the job in hand.
    Failed jobs stay queued with their error (see personavlm status) and are retried.

    Example: personavlm worker --once --model openai:qwen2.5-vl-7b@http://127.0.0.1:8000/v1
    """
    from personavlm.agent import AgentConfig

    with fail_on_errors():
        config = AgentConfig(protocol=protocol)
        spec = model_spec(model)
        if poll <= 0:
            raise ValidationError(f"--poll must be > 0 seconds, got {poll}")
        with open_store(db, embedder) as store:
            if user is not None and not store.has_user(user):
                raise NotFoundError(f"no user {user!r} in this store")
            from personavlm.agent.worker import release_orphaned_claims

            # A worker killed here earlier (kill -9, a reboot) left claims: free them now.
            release_orphaned_claims(store)
            with running_assistant(store, spec, config) as assistant:
                if not once:
                    _serve(assistant, user, poll, as_json)
                    return
                reports = assistant.run_pending(user, ignore_backoff=True)
                for report in reports:
                    _report_line(report, as_json)
                if not as_json:
                    queue = store.queue_status(user)
                    typer.echo(
                        f"{len(reports)} job(s) run; {queue.pending} pending, {queue.failed} failed"
                    )


# --------------------------------------------------------------------- status


def _status_text(queue: QueueStatus, users: int, detail: dict[str, Any] | None) -> str:
    lines = [
        f"update queue: {queue.pending} pending ({queue.failed} failed), {queue.done} done, "
        f"{queue.dead} dead",
        *(
            f"  failed job {job_id} (user {user_id!r}): {error.splitlines()[0]}"
            for job_id, user_id, error in queue.last_errors
        ),
        *(
            f"  dead job {job_id} (user {user_id!r}): {error.splitlines()[0]}"
            for job_id, user_id, error in queue.dead_jobs
        ),
        f"users: {users}",
    ]
    if detail is not None:
        traits = ", ".join(f"{k} {v:.2f}" for k, v in detail["personality"].items())
        counts = ", ".join(f"{k} {v}" for k, v in detail["memories"].items())
        lines += [
            f"user {detail['user_id']!r}:",
            f"  personality: {traits} (readings absorbed: {detail['personality_step']})",
            f"  active memories: {counts}",
        ]
    if queue.failed:
        lines.append("failed jobs are retried by `personavlm worker` (or the next chat turn)")
    if queue.dead:
        lines.append(
            "dead jobs failed too often and wait for you: `personavlm jobs retry ID --user U` "
            "(after fixing the model) or `personavlm jobs drop ID --user U`"
        )
    return "\n".join(lines)


def _user_detail(store: MemoryStore, user: str) -> dict[str, Any]:
    state = store.personality(user)  # NotFoundError for an unknown user
    return {
        "user_id": user,
        "personality": state.traits.to_dict(),
        "personality_step": state.step,
        "memories": store.count(user),
    }


def status(
    user: str | None = typer.Option(None, "--user", help="One user's queue, personality, memory."),
    db: str | None = DbOption,
    embedder: str | None = EmbedderOption,
    as_json: bool = JsonOption,
) -> None:
    """The update queue (pending, failed with their errors, done) and the users.

    Exits 0 when jobs have failed: it is a report (the failures are listed).

    Example: personavlm status --user ann
    """
    with fail_on_errors(), open_store(db, embedder) as store:
        detail = _user_detail(store, user) if user is not None else None
        queue = store.queue_status(user)
        users = len(store.users())
        data: dict[str, Any] = {**queue.to_dict(), "users": users}
        if detail is not None:
            data["user"] = detail
        emit(data, as_json=as_json, text=_status_text(queue, users, detail))


# --------------------------------------------------------------------- persona-mme ingest


def ingest_persona_mme(
    store: MemoryStore,
    user: str,
    history: History,
    *,
    spec: str,
    protocol: Protocol,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    """Replay a loaded history with inline updates; the report as a dict."""
    from personavlm.agent import AgentConfig
    from personavlm.interop.replay import replay_history

    config = AgentConfig(protocol=protocol, update="inline")
    with running_assistant(store, spec, config) as assistant:
        tally = replay_history(assistant, user, history, progress=progress)
    queue = store.queue_status(user)
    failed = tally.with_status("failed")
    return {
        "format": "persona-mme",
        "user_id": user,
        "added": tally.added,
        "skipped": tally.skipped,
        "profile_keys": tally.profile_keys,
        "updates": {
            "applied": len(tally.with_status("applied")),
            "failed": len(failed),
            "pending": queue.pending,
        },
        "changes": tally.changes(),
        "errors": [f"job {r.job_id}: {r.error}" for r in failed],
    }


def persona_mme_text(report: dict[str, Any]) -> str:
    updates = report["updates"]
    changes = ", ".join(f"{n} {op}" for op, n in report["changes"].items()) or "none"
    lines = [
        f"{report['added']} turns added, {report['skipped']} already stored; "
        f"{updates['applied']} updates applied, {updates['failed']} failed; "
        f"memory changes: {changes}"
    ]
    if updates["pending"]:
        lines.append(
            f"{updates['pending']} update(s) stay queued"
            + (f" (first error: {report['errors'][0].splitlines()[0]})" if report["errors"] else "")
            + f"; run `personavlm worker --user {report['user_id']}` when the model is back"
        )
    return "\n".join(lines)
