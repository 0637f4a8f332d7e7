"""Cancellation, checkpoints and resuming: a stopped and resumed job ends exactly where an
uninterrupted one does (on CPU), including dropout's random state and the baseline."""

from pathlib import Path

import pytest
import torch

from tests.helpers.teachers import Digits, job_spec
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineResult, JobCancelled, run_job

# Dropout makes the random state part of what a resume has to restore.
STUDENT = {"arch": "mlp", "hidden_sizes": [32], "activation": "relu", "dropout": 0.2}
SPEC = job_spec(student=STUDENT, epochs=2, baseline=True)


def _stable(metrics: dict) -> dict:
    """The metrics without wall-clock measurements."""
    timed = ("seconds", "latency", "speedup")
    return {k: v for k, v in metrics.items() if not any(t in k for t in timed)}


def _weights(result: EngineResult) -> bytes:
    return (result.artifacts[0].parent / "student.safetensors").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(cnn_digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    return run_job(cnn_digits.job(tmp_path_factory.mktemp("uninterrupted"), SPEC))


def test_the_same_seed_gives_the_same_student(
    cnn_digits: Digits, tmp_path: Path, uninterrupted: EngineResult
) -> None:
    again = run_job(cnn_digits.job(tmp_path / "again", SPEC))
    other_seed = job_spec(student=STUDENT, epochs=2, baseline=True, seed=1)
    other = run_job(cnn_digits.job(tmp_path / "other", other_seed))

    assert _stable(again.metrics) == _stable(uninterrupted.metrics)
    assert _weights(again) == _weights(uninterrupted)
    assert _weights(other) != _weights(uninterrupted)


@pytest.mark.parametrize(
    ("stop", "saved_at"),
    [
        ({"stop_after": ("student", 1)}, ("student", 1)),  # at an epoch end
        ({"stop_at_step": 7}, ("student", 0)),  # mid-epoch
        ({"stop_after": ("baseline", 1)}, ("baseline", 1)),  # in the baseline's first epoch
    ],
)
def test_a_cancelled_job_resumes_to_the_same_result(
    cnn_digits: Digits,
    tmp_path: Path,
    uninterrupted: EngineResult,
    stop: dict,
    saved_at: tuple[str, int],
) -> None:
    interval = 0.0 if "stop_at_step" in stop else 3600.0
    job = cnn_digits.job(tmp_path, SPEC, progress_interval=interval)

    with pytest.raises(JobCancelled):
        run_job(job, Recorder(**stop))

    checkpoint = torch.load(job.checkpoint_path, weights_only=True)
    assert (checkpoint["phase"], checkpoint["epoch"]) == saved_at
    assert not job.output_dir.exists()

    recorder = Recorder()
    resumed = run_job(job, recorder)

    assert any("Resumed" in message for message in recorder.messages("info"))
    assert _stable(resumed.metrics) == _stable(uninterrupted.metrics)
    assert _weights(resumed) == _weights(uninterrupted)


def test_every_checkpoint_is_announced_once_written(cnn_digits: Digits, tmp_path: Path) -> None:
    """``on_checkpoint`` comes after each save, the file whole by then: the worker copies it to
    the shared store from there, at every epoch end and on cancel."""
    job = cnn_digits.job(tmp_path, SPEC, progress_interval=0.0)
    cancelled = Recorder(stop_at_step=30)  # mid-way through the student's second epoch
    with pytest.raises(JobCancelled):
        run_job(job, cancelled)
    steps_per_epoch = cancelled.checkpoints[0][3]

    assert [c[:3] for c in cancelled.checkpoints] == [
        (job.checkpoint_path, "student", 1),  # the first epoch's end
        (job.checkpoint_path, "student", 1),  # the cancel, mid-epoch
    ]
    assert cancelled.checkpoints[1][3] == 30 > steps_per_epoch
    finished = Recorder()
    run_job(job, finished)
    assert [c[1:3] for c in finished.checkpoints] == [
        ("student", 2),
        ("baseline", 1),
        ("baseline", 2),
    ]


def test_points_continue_after_a_mid_epoch_resume(cnn_digits: Digits, tmp_path: Path) -> None:
    job = cnn_digits.job(tmp_path, job_spec(epochs=1), progress_interval=0.0)
    first, second = Recorder(stop_at_step=5), Recorder()

    with pytest.raises(JobCancelled):
        run_job(job, first)
    run_job(job, second)

    assert [p["step"] for p in first.points] == [1, 2, 3, 4, 5]
    assert second.points[0]["step"] == 6
    assert second.progress[0].step == 6


def test_an_unreadable_checkpoint_is_ignored(cnn_digits: Digits, tmp_path: Path) -> None:
    job = cnn_digits.job(tmp_path, job_spec(epochs=1))
    job.checkpoint_path.write_bytes(b"PK\x03\x04 half a checkpoint")
    recorder = Recorder()

    run_job(job, recorder)

    assert any("unreadable checkpoint" in m for m in recorder.messages("warning"))


def test_a_checkpoint_of_another_spec_is_ignored(cnn_digits: Digits, tmp_path: Path) -> None:
    job = cnn_digits.job(tmp_path, job_spec(epochs=1))
    with pytest.raises(JobCancelled):
        run_job(job, Recorder(stop_after=("student", 1)))
    recorder = Recorder()

    run_job(cnn_digits.job(tmp_path, job_spec(epochs=1, seed=5)), recorder)

    assert any("different job spec" in m for m in recorder.messages("warning"))


def test_a_checkpoint_of_an_older_engine_is_ignored(cnn_digits: Digits, tmp_path: Path) -> None:
    job = cnn_digits.job(tmp_path, job_spec(epochs=1))
    torch.save({"phase": "student", "epoch": 1, "step": 3}, job.checkpoint_path)  # no version
    recorder = Recorder()

    run_job(job, recorder)

    assert any("version None, not" in m for m in recorder.messages("warning"))
    assert not any(m.startswith("Resumed") for m in recorder.messages("info"))


def test_the_checkpoint_holds_the_chosen_students_weights_once(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(
        student=STUDENT, epochs=2, baseline=True, sweep={"alpha": [0.5, 0.9]},
        early_stopping={"metric": "val_loss", "patience": 5},
    )  # fmt: skip
    with pytest.raises(JobCancelled):
        run_job(mlp_digits.job(tmp_path, spec), Recorder(stop_after=("baseline", 1)))

    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["phase"] == "baseline" and set(state["models"]) == {"student", "baseline"}
    assert state["sweep"]["best_model"] is None  # the chosen student is models["student"]
    assert state["best_weights"] is None  # epoch 1 is the baseline's best: the model itself
