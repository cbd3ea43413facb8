"""PEM tracking: how well each lambda schedule follows a known personality through shifts.

A seeded true trajectory (five traits, stable stretches, one early and one late shift) is read
turn by turn through a noisy reading model, and each schedule's estimate (the real
``personality.update`` / ``replay``) is scored against the truth:

- ``mae``: mean absolute error over all turns and traits;
- ``early`` / ``late``: mean absolute error on the traits that moved, over the ``window`` turns
  from a shift on (shifts before ``late_after`` are early, the others late);
- ``stable_mae`` / ``jitter``: error and mean |p_t - p_{t-1}| on turns at least ``window``
  turns after the last change (the start counts as one: the estimate starts neutral).

Reading model, per turn: with probability ``p_silent`` the turn says nothing (all five read 3);
otherwise each trait reads 3 ("nothing observed") with probability ``p_neutral`` and else
round(true + N(0, sigma)) clipped to 1..5.

Every seed draws its own trajectory and readings; all schedules see the same readings, so the
``vs_paper`` differences are paired. ``bench/pem_tracking.py`` runs it at full size;
docs/pem-tracking.md records the outcome. A trajectory given as data (e.g. a simulated user's
per-turn traits) goes in through ``trajectory_from_data`` and ``run_experiment(trajectory=...)``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

import numpy as np

from personavlm.errors import ValidationError
from personavlm.personality.pem import (
    NEUTRAL,
    TRAITS,
    PersonalityState,
    Reading,
    Schedule,
    ShiftRule,
    SkipRule,
    Traits,
    paper_lambda,
    replay,
)

__all__ = [
    "METRICS",
    "REPORT_FORMAT",
    "Shift",
    "Tracker",
    "TrackingSettings",
    "Trajectory",
    "chart_series",
    "default_trackers",
    "render_markdown",
    "run_experiment",
    "schedule_tracker",
    "simulate_readings",
    "synthetic_trajectory",
    "tracking_metrics",
    "trajectory_from_data",
]

REPORT_FORMAT = 1
METRICS = ("mae", "early", "late", "stable_mae", "jitter")
BASELINE = "paper"

# A tracker turns a user's readings into the estimate after each one (one state per reading).
Tracker: TypeAlias = Callable[[Sequence[Reading], SkipRule], list[PersonalityState]]
Vector: TypeAlias = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """Everything that shapes one run of the experiment; recorded in the report.

    ``turns``, ``early_turns``, ``late_turns``, ``magnitude`` and ``shifted_traits`` shape the
    synthetic trajectories only; a given trajectory brings its own length and shifts.
    """

    seeds: int = 200  # independent users (trajectory + readings) averaged over
    seed: int = 0  # base seed: user i draws from numpy's default_rng([seed, i, stream])
    turns: int = 200  # turns per synthetic user
    early_turns: tuple[int, int] = (15, 30)  # the early shift happens in this turn range
    late_turns: tuple[int, int] = (110, 160)  # the late shift happens in this turn range
    magnitude: tuple[float, float] = (1.0, 2.5)  # size of each trait's jump
    shifted_traits: tuple[int, int] = (1, 2)  # how many traits move at each shift
    sigma: float = 0.7  # reading noise (standard deviation before rounding)
    p_neutral: float = 0.3  # a trait reads 3 ("nothing observed") this often
    p_silent: float = 0.15  # a whole turn reads all 3s this often
    window: int = 30  # turns after a shift scored as "early"/"late"; later ones as stable
    late_after: int = 100  # shifts at or after this turn count as late
    skip_rules: tuple[SkipRule, ...] = (SkipRule.PAPER, SkipRule.REFERENCE)

    def __post_init__(self) -> None:
        for name in ("seeds", "turns", "window"):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} must be >= 1; got {getattr(self, name)}")
        _check_range(self.early_turns, "early_turns", 1, self.turns - 1)
        _check_range(self.late_turns, "late_turns", 1, self.turns - 1)
        _check_range(self.shifted_traits, "shifted_traits", 1, len(TRAITS))
        if not 0.0 < self.magnitude[0] <= self.magnitude[1] <= 4.0:
            raise ValidationError(f"magnitude must be 0 < low <= high <= 4; got {self.magnitude}")
        if self.sigma < 0 or not 0 <= self.p_neutral <= 1 or not 0 <= self.p_silent <= 1:
            raise ValidationError("sigma must be >= 0 and p_neutral, p_silent in [0, 1]")
        if not self.skip_rules:
            raise ValidationError("skip_rules must name at least one SkipRule")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skip_rules"] = [rule.value for rule in self.skip_rules]
        return data


def _check_range(pair: tuple[int, int], name: str, low: int, high: int) -> None:
    if not low <= pair[0] <= pair[1] <= high:
        raise ValidationError(f"{name} must be ({low} <= a <= b <= {high}); got {pair}")


@dataclass(frozen=True, slots=True)
class Shift:
    """The truth jumps at ``turn`` (the first turn at the new level) on these trait indices."""

    turn: int
    traits: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Trajectory:
    """The true personality per turn (five floats in [1, 5] each) and where it shifts.

    Made by ``synthetic_trajectory`` or, from outside data, by ``trajectory_from_data``
    (which checks the values)."""

    truth: tuple[Vector, ...]
    shifts: tuple[Shift, ...] = field(default=())

    def array(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.asarray(self.truth, dtype=np.float64)


def synthetic_trajectory(settings: TrackingSettings, rng: np.random.Generator) -> Trajectory:
    """Five stable traits with one early and one late step shift on 1-2 traits each."""
    level = rng.uniform(1.5, 4.5, size=len(TRAITS))
    values = np.repeat(level[None, :], settings.turns, axis=0)
    shifts = []
    for low, high in (settings.early_turns, settings.late_turns):
        turn = int(rng.integers(low, high + 1))
        count = int(rng.integers(settings.shifted_traits[0], settings.shifted_traits[1] + 1))
        moved = tuple(sorted(int(i) for i in rng.choice(len(TRAITS), size=count, replace=False)))
        for trait in moved:
            current = values[turn, trait]
            # Jump towards the side with more room: that side always has >= 2 points, so the
            # drawn size fits up to 2.0 and is capped by the room beyond that.
            up = 5.0 - current >= current - 1.0
            room = 5.0 - current if up else current - 1.0
            size = rng.uniform(settings.magnitude[0], min(settings.magnitude[1], room))
            values[turn:, trait] = current + size if up else current - size
        shifts.append(Shift(turn, moved))
    return Trajectory(tuple(tuple(float(v) for v in row) for row in values), tuple(shifts))


def trajectory_from_data(
    values: Sequence[Sequence[float] | Mapping[str, float]],
    *,
    shifts: Iterable[Shift] | None = None,
    min_jump: float = 0.5,
) -> Trajectory:
    """A trajectory given as data: per turn five values (Big Five order) or a trait mapping.

    Without ``shifts``, a shift is inferred wherever a trait moves by ``min_jump`` or more over
    consecutive turns of change (a step, or a ramp such as the simulator's); slow drift with
    pauses is then scored by ``mae`` alone.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise ValidationError("trajectory must be a non-empty list of per-turn trait values")
    rows = tuple(_trajectory_row(row, turn) for turn, row in enumerate(values))
    if shifts is None:
        found = _inferred_shifts(np.asarray(rows), min_jump)
    else:
        found = tuple(shifts)
        for shift in found:
            if not 0 < shift.turn < len(rows) or not shift.traits:
                raise ValidationError(
                    f"shift {shift} must name a turn in 1..{len(rows) - 1} and some traits"
                )
    return Trajectory(rows, found)


def _trajectory_row(row: Sequence[float] | Mapping[str, float], turn: int) -> Vector:
    try:
        traits = Traits.from_mapping(row) if isinstance(row, Mapping) else Traits(*row)
    except (TypeError, ValidationError) as exc:
        raise ValidationError(f"trajectory turn {turn}: {exc}; give five values in [1, 5]") from exc
    return traits.as_tuple()


def _inferred_shifts(values: np.ndarray[Any, Any], min_jump: float) -> tuple[Shift, ...]:
    # A shift is a stretch of consecutive turns over which a trait keeps moving (a step is a
    # stretch of one; the simulator's week-long ramps are longer) and that adds up to
    # min_jump or more. It is scored from the stretch's first turn.
    starts: dict[int, list[int]] = {}
    for trait in range(values.shape[1]):
        moves = np.diff(values[:, trait])
        turn = 0
        while turn < len(moves):
            if moves[turn] == 0:
                turn += 1
                continue
            end = turn
            while end < len(moves) and moves[end] != 0:
                end += 1
            if abs(moves[turn:end].sum()) >= min_jump:
                starts.setdefault(turn + 1, []).append(trait)
            turn = end
    return tuple(Shift(turn, tuple(traits)) for turn, traits in sorted(starts.items()))


def simulate_readings(
    trajectory: Trajectory, settings: TrackingSettings, rng: np.random.Generator
) -> list[Reading]:
    """One noisy momentary reading per turn of the trajectory (see the module docstring)."""
    truth = trajectory.array()
    noisy = np.floor(truth + rng.normal(0.0, settings.sigma, truth.shape) + 0.5)  # half up
    levels = np.clip(noisy, 1, 5)
    levels[rng.random(truth.shape) < settings.p_neutral] = NEUTRAL
    levels[rng.random(len(truth)) < settings.p_silent, :] = NEUTRAL
    return [Reading(*(int(v) for v in row)) for row in levels]


def schedule_tracker(schedule: Schedule, shift_rule: ShiftRule | None = None) -> Tracker:
    """The shipped updater (``personality.replay``) with this schedule and optional ShiftRule."""

    def track(readings: Sequence[Reading], skip_rule: SkipRule) -> list[PersonalityState]:
        return replay(readings, schedule=schedule, skip_rule=skip_rule, shift_rule=shift_rule)

    return track


def _fixed(lam: float) -> Schedule:
    return lambda m: lam


def default_trackers() -> dict[str, Tracker]:
    """The schedules compared: the paper's, fixed lambdas, no smoothing, and our candidates."""
    trackers: dict[str, Tracker] = {BASELINE: schedule_tracker(paper_lambda)}
    for lam in (0.5, 0.7, 0.8, 0.9):
        trackers[f"fixed {lam}"] = schedule_tracker(_fixed(lam))
    trackers["no smoothing"] = schedule_tracker(_fixed(0.0))
    # Our candidate for late shifts (personality.ShiftRule, chosen on tuning seeds 1000+).
    trackers["paper + shift rule"] = schedule_tracker(paper_lambda, ShiftRule())
    # Its first try: a margin of one level also fires on plain noise when the estimate sits
    # near a whole number, which costs stability under the reference skip rule.
    trackers["paper + shift rule, margin 1.0"] = schedule_tracker(
        paper_lambda, ShiftRule(margin=1.0)
    )
    return trackers


def tracking_metrics(
    truth: np.ndarray[Any, Any],
    estimates: np.ndarray[Any, Any],
    shifts: Sequence[Shift],
    *,
    window: int,
    late_after: int,
) -> dict[str, float | None]:
    """The five metrics of one user (module docstring); None where a part has no turns."""
    if truth.shape != estimates.shape or truth.ndim != 2 or len(truth) == 0:
        raise ValidationError(
            f"truth and estimates must be equal (turns, traits) arrays; "
            f"got {truth.shape} and {estimates.shape}"
        )
    error = np.abs(estimates - truth)
    early = [s for s in shifts if s.turn < late_after]
    late = [s for s in shifts if s.turn >= late_after]
    stable = _stable_turns(len(truth), shifts, window)
    steps = np.abs(np.diff(estimates, axis=0))
    jitter_turns = stable[1:]  # a step into turn t is scored when t is stable
    return {
        "mae": float(error.mean()),
        "early": _window_error(error, early, window),
        "late": _window_error(error, late, window),
        "stable_mae": float(error[stable].mean()) if stable.any() else None,
        "jitter": float(steps[jitter_turns].mean()) if jitter_turns.any() else None,
    }


def _window_error(
    error: np.ndarray[Any, Any], shifts: Sequence[Shift], window: int
) -> float | None:
    cells = [error[s.turn : s.turn + window, list(s.traits)].ravel() for s in shifts]
    joined = np.concatenate(cells) if cells else np.empty(0)
    return float(joined.mean()) if joined.size else None


def _stable_turns(turns: int, shifts: Sequence[Shift], window: int) -> np.ndarray[Any, Any]:
    since_change = np.arange(turns)  # the start is a change: the estimate begins neutral
    for shift in sorted(shifts, key=lambda s: s.turn):
        since_change[shift.turn :] = np.arange(turns - shift.turn)
    stable: np.ndarray[Any, Any] = since_change >= window
    return stable


def _estimates(states: Sequence[PersonalityState]) -> np.ndarray[Any, Any]:
    return np.asarray([s.traits.as_tuple() for s in states], dtype=np.float64)


def _user(
    settings: TrackingSettings, index: int, trajectory: Trajectory | None
) -> tuple[Trajectory, list[Reading]]:
    # Separate streams, so a given trajectory gets the same reading noise as a synthetic one.
    shape_rng = np.random.default_rng([settings.seed, index, 0])
    reading_rng = np.random.default_rng([settings.seed, index, 1])
    truth = trajectory if trajectory is not None else synthetic_trajectory(settings, shape_rng)
    return truth, simulate_readings(truth, settings, reading_rng)


def run_experiment(
    settings: TrackingSettings | None = None,
    *,
    trackers: Mapping[str, Tracker] | None = None,
    trajectory: Trajectory | None = None,
) -> dict[str, Any]:
    """Score every tracker under every skip rule over ``settings.seeds`` users.

    With ``trajectory`` every user follows it (only the readings differ); otherwise each draws
    a synthetic one. The report: ``{"format": 1, "seed", "settings", "trajectory",
    "results": {skip_rule: {tracker: {metric: {"mean", "std", "n", "vs_paper"}}}}}``, where
    ``vs_paper`` is the paired mean difference to the paper's schedule and its 95% interval
    half-width (present when a tracker named "paper" is run).
    """
    settings = settings or TrackingSettings()
    chosen = dict(trackers) if trackers is not None else default_trackers()
    if not chosen:
        raise ValidationError("trackers is empty; give at least one name -> tracker")
    # per_user[rule][tracker][metric] = one value (or None) per user
    per_user: dict[str, dict[str, dict[str, list[float | None]]]] = {
        rule.value: {name: {m: [] for m in METRICS} for name in chosen}
        for rule in settings.skip_rules
    }
    for index in range(settings.seeds):
        truth, readings = _user(settings, index, trajectory)
        for rule in settings.skip_rules:
            for name, tracker in chosen.items():
                scores = tracking_metrics(
                    truth.array(),
                    _estimates(tracker(readings, rule)),
                    truth.shifts,
                    window=settings.window,
                    late_after=settings.late_after,
                )
                for metric, value in scores.items():
                    per_user[rule.value][name][metric].append(value)
    return {
        "format": REPORT_FORMAT,
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "trajectory": "synthetic" if trajectory is None else "given",
        "results": {rule: _summaries(rows) for rule, rows in per_user.items()},
    }


def _summaries(rows: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    baseline = rows.get(BASELINE)
    return {
        name: {
            metric: _summary(values, baseline[metric] if baseline is not None else None)
            for metric, values in metrics.items()
        }
        for name, metrics in rows.items()
    }


def _summary(values: list[float | None], baseline: list[float | None] | None) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    summary: dict[str, Any] = {
        "mean": statistics.fmean(present) if present else None,
        "std": statistics.pstdev(present) if present else None,
        "n": len(present),
    }
    if baseline is not None:
        diffs = [
            v - b for v, b in zip(values, baseline, strict=True) if v is not None and b is not None
        ]
        summary["vs_paper"] = {
            "mean": statistics.fmean(diffs) if diffs else None,
            # Normal approximation: ~200 paired users make the mean difference near-normal.
            "ci95": 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs))
            if len(diffs) > 1
            else None,
        }
    return summary


