"""The whole life of a job through HTTP, on PostgreSQL, Redis and a real Celery worker process."""

import hashlib
import io

import numpy as np
import pytest
import torch

from tests.conftest import Client
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker_process")]

METRICS = {
    "teacher_accuracy", "student_accuracy", "agreement", "kl_divergence", "teacher_params",
    "student_params", "compression_ratio", "student_size_bytes", "teacher_latency_ms",
    "student_latency_ms", "speedup", "train_seconds", "baseline_accuracy",
}  # fmt: skip
ARTIFACTS = {"student.safetensors", "student.json", "student.pt", "metrics.json"}


def accuracy(model: torch.jit.ScriptModule, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


@pytest.fixture(scope="module")
def finished(digits: Digits, admin: Client) -> dict:
    """One distillation run, followed live, shared by the assertions below."""
    from tests.conftest import make_team

    client = make_team(admin)
    teacher = flow.upload(client, digits.teacher, "teacher")
    train = flow.upload(client, digits.train, "dataset")
    validation = flow.upload(client, digits.validation, "dataset")
    spec = flow.spec(
        teacher["id"], train["id"], validation["id"],
        hyperparameters={"epochs": 20, "learning_rate": 0.005, "alpha": 0.7},
        baseline=True,
    )  # fmt: skip
    submitted = flow.submit(client, spec)
    events = flow.events_until(client, submitted["id"])
    job = client.get(f"/v1/jobs/{submitted['id']}").json()
    return {"client": client, "submitted": submitted, "events": events, "job": job,
            "files": (teacher, train, validation)}  # fmt: skip


def test_uploads_are_detected_from_content(finished: dict, digits: Digits) -> None:
    teacher, train, _ = finished["files"]
    assert teacher["format"] == "torchscript" and teacher["purpose"] == "teacher"
    assert train["format"] == "npz" and train["object"] == "file"
    assert teacher["sha256"] == hashlib.sha256(digits.teacher.read_bytes()).hexdigest()
    assert teacher["bytes"] == digits.teacher.stat().st_size


def test_job_goes_queued_running_succeeded(finished: dict) -> None:
    submitted, job = finished["submitted"], finished["job"]
    assert submitted["status"] == "queued" and submitted["queue_position"] is not None
    assert submitted["spec"]["hyperparameters"]["batch_size"] == 64  # defaults echoed
    assert flow.statuses(finished["events"]) == ["queued", "running", "succeeded"]
    assert job["status"] == "succeeded", job["error"]
    assert job["started_at"] and job["finished_at"] and job["attempts"] == 1
    assert job["queue_position"] is None and job["error"] is None
    assert job["progress"]["fraction"] == pytest.approx(1.0)


def test_events_are_in_order_and_progress_moves(finished: dict) -> None:
    events = finished["events"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    steps = [e["data"]["step"] for e in events if e["type"] == "progress"]
    assert len(steps) >= 2 and steps == sorted(steps) and steps[-1] > steps[0]
    listed = (
        finished["client"]
        .get(f"/v1/jobs/{finished['job']['id']}/events", params={"limit": 100})
        .json()
    )
    assert [e["id"] for e in listed["data"]] == ids  # the stream and the list agree


def test_metrics_series_in_step_order(finished: dict) -> None:
    client, job_id = finished["client"], finished["job"]["id"]
    points, after = [], None
    while True:
        page = client.get(
            f"/v1/jobs/{job_id}/metrics",
            params={"limit": 100, **({"after": after} if after else {})},
        )
        assert page.status_code == 200, page.text
        body = page.json()
        points += body["data"]
        if not body["has_more"]:
            break
        after = points[-1]["step"]
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(p["train_loss"] is not None for p in points)
    epochs_with_accuracy = {p["epoch"] for p in points if p.get("val_accuracy") is not None}
    assert len(epochs_with_accuracy) == 20


def test_final_metrics_are_honest(finished: dict, digits: Digits) -> None:
    metrics = finished["job"]["metrics"]
    assert metrics.keys() >= METRICS
    assert metrics["student_params"] < metrics["teacher_params"]
    assert metrics["compression_ratio"] == pytest.approx(
        metrics["teacher_params"] / metrics["student_params"], rel=1e-3
    )
    assert metrics["teacher_latency_ms"] > 0 and metrics["student_latency_ms"] > 0
    # A student distilled from a good teacher keeps at least 95% of its accuracy.
    assert metrics["student_accuracy"] >= 0.95 * metrics["teacher_accuracy"]


def test_artifacts_download_with_matching_sha256_and_range(finished: dict) -> None:
    client, job_id = finished["client"], finished["job"]["id"]
    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    assert {a["name"] for a in listed} >= ARTIFACTS
    for artifact in listed:
        response = client.get(f"/v1/jobs/{job_id}/artifacts/{artifact['name']}")
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        assert len(response.content) == artifact["bytes"]
        assert response.headers["etag"] == f'"{artifact["sha256"]}"'
    partial = client.get(
        f"/v1/jobs/{job_id}/artifacts/student.pt", headers={"Range": "bytes=10-19"}
    )
    whole = client.get(f"/v1/jobs/{job_id}/artifacts/student.pt").content
    assert partial.status_code == 206 and partial.content == whole[10:20]


def test_downloaded_student_gives_the_reported_accuracy(finished: dict, digits: Digits) -> None:
    client, job = finished["client"], finished["job"]
    raw = client.get(f"/v1/jobs/{job['id']}/artifacts/student.pt").content
    student = torch.jit.load(io.BytesIO(raw))
    trained = digits.trained
    measured = accuracy(student, trained.x_val, trained.y_val)
    assert measured == pytest.approx(job["metrics"]["student_accuracy"], abs=0.01)
    # and on data neither the job nor the teacher's training saw:
    assert accuracy(student, trained.x_test, trained.y_test) >= 0.95 * trained.test_accuracy


def test_sweep_job_reports_its_table_and_keeps_the_best(team: Client, digits: Digits) -> None:
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    train = flow.upload(team, digits.train, "dataset")["id"]
    validation = flow.upload(team, digits.validation, "dataset")["id"]
    spec = flow.spec(
        teacher, train, validation,
        hyperparameters={"epochs": 1}, sweep={"alpha": [0.0, 0.9]},
    )  # fmt: skip

    job = flow.run_to_end(team, flow.submit(team, spec)["id"])

    assert job["status"] == "succeeded", job["error"]
    assert job["spec"]["sweep"] == {
        "temperature": None, "alpha": [0.0, 0.9], "learning_rate": None, "logits": None,
    }  # fmt: skip
    rows = job["metrics"]["sweep"]
    assert [row["alpha"] for row in rows] == [0.0, 0.9]
    chosen = next(row for row in rows if row["chosen"])
    assert chosen["val_accuracy"] == max(row["val_accuracy"] for row in rows)
    assert job["metrics"]["student_accuracy"] == pytest.approx(chosen["val_accuracy"])
    assert (job["progress"]["run"], job["progress"]["runs"]) == (1, 2)
    points = team.get(f"/v1/jobs/{job['id']}/metrics", params={"limit": 100}).json()["data"]
    assert [p["run"] for p in points] == sorted(p["run"] for p in points)
