"""The question-answering harness both benchmark formats share.

A benchmark becomes `UserPlan`s: per user, the history as exchanges (time, user text and
images, stored reply) and the items (bench/mcq.py) asked of it. `run_plans` replays each
history into a store and asks each item when the replay reaches the item's time:

    for each user:  for each item in time order:
        ingest every exchange at or before the item's time     (Ingestor)
        settle: a question 60+ minutes after the last turn closes the session, as a message
                would (the agent's 60-minute rule), so the session is summarised first
        answer the item, without storing anything             (Reader, bench/readers.py)
        append the record to records.jsonl                    (RecordLog)

Asking at the item's time (instead of after the whole history, as the reference harness
does) means a question never sees memories from its future. For histories whose questions all
come after the last turn the two are the same.

Each user's profile (`UserPlan.profile`) is seeded as core memory before the first exchange
(interop/replay.py `seed_profile`), by both ingestors: the reference agent starts from it.

Two ingestors: `AgentIngest` records each exchange with the agent's update phase (the model
extracts memories and reads the personality: PAPER.md's replay, for `--mode rag`);
`RawIngest` appends the turns with turn-level episodic entries and calls no model (for
`--mode full-context` and the baselines, which read raw turns or search them).

Resuming: the store and the record log live in the run directory. Ingestion is idempotent
(exchange ids), items already in the log are skipped, and a user whose items are all done is
not replayed at all.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from personavlm.agent import Assistant, UpdateReport
from personavlm.bench.mcq import Item, reference_letter, robust_letter
from personavlm.errors import StoreError, ValidationError
from personavlm.interop.replay import seed_profile
from personavlm.memory.store import MemoryStore
from personavlm.memory.turnlog import SESSION_GAP, TurnInput

__all__ = [
    "AgentIngest",
    "Answer",
    "HistoryExchange",
    "Ingestor",
    "RawIngest",
    "Reader",
    "RecordLog",
    "UserPlan",
    "run_plans",
]


@dataclass(frozen=True, slots=True)
class HistoryExchange:
    """One exchange of a history: the user's turn and the stored assistant reply."""

    ext_id: str  # unique within the user; turn ids become "<ext_id>:user" / ":assistant"
    time: datetime
    user: str
    assistant: str
    images: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class UserPlan:
    user: str
    exchanges: tuple[HistoryExchange, ...]
    items: tuple[Item, ...]
    # The user's starting profile as core memory (key, value), seeded before the first
    # exchange (Persona-MME's `profile`, as the reference agent starts from it).
    profile: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a reader answered, with what it cost."""

    text: str
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retrievals: int = 0
    failed: bool = False  # the agent's protocol loop gave up (its trace says why)
    extra: dict[str, Any] = field(default_factory=dict)


class Reader(Protocol):
    """Answers an item from what `store` holds for its user as of the item's time."""

    name: str

    def answer(self, item: Item) -> Answer: ...


class Ingestor(Protocol):
    name: str

    def seed(self, user: str, profile: Sequence[tuple[str, str]], time: datetime) -> None: ...

    def add(self, user: str, exchange: HistoryExchange) -> None: ...

    def settle(self, user: str, at: datetime) -> None: ...

    def tally(self) -> dict[str, int]: ...


