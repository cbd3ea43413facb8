"""PEM tracking at full size: which lambda schedule follows a known personality best.

    .venv/bin/python bench/pem_tracking.py
    .venv/bin/python bench/pem_tracking.py --robustness   # also other noise levels, no shift

Runs `personavlm.bench.pem_tracking.run_experiment` (200 seeded users, 200 turns, both skip
rules), prints the Markdown tables and writes into bench/results/pem_tracking/:
report.json, report.md, trajectory_paper.png and trajectory_reference.png (one user's truth
and estimates), and with --robustness robustness.json / robustness.md. docs/pem-tracking.md
records the outcome.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from personavlm.bench import charts
from personavlm.bench.pem_tracking import (
    TrackingSettings,
    chart_series,
    default_trackers,
    render_markdown,
    run_experiment,
    trajectory_from_data,
)
from personavlm.personality import SkipRule

OUT = Path(__file__).resolve().parent / "results" / "pem_tracking"
# A user who never changes, at both ends of the scale and at 3: what false alarms cost.
STEADY_USER = [4.2, 2.0, 3.0, 3.6, 1.5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--user", type=int, default=0, help="which user the charts show")
    parser.add_argument("--robustness", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    settings = TrackingSettings(seeds=args.seeds, seed=args.seed)
    started = time.perf_counter()
    report = run_experiment(settings)
    report["seconds"] = round(time.perf_counter() - started, 1)
    table = render_markdown(report)
    print(table)
    print(f"({report['seconds']} s)")
    _write(args.out, "report", report, table)
    for rule in SkipRule:
        series, shifts = chart_series(settings, index=args.user, skip_rule=rule)
        charts.trajectories(
            args.out / f"trajectory_{rule.value}.png",
            f"PEM estimates of user {args.user} (seed {args.seed}), skip rule {rule.value}",
            series,
            shifts=shifts,
        )
    if args.robustness:
        _robustness(args.out, settings)


def _robustness(out: Path, base: TrackingSettings) -> None:
    """The paper's schedule against the shift rule under other reading models."""
    trackers = {name: t for name, t in default_trackers().items() if name.startswith("paper")}
    variants: dict[str, dict[str, Any]] = {
        "sigma 0.4": {"settings": replace(base, sigma=0.4)},
        "sigma 1.0": {"settings": replace(base, sigma=1.0)},
        "p_neutral 0.5": {"settings": replace(base, p_neutral=0.5)},
        "p_silent 0.4": {"settings": replace(base, p_silent=0.4)},
        "no shift": {
            "settings": base,
            "trajectory": trajectory_from_data([STEADY_USER] * base.turns),
        },
    }
    reports: dict[str, Any] = {}
    tables = []
    for name, spec in variants.items():
        report = run_experiment(
            spec["settings"], trackers=trackers, trajectory=spec.get("trajectory")
        )
        reports[name] = report
        tables.append(f"### {name}\n\n{render_markdown(report)}")
    text = "\n".join(tables)
    print(text)
    _write(out, "robustness", reports, text)


def _write(out: Path, stem: str, data: Any, table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
