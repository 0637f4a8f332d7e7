"""The optional training machinery end to end: schedules, accumulation, clipping, early
stopping, precision, and resuming with all of it on."""

import math
from pathlib import Path

import pytest
import torch

from jobspec import JobSpec
from tests.helpers.teachers import Digits, job_spec
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineResult, JobCancelled, LabelsRequired, run_job
from worker.engine.errors import UnsupportedInput

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

STUDENT = {"arch": "mlp", "hidden_sizes": [32], "activation": "relu", "dropout": 0.2}
SCHEDULED = job_spec(
    student=STUDENT,
    epochs=2,
    baseline=True,
    lr_schedule="cosine",
    warmup_steps=5,
    grad_accumulation_steps=3,
    grad_clip_norm=1.0,
    temperature_schedule="linear",
    temperature_end=2.0,
    alpha_schedule="linear",
    alpha_end=0.9,
)
EARLY = job_spec(
    student=STUDENT,
    epochs=4,
    baseline=True,
    early_stopping={"metric": "val_loss", "patience": 1, "min_delta": 0.02},
)


def _weights(result: EngineResult) -> bytes:
    return (result.artifacts[0].parent / "student.safetensors").read_bytes()


def _stable(metrics: dict) -> dict:
    timed = ("seconds", "latency", "speedup")
    return {k: v for k, v in metrics.items() if not any(t in k for t in timed)}


def test_steps_are_optimizer_steps(cnn_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(
        epochs=2, batch_size=32, grad_accumulation_steps=4, lr_schedule="linear", learning_rate=0.02
    )
    recorder = Recorder()

    result = run_job(cnn_digits.job(tmp_path, spec, progress_interval=0.0), recorder)

    rows = len(cnn_digits.trained.x_train)  # the validation data is a file of its own
    steps_per_epoch = math.ceil(math.ceil(rows / 32) / 4)
    last = recorder.progress[-1]
    assert (last.step, last.total_steps, last.fraction) == (
        2 * steps_per_epoch,
        2 * steps_per_epoch,
        1.0,
    )
    steps = [p["step"] for p in recorder.points]
    assert steps == sorted(steps) and steps[-1] == 2 * steps_per_epoch
    rates = [p["learning_rate"] for p in recorder.points]
    assert rates[0] == pytest.approx(0.02) and rates[-1] < 0.02 / steps_per_epoch
    assert result.metrics["student_accuracy"] > 0.5


@pytest.mark.parametrize("spec", [SCHEDULED, EARLY], ids=["scheduled", "early_stopping"])
@pytest.mark.parametrize(
    "stop",
    [{"stop_at_step": 4}, {"stop_after": ("student", 1)}, {"stop_after": ("baseline", 1)}],
    ids=["mid_epoch", "epoch_end", "baseline"],
)
def test_a_job_with_every_option_resumes_to_the_same_result(
    cnn_digits: Digits, tmp_path: Path, spec: JobSpec, stop: dict
) -> None:
    uninterrupted = run_job(cnn_digits.job(tmp_path / "whole", spec))
    job = cnn_digits.job(tmp_path / "cut", spec, progress_interval=0.0)

    with pytest.raises(JobCancelled):
        run_job(job, Recorder(**stop))
    resumed = run_job(job, Recorder())

    assert _stable(resumed.metrics) == _stable(uninterrupted.metrics)
    assert _weights(resumed) == _weights(uninterrupted)


def test_early_stopping_returns_the_best_epochs_student(cnn_digits: Digits, tmp_path: Path) -> None:
    # No later epoch can beat the first by a whole point of accuracy: epoch 2 stops the run.
    rule = {"metric": "val_accuracy", "patience": 1, "min_delta": 1.0}
    recorder = Recorder()

    stopped = run_job(
        cnn_digits.job(tmp_path / "a", job_spec(epochs=5, early_stopping=rule)), recorder
    )
    one_epoch = run_job(cnn_digits.job(tmp_path / "b", job_spec(epochs=1)))

    assert (stopped.metrics["stopped_early"], stopped.metrics["best_epoch"]) == (True, 1)
    assert [p["epoch"] for p in recorder.points if "val_accuracy" in p] == [1, 2]
    assert _weights(stopped) == _weights(one_epoch)
    assert any("early" in m for m in recorder.messages("info"))


def test_early_stopping_without_a_stop_keeps_the_best_epoch(
    cnn_digits: Digits, tmp_path: Path
) -> None:
    rule = {"metric": "val_loss", "patience": 10, "min_delta": 0.0}
    result = run_job(
        cnn_digits.job(tmp_path, job_spec(epochs=2, early_stopping=rule, baseline=True))
    )

    assert result.metrics["stopped_early"] is False
    assert result.metrics["best_epoch"] in (1, 2)
    assert result.metrics["baseline_stopped_early"] is False


def test_early_stopping_on_accuracy_needs_labelled_validation(
    cnn_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(epochs=1, alpha=1.0, early_stopping={"metric": "val_accuracy", "patience": 1})
    job = cnn_digits.job(
        tmp_path,
        spec,
        train_path=cnn_digits.train_unlabelled,
        validation_path=None,
        validation_format=None,
    )
    with pytest.raises(LabelsRequired, match="val_accuracy"):
        run_job(job)


def test_an_alpha_schedule_below_one_needs_labels(cnn_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(epochs=1, alpha=1.0, alpha_schedule="linear", alpha_end=0.5)
    job = cnn_digits.job(tmp_path, spec, train_path=cnn_digits.train_unlabelled)
    with pytest.raises(LabelsRequired):
        run_job(job)


def test_a_tiny_clip_norm_holds_the_student_still(cnn_digits: Digits, tmp_path: Path) -> None:
    free = job_spec(epochs=1, optimizer="sgd", learning_rate=0.05)
    clipped = job_spec(epochs=1, optimizer="sgd", learning_rate=0.05, grad_clip_norm=1e-9)

    trained = run_job(cnn_digits.job(tmp_path / "free", free))
    held = run_job(cnn_digits.job(tmp_path / "held", clipped))

    assert trained.metrics["student_accuracy"] > 0.5
    assert held.metrics["student_accuracy"] < 0.3


def test_fp16_on_the_cpu_is_refused(cnn_digits: Digits, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput) as raised:
        run_job(cnn_digits.job(tmp_path, job_spec(epochs=1, precision="fp16")))
    assert raised.value.code == "unsupported_precision"


def test_bf16_on_the_cpu_trains(cnn_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(epochs=3, learning_rate=0.01)
    fp32 = run_job(cnn_digits.job(tmp_path / "fp32", spec))
    bf16_spec = job_spec(epochs=3, learning_rate=0.01, precision="bf16")
    bf16 = run_job(cnn_digits.job(tmp_path / "bf16", bf16_spec))

    assert bf16.metrics["student_accuracy"] > fp32.metrics["student_accuracy"] - 0.05
    assert _weights(bf16) != _weights(fp32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_fp16_on_cuda_trains_with_a_grad_scaler(cnn_digits: Digits, tmp_path: Path) -> None:
    result = run_job(
        cnn_digits.job(
            tmp_path, job_spec(epochs=3, learning_rate=0.01, precision="fp16"), device="cuda"
        )
    )
    assert result.metrics["student_accuracy"] > 0.7
