"""Regression through the API: real-valued data is recognised on upload, a classification job
on it is refused with advice, and a regression job on diabetes runs on a real worker."""

from pathlib import Path

import pytest

from tests.conftest import Client
from tests.helpers.api import error_of
from tests.helpers.regression import train_diabetes_teacher
from tests.helpers.teachers import save_npz, save_teacher
from tests.integration import flow

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker_process")]


def test_a_regression_job_runs_and_reports_r2(team: Client, tmp_path: Path) -> None:
    trained = train_diabetes_teacher()
    teacher = flow.upload(
        team, save_teacher(trained.model, tmp_path / "t.pt", "torchscript"), "teacher"
    )
    train = flow.upload(
        team, save_npz(tmp_path / "train.npz", trained.x_train, trained.y_train), "dataset"
    )
    val = flow.upload(team, save_npz(tmp_path / "val.npz", trained.x_val, trained.y_val), "dataset")

    hp = {"epochs": 5, "batch_size": 32, "learning_rate": 0.01}
    classification = team.post("/v1/jobs", json=flow.spec(teacher["id"], train["id"], val["id"]))
    error = error_of(classification, 422)
    assert error["param"] == "task" and '"task": "regression"' in error["message"]
    on_accuracy = flow.spec(
        teacher["id"],
        train["id"],
        val["id"],
        task="regression",
        hyperparameters=hp | {"early_stopping": {"metric": "val_accuracy"}},
    )
    error = error_of(team.post("/v1/jobs", json=on_accuracy), 422)
    assert error["param"] == "hyperparameters.early_stopping.metric"

    spec = flow.spec(
        teacher["id"], train["id"], val["id"], task="regression", hyperparameters=hp, baseline=True
    )
    job = flow.run_to_end(team, flow.submit(team, spec)["id"])

    assert job["status"] == "succeeded", job["error"]
    assert job["spec"]["task"] == "regression"
    metrics = job["metrics"]
    assert metrics["student_r2"] >= metrics["teacher_r2"] - 0.2, metrics
    assert {"teacher_mse", "student_mse", "agreement_mse", "baseline_r2"} <= set(metrics)
    assert "student_accuracy" not in metrics


def test_regression_needs_numeric_labels(team: Client, tmp_path: Path) -> None:
    trained = train_diabetes_teacher(steps=1)
    teacher = flow.upload(
        team, save_teacher(trained.model, tmp_path / "t.pt", "torchscript"), "teacher"
    )
    named = tmp_path / "named.csv"
    rows = "\n".join(f"{i},{i % 3},{'abc'[i % 3]}" for i in range(20))
    named.write_text(f"a,b,label\n{rows}\n")
    data = flow.upload(team, named, "dataset")

    response = team.post("/v1/jobs", json=flow.spec(teacher["id"], data["id"], task="regression"))

    error = error_of(response, 422)
    assert error["param"] == "data.train_file_id" and "numeric" in error["message"]
