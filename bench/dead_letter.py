"""An update phase that never jams: 30 turns with a model that writes garbage for one kind of
update, through the real background worker with its real backoff.

    .venv/bin/python bench/dead_letter.py            # about a minute
    .venv/bin/python bench/dead_letter.py --turns 9  # a quick look

What runs. `Assistant(update="background", max_attempts=3)` over a fresh SQLite store (the
hashing encoder: this measures the queue, not retrieval) against the scripted OpenAI-compatible
server of personavlm.testing (tests/agent_script.py). The model answers every response-phase
call at once and every per-turn update with one memory; for the chosen kind (`--garbage
episodic`, the session close's topic segmentation, by default; or `update`, the per-turn
update) it writes prose instead of the JSON asked for, every time. Every third turn starts a
new session (the next turn comes 61 minutes later), so session-close jobs keep coming while
turns keep being answered.

Measured: turn updates applied, dead jobs (each failing kind's job must die after 3 strikes,
its replies kept), how long one failing job held its user's queue (from its first attempt,
as polled every 50 ms, to its death: its backoff, 5 s then 10 s, plus the work), and per
turn the lag
from `respond` returning to its update being applied (max and p95; failing jobs one after
another add up, each holding the queue for its own backoff only). Output: Markdown
for docs/benchmarks.md on stdout, raw numbers as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the scripted agent

from agent_script import AgentScript, Req, op, update  # noqa: E402
from personavlm.agent import AgentConfig, Assistant  # noqa: E402
from personavlm.embed import HashingEmbedder  # noqa: E402
from personavlm.memory import MemoryStore  # noqa: E402
from personavlm.models import OpenAIChatModel  # noqa: E402
from personavlm.testing import ScriptedOpenAIServer  # noqa: E402

GARBAGE = "Of course! The user seems happy today and talked about many things."
USER = "bench-user"


def scripted(garbage: str) -> AgentScript:
    script = AgentScript()

    def per_turn(req: Req) -> str:
        if garbage == "update":
            return GARBAGE
        said = req.all_text.rsplit("turn-", 1)[-1].split()[0]
        return update([op("add", f"applied turn-{said}")])

    script.update = per_turn
    if garbage == "episodic":
        script.episodic = lambda req: GARBAGE
    return script


def run(turns: int, garbage: str, timeout_s: float) -> dict[str, Any]:
    script = scripted(garbage)
    config = AgentConfig(update="background", max_attempts=3)
    with (
        ScriptedOpenAIServer(script) as server,
        tempfile.TemporaryDirectory() as scratch,
        MemoryStore.open(Path(scratch) / "m.db", embedder=HashingEmbedder()) as store,
        OpenAIChatModel("scripted", server.base_url) as model,
        Assistant(store, model, config) as assistant,
    ):
        asked: dict[int, float] = {}
        clock = datetime(2024, 3, 1, 9, 0)
        for index in range(turns):
            clock += timedelta(minutes=61 if index and index % 3 == 0 else 1)
            assistant.respond(USER, f"hello turn-{index}", time=clock)
            asked[index] = time.monotonic()
        applied_at, held = _watch(store, turns, timeout_s)
        status = store.queue_status(USER)
        dead = store.jobs(USER, status="dead")
    lags = [applied_at[i] - asked[i] for i in applied_at]
    return {
        "turns": turns,
        "garbage": garbage,
        "turn_updates_applied": len(applied_at),
        "dead_jobs": len(dead),
        "dead_kinds": sorted({job.kind for job in dead}),
        "dead_replies_kept": sum(len(job.replies) for job in dead),
        "pending_left": status.pending,
        "lag_max_s": max(lags) if lags else None,
        "lag_p95_s": float(np.percentile(lags, 95)) if lags else None,
        "held_max_s": max(held) if held else None,
    }


def _watch(
    store: MemoryStore, turns: int, timeout_s: float
) -> tuple[dict[int, float], list[float]]:
    """When each turn's update memory appeared, until all did and the queue is idle; and,
    per job that died, how long it held its user's queue (first attempt to dead)."""
    applied_at: dict[int, float] = {}
    tried: dict[int, float] = {}
    dead_at: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        for memory in store.list(USER, types=["semantic"], limit=1000):
            applied_at.setdefault(int(memory.content.rsplit("turn-", 1)[-1]), now)
        for job in store.jobs(USER, limit=1000):
            if job.attempts or job.status == "dead":
                tried.setdefault(job.id, now)
            if job.status == "dead":
                dead_at.setdefault(job.id, now)
        if len(applied_at) == turns and store.queue_status(USER).pending == 0:
            break
        time.sleep(0.05)
    return applied_at, [dead_at[j] - tried[j] for j in dead_at]


def markdown(result: dict[str, Any]) -> str:
    lag = (
        "n/a"
        if result["lag_max_s"] is None
        else f"{result['lag_p95_s']:.1f} s p95, {result['lag_max_s']:.1f} s max"
    )
    return "\n".join(
        [
            f"{result['turns']} turns, garbage for `{result['garbage']}`, max_attempts 3, "
            f"real backoff (5 s, 10 s); {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}.",
            "",
            "| turn updates applied | dead jobs (kinds) | replies kept | pending left | "
            "queue held by one failing job (max) | lag from answer to update |",
            "|---:|---|---:|---:|---:|---|",
            f"| {result['turn_updates_applied']} / {result['turns']} | {result['dead_jobs']} "
            f"({', '.join(result['dead_kinds']) or '-'}) | {result['dead_replies_kept']} | "
            f"{result['pending_left']} | {_seconds(result['held_max_s'])} | {lag} |",
        ]
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--garbage", choices=["episodic", "update"], default="episodic")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait at most")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dead.json")
    args = parser.parse_args()
    result = run(args.turns, args.garbage, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
