"""Replaying an imported history through the agent: stored replies, full update phase.

`replay_history` records every exchange of a Persona-MME history in order with
`Assistant.record` (the reference harness's replay: the stored assistant replies, then the
update phase per turn; the 60-minute rule closes sessions as it goes), then closes the last
session. Turn ids are `s<session>t<turn>`, so a replay run twice adds nothing the second time.

Before the first exchange, `seed_profile` writes the history's profile as core memory, as the
reference agent starts from the user's profile. Only a user the store does not know yet is
seeded (in one unit of work, so the user exists with the whole profile or not at all): on a
second replay the agent may since have rewritten those keys, and the seed must not undo it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from personavlm.agent import Assistant, UpdateReport
from personavlm.interop.persona_mme import History
from personavlm.memory.records import MemoryType
from personavlm.memory.store import MemoryStore
from personavlm.memory.writes import AddOp

__all__ = ["ReplayTally", "replay_history", "seed_profile"]


@dataclass(slots=True)
class ReplayTally:
    """What a history replay did; a job's last report is the one that counts."""

    added: int = 0
    skipped: int = 0
    profile_keys: int = 0  # core memories seeded from the profile
    last: dict[int, UpdateReport] = field(default_factory=dict)

    def note(self, reports: Iterable[UpdateReport]) -> None:
        for report in reports:
            self.last[report.job_id] = report

    def with_status(self, status: str) -> list[UpdateReport]:
        return [r for r in self.last.values() if r.status == status]

    def changes(self) -> dict[str, int]:
        ops = Counter(c.op for r in self.with_status("applied") for c in r.changes)
        return dict(sorted(ops.items()))


def replay_history(
    assistant: Assistant,
    user: str,
    history: History,
    *,
    progress: Callable[[int], None],
) -> ReplayTally:
    """Record every exchange of a Persona-MME history in order (stored replies, full update
    phase; the 60-minute rule closes sessions), then close the last session. Idempotent."""
    tally = ReplayTally()
    first = next(history.turns(), None)
    if first is not None:
        tally.profile_keys = seed_profile(
            assistant.store, user, history.profile_entries, time=first.time
        )
    for turn in history.turns():
        exchange, reports = assistant.record(
            user,
            turn.user,
            turn.assistant,
            images=turn.images,
            time=turn.time,
            ext_id=f"s{turn.session_index}t{turn.turn_index}",
        )
        if exchange is None:
            tally.skipped += 1
        else:
            tally.added += 1
        tally.note(reports)
        progress(1)
    tally.note(assistant.close_session(user))
    return tally


def seed_profile(
    store: MemoryStore, user: str, entries: Sequence[tuple[str, str]], *, time: datetime
) -> int:
    """Write a new user's profile as core memory (one memory per key, at `time`); returns how
    many were written: 0 for a user the store already knows or an empty profile."""
    if not entries or store.has_user(user):
        return 0
    ops = [AddOp(MemoryType.CORE, value, key, (), (), (), time) for key, value in entries]
    return len(store.apply(user, ops, actor="import"))
