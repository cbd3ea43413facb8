"""PNG charts for benchmark reports: plain data in, one PNG file out.

    accuracy_bars(path, title, {"run A": {"Memory": 61.0, "Overall": 58.2}, "run B": {...}})
    recall_curves(path, title, {"shipped": {1: 0.4, 5: 0.7, 10: 0.8}, "bm25": {...}})
    trajectories(path, title, {"truth": [[3, 4, 2, 3, 3], ...], "paper": [...]}, shifts=[20])

matplotlib (the ``bench`` extra) is imported only when a chart is drawn, and only its
object-oriented API is used: each chart is a ``Figure`` on its own Agg canvas, never a pyplot
figure, so drawing selects no global backend, leaves nothing open in pyplot's registry and
works without a display. Output is byte-for-byte deterministic for the same input: fixed size
and dpi, and no software version or date written into the PNG.

Every function checks its data first and raises ``ValidationError`` saying what to fix, so a
bad report fails before anything is written.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personavlm.errors import MissingDependencyError, ValidationError
from personavlm.personality.pem import TRAITS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "INSTALL_BENCH", "accuracy_bars", "recall_curves", "trajectories"]

INSTALL_BENCH = "pip install 'personavlm[bench]'"
DPI = 100
# Sizes in inches at DPI: bars 1000x500 px, curves 800x500 px, trajectories 1000x1100 px.
_BARS_SIZE = (10.0, 5.0)
_CURVES_SIZE = (8.0, 5.0)
_TRAJECTORY_WIDTH = 10.0
_TRAJECTORY_ROW_HEIGHT = 2.2
_TRAIT_RANGE = (1.0, 5.0)


def accuracy_bars(
    path: str | os.PathLike[str],
    title: str,
    groups: Mapping[str, Mapping[str, float]],
    *,
    ylabel: str = "accuracy (%)",
) -> Path:
    """Grouped bars: one category per x position, one bar series per group, values 0..100.

    ``groups`` maps a series name (a run or mode) to its value per category; every group must
    have the same categories, which are drawn in the first group's order. Each bar carries its
    value to one decimal. Returns the path written.
    """
    out = _png_path(path)
    categories = _check_groups(groups)
    figure = _new_figure(_BARS_SIZE)
    axes = figure.subplots()
    width = 0.8 / len(groups)
    for index, (name, values) in enumerate(groups.items()):
        # Centre the group of bars on each category's x position.
        offset = (index - (len(groups) - 1) / 2) * width
        xs = [position + offset for position in range(len(categories))]
        bars = axes.bar(xs, [float(values[c]) for c in categories], width, label=name)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    axes.set_xticks(range(len(categories)), [str(c) for c in categories])
    axes.set_ylim(0, 108)  # room above 100 for the value labels
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, out)


def recall_curves(
    path: str | os.PathLike[str],
    title: str,
    curves: Mapping[str, Mapping[int, float]],
    *,
    metric: str = "recall",
) -> Path:
    """``metric``@k (0..1) against k, one line per variant, k on a log axis ticked at each k.

    Returns the path written.
    """
    out = _png_path(path)
    ks = _check_curves(curves)
    figure = _new_figure(_CURVES_SIZE)
    axes = figure.subplots()
    for name, values in curves.items():
        points = sorted(values.items())
        axes.plot([k for k, _ in points], [float(v) for _, v in points], marker="o", label=name)
    axes.set_xscale("log")
    # Label the k values themselves: log axes otherwise print 10^0, 10^1 and skip 5 and 20.
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("k")
    axes.set_ylabel(f"{metric}@k")
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return _save(figure, out)


def trajectories(
    path: str | os.PathLike[str],
    title: str,
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    x: Sequence[float] | None = None,
    trait_names: Sequence[str] = TRAITS,
    shifts: Sequence[float] = (),
) -> Path:
    """One subplot per trait (y 1..5), one line per series, dashed vertical lines at ``shifts``.

    Each series is a list of per-step vectors (one value per trait, in ``trait_names`` order);
    all series have the same length. The first series is the reference (e.g. the true
    trajectory) and is drawn thick and black. ``x`` defaults to 0, 1, 2, ... Returns the path
    written.
    """
    out = _png_path(path)
    names = _check_trait_names(trait_names)
    steps = _check_series(series, len(names))
    xs = _check_x(x, steps)
    shift_xs = _check_numbers(shifts, "shifts")
    figure = _new_figure((_TRAJECTORY_WIDTH, _TRAJECTORY_ROW_HEIGHT * len(names)))
    axes_list = figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for row, (axes, trait) in enumerate(zip(axes_list, names, strict=True)):
        for index, (label, vectors) in enumerate(series.items()):
            style: dict[str, Any] = (
                {"color": "black", "linewidth": 2.0} if index == 0 else {"linewidth": 1.0}
            )
            axes.plot(xs, [float(v[row]) for v in vectors], label=label, **style)
        for shift in shift_xs:
            axes.axvline(shift, color="grey", linestyle="--", linewidth=0.8)
        axes.set_ylim(_TRAIT_RANGE[0] - 0.1, _TRAIT_RANGE[1] + 0.1)
        axes.set_ylabel(trait, fontsize=8)
        axes.grid(alpha=0.3)
    axes_list[0].set_title(title)
    axes_list[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes_list[-1].set_xlabel("turn")
    return _save(figure, out)


def _new_figure(size: tuple[float, float]) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"charts need matplotlib, which is not installed; run: {INSTALL_BENCH}"
        ) from exc
    # Constrained layout keeps labels inside the fixed canvas, so every PNG has the same size.
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself to the figure: Agg, whatever pyplot's backend
    return figure


def _save(figure: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Software=None drops the "matplotlib version x" text chunk; PNGs carry no date.
        figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        # Not in pyplot's registry, so clearing drops the artists and GC frees the rest.
        figure.clear()
    return out


def _png_path(path: object) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ValidationError(f"chart path must be a str or path; got {type(path).__name__}")
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValidationError(f"chart path must end in .png (charts are PNG); got {str(out)!r}")
    return out


def _number(value: object, what: str, low: float, high: float) -> float:
    # bool is an int subclass, but True as a percentage is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{what} must be a number; got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValidationError(
            f"{what} must be a finite number in [{low:g}, {high:g}]; got {value!r}"
        )
    return number


def _check_mapping(data: object, what: str, hint: str) -> Mapping[Any, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what} must be a mapping {hint}; got {type(data).__name__}")
    if not data:
        raise ValidationError(f"{what} is empty; give at least one entry {hint}")
    return data


def _check_groups(groups: object) -> list[str]:
    checked = _check_mapping(groups, "groups", "of series name -> {category: value}")
    hint = "of category -> value (0..100)"
    first_name, first = next(iter(checked.items()))
    categories = list(_check_mapping(first, f"group {first_name!r}", hint))
    for name, values in checked.items():
        row = _check_mapping(values, f"group {name!r}", hint)
        missing = [c for c in categories if c not in row]
        extra = [c for c in row if c not in categories]
        if missing or extra:
            raise ValidationError(
                f"group {name!r} must have the same categories as the first group "
                f"({', '.join(map(str, categories))}); missing: {missing or 'none'}, "
                f"extra: {extra or 'none'}"
            )
        for category, value in row.items():
            _number(value, f"group {name!r}, category {category!r}", 0.0, 100.0)
    return categories


def _check_curves(curves: object) -> list[int]:
    checked = _check_mapping(curves, "curves", "of variant name -> {k: value}")
    ks: set[int] = set()
    for name, values in checked.items():
        row = _check_mapping(values, f"curve {name!r}", "of k (integer >= 1) -> value (0..1)")
        for k, value in row.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValidationError(f"curve {name!r}: k must be an integer >= 1; got {k!r}")
            _number(value, f"curve {name!r} at k={k}", 0.0, 1.0)
            ks.add(k)
    return sorted(ks)


def _check_trait_names(trait_names: object) -> list[str]:
    if isinstance(trait_names, str) or not isinstance(trait_names, Sequence) or not trait_names:
        raise ValidationError("trait_names must be a non-empty sequence of names, one per subplot")
    return [str(name) for name in trait_names]


def _check_series(series: object, width: int) -> int:
    checked = _check_mapping(series, "series", "of name -> list of per-step vectors")
    lengths = set()
    for name, vectors in checked.items():
        if isinstance(vectors, str) or not isinstance(vectors, Sequence) or not vectors:
            raise ValidationError(f"series {name!r} must be a non-empty list of per-step vectors")
        for step, vector in enumerate(vectors):
            if isinstance(vector, str) or not isinstance(vector, Sequence):
                raise ValidationError(f"series {name!r}, step {step}: expected a vector of numbers")
            if len(vector) != width:
                raise ValidationError(
                    f"series {name!r}, step {step}: vector has {len(vector)} values; "
                    f"give one per trait ({width})"
                )
            for value in vector:
                _number(value, f"series {name!r}, step {step}", *_TRAIT_RANGE)
        lengths.add(len(vectors))
    if len(lengths) != 1:
        raise ValidationError(
            f"all series must have the same number of steps; got lengths {sorted(lengths)}"
        )
    return lengths.pop()


def _check_numbers(values: object, what: str) -> list[float]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValidationError(f"{what} must be a sequence of numbers")
    return [_number(value, f"{what}[{i}]", -math.inf, math.inf) for i, value in enumerate(values)]


def _check_x(x: object, steps: int) -> list[float]:
    if x is None:
        return [float(step) for step in range(steps)]
    xs = _check_numbers(x, "x")
    if len(xs) != steps:
        raise ValidationError(f"x has {len(xs)} values but the series have {steps} steps")
    return xs
