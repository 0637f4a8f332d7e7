"""Regression: a real-valued teacher (an MLP trained on scikit-learn's diabetes) distilled into a
smaller student with MSE losses, reported as R² and MSE, resumable to the same bytes."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from jobspec import JobSpec
from tests.helpers.regression import TrainedRegressor, train_diabetes_teacher
from tests.helpers.teachers import engine_job, job_spec, save_npz, save_teacher
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineJob, EngineResult, JobCancelled, run_job
from worker.engine.artifacts import load_student
from worker.engine.data import load_dataset
from worker.engine.errors import DataLoadError, ShapeMismatch, UnsupportedInput
from worker.engine.evaluation import r2
from worker.engine.losses import regression_loss

STUDENT = {"arch": "mlp", "hidden_sizes": [8], "activation": "relu", "dropout": 0.1}


def regression_spec(baseline: bool = False, sweep: dict | None = None, **hp) -> JobSpec:
    hp = {"epochs": 30, "batch_size": 32, "learning_rate": 0.01, "alpha": 0.5} | hp
    return job_spec(student=STUDENT, baseline=baseline, task="regression", sweep=sweep, **hp)


@dataclass
class Diabetes:
    trained: TrainedRegressor
    teacher: Path
    train: Path
    validation: Path

    def job(self, tmp_path: Path, spec: JobSpec, **overrides) -> EngineJob:
        return engine_job(tmp_path, spec, self.teacher, self.train, self.validation, **overrides)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Diabetes:
    folder = tmp_path_factory.mktemp("diabetes")
    trained = train_diabetes_teacher()
    return Diabetes(
        trained,
        save_teacher(trained.model, folder / "teacher.pt", "torchscript"),
        save_npz(folder / "train.npz", trained.x_train, trained.y_train),
        save_npz(folder / "val.npz", trained.x_val, trained.y_val),
    )


@pytest.fixture(scope="module")
def distilled(diabetes: Diabetes, tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    spec = regression_spec(epochs=2, baseline=True)
    return run_job(diabetes.job(tmp_path_factory.mktemp("distilled"), spec))


def test_regression_loss_mixes_the_teacher_and_the_labels() -> None:
    student, teacher, y = (
        torch.tensor([[1.0], [2.0]]),
        torch.tensor([[0.0], [2.0]]),
        torch.zeros(2, 1),
    )

    terms = regression_loss(student, teacher, y, alpha=0.25)

    torch.testing.assert_close(terms.kd, torch.tensor(0.5))
    torch.testing.assert_close(terms.ce, torch.tensor(2.5))
    torch.testing.assert_close(terms.total, torch.tensor(0.25 * 0.5 + 0.75 * 2.5))
    assert regression_loss(student, None, y, alpha=0.0).kd is None


def test_r2_matches_its_definition() -> None:
    y = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    predicted = torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]])

    assert r2(predicted, y) == pytest.approx((1 - 1 / 2 + 1.0) / 2)  # a constant column: 1.0
    assert r2(predicted, None) is None


def test_the_student_comes_close_to_the_teacher(diabetes: Diabetes, tmp_path: Path) -> None:
    result = run_job(diabetes.job(tmp_path, regression_spec()))
    metrics = result.metrics

    assert metrics["teacher_r2"] > 0.35
    assert metrics["student_r2"] >= metrics["teacher_r2"] - 0.1
    assert metrics["student_mse"] == pytest.approx(
        float(np.mean((diabetes.trained.y_val - _student_outputs(result, diabetes)) ** 2)), rel=1e-4
    )
    assert metrics["agreement_mse"] < metrics["student_mse"]
    for name in ("teacher_accuracy", "student_accuracy", "agreement", "kl_divergence"):
        assert name not in metrics


def _student_outputs(result: EngineResult, diabetes: Diabetes) -> np.ndarray:
    student = load_student(result.artifacts[0].parent)
    with torch.no_grad():
        return student(torch.from_numpy(diabetes.trained.x_val))[:, 0].numpy()


def test_the_baseline_trains_on_the_labels_alone(distilled: EngineResult) -> None:
    assert distilled.metrics["baseline_r2"] is not None
    assert distilled.metrics["baseline_mse"] > 0


def test_a_cancelled_regression_job_resumes_to_the_same_bytes(
    diabetes: Diabetes, distilled: EngineResult, tmp_path: Path
) -> None:
    job = diabetes.job(tmp_path, regression_spec(epochs=2, baseline=True), progress_interval=0.0)
    with pytest.raises(JobCancelled):
        run_job(job, Recorder(stop_at_step=5))
    resumed = run_job(job, Recorder())

    weights = "student.safetensors"
    assert (job.output_dir / weights).read_bytes() == (
        distilled.artifacts[0].parent / weights
    ).read_bytes()
    assert resumed.metrics["student_mse"] == distilled.metrics["student_mse"]


def test_a_sweep_keeps_the_lowest_validation_mse(diabetes: Diabetes, tmp_path: Path) -> None:
    spec = regression_spec(epochs=3, sweep={"alpha": [0.0, 1.0]})
    metrics = run_job(diabetes.job(tmp_path, spec)).metrics

    rows = metrics["sweep"]
    assert metrics["sweep_metric"] == "val_mse"
    chosen = min(rows, key=lambda row: row["val_mse"])
    assert chosen["chosen"] and metrics["student_mse"] == pytest.approx(chosen["val_mse"])


def test_early_stopping_on_accuracy_is_refused(diabetes: Diabetes, tmp_path: Path) -> None:
    spec = regression_spec(epochs=2, early_stopping={"metric": "val_accuracy", "patience": 1})

    with pytest.raises(UnsupportedInput, match="val_loss"):
        run_job(diabetes.job(tmp_path, spec))


def test_targets_of_another_width_are_a_shape_mismatch(diabetes: Diabetes, tmp_path: Path) -> None:
    two = np.stack([diabetes.trained.y_train] * 2, axis=1)
    train = save_npz(tmp_path / "two.npz", diabetes.trained.x_train, two)

    with pytest.raises(ShapeMismatch, match="2 value"):
        run_job(diabetes.job(tmp_path, regression_spec(epochs=1), train_path=train))


def test_csv_targets_load_as_real_values(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("f0,f1,label\n1,2,0.5\n3,4,1\n5,6,-2.25\n")

    data = load_dataset(path, "csv", task="regression")

    assert data.y is not None and data.y.tolist() == [[0.5], [1.0], [-2.25]]
    with pytest.raises(DataLoadError, match="regression"):
        load_dataset(save_npz(tmp_path / "f.npz", np.ones((3, 2)), np.ones(3)), "npz")