class AgentIngest:
    """Replays exchanges through the agent: stored replies, full update phase."""

    name = "agent"

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self._counts: Counter[str] = Counter()

    def seed(self, user: str, profile: Sequence[tuple[str, str]], time: datetime) -> None:
        self._counts["profile_keys_seeded"] += seed_profile(
            self.assistant.store, user, profile, time=time
        )

    def add(self, user: str, exchange: HistoryExchange) -> None:
        stored, reports = self.assistant.record(
            user,
            exchange.user,
            exchange.assistant,
            images=exchange.images,
            time=exchange.time,
            ext_id=exchange.ext_id,
        )
        self._counts["exchanges_added" if stored else "exchanges_already_stored"] += 1
        self._note(reports)

    def settle(self, user: str, at: datetime) -> None:
        store = self.assistant.store
        last = store.latest_turn(user) if store.has_user(user) else None
        if last is not None and at - last.time > SESSION_GAP:
            self._note(self.assistant.close_session(user))

    def tally(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def _note(self, reports: Sequence[UpdateReport]) -> None:
        for report in reports:
            self._counts[f"update_{report.kind}_{report.status}"] += 1


class RawIngest:
    """Appends the turns as they are (turn-level episodic entries); no model is called."""

    name = "raw"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._counts: Counter[str] = Counter()

    def seed(self, user: str, profile: Sequence[tuple[str, str]], time: datetime) -> None:
        self._counts["profile_keys_seeded"] += seed_profile(self.store, user, profile, time=time)

    def add(self, user: str, exchange: HistoryExchange) -> None:
        refs = [self.store.store_image(path) for path in exchange.images]
        turns = [
            TurnInput.create(
                time=exchange.time,
                role="user",
                text=exchange.user,
                image_ids=tuple(r.id for r in refs),
                ext_id=f"{exchange.ext_id}:user",
            ),
            TurnInput.create(
                time=exchange.time,
                role="assistant",
                text=exchange.assistant,
                ext_id=f"{exchange.ext_id}:assistant",
            ),
        ]
        report = self.store.append_turns(user, turns)
        self._counts["turns_added"] += report.added
        self._counts["turns_already_stored"] += report.skipped

    def settle(self, user: str, at: datetime) -> None:
        """Nothing to summarise: raw turns are searchable as soon as they are stored."""

    def tally(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))


class RecordLog:
    """records.jsonl: one JSON object per answered item, appended and flushed one by one.

    A crash can leave half a line at the end; opening the log cuts it off (that item is
    asked again) so the file stays valid JSONL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes of whole, valid lines
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if good + len(line) == len(data):
                    break  # a torn last line
                raise StoreError(
                    f"{self.path}: line {len(self.records) + 1} is not JSON; the record log "
                    "is damaged: remove that line or start a new run directory"
                ) from None
            self.records[record["id"]] = record
            good += len(line)
        if good < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.records

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["id"]] = record


def run_plans(
    plans: Sequence[UserPlan],
    ingestor: Ingestor,
    reader: Reader,
    log: RecordLog,
    *,
    progress: Callable[[int], None] = lambda _n: None,
) -> None:
    """Replay and ask every plan's items; items already in `log` are skipped. `progress`
    advances by one per item (done now or before)."""
    _check_unique_ids(plans)
    for plan in plans:
        pending = [item for item in plan.items if item.id not in log]
        progress(len(plan.items) - len(pending))
        if not pending:
            continue
        _seed(plan, ingestor)
        for item, exchanges in _schedule(plan):
            for exchange in exchanges:
                ingestor.add(plan.user, exchange)
            if item.id in log:
                continue
            ingestor.settle(plan.user, item.time)
            log.append(_record(item, reader.answer(item), reader.name))
            progress(1)


def _seed(plan: UserPlan, ingestor: Ingestor) -> None:
    """The profile goes in before anything else, dated at the first exchange or question."""
    times = [e.time for e in plan.exchanges] + [i.time for i in plan.items]
    if plan.profile and times:
        ingestor.seed(plan.user, plan.profile, min(times))


def _schedule(plan: UserPlan) -> Iterator[tuple[Item, list[HistoryExchange]]]:
    """Each item (in time order) with the exchanges to ingest before it: those not yet
    ingested whose time is at or before the item's. Exchanges are ingested even for items
    already answered, since later items need them (ingesting twice is a no-op)."""
    exchanges = sorted(plan.exchanges, key=lambda e: e.time)
    cursor = 0
    for item in sorted(plan.items, key=lambda i: i.time):
        start = cursor
        while cursor < len(exchanges) and exchanges[cursor].time <= item.time:
            cursor += 1
        yield item, exchanges[start:cursor]


def _check_unique_ids(plans: Sequence[UserPlan]) -> None:
    seen: set[str] = set()
    for plan in plans:
        for item in plan.items:
            if item.id in seen:
                raise ValidationError(
                    f"question id {item.id!r} appears twice; every question needs its own id"
                )
            seen.add(item.id)


def _record(item: Item, answer: Answer, reader: str) -> dict[str, Any]:
    reference = reference_letter(answer.text, item.choices)
    robust = robust_letter(answer.text, item.choices)
    return (
        item.to_dict()
        | {
            "reader": reader,
            "response": answer.text,
            "reference": reference,
            "robust": robust,
            "correct_reference": reference == item.answer,
            "correct_robust": robust == item.answer,
            "model_calls": answer.model_calls,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "retrievals": answer.retrievals,
            "failed": answer.failed,
        }
        | answer.extra
    )
