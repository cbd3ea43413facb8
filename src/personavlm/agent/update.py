"""The update phase: what one queued job asks of the model, and how its answer is applied.

- A `turn` job (after every answer) sees the question AND the answer, plus the user's
  existing semantic memories that relate to them, and returns the personality reading and
  semantic operations (ADD / UPDATE / INVALIDATE / NOOP on memory ids). Protocol json: one
  call. Protocol tags: the two reference-format calls (personality; one semantic candidate).
- A `session` job (when a session closes) segments the session into episodic topics (one
  call) and updates core and procedural memory per key (json: one call; tags: the two
  reference-format calls, core then procedural).

Proposals are checked against memory before anything is written: an id the model was not
shown is dropped, an ADD that repeats an active memory and an UPDATE that changes nothing
become NOOPs, each with a note in the report. Each job is bounded (MAX_TURN_OPS,
MAX_SESSION_OPS, MAX_MEMORY_CHARS: UpdatePhase parameters): an operation past the number one
job may write, or with a memory text over the length limit, is dropped with a note in the
report too, before anything is written. The rest goes through `MemoryStore.apply` in one
transaction with the personality reading and the job's completion, so every change is in
history, can be undone, and happens exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from personavlm.agent import reference
from personavlm.agent.calls import CallSettings, call_parsed
from personavlm.agent.context import PartsBuilder, packaged_templates, render_core, render_turns
from personavlm.agent.formats import (
    CONSOLIDATE_SCHEMA,
    EPISODIC_SCHEMA,
    UPDATE_SCHEMA,
    KeyValue,
    Proposal,
    Topic,
    collecting_repairs,
    parse_consolidation_json,
    parse_episodic_json,
    parse_episodic_tags,
    parse_reading_tags,
    parse_semantic_tags,
    parse_update_json,
)
from personavlm.agent.jobs import SessionJob, TurnJob, TurnReading, decode, finish
from personavlm.agent.protocol import Protocol, escape
from personavlm.agent.templates import Templates
from personavlm.agent.trace import MemoryChange, ModelCall, Phase, UpdateReport
from personavlm.agent.update_tags import (
    MAX_PROCEDURAL,
    read_procedures,
    read_profile,
    rewrite,
    session_messages,
    turn_messages,
)
from personavlm.errors import ConfigError
from personavlm.media.blobs import BlobStore
from personavlm.memory.queue import QueuedJob
from personavlm.memory.records import Hit, Memory, MemoryType, Turn
from personavlm.memory.store import MemoryStore
from personavlm.memory.validate import MAX_TEXT_CHARS
from personavlm.memory.writes import AddOp, InvalidateOp, MemoryOp, UpdateOp
from personavlm.models.base import ChatModel, Message
from personavlm.personality import Reading, SkipRule
from personavlm.timeutil import display_time

__all__ = ["UpdatePhase"]

_T = TypeVar("_T")

# Semantic memories shown to the per-turn update as candidates for UPDATE / INVALIDATE.
CANDIDATES = 8

# What one update job may write, so that a model gone wrong (or a hostile turn steering it)
# cannot flood memory: every operation is embedded, indexed, kept in history and, for
# semantic memory, shown again in later prompts.
# - A turn job reads one exchange: the reference protocol proposes one memory per turn, and
#   a rich exchange states a few facts. 16 leaves room for that plus updates and
#   invalidations of the 8 candidates shown (CANDIDATES). The first 16 operations the model
#   proposes are checked (each ADD costs a search for a duplicate); later ones are dropped.
# - A session job writes one episodic memory per topic plus core and procedural keys: a
#   long session has a dozen topics, the profile a few dozen keys, procedural at most 5.
# - A memory is a sentence to a short paragraph. 2,000 characters (~500 tokens) is far past
#   that; longer text is a transcript, which the turn log keeps already. It also bounds what
#   the 8 candidates add to every later update prompt (~16k characters).
MAX_TURN_OPS = 16
MAX_SESSION_OPS = 64
MAX_MEMORY_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class _Plan:
    ops: list[MemoryOp]
    changes: list[MemoryChange]  # one per op (in order), then the noops and drops


class UpdatePhase:
    def __init__(
        self,
        store: MemoryStore,
        model: ChatModel,
        protocol: Protocol,
        settings: CallSettings,
        *,
        max_turn_ops: int = MAX_TURN_OPS,
        max_session_ops: int = MAX_SESSION_OPS,
        max_memory_chars: int = MAX_MEMORY_CHARS,
        pem: bool = True,
        skip_rule: SkipRule = SkipRule.PAPER,
        templates: Templates | None = None,
    ) -> None:
        for name, value in (
            ("max_turn_ops", max_turn_ops),
            ("max_session_ops", max_session_ops),
            ("max_memory_chars", max_memory_chars),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        self.store = store
        self.model = model
        self.protocol = protocol
        self.settings = settings
        self.max_turn_ops = max_turn_ops
        self.max_session_ops = max_session_ops
        self.max_memory_chars = max_memory_chars
        self.templates = templates or packaged_templates()
        # pem=False is the paper's ablation: readings are still asked for (and reported) but
        # never absorbed, so the personality stays at its neutral start.
        self.pem = pem
        self.skip_rule = skip_rule

    def run(self, job: QueuedJob, report: UpdateReport | None = None) -> UpdateReport:
        """Do one claimed job and finish it; model and store errors propagate (the caller
        records the failure on the job, which stays queued). The calls made and repairs
        done are recorded in `report` as they happen, so a caller that passes one still
        has them when the job fails."""
        if report is None:
            report = UpdateReport(job.id, job.user_id, job.kind, "applied")
        typed = decode(job)
        with collecting_repairs() as report.repairs:
            if isinstance(typed, TurnJob):
                self._turn(job, typed, report)
            else:
                self._session(job, typed, report)
        return report

    # ------------------------------------------------------------------ per turn

    def _turn(self, job: QueuedJob, typed: TurnJob, report: UpdateReport) -> None:
        user_turn, answer = self.store.turns_by_ids(
            job.user_id, [typed.user_turn, typed.assistant_turn]
        )
        if self.protocol is Protocol.JSON:
            candidates = self._candidates(job.user_id, user_turn, answer)
            reading, proposals = self._turn_json(user_turn, answer, candidates, report.calls)
        else:  # the reference's semantic prompt shows no memories: it only adds
            candidates = []
            reading, proposals = self._turn_tags(job.user_id, user_turn, report)
        plan = self._plan_semantic(job.user_id, proposals, candidates, user_turn)
        turn_reading = TurnReading(reading, user_turn.id, user_turn.time) if self.pem else None
        applied = finish(self.store, job, plan.ops, turn_reading, skip_rule=self.skip_rule)
        report.changes = _with_ids(plan.changes, applied)
        report.reading = reading.to_dict()
        report.personality = self.store.personality(job.user_id).traits.to_dict()

    def _candidates(self, user_id: str, user_turn: Turn, answer: Turn) -> list[Hit]:
        # Both turns may each be as long as a text may be: the query keeps what fits.
        query = f"{user_turn.text}\n{answer.text}".strip()[:MAX_TEXT_CHARS]
        if not query:
            return []
        return self.store.search(user_id, query, types=["semantic"], k=CANDIDATES)

    def _exchange_message(self, head: str, user_turn: Turn, answer: Turn) -> PartsBuilder:
        builder = PartsBuilder(self.store.blobs).text(head)
        images = {ref.id: ref for ref in self.store.images(user_turn.image_ids)}
        render_turns(builder, [user_turn, answer], images)
        return builder

    def _turn_json(
        self, user_turn: Turn, answer: Turn, candidates: Sequence[Hit], calls: list[ModelCall]
    ) -> tuple[Reading, list[Proposal]]:
        shown = _render_candidates(candidates)
        head = f"## Existing semantic memories\n{shown}\n\n## The exchange\n"
        builder = self._exchange_message(head, user_turn, answer)
        system = Message.text("system", self.templates.text("update_json"))
        messages = [system, builder.message("user")]
        result, _ = call_parsed(
            self.model,
            messages,
            parse_update_json,
            phase=Phase.UPDATE,
            purpose="update",
            settings=self.settings,
            calls=calls,
            schema=UPDATE_SCHEMA,
        )
        return result

    def _turn_tags(
        self, user_id: str, user_turn: Turn, report: UpdateReport
    ) -> tuple[Reading, list[Proposal]]:
        # The reference's two calls over the same input: the personality reading, then one
        # semantic candidate.
        personality, semantic = turn_messages(self.store, self.templates, user_id, user_turn)
        reading, _ = call_parsed(
            self.model,
            [personality],
            parse_reading_tags,
            phase=Phase.UPDATE,
            purpose="personality",
            settings=self.settings,
            calls=report.calls,
        )
        proposal, _ = call_parsed(
            self.model,
            [semantic],
            parse_semantic_tags,
            phase=Phase.UPDATE,
            purpose="semantic",
            settings=self.settings,
            calls=report.calls,
        )
        return reading, [] if proposal is None else [proposal]

    def _plan_semantic(
        self, user_id: str, proposals: Sequence[Proposal], candidates: Sequence[Hit], turn: Turn
    ) -> _Plan:
        shown = {hit.memory.id: hit.memory for hit in candidates}
        kept, over = self._within_turn_limit(proposals)
        ops: list[MemoryOp] = []
        changes: list[MemoryChange] = []
        skipped: list[MemoryChange] = []
        touched: set[int] = set()
        added: set[str] = set()
        for p in kept:
            change, op = self._check_proposal(user_id, p, shown, touched, added, turn)
            if op is None:
                skipped.append(change)
                continue
            ops.append(op)
            changes.append(change)
        return _Plan(ops, changes + skipped + over)

    def _within_turn_limit(
        self, proposals: Sequence[Proposal]
    ) -> tuple[list[Proposal], list[MemoryChange]]:
        """The proposals to check: every NOOP (it writes nothing) and the first
        `max_turn_ops` others; the rest dropped unread, each with a note."""
        kept: list[Proposal] = []
        dropped: list[MemoryChange] = []
        writing = 0
        note = f"over the limit of {self.max_turn_ops} operations per turn update; dropped"
        for p in proposals:
            if p.op != "NOOP" and writing == self.max_turn_ops:
                content = _preview(p.content, self.max_memory_chars)
                dropped.append(MemoryChange("noop", "semantic", p.memory_id, content, note))
                continue
            writing += p.op != "NOOP"
            kept.append(p)
        return kept, dropped

    def _check_proposal(
        self,
        user_id: str,
        p: Proposal,
        shown: dict[int, Memory],
        touched: set[int],
        added: set[str],
        turn: Turn,
    ) -> tuple[MemoryChange, MemoryOp | None]:
        def noop(note: str) -> tuple[MemoryChange, None]:
            content = _preview(p.content, self.max_memory_chars)
            return MemoryChange("noop", "semantic", p.memory_id, content, note), None

        if p.op == "NOOP":
            return noop("the model proposed no change")
        too_long = _too_long(p.content, self.max_memory_chars)
        if too_long is not None:  # before the duplicate search, which would embed it all
            return noop(too_long)
        if p.op == "ADD":
            assert p.content is not None
            duplicate = self._active_duplicate(user_id, p.content)
            if duplicate is not None or _norm(p.content) in added:
                return noop(f"repeats active memory {duplicate or 'added in this update'}")
            added.add(_norm(p.content))
            images = turn.image_ids if p.attach_images else ()
            op = AddOp("semantic", p.content, None, p.keywords, (turn.id,), images, turn.time)
            return MemoryChange("add", "semantic", None, p.content), op
        assert p.memory_id is not None
        if p.memory_id not in shown:
            return noop(f"memory {p.memory_id} was not among the memories shown; dropped")
        if p.memory_id in touched:
            return noop(f"memory {p.memory_id} was already changed in this update; dropped")
        touched.add(p.memory_id)
        if p.op == "INVALIDATE":
            return MemoryChange(
                "invalidate", "semantic", p.memory_id, shown[p.memory_id].content
            ), InvalidateOp(p.memory_id, turn.time)
        assert p.content is not None
        if _norm(p.content) == _norm(shown[p.memory_id].content):
            return noop(f"the update leaves memory {p.memory_id} as it is")
        keywords = p.keywords or None
        update = UpdateOp(p.memory_id, p.content, keywords, (turn.id,), turn.time)
        return MemoryChange("update", "semantic", p.memory_id, p.content), update

    def _active_duplicate(self, user_id: str, content: str) -> int | None:
        """An active semantic memory saying the same thing (same words, case, spacing and
        final punctuation aside). Found by search: a repeat ranks at the top of both lists."""
        hits = self.store.search(user_id, content, types=["semantic"], k=5)
        wanted = _norm(content)
        return next((h.memory.id for h in hits if _norm(h.memory.content) == wanted), None)

    # ------------------------------------------------------------------ session close

    def _session(self, job: QueuedJob, typed: SessionJob, report: UpdateReport) -> None:
        turns = self.store.turns(job.user_id, session_id=typed.session_id, limit=100_000)
        if not turns:  # the user deleted the turns since; nothing to summarise
            finish(self.store, job, [])
            return
        exchanges = reference.exchanges_of(turns)  # numbered as the reference numbers them
        core = self.store.list(job.user_id, types=["core"], limit=1000)
        procedural = self.store.list(job.user_id, types=["procedural"], limit=1000)
        if self.protocol is Protocol.JSON:
            topics, keyed = self._session_json(exchanges, core, procedural, turns, report.calls)
        else:
            topics, keyed = self._session_tags(turns, core, procedural, report.calls)
        max_chars = self.max_memory_chars
        ops, changes, dropped = _episodic_ops(topics, exchanges, max_chars)
        for part in keyed:
            ops += part.ops
            changes += part.changes
            dropped += part.dropped
        ops, changes, over = _within_session_limit(ops, changes, self.max_session_ops, max_chars)
        applied = finish(self.store, job, ops)
        report.changes = _with_ids(changes, applied) + dropped + over

    def _session_json(
        self,
        exchanges: Sequence[Sequence[Turn]],
        core: Sequence[Memory],
        procedural: Sequence[Memory],
        turns: Sequence[Turn],
        calls: list[ModelCall],
    ) -> tuple[list[Topic], list[_Keyed]]:
        """Our own protocol: topics in one call, then core and procedural changes per key."""
        session = self._session_message(exchanges)
        topics, _ = call_parsed(
            self.model,
            [Message.text("system", self.templates.text("episodic_json")), session.message("user")],
            parse_episodic_json,
            phase=Phase.SESSION,
            purpose="episodic",
            settings=self.settings,
            calls=calls,
            schema=EPISODIC_SCHEMA,
        )
        core_kv, procedural_kv = self._consolidate(session, core, procedural, calls)
        end, source, max_chars = turns[-1].time, tuple(t.id for t in turns), self.max_memory_chars
        keyed = [
            _keyed_ops(MemoryType.CORE, core_kv, core, source, end, max_chars),
            _keyed_ops(MemoryType.PROCEDURAL, procedural_kv, procedural, source, end, max_chars),
        ]
        return topics, keyed

    def _session_tags(
        self,
        turns: Sequence[Turn],
        core: Sequence[Memory],
        procedural: Sequence[Memory],
        calls: list[ModelCall],
    ) -> tuple[list[Topic], list[_Keyed]]:
        """The reference's three calls: topics, the new whole profile, the new whole
        procedure list; the last two rewrite what is held (update_tags.rewrite)."""
        messages = session_messages(self.store, self.templates, turns, core, procedural)
        topics, _ = self._call_tags(messages.episodic, parse_episodic_tags, "episodic", calls)
        profile, _ = self._call_tags(messages.core, read_profile, "core", calls)
        procedures, _ = self._call_tags(messages.procedural, read_procedures, "procedural", calls)
        end, source, max_chars = turns[-1].time, tuple(t.id for t in turns), self.max_memory_chars
        keyed = []
        for kind, entries, current in (
            (MemoryType.CORE, profile, core),
            (MemoryType.PROCEDURAL, procedures, procedural),
        ):
            done = rewrite(kind, entries, current, source=source, end=end, max_chars=max_chars)
            keyed.append(_Keyed(done.ops, done.changes, done.dropped))
        return topics, keyed

    def _call_tags(
        self, message: Message, parse: Callable[[str], _T], purpose: str, calls: list[ModelCall]
    ) -> tuple[_T, str]:
        return call_parsed(
            self.model,
            [message],
            parse,
            phase=Phase.SESSION,
            purpose=purpose,
            settings=self.settings,
            calls=calls,
        )

    def _session_message(self, exchanges: Sequence[Sequence[Turn]]) -> PartsBuilder:
        ids = [i for pair in exchanges for t in pair for i in t.image_ids]
        images = {ref.id: ref for ref in self.store.images(ids)}
        builder = PartsBuilder(self.store.blobs).text("## Session\n")
        for index, pair in enumerate(exchanges):
            builder.text(f"[{index}] ")
            render_turns(builder, pair, images)
        return builder

    def _consolidate(
        self,
        session: PartsBuilder,
        core: Sequence[Memory],
        procedural: Sequence[Memory],
        calls: list[ModelCall],
    ) -> tuple[list[KeyValue], list[KeyValue]]:
        memory = (
            f"## Current core memory\n{render_core(core)}\n\n"
            f"## Current procedural memory\n{render_core(procedural)}\n\n"
        )
        user = _prefixed(memory, session, self.store.blobs)
        result, _ = call_parsed(
            self.model,
            [Message.text("system", self.templates.text("consolidate_json")), user],
            parse_consolidation_json,
            phase=Phase.SESSION,
            purpose="consolidate",
            settings=self.settings,
            calls=calls,
            schema=CONSOLIDATE_SCHEMA,
        )
        return result


# --------------------------------------------------------------------- helpers


def _render_candidates(candidates: Sequence[Hit]) -> str:
    if not candidates:
        return "(none)"
    return "\n".join(
        f"[id {h.memory.id}] (since {display_time(h.memory.valid_from)}) {escape(h.memory.content)}"
        for h in candidates
    )


def _prefixed(text: str, session: PartsBuilder, blobs: BlobStore) -> Message:
    return PartsBuilder(blobs).text(text).extend(session.message("user")).message("user")


def _preview(content: str | None, limit: int) -> str | None:
    """Content as a report shows it: a text over the memory limit cut there (the report of
    a refused flood must not carry the flood)."""
    if content is None or len(content) <= limit:
        return content
    return content[:limit] + "..."


def _too_long(content: str | None, limit: int) -> str | None:
    """The note for a memory text over `limit` characters; None when it fits."""
    if content is None or len(content) <= limit:
        return None
    return f"content is {len(content):,} characters; the limit is {limit:,} per memory; dropped"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!").casefold()


def _image_ids(turns: Sequence[Turn]) -> list[str]:
    return list(dict.fromkeys(i for t in turns for i in t.image_ids))


def _episodic_ops(
    topics: Sequence[Topic], exchanges: Sequence[Sequence[Turn]], max_chars: int
) -> tuple[list[MemoryOp], list[MemoryChange], list[MemoryChange]]:
    """One episodic memory per topic over the turns of its exchanges; the changes for the
    ops, and the topics dropped (naming no exchange of the session, or a summary over
    `max_chars`) with their notes."""
    ops: list[MemoryOp] = []
    changes: list[MemoryChange] = []
    dropped: list[MemoryChange] = []
    for topic in topics:
        too_long = _too_long(topic.summary, max_chars)
        if too_long is not None:
            summary = _preview(topic.summary, max_chars)
            dropped.append(MemoryChange("noop", "episodic", None, summary, too_long))
            continue
        valid = [i for i in dict.fromkeys(topic.exchanges) if 0 <= i < len(exchanges)]
        if not valid:
            note = f"topic names no exchange of this session ({list(topic.exchanges)}); dropped"
            dropped.append(MemoryChange("noop", "episodic", None, topic.summary, note))
            continue
        turn_ids = tuple(t.id for i in sorted(valid) for t in exchanges[i])
        ops.append(AddOp("episodic", topic.summary, None, topic.keywords, turn_ids))
        bad = sorted(set(topic.exchanges) - set(valid))
        ignored = f"ignored exchange numbers {bad} (not in this session)" if bad else None
        changes.append(MemoryChange("add", "episodic", None, topic.summary, ignored))
    return ops, changes, dropped


@dataclass(frozen=True, slots=True)
class _Keyed:
    ops: list[MemoryOp]
    changes: list[MemoryChange]  # one per op, in order
    dropped: list[MemoryChange]  # entries not applied, with why


def _keyed_ops(
    kind: MemoryType,
    entries: Sequence[KeyValue],
    current: Sequence[Memory],
    source: tuple[int, ...],
    end: datetime,
    max_chars: int,
) -> _Keyed:
    """Per-key operations: set a key whose value changed, remove a key given as null.
    Keys the model leaves out stay as they are (an omission is not a deletion). Procedural
    entries past MAX_PROCEDURAL and values over `max_chars` are dropped with a note."""
    held = {m.key: m for m in current}
    result = _Keyed([], [], [])
    unique = list(dict((e.key, e) for e in entries).values())
    limit = MAX_PROCEDURAL if kind is MemoryType.PROCEDURAL else len(unique)
    for entry in unique[limit:]:
        note = f"over the {limit} {kind.value} entries kept per session close; dropped"
        shown = f"{entry.key}: {'(remove)' if entry.value is None else entry.value}"
        result.dropped.append(
            MemoryChange("noop", kind.value, None, _preview(shown, max_chars), note)
        )
    for entry in unique[:limit]:
        old = held.get(entry.key)
        if entry.value is None:
            if old is not None:
                result.ops.append(InvalidateOp(old.id, end))
                result.changes.append(MemoryChange("invalidate", kind.value, old.id, old.content))
            continue
        too_long = _too_long(entry.value, max_chars)
        if too_long is not None:
            content = _preview(f"{entry.key}: {entry.value}", max_chars)
            result.dropped.append(MemoryChange("noop", kind.value, None, content, too_long))
            continue
        if old is not None and _norm(old.content) == _norm(entry.value):
            continue
        result.ops.append(AddOp(kind, entry.value, entry.key, (), source, (), end))
        result.changes.append(MemoryChange("add", kind.value, None, f"{entry.key}: {entry.value}"))
    return result


def _within_session_limit(
    ops: list[MemoryOp], changes: list[MemoryChange], limit: int, max_chars: int
) -> tuple[list[MemoryOp], list[MemoryChange], list[MemoryChange]]:
    """The first `limit` operations of a session job (episodic, then core, then procedural,
    as produced) and their changes; each later one dropped, as a noop with a note."""
    note = f"over the limit of {limit} operations per session update; dropped"
    over = [
        MemoryChange("noop", c.memory_type, c.memory_id, _preview(c.content, max_chars), note)
        for c in changes[limit:]
    ]
    return ops[:limit], changes[:limit], over


def _with_ids(changes: list[MemoryChange], applied: Sequence[Memory]) -> list[MemoryChange]:
    """Fill in the ids of the memories the applied operations produced (they come first in
    `changes`, in order)."""
    result = []
    for index, change in enumerate(changes):
        if index < len(applied) and change.op != "noop":
            change = MemoryChange(
                change.op, change.memory_type, applied[index].id, change.content, change.note
            )
        result.append(change)
    return result
