"""A key sees only its own team's files, jobs and artifacts: any other id answers 404; a
teacher sees only its own job's files."""

from pathlib import Path

import pytest
import torch

from tests.conftest import Client, make_team
from tests.helpers.api import error_of
from tests.helpers.teachers import Thief, save_teacher
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


def test_a_teacher_past_the_upload_checks_is_held_by_the_workers_sandbox(
    admin: Client, digits: Digits, service_env: dict[str, str], tmp_path: Path
) -> None:
    """Defence in depth: the upload checks refuse a teacher that opens files, but were one to
    slip past them, the worker's sandbox still keeps it from another team's stored files."""
    owner, victim = make_team(admin), make_team(admin)
    files = Path(service_env["DISTILL_STORAGE_DIR"]) / "files"
    secret = files / flow.upload(victim, digits.validation, "dataset")["id"]
    target = files / flow.upload(victim, digits.train, "dataset")["id"]
    before = {path: path.read_bytes() for path in (secret, target)}
    teacher = flow.upload(owner, digits.teacher, "teacher")["id"]
    thief = Thief(torch.jit.load(digits.teacher), secret, target, 256)
    payload = save_teacher(thief, tmp_path / "thief.pt", "torchscript").read_bytes()
    refused = owner.post(
        "/v1/files", files={"file": ("thief.pt", payload)}, data={"purpose": "teacher"}
    )
    assert error_of(refused, 422)["code"] == "unsafe_file"
    assert "from_file" in refused.json()["error"]["message"]
    # As if the upload checks had missed it: the stored teacher becomes the thief.
    (files / teacher).write_bytes(payload)
    train = flow.upload(owner, digits.train, "dataset")["id"]

    job_id = flow.submit(owner, flow.spec(teacher, train, hyperparameters={"epochs": 1}))["id"]
    job = flow.run_to_end(owner, job_id)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "teacher_load_failed"
    assert "tried to open a file" in job["error"]["message"]
    assert {path: path.read_bytes() for path in (secret, target)} == before
