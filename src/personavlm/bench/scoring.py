"""Accuracy from answered records (records.jsonl of a run), as the paper reports it.

Per answer reader (`reference`: the reference harness's rule; `robust`: bench/mcq.py), the
accuracy in percent per task, per aspect, overall, and overall without the alignment items.
Alignment pairs count as two binary items, as in the paper (its random baseline, 32.11%,
counts them that way). Unparsed answers count as wrong and are reported.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from personavlm.tasks import ASPECTS

__all__ = ["PARSERS", "expected_random", "markdown_table", "summarize"]

PARSERS = ("reference", "robust")


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(records)
    out: dict[str, Any] = {"items": len(rows)}
    for parser in PARSERS:
        out[parser] = _accuracy(rows, parser)
    out["unparsed"] = {p: sum(1 for r in rows if r[p] is None) for p in PARSERS}
    out["failed"] = sum(1 for r in rows if r.get("failed"))
    out["guessed"] = sum(1 for r in rows if r.get("guess"))
    out["model_calls"] = _cost(rows, "model_calls")
    out["prompt_tokens"] = _cost(rows, "prompt_tokens")
    return out


def expected_random(records: Iterable[Mapping[str, Any]], choices: Mapping[str, int]) -> float:
    """Expected accuracy (%) of a uniform guess over these items; `choices` maps item id to
    its number of options."""
    rows = list(records)
    if not rows:
        return 0.0
    return round(100 * statistics.fmean(1 / choices[r["id"]] for r in rows), 2)


def _accuracy(rows: list[Mapping[str, Any]], parser: str) -> dict[str, Any]:
    key = f"correct_{parser}"
    by_task: dict[str, list[bool]] = defaultdict(list)
    by_aspect: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(bool(r[key]))
        by_aspect[r["aspect"]].append(bool(r[key]))
    without = [bool(r[key]) for r in rows if r["kind"] != "alignment"]
    return {
        "overall": _percent([bool(r[key]) for r in rows]),
        "overall_without_alignment": _percent(without),
        "by_aspect": {a: _percent(v) for a, v in sorted(by_aspect.items(), key=_aspect_order)},
        "by_task": {t: _percent(v) for t, v in sorted(by_task.items())},
        "counts": {
            "by_aspect": {a: len(v) for a, v in by_aspect.items()},
            "by_task": {t: len(v) for t, v in by_task.items()},
        },
    }


def _aspect_order(entry: tuple[str, list[bool]]) -> tuple[int, str]:
    name = entry[0]
    return (ASPECTS.index(name) if name in ASPECTS else len(ASPECTS), name)


def _percent(values: list[bool]) -> float | None:
    return round(100 * sum(values) / len(values), 2) if values else None


def _cost(rows: list[Mapping[str, Any]], key: str) -> dict[str, float]:
    values = [float(r.get(key, 0)) for r in rows]
    if not values:
        return {"total": 0, "per_item": 0.0}
    return {"total": sum(values), "per_item": round(statistics.fmean(values), 2)}


def markdown_table(summary: Mapping[str, Any], parser: str = "robust") -> str:
    """Accuracy per aspect and task as Markdown (one parser; both overall lines)."""
    acc = summary[parser]
    counts = acc["counts"]
    lines = [
        f"| | items | accuracy % ({parser} parser) |",
        "|---|---:|---:|",
        f"| **overall** | {summary['items']} | {_cell(acc['overall'])} |",
        f"| overall without alignment | "
        f"{summary['items'] - counts['by_aspect'].get('Alignment', 0)} | "
        f"{_cell(acc['overall_without_alignment'])} |",
    ]
    lines += [
        f"| {aspect} | {counts['by_aspect'][aspect]} | {_cell(value)} |"
        for aspect, value in acc["by_aspect"].items()
    ]
    lines += [
        f"| &nbsp;&nbsp;{task} | {counts['by_task'][task]} | {_cell(value)} |"
        for task, value in acc["by_task"].items()
    ]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
