"""The plain-SQL reads on PostgreSQL answer exactly what the ORM path answers."""

import pytest
from fastapi.testclient import TestClient

from app.db import session_scope
from app.ids import new_id
from app.jobs.router import _get_job
from app.models import Job, JobStatus
from tests.conftest import Client, make_team


def a_job(team_id: str, status: JobStatus, **extra: object) -> str:
    job_id = new_id("job")
    with session_scope() as session:
        session.add(
            Job(id=job_id, team_id=team_id, spec={"seed": 1}, teacher_file_id="file_t",
                train_file_id="file_d", status=status, **extra)
        )  # fmt: skip
    return job_id


def test_the_api_reads_jobs_through_the_hot_path(api: TestClient) -> None:
    assert api.app.state.hot_reads is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "status, extra",
    [
        (JobStatus.queued, {}),
        (JobStatus.running, {"progress": {"epoch": 1, "epochs": 2, "step": 3, "total_steps": 6,
                                          "fraction": 0.5, "eta_seconds": 1.5}}),
        (JobStatus.failed, {"error": {"code": "shape_mismatch", "message": "m"}}),
        (JobStatus.succeeded, {"metrics": {"student_accuracy": 0.9}, "attempts": 2}),
    ],
)  # fmt: skip
def test_hot_path_and_orm_path_agree(admin: Client, status: JobStatus, extra: dict) -> None:
    team = make_team(admin, max_running_jobs=0)  # so the scheduler starts none of these
    a_job(team.team_id, JobStatus.queued)  # one ahead in the queue
    job_id = a_job(team.team_id, status, **extra)
    response = team.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == _get_job(team.team_id, job_id).model_dump(mode="json")
    if status == JobStatus.queued:
        assert response.json()["queue_position"] >= 1


def test_hot_path_hides_other_teams_jobs(team: Client, admin: Client) -> None:
    job_id = a_job("team_default", JobStatus.succeeded)
    assert admin.get(f"/v1/jobs/{job_id}").status_code == 200
    response = team.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
