"""Sweeps: every combination trained from the same seed and budget, the best on validation kept,
the whole table reported, and a sweep resumed mid-way ending as one never stopped."""

from pathlib import Path

import pytest

from jobspec import JobSpec
from tests.helpers.teachers import Digits, job_spec
from tests.worker.engine.conftest import Recorder
from worker.engine import JobCancelled, run_job

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

STUDENT = {"arch": "mlp", "hidden_sizes": [16], "activation": "relu", "dropout": 0.0}


def sweep_spec(sweep: dict, **hp) -> JobSpec:
    return job_spec(student=STUDENT, sweep=sweep, **({"epochs": 2} | hp))


def test_sweep_keeps_the_best_run(mlp_digits: Digits, tmp_path: Path) -> None:
    spec = sweep_spec({"temperature": [2.0, 8.0], "alpha": [0.0, 0.9]}, baseline=True)
    recorder = Recorder()

    metrics = run_job(mlp_digits.job(tmp_path, spec, progress_interval=0.0), recorder).metrics

    rows = metrics["sweep"]
    assert [(r["temperature"], r["alpha"]) for r in rows] == [
        (2.0, 0.0),
        (2.0, 0.9),
        (8.0, 0.0),
        (8.0, 0.9),
    ]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1
    assert chosen[0]["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert metrics["student_accuracy"] == pytest.approx(chosen[0]["val_accuracy"])
    assert metrics["chosen"] == {k: chosen[0][k] for k in ("temperature", "alpha", "learning_rate")}
    assert metrics["sweep_metric"] == "val_accuracy"
    # Never worse than the student trained on the labels alone (alpha 0).
    alone = max(r["val_accuracy"] for r in rows if r["alpha"] == 0.0)
    assert metrics["student_accuracy"] >= alone
    assert "baseline_accuracy" in metrics
    last = recorder.progress[-1]
    assert last.step == last.total_steps and last.fraction == 1.0  # four runs and a baseline
    assert [p.runs for p in recorder.progress] == [4] * len(recorder.progress)
    assert {p.run for p in recorder.progress if p.phase == "student"} == {0, 1, 2, 3}
    steps = [p["step"] for p in recorder.points]
    assert steps == sorted(set(steps))  # strictly increasing across runs
    assert {p["run"] for p in recorder.points} == {0, 1, 2, 3}


def test_unlabelled_sweep_chooses_on_kl(mlp_digits: Digits, tmp_path: Path) -> None:
    spec = sweep_spec({"temperature": [1.0, 4.0]}, alpha=1.0, epochs=1)
    job = mlp_digits.job(
        tmp_path, spec, train_path=mlp_digits.train_unlabelled, validation_path=None
    )

    metrics = run_job(job).metrics

    assert metrics["sweep_metric"] == "val_kl"
    rows = metrics["sweep"]
    assert next(r for r in rows if r["chosen"])["val_kl"] == min(r["val_kl"] for r in rows)


# 10 steps an epoch, 20 a run: a stop in the first run, in the second, in the baseline.
@pytest.mark.parametrize("stop_at_step", [3, 25, 45])
def test_resumed_sweep_matches_an_uninterrupted_one(
    mlp_digits: Digits, tmp_path: Path, stop_at_step: int
) -> None:
    spec = sweep_spec({"learning_rate": [0.001, 0.01]}, epochs=2, batch_size=128, baseline=True)
    straight = run_job(mlp_digits.job(tmp_path / "a", spec)).metrics

    job = mlp_digits.job(tmp_path / "b", spec, progress_interval=0.0)
    with pytest.raises(JobCancelled):
        run_job(job, Recorder(stop_at_step=stop_at_step))
    resumed = run_job(job).metrics

    assert (tmp_path / "a/out/student.safetensors").read_bytes() == (
        tmp_path / "b/out/student.safetensors"
    ).read_bytes()
    for key in ("sweep", "chosen", "student_accuracy", "baseline_accuracy"):
        assert resumed[key] == straight[key]
