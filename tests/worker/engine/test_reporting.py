"""The progress a ProgressClock sends: epochs within each phase, steps and fraction across the
job."""

from dataclasses import dataclass, field

import pytest

from worker.engine import NullCallbacks, Progress
from worker.engine.reporting import ProgressClock


@dataclass
class Sink(NullCallbacks):
    progress: list[Progress] = field(default_factory=list)

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        self.progress.append(progress)


def test_progress_counts_epochs_per_phase_and_steps_across_the_job() -> None:
    sink = Sink()
    reporter = ProgressClock(sink, 0.0, steps_per_epoch=3, epochs=2, phases=["student", "baseline"])

    for phase in ("student", "baseline"):
        reporter.begin(phase, 0)
        for step in range(1, 7):
            reporter.send(phase, step, [])

    progress = sink.progress
    assert [(p.phase, p.epoch) for p in progress] == [
        *[("student", 1)] * 3,
        *[("student", 2)] * 3,
        *[("baseline", 1)] * 3,
        *[("baseline", 2)] * 3,
    ]
    assert all(p.epochs == 2 and p.total_steps == 12 for p in progress)
    assert [p.step for p in progress] == list(range(1, 13))
    assert [p.fraction for p in progress] == pytest.approx([s / 12 for s in range(1, 13)])
    assert progress[-1].fraction == 1.0 and progress[-1].eta_seconds == 0
    assert progress[0].as_dict() == {
        "phase": "student",
        "epoch": 1,
        "epochs": 2,
        "step": 1,
        "total_steps": 12,
        "fraction": 1 / 12,
        "eta_seconds": progress[0].eta_seconds,
    }


def test_without_a_baseline_there_is_one_phase() -> None:
    sink = Sink()
    reporter = ProgressClock(sink, 0.0, steps_per_epoch=4, epochs=5, phases=["student"])

    reporter.begin("student", 0)
    reporter.send("student", 20, [])

    last = sink.progress[-1]
    assert (last.phase, last.epoch, last.epochs, last.step, last.total_steps) == (
        "student",
        5,
        5,
        20,
        20,
    )
    assert last.fraction == 1.0


def test_a_run_resumed_in_the_baseline_counts_on_from_the_student() -> None:
    sink = Sink()
    reporter = ProgressClock(sink, 0.0, steps_per_epoch=3, epochs=2, phases=["student", "baseline"])

    reporter.begin("baseline", 4)  # resumed mid-way through the baseline's second epoch
    reporter.send("baseline", 5, [])

    last = sink.progress[-1]
    assert (last.phase, last.epoch, last.step, last.total_steps) == ("baseline", 2, 11, 12)
    assert last.eta_seconds is not None and last.eta_seconds >= 0


def test_the_time_left_follows_the_pace_of_the_run_under_way() -> None:
    """The baseline trains without the teacher, faster than the student: its time left is
    measured on its own steps, not on the student's slower ones."""
    sink, clock = Sink(), [0.0]
    progress = ProgressClock(
        sink, 0.0, steps_per_epoch=3, epochs=2, phases=["student", "baseline"], now=lambda: clock[0]
    )
    progress.begin("student", 0)
    for step in range(1, 7):
        clock[0] += 10.0  # ten seconds a student step
        progress.send("student", step, [])
    assert sink.progress[2].eta_seconds == pytest.approx(90.0)  # 9 steps left at 10 s
    progress.begin("baseline", 0)
    for step in (1, 2):
        clock[0] += 1.0  # one second a baseline step
        progress.send("baseline", step, [])
    assert sink.progress[-1].eta_seconds == pytest.approx(4.0)  # 4 steps left at 1 s
