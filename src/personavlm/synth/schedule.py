"""When the simulated user talks: sessions of 1-8 turns over weeks to three months.

    slots = plan_schedule(rng, n_turns=60, span_days=40, start=datetime(2024, 3, 4))

Rules the output keeps (the agent starts a new session after 60 idle minutes, and the
Persona-MME loader rejects time going backwards):
- the first session is on `start`'s day, the last `span_days` days later (so the history
  spans `span_days` days, give or take the hours of the day, however few sessions it has);
- turns of one session are 2-9 minutes apart;
- sessions are more than two hours apart (end of one to start of the next);
- sessions start between 07:00 and 23:00 local time; times never go backwards.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

from personavlm.synth.core import Slot

__all__ = ["MAX_SESSION_TURNS", "plan_schedule"]

MAX_SESSION_TURNS = 8
_TURN_GAP_MINUTES = (2, 9)
_DAY_START_MINUTES = 7 * 60
_AWAKE_MINUTES = 16 * 60  # sessions start on a 07:00-23:00 clock
# Room for the longest session (7 gaps of 9 minutes) plus more than two idle hours.
_MIN_SESSION_SPACING = (MAX_SESSION_TURNS - 1) * _TURN_GAP_MINUTES[1] + 125


def plan_schedule(
    rng: random.Random, *, n_turns: int, span_days: int, start: datetime
) -> list[Slot]:
    """`n_turns` slots in sessions, the first on `start`'s day, the last `span_days` days
    later."""
    sizes = _session_sizes(rng, n_turns)
    starts = _session_starts(rng, len(sizes), span_days, start)
    slots = []
    for session, (size, begin) in enumerate(zip(sizes, starts, strict=True)):
        when = begin
        for turn in range(size):
            if turn:
                when += timedelta(minutes=rng.randint(*_TURN_GAP_MINUTES))
            slots.append(Slot(session, turn, when))
    return slots


def _session_sizes(rng: random.Random, n_turns: int) -> list[int]:
    """Session lengths 1..8 summing to n_turns, about 4 on average."""
    count = max(math.ceil(n_turns / MAX_SESSION_TURNS), round(n_turns / rng.uniform(3.2, 4.8)))
    count = min(count, n_turns)
    sizes = [1] * count
    open_sessions = list(range(count))
    for _ in range(n_turns - count):
        i = rng.choice(open_sessions)
        sizes[i] += 1
        if sizes[i] == MAX_SESSION_TURNS:
            open_sessions.remove(i)
    return sizes


def _session_starts(
    rng: random.Random, count: int, span_days: int, start: datetime
) -> list[datetime]:
    """Start times on the waking-hours clock of days 0..span_days: sorted uniform points
    spread apart by at least the minimum spacing (sample in the shortened range, then add
    i * spacing); one point is drawn on the first day and one on the last."""
    total = (span_days + 1) * _AWAKE_MINUTES
    room = total - (count - 1) * _MIN_SESSION_SPACING
    if room < _AWAKE_MINUTES:
        raise AssertionError(f"{count} sessions do not fit in {span_days} days")
    # The first point lands on day 0 and the last (after adding the spacing) on the last day.
    first = rng.randrange(_AWAKE_MINUTES)
    last = room - 1 - rng.randrange(_AWAKE_MINUTES)
    inner = [rng.randrange(room) for _ in range(count - 2)]
    offsets = sorted([first, *inner, last] if count > 1 else [first])
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    times = []
    for i, offset in enumerate(offsets):
        awake = offset + i * _MIN_SESSION_SPACING
        day, minute = divmod(awake, _AWAKE_MINUTES)
        times.append(midnight + timedelta(days=day, minutes=_DAY_START_MINUTES + minute))
    return times
