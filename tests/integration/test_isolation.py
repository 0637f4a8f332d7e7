"""A key sees only its own team's files, jobs and artifacts: any other id answers 404."""

import pytest

from tests.conftest import Client, make_team
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker_process")]


def test_foreign_ids_answer_404_like_missing_ones(admin: Client, digits: Digits) -> None:
    owner, stranger = make_team(admin), make_team(admin)
    teacher = flow.upload(owner, digits.teacher, "teacher")["id"]
    train = flow.upload(owner, digits.train, "dataset")["id"]
    job = flow.submit(owner, flow.spec(teacher, train, hyperparameters={"epochs": 1}))["id"]
    flow.run_to_end(owner, job)

    foreign_routes = [
        ("get", f"/v1/files/{teacher}"),
        ("get", f"/v1/files/{teacher}/content"),
        ("delete", f"/v1/files/{teacher}"),
        ("get", f"/v1/jobs/{job}"),
        ("post", f"/v1/jobs/{job}/cancel"),
        ("get", f"/v1/jobs/{job}/events"),
        ("get", f"/v1/jobs/{job}/metrics"),
        ("get", f"/v1/jobs/{job}/artifacts"),
        ("get", f"/v1/jobs/{job}/artifacts/student.pt"),
    ]
    for method, url in foreign_routes:
        foreign = getattr(stranger, method)(url)
        missing = getattr(stranger, method)(
            url.replace(teacher, "file_nope").replace(job, "job_nope")
        )
        assert foreign.status_code == missing.status_code == 404, (url, foreign.text)
        assert foreign.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"

    # Nor can a stranger train on someone else's files.
    stolen = stranger.post("/v1/jobs", json=flow.spec(teacher, train))
    assert stolen.status_code == 404
    assert stolen.json()["error"]["param"] == "teacher.file_id"
    # Lists stay private, and the owner still has everything.
    assert stranger.get("/v1/jobs").json()["data"] == []
    assert stranger.get("/v1/files").json()["data"] == []
    assert owner.get(f"/v1/files/{teacher}").status_code == 200
    queue = stranger.get("/v1/queue").json()
    assert all(entry["job"] is None for entry in queue["running"] + queue["queued"]
               if entry["team_id"] != stranger.team_id)  # fmt: skip
