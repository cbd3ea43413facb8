"""Tests of the PNG charts for benchmark reports (personavlm.bench.charts)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from personavlm.bench import charts
from personavlm.errors import MissingDependencyError, ValidationError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

GROUPS = {
    "baseline": {"Memory": 61.0, "Intent": 48.5, "Overall": 55.2},
    "with PEM": {"Memory": 64.0, "Intent": 52.0, "Overall": 59.9},
}
CURVES = {"shipped": {1: 0.4, 5: 0.7, 10: 0.8, 20: 0.9}, "bm25": {1: 0.3, 5: 0.6, 10: 0.7}}
TRUTH = [[3.0, 4.0, 2.0, 3.5, 1.5]] * 10 + [[3.0, 2.0, 2.0, 3.5, 4.0]] * 10
ESTIMATE = [[3.1, 3.8, 2.2, 3.4, 1.7]] * 20
SERIES = {"truth": TRUTH, "paper": ESTIMATE}


def _draw(kind: str, path: Path) -> Path:
    if kind == "bars":
        return charts.accuracy_bars(path, "Persona-MME", GROUPS)
    if kind == "curves":
        return charts.recall_curves(path, "retrieval", CURVES)
    return charts.trajectories(path, "PEM", SERIES, shifts=[10])


@pytest.mark.parametrize(
    ("kind", "size"), [("bars", (1000, 500)), ("curves", (800, 500)), ("trajectory", (1000, 1100))]
)
def test_each_chart_writes_a_png_of_fixed_size(
    tmp_path: Path, kind: str, size: tuple[int, int]
) -> None:
    path = _draw(kind, tmp_path / "sub" / f"{kind}.png")  # missing folders are made
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        assert "Software" not in image.info  # no matplotlib version in the file


@pytest.mark.parametrize("kind", ["bars", "curves", "trajectory"])
def test_same_input_gives_the_same_bytes(tmp_path: Path, kind: str) -> None:
    first = _draw(kind, tmp_path / "a.png").read_bytes()
    second = _draw(kind, tmp_path / "b.png").read_bytes()
    assert first == second


def test_trajectories_take_x_values_and_other_trait_names(tmp_path: Path) -> None:
    path = charts.trajectories(
        tmp_path / "two.png",
        "two traits",
        {"truth": [[1.0, 5.0], [2.0, 4.0]]},
        x=[10, 20],
        trait_names=("a", "b"),
    )
    with Image.open(path) as image:
        assert image.size == (1000, 440)  # one 2.2-inch row per trait


def test_charts_leave_no_pyplot_figure_open(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for kind in ("bars", "curves", "trajectory"):
        _draw(kind, tmp_path / f"{kind}.png")
    assert plt.get_fignums() == before


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'personavlm\[bench\]'"):
        charts.accuracy_bars(tmp_path / "x.png", "t", GROUPS)
    assert not (tmp_path / "x.png").exists()


BAD_BARS: list[tuple[Any, str]] = [
    ({}, "groups is empty"),
    ({"a": {}}, "group 'a' is empty"),
    ({"a": {"Memory": 50.0}, "b": {"Intent": 50.0}}, "same categories"),
    ({"a": {"Memory": 101.0}}, r"in \[0, 100\]"),
    ({"a": {"Memory": -1}}, r"in \[0, 100\]"),
    ({"a": {"Memory": math.nan}}, "finite"),
    ({"a": {"Memory": True}}, "must be a number"),
    ({"a": {"Memory": "50"}}, "must be a number"),
    ([("a", 1)], "must be a mapping"),
]


@pytest.mark.parametrize(("groups", "message"), BAD_BARS)
def test_accuracy_bars_reject_bad_data(tmp_path: Path, groups: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        charts.accuracy_bars(tmp_path / "x.png", "t", groups)
    assert not (tmp_path / "x.png").exists()


BAD_CURVES: list[tuple[Any, str]] = [
    ({}, "curves is empty"),
    ({"a": {0: 0.5}}, "k must be an integer >= 1"),
    ({"a": {"5": 0.5}}, "k must be an integer >= 1"),
    ({"a": {5: 1.5}}, r"in \[0, 1\]"),
    ({"a": {5: 50.0}}, r"in \[0, 1\]"),
]


@pytest.mark.parametrize(("curves", "message"), BAD_CURVES)
def test_recall_curves_reject_bad_data(tmp_path: Path, curves: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        charts.recall_curves(tmp_path / "x.png", "t", curves)


BAD_SERIES: list[tuple[Any, dict[str, Any], str]] = [
    ({}, {}, "series is empty"),
    ({"truth": []}, {}, "non-empty list"),
    ({"truth": [[3.0, 3.0, 3.0]]}, {}, r"has 3 values; give one per trait \(5\)"),
    ({"truth": [[3.0, 3.0, 3.0, 3.0, 6.0]]}, {}, r"in \[1, 5\]"),
    ({"truth": [[3.0] * 5], "other": [[3.0] * 5] * 2}, {}, "same number of steps"),
    ({"truth": [[3.0] * 5] * 2}, {"x": [0.0]}, "x has 1 values but the series have 2"),
    ({"truth": [[3.0] * 5]}, {"shifts": [math.inf]}, "finite"),
    ({"truth": [[3.0] * 5]}, {"trait_names": ()}, "trait_names"),
]


@pytest.mark.parametrize(("series", "options", "message"), BAD_SERIES)
def test_trajectories_reject_bad_data(
    tmp_path: Path, series: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        charts.trajectories(tmp_path / "x.png", "t", series, **options)


def test_path_must_be_a_png(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"must end in \.png"):
        charts.accuracy_bars(tmp_path / "chart.jpg", "t", GROUPS)
