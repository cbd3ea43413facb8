"""Tests of the PEM tracking experiment (personavlm.bench.pem_tracking) and of the opt-in
ShiftRule it led to (personavlm.personality.pem)."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from personavlm.bench import charts
from personavlm.bench.pem_tracking import (
    METRICS,
    REPORT_FORMAT,
    Shift,
    TrackingSettings,
    Trajectory,
    chart_series,
    default_trackers,
    render_markdown,
    run_experiment,
    schedule_tracker,
    simulate_readings,
    synthetic_trajectory,
    tracking_metrics,
    trajectory_from_data,
)
from personavlm.errors import ValidationError
from personavlm.personality.pem import (
    PersonalityState,
    Reading,
    ShiftEvidence,
    ShiftRule,
    SkipRule,
    Traits,
    paper_lambda,
    replay,
    shift_aware_update,
    update,
)

# Small enough that the whole file runs in a few seconds.
SMALL = TrackingSettings(seeds=4, turns=120, late_turns=(100, 105), window=10, late_after=60)
NOISELESS = replace(SMALL, sigma=0.0, p_neutral=0.0, p_silent=0.0)
# Integer levels (readable exactly) and one trait held at 3 (skipped by the reference rule,
# which is then right anyway): no smoothing must track this exactly under both skip rules.
STEP_USER = [[1.0, 2.0, 4.0, 5.0, 3.0]] * 6 + [[5.0, 4.0, 2.0, 1.0, 3.0]] * 6


def _array(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


# --- metric math --------------------------------------------------------------------------


def test_a_perfect_tracker_scores_zero_everywhere() -> None:
    truth = _array(STEP_USER)
    shifts = [Shift(6, (0, 1, 2, 3))]
    scores = tracking_metrics(truth, truth.copy(), shifts, window=2, late_after=5)
    assert scores == {"mae": 0.0, "early": None, "late": 0.0, "stable_mae": 0.0, "jitter": 0.0}


def test_metrics_on_a_hand_made_case() -> None:
    # 8 turns, 5 traits at 3; trait 0 jumps to 5 at turn 4. The estimate is 0.5 off on
    # every cell, except trait 0 for the two turns after the jump (2.0 off: it still says 3),
    # and it alternates 3.5 / 2.5 on trait 4 from turn 6 (a step of 1.0 each turn).
    truth = np.full((8, 5), 3.0)
    truth[4:, 0] = 5.0
    estimate = truth + 0.5
    estimate[4:6, 0] = 3.0
    estimate[6, 4], estimate[7, 4] = 3.5, 2.5
    scores = tracking_metrics(truth, estimate, [Shift(4, (0,))], window=2, late_after=3)
    assert scores["mae"] == pytest.approx((38 * 0.5 + 2 * 2.0) / 40)
    assert scores["early"] is None  # the only shift is at turn 4 >= late_after
    assert scores["late"] == pytest.approx(2.0)  # trait 0 at turns 4 and 5
    # Stable turns: 2, 3 (>= 2 after the start) and 6, 7 (>= 2 after the shift).
    assert scores["stable_mae"] == pytest.approx(0.5)
    # Steps into turns 2, 3, 6, 7: only trait 4 moves, by 1.0 into 7 (3.5 -> 2.5); into 6
    # trait 0 moves 3.0 -> 5.5 (2.5) and trait 4 stays at 3.5.
    assert scores["jitter"] == pytest.approx((2.5 + 1.0) / 20)


def test_early_and_late_windows_average_only_the_moved_traits() -> None:
    truth = np.full((40, 5), 3.0)
    estimate = truth.copy()
    estimate[5:10, 1] += 1.0  # trait 1 lags after the early shift
    estimate[30:35, 2] += 0.5  # trait 2 lags after the late shift
    estimate[30:35, 3] += 9.0  # trait 3 did not shift: not part of the late window
    shifts = [Shift(5, (1,)), Shift(30, (2,))]
    scores = tracking_metrics(truth, estimate, shifts, window=10, late_after=20)
    assert scores["early"] == pytest.approx(0.5)
    assert scores["late"] == pytest.approx(0.25)


def test_metrics_reject_mismatched_arrays() -> None:
    with pytest.raises(ValidationError, match="equal"):
        tracking_metrics(np.zeros((3, 5)), np.zeros((4, 5)), [], window=2, late_after=1)


def test_no_smoothing_on_noiseless_readings_tracks_exactly() -> None:
    trajectory = trajectory_from_data(STEP_USER)
    report = run_experiment(
        replace(NOISELESS, seeds=2),
        trackers={"no smoothing": schedule_tracker(lambda m: 0.0)},
        trajectory=trajectory,
    )
    for rule in SkipRule:
        assert report["results"][rule.value]["no smoothing"]["mae"]["mean"] == 0.0


# --- trajectories and readings ------------------------------------------------------------


@pytest.mark.parametrize("index", range(6))
def test_synthetic_shifts_are_where_the_settings_put_them(index: int) -> None:
    settings = TrackingSettings()
    trajectory = synthetic_trajectory(settings, np.random.default_rng([7, index]))
    truth = trajectory.array()
    early, late = trajectory.shifts
    assert 15 <= early.turn <= 30 and 110 <= late.turn <= 160
    assert truth.shape == (200, 5)
    assert truth.min() >= 1.0 and truth.max() <= 5.0
    moved_turns = sorted({int(t) + 1 for t in np.flatnonzero(np.diff(truth, axis=0).any(axis=1))})
    assert moved_turns == [early.turn, late.turn]
    for shift in (early, late):
        assert 1 <= len(shift.traits) <= 2
        jump = np.abs(truth[shift.turn] - truth[shift.turn - 1])
        assert all(1.0 <= jump[i] <= 2.5 for i in shift.traits)
        assert all(jump[i] == 0 for i in range(5) if i not in shift.traits)


def test_trajectory_from_data_infers_steps_and_ramps() -> None:
    rows = [[3.0] * 5] * 4
    rows += [[3.3, 3.0, 3.0, 3.0, 4.5], [3.6, 3.0, 3.0, 3.0, 4.5], [3.6, 3.0, 3.0, 3.0, 4.5]]
    rows += [[3.8, 3.0, 3.0, 3.0, 4.5]]  # 0.2 on its own: drift, not a shift
    trajectory = trajectory_from_data(rows)
    assert trajectory.shifts == (Shift(4, (0, 4)),)
    named = trajectory_from_data(
        [
            dict(
                zip(
                    (
                        "openness",
                        "conscientiousness",
                        "extraversion",
                        "agreeableness",
                        "neuroticism",
                    ),
                    row,
                    strict=True,
                )
            )
            for row in rows
        ]
    )
    assert named.truth == trajectory.truth


def test_trajectory_from_data_checks_its_input() -> None:
    with pytest.raises(ValidationError, match="turn 1"):
        trajectory_from_data([[3.0] * 5, [3.0, 3.0, 3.0, 3.0, 7.0]])
    with pytest.raises(ValidationError, match="turn 0"):
        trajectory_from_data([[3.0] * 4])
    with pytest.raises(ValidationError, match="non-empty"):
        trajectory_from_data([])
    with pytest.raises(ValidationError, match="must name a turn"):
        trajectory_from_data([[3.0] * 5] * 3, shifts=[Shift(3, (0,))])


def test_readings_follow_the_reading_model() -> None:
    trajectory = trajectory_from_data([[1.2, 2.5, 3.4, 4.6, 5.0]] * 50)
    exact = simulate_readings(trajectory, NOISELESS, np.random.default_rng(0))
    assert {r.as_tuple() for r in exact} == {(1, 3, 3, 5, 5)}  # 2.5 rounds half up
    silent = simulate_readings(
        trajectory, replace(NOISELESS, p_silent=1.0), np.random.default_rng(0)
    )
    assert all(r.is_neutral for r in silent)
    noisy = simulate_readings(trajectory, TrackingSettings(), np.random.default_rng(0))
    assert all(isinstance(r, Reading) for r in noisy) and len(noisy) == 50
    neutral_share = np.mean([v == 3 for r in noisy for v in r.as_tuple()[:1]])
    assert 0.2 < neutral_share < 0.7  # trait 0 is at 1.2: a 3 is almost always "not observed"


def test_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="seeds"):
        TrackingSettings(seeds=0)
    with pytest.raises(ValidationError, match="late_turns"):
        TrackingSettings(turns=100, late_turns=(110, 160))
    with pytest.raises(ValidationError, match="p_neutral"):
        TrackingSettings(p_neutral=1.5)


# --- the report ---------------------------------------------------------------------------


def test_the_report_has_its_documented_shape() -> None:
    report = run_experiment(SMALL)
    json.dumps(report)  # plain data
    assert report["format"] == REPORT_FORMAT == 1
    assert report["seed"] == 0 and report["settings"]["seeds"] == 4
    assert report["settings"]["skip_rules"] == ["paper", "reference"]
    assert set(report["results"]) == {"paper", "reference"}
    names = set(default_trackers())
    assert {"paper", "fixed 0.5", "fixed 0.9", "no smoothing", "paper + shift rule"} <= names
    for trackers in report["results"].values():
        assert set(trackers) == names
        for metrics in trackers.values():
            assert tuple(metrics) == METRICS
            for summary in metrics.values():
                assert set(summary) == {"mean", "std", "n", "vs_paper"}
                assert summary["n"] == 4
        assert trackers["paper"]["late"]["vs_paper"] == {"mean": 0.0, "ci95": 0.0}
    table = render_markdown(report)
    assert table.count("| paper + shift rule |") == 2
    assert "Skip rule: reference" in table and "late shift, 10 turns" in table


def test_runs_are_deterministic_by_seed() -> None:
    trackers = {"paper": default_trackers()["paper"]}
    first = run_experiment(SMALL, trackers=trackers)
    assert run_experiment(SMALL, trackers=trackers) == first
    assert run_experiment(replace(SMALL, seed=1), trackers=trackers) != first


def test_chart_series_feed_the_trajectory_chart(tmp_path: Path) -> None:
    series, shifts = chart_series(SMALL, index=1)
    assert list(series) == ["truth", "paper", "fixed 0.7", "paper + shift rule"]
    assert all(len(rows) == SMALL.turns for rows in series.values())
    again = synthetic_trajectory(SMALL, np.random.default_rng([SMALL.seed, 1, 0]))
    assert shifts == [s.turn for s in again.shifts]
    path = charts.trajectories(tmp_path / "t.png", "user 1", series, shifts=shifts)
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValidationError, match="unknown trackers"):
        chart_series(SMALL, names=("nope",))


# --- the default stays the paper's --------------------------------------------------------


def test_update_and_replay_default_to_the_papers_schedule() -> None:
    for function in (update, replay, shift_aware_update):
        parameters = inspect.signature(function).parameters
        assert parameters["schedule"].default is paper_lambda
        assert parameters["skip_rule"].default is SkipRule.PAPER
    assert inspect.signature(replay).parameters["shift_rule"].default is None
    _, readings = _one_user()
    by_hand, state = [], PersonalityState.initial()
    for reading in readings:
        state = update(state, reading, schedule=paper_lambda)
        by_hand.append(state)
    assert replay(readings) == by_hand
    assert default_trackers()["paper"](readings, SkipRule.PAPER) == by_hand


def _one_user() -> tuple[Trajectory, list[Reading]]:
    trajectory = synthetic_trajectory(SMALL, np.random.default_rng(3))
    return trajectory, simulate_readings(trajectory, SMALL, np.random.default_rng(4))


# --- ShiftRule (personality.pem) ----------------------------------------------------------


def _state(value: float, step: int = 60) -> PersonalityState:
    return PersonalityState(Traits(value, 3.0, 3.0, 3.0, 3.0), step)


def _reading(value: int) -> Reading:
    return Reading(value, 4, 3, 3, 3)


def test_shift_rule_speeds_up_a_trait_only_after_a_run() -> None:
    rule = ShiftRule()  # run 3, margin 1.5, fast 0.5
    state, evidence = _state(2.0), None
    lambdas = []
    for _ in range(4):
        before = state.traits.openness
        state, evidence = shift_aware_update(state, _reading(5), evidence, rule=rule)
        lambdas.append(round((state.traits.openness - 5) / (before - 5), 6))
    # The third 5 in a row (each 1.5+ above the estimate) switches to fast; by the fourth the
    # estimate (3.79) is within the margin of 5, the run is over and 0.9 is back.
    assert lambdas == [0.9, 0.9, 0.5, 0.9]
    assert evidence is not None and evidence.runs[0] == 0
    # Trait 1 reads 4 against 3.0: within the margin, so it keeps the paper's 0.9 throughout.
    assert state.traits.conscientiousness == pytest.approx(4 - 0.9**4)


def test_neutral_readings_neither_extend_nor_break_a_run() -> None:
    evidence = ShiftEvidence((2, 0, 0, 0, 0))
    after_three = evidence.observe(_state(2.0).traits, _reading(3), 1.5)
    assert after_three.runs[0] == 2
    after_near = evidence.observe(_state(2.0).traits, _reading(2), 1.5)
    assert after_near.runs[0] == 0
    after_other_side = evidence.observe(_state(4.0).traits, _reading(1), 1.5)
    assert after_other_side.runs[0] == -1


def test_shift_rule_without_a_run_is_plain_update() -> None:
    _, readings = _one_user()
    for rule in SkipRule:
        # A margin no reading can reach: the rule never fires.
        never = replay(readings, skip_rule=rule, shift_rule=ShiftRule(margin=4.0))
        assert never == replay(readings, skip_rule=rule)


def test_shift_rule_never_slows_a_trait_down() -> None:
    # fast 0.95 is slower than the schedule's 0.5 at m = 0: the schedule's lambda is kept.
    evidence = ShiftEvidence((5, 0, 0, 0, 0))
    state, _ = shift_aware_update(
        _state(2.0, step=0), _reading(5), evidence, rule=ShiftRule(fast=0.95)
    )
    assert state.traits.openness == pytest.approx(3.5)


def test_an_all_neutral_reading_changes_neither_state_nor_evidence() -> None:
    evidence = ShiftEvidence((2, -1, 0, 0, 0))
    state, after = shift_aware_update(_state(2.0), Reading(3, 3, 3, 3, 3), evidence)
    assert state == _state(2.0) and after == evidence


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run": 0}, "run"),
        ({"margin": -1.0}, "margin"),
        ({"fast": 1.5}, "fast"),
        ({"fast": True}, "fast"),
    ],
)
def test_shift_rule_checks_its_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ShiftRule(**kwargs)  # type: ignore[arg-type]


def test_shift_aware_update_checks_its_inputs() -> None:
    with pytest.raises(ValidationError, match=r"ShiftEvidence\.runs"):
        ShiftEvidence((1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="rule must be a ShiftRule"):
        shift_aware_update(_state(2.0), _reading(5), rule="fast")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="evidence must be a ShiftEvidence"):
        shift_aware_update(_state(2.0), _reading(5), (0, 0, 0, 0, 0))  # type: ignore[arg-type]
