"""Training curves as PNG: the loss (SFT), or reward and format rate (GRPO), per step.

    training_curve(trainer.state.log_history, Path("runs/x/curve.png"), title="GRPO")

Reads the trainer's log history (one dict per logging step). Returns None, and draws
nothing, when no step logged anything it draws (the caller says so). matplotlib is part of
the train extra (checked with the rest by `deps.require_trl`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CURVES", "series", "training_curve"]

# Panel title -> the log keys drawn on it (the first key a run logged is drawn).
CURVES: dict[str, tuple[str, ...]] = {
    "loss": ("loss",),
    "reward": ("reward",),
    "format rate": ("reward/format_rate",),
    "accuracy": ("reward/accuracy",),
    "retrievals per rollout": ("rollout/retrievals",),
}


def series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in history:
        if key in entry and "step" in entry and isinstance(entry[key], int | float):
            steps.append(int(entry["step"]))
            values.append(float(entry[key]))
    return steps, values


def training_curve(history: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path | None:
    panels = []
    for name, keys in CURVES.items():
        for key in keys:
            steps, values = series(history, key)
            if steps:
                panels.append((name, steps, values))
                break
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for axis, (name, steps, values) in zip(axes[0], panels, strict=True):
        axis.plot(steps, values, marker="o" if len(steps) < 40 else None, linewidth=1.5)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
