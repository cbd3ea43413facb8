"""bench/agent_calls.py on a few turns: the call-count invariants the benchmark reports
(counts only; timings are the benchmark's business, never asserted here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench" / "agent_calls.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_agent_calls", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_call_counts_per_turn(tmp_path: Path) -> None:
    bench = load_bench()
    out = tmp_path / "agent_calls.json"
    # 4 sample turns: session 1 is turns 0-2, turn 3 opens session 2 (closing session 1 by
    # the 60-minute rule), and the bench closes session 2 at the end.
    result: dict[str, Any] = bench.main(["--turns", "4", "--call-delay-ms", "0", "--out", str(out)])
    assert json.loads(out.read_text())["format"] == 1
    summary = {s["protocol"]: s for s in result["protocols"]}
    for protocol, update_calls, session_calls in (("json", 1, 2), ("tags", 2, 3)):
        s = summary[protocol]
        assert s["turns"] == 4 and s["sessions_closed"] == 2 and s["sessions_closed_by_gap"] == 1
        assert s["response_calls_eq_1_plus_retrievals"], s["response_violations"]
        assert s["response_retries"] == 0 and s["failed_turns"] == 0
        assert s["update_calls_values"] == [update_calls]
        assert s["session_calls_values"] == [session_calls]
        assert s["background_respond_has_no_update"]
        assert s["background_retrievals_match"]
        assert s["response_path_calls_per_turn_background"] == s["response_calls_per_turn"]
    runs = [r for r in result["runs"] if r["protocol"] == "json" and r["mode"] == "inline"]
    for turn in runs[0]["turns"]:  # per turn, straight from the trace's totals
        totals = turn["totals"]
        assert totals["response"]["calls"] == 1 + turn["retrievals"]
        assert totals["update"]["calls"] == 1
    assert summary["json"]["retrievals"] > 0, "the scripted model retrieves on some turns"
