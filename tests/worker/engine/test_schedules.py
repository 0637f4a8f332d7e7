"""The schedules and early stopping as pure functions and small objects, with exact values."""

import math

import pytest

from worker.engine.early_stopping import EarlyStopping
from worker.engine.schedules import Schedules, StepValues, interpolate, learning_rate


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.2), (1, 0.4), (3, 0.8), (4, 1.0), (50, 1.0), (99, 1.0)],
)
def test_warmup_rises_linearly_then_holds(step: int, expected: float) -> None:
    assert learning_rate(step, 1.0, "constant", 4, 100) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),
        (2, 0.5 * (1 + math.cos(math.pi * 0.2))),
        (5, 0.5),
        (9, 0.5 * (1 + math.cos(math.pi * 0.9))),
    ],
)
def test_cosine_decays_from_base_towards_zero(step: int, expected: float) -> None:
    assert learning_rate(step, 1.0, "cosine", 0, 10) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1 / 3), (1, 2 / 3), (2, 1.0), (7, 0.5), (11, 0.1), (12, 0.0), (20, 0.0)],
)
def test_linear_decay_after_warmup(step: int, expected: float) -> None:
    # warm-up 2, then 10 steps of decay from 1.0 that would reach 0 at step 12
    assert learning_rate(step, 1.0, "linear", 2, 12) == pytest.approx(expected, abs=1e-15)


def test_cosine_after_warmup_starts_at_the_base_rate() -> None:
    assert learning_rate(3, 0.01, "cosine", 3, 13) == 0.01
    assert learning_rate(8, 0.01, "cosine", 3, 13) == pytest.approx(0.005, abs=1e-15)


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="step"):
        learning_rate(0, 1.0, "step", 0, 10)


@pytest.mark.parametrize(("step", "expected"), [(0, 4.0), (1, 3.5), (2, 3.0), (4, 2.0), (9, 2.0)])
def test_interpolate_goes_from_start_at_the_first_step_to_end_at_the_last(
    step: int, expected: float
) -> None:
    assert interpolate(step, 4.0, 2.0, 5) == expected


def test_interpolate_over_a_single_step_is_the_end_value() -> None:
    assert interpolate(0, 4.0, 2.0, 1) == 2.0


def test_schedules_are_constant_only_when_nothing_changes() -> None:
    constant = Schedules(0.1, "constant", 0, (4.0, 4.0), (0.5, 0.5), 10)
    assert constant.constant
    assert constant.at(7) == StepValues(0.1, 4.0, 0.5)
    for changed in (
        Schedules(0.1, "cosine", 0, (4.0, 4.0), (0.5, 0.5), 10),
        Schedules(0.1, "constant", 2, (4.0, 4.0), (0.5, 0.5), 10),
        Schedules(0.1, "constant", 0, (4.0, 1.0), (0.5, 0.5), 10),
        Schedules(0.1, "constant", 0, (4.0, 4.0), (0.5, 1.0), 10),
    ):
        assert not changed.constant
    assert Schedules(1.0, "linear", 0, (4.0, 1.0), (1.0, 0.0), 11).at(5) == StepValues(
        0.5454545454545454, 2.5, 0.5
    )


@pytest.mark.parametrize(
    ("metric", "values", "stops_after", "best_epoch", "improved"),
    [
        ("val_accuracy", [0.5, 0.6, 0.6, 0.59], 4, 2, [1, 2]),  # equal is no improvement
        ("val_loss", [1.0, 0.9, 0.95, 0.85, 0.8], None, 5, [1, 2, 4, 5]),
        ("val_loss", [1.0, 1.1, 1.2], 3, 1, [1]),
    ],
)
def test_early_stopping_counts_epochs_without_improvement(
    metric: str, values: list[float], stops_after: int | None, best_epoch: int, improved: list
) -> None:
    stopper = EarlyStopping(metric, patience=2)
    stopped_at, best_so_far = None, []
    for epoch, value in enumerate(values, start=1):
        if stopper.update(epoch, value):
            best_so_far.append(epoch)
        if stopper.should_stop:
            stopped_at = epoch
            break
    assert stopped_at == stops_after
    assert stopper.best_epoch == best_epoch
    assert best_so_far == improved  # the epochs whose weights the run keeps


def test_min_delta_asks_for_a_real_improvement() -> None:
    stopper = EarlyStopping("val_accuracy", patience=1, min_delta=0.05)
    stopper.update(1, 0.50)
    assert not stopper.update(2, 0.54)
    assert stopper.should_stop and stopper.best_epoch == 1


def test_early_stopping_state_round_trips() -> None:
    stopper = EarlyStopping("val_loss", patience=3)
    stopper.update(1, 1.0)
    stopper.update(2, 1.5)
    again = EarlyStopping("val_loss", patience=3)
    again.load_state_dict(stopper.state_dict())
    assert (again.best, again.best_epoch, again.bad_epochs) == (1.0, 1, 1)