_HEADERS = {
    "mae": "MAE all turns",
    "early": "early shift, {w} turns",
    "late": "late shift, {w} turns",
    "stable_mae": "stable MAE",
    "jitter": "stable jitter",
}


def render_markdown(report: Mapping[str, Any]) -> str:
    """One table per skip rule: mean ± std over users per metric, then the paired difference to
    the paper's schedule ± its 95% interval for the late window, stable MAE and jitter
    (negative = lower than the paper's)."""
    window = report["settings"]["window"]
    lines = [
        f"Users: {report['settings']['seeds']} (seed {report['seed']}), "
        f"{report['settings']['turns']} turns, {report['trajectory']} trajectories.",
        "",
    ]
    for rule, trackers in report["results"].items():
        headers = [_HEADERS[m].format(w=window) for m in METRICS]
        headers += ["late vs paper", "stable MAE vs paper", "jitter vs paper"]
        lines += [f"Skip rule: {rule}", "", "| schedule | " + " | ".join(headers) + " |"]
        lines.append("|---" * (len(headers) + 1) + "|")
        for name, metrics in trackers.items():
            cells = [_mean_std(metrics[m]) for m in METRICS]
            cells += [_paired(metrics[m]) for m in ("late", "stable_mae", "jitter")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _mean_std(summary: Mapping[str, Any]) -> str:
    if summary["mean"] is None:
        return "—"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def _paired(summary: Mapping[str, Any]) -> str:
    paired = summary.get("vs_paper")
    if not paired or paired["mean"] is None or paired["ci95"] is None:
        return "—"
    return f"{paired['mean']:+.3f} ± {paired['ci95']:.3f}"


def chart_series(
    settings: TrackingSettings | None = None,
    *,
    index: int = 0,
    names: Sequence[str] = (BASELINE, "fixed 0.7", "paper + shift rule"),
    skip_rule: SkipRule = SkipRule.REFERENCE,
    trackers: Mapping[str, Tracker] | None = None,
    trajectory: Trajectory | None = None,
) -> tuple[dict[str, list[list[float]]], list[int]]:
    """User ``index``'s truth and estimates (the same draws as in ``run_experiment``), as input
    for ``charts.trajectories``: (series, shift turns)."""
    settings = settings or TrackingSettings()
    chosen = dict(trackers) if trackers is not None else default_trackers()
    unknown = [name for name in names if name not in chosen]
    if unknown:
        raise ValidationError(f"unknown trackers {unknown}; choose from {sorted(chosen)}")
    truth, readings = _user(settings, index, trajectory)
    series = {"truth": [list(row) for row in truth.truth]}
    for name in names:
        series[name] = [list(s.traits.as_tuple()) for s in chosen[name](readings, skip_rule)]
    return series, [shift.turn for shift in truth.shifts]
