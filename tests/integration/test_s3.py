"""The whole service on the S3 store: the API in-process and a real Celery worker process, each
with a storage directory of its own, so that whatever the worker needs of the API's uploads it
can only have from the bucket. S3 is moto's server mode over real HTTP on 127.0.0.1 (no real S3
is reachable from the test machines); everything else is as in the other integration tests."""

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import broker
from app.db import session_scope
from app.ids import new_id
from app.jobs import repository
from app.models import Job
from tests.conftest import (
    ADMIN_KEY,
    Client,
    S3Server,
    celery_worker,
    make_team,
    service_environment,
)
from tests.helpers.api import error_of
from tests.helpers.teachers import save_npz
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration]

PREFIX = "distill"


@dataclass
class S3Service:
    team: Client
    s3: Any  # a boto3 client of the bucket, to look behind the API
    bucket: str
    api_dir: Path  # DISTILL_STORAGE_DIR of the API (this process)
    worker_dir: Path  # DISTILL_STORAGE_DIR of the worker process

    def keys(self, under: str = "") -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{PREFIX}/{under}"
        )
        return {o["Key"].removeprefix(f"{PREFIX}/") for p in pages for o in p.get("Contents", [])}

    def object(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")["Body"].read()


@pytest.fixture(scope="module")
def s3_service(
    service_env: dict[str, str], s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Service]:
    """A second service on its own database, queue and bucket (the session's stays as it was)."""
    bucket = s3_server.new_bucket()
    api_dir, worker_dir = tmp_path_factory.mktemp("s3_api"), tmp_path_factory.mktemp("s3_worker")
    # Parts of 5 MiB: the teacher (over 5 MiB) goes up as a multipart upload.
    settings = s3_server.settings(
        bucket, DISTILL_S3_PREFIX=PREFIX, DISTILL_S3_MULTIPART_BYTES=str(5 * 1024 * 1024)
    )
    with (
        service_environment(api_dir, **settings) as env,
        celery_worker({**env, "DISTILL_STORAGE_DIR": str(worker_dir)}),
    ):
        from app.main import create_app

        with TestClient(create_app(), raise_server_exceptions=False) as api:
            team = make_team(Client(api, ADMIN_KEY, "team_default"))
            yield S3Service(team, s3_server.client(), bucket, api_dir, worker_dir)


@pytest.fixture(scope="module")
def finished(s3_service: S3Service, digits: Digits) -> dict[str, Any]:
    team = s3_service.team
    files = [
        flow.upload(team, digits.teacher, "teacher"),
        flow.upload(team, digits.train, "dataset"),
        flow.upload(team, digits.validation, "dataset"),
    ]
    job = flow.run_to_end(team, flow.submit(team, flow.spec(*(f["id"] for f in files)))["id"])
    artifacts = team.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    return {"job": job, "files": files, "artifacts": {a["name"]: a for a in artifacts}}


def test_a_job_runs_with_everything_in_the_bucket(
    s3_service: S3Service, finished: dict[str, Any], digits: Digits
) -> None:
    job, files = finished["job"], finished["files"]
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["teacher_cache"] == "miss"
    keys = s3_service.keys()
    assert {f"files/{f['id']}" for f in files} <= keys
    assert f"jobs/{job['id']}/checkpoint.pt" in keys
    for name, artifact in finished["artifacts"].items():
        stored = s3_service.object(f"jobs/{job['id']}/artifacts/{name}")
        assert hashlib.sha256(stored).hexdigest() == artifact["sha256"]
    cache = s3_service.keys("cache/teacher/")
    assert len([k for k in cache if k.endswith(".safetensors")]) == 1
    assert len([k for k in cache if k.startswith("cache/teacher/inputs/")]) == 1


def test_each_machine_keeps_only_its_own_copies(
    s3_service: S3Service, finished: dict[str, Any], digits: Digits
) -> None:
    job, (teacher, *_) = finished["job"], finished["files"]
    api_files = [p for p in s3_service.api_dir.rglob("*") if p.is_file()]
    assert api_files == []  # uploads went to the bucket; no temporary upload left behind
    copy = s3_service.worker_dir / "files" / teacher["id"]
    assert copy.read_bytes() == digits.teacher.read_bytes()  # the worker's, from the bucket
    assert not (s3_service.worker_dir / "jobs" / job["id"]).exists()  # released once stored


def test_artifacts_download_whole_and_by_range(
    s3_service: S3Service, finished: dict[str, Any]
) -> None:
    team, job_id = s3_service.team, finished["job"]["id"]
    for name, artifact in finished["artifacts"].items():
        response = team.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        assert response.headers["etag"] == f'"{artifact["sha256"]}"'
        assert response.headers["content-length"] == str(artifact["bytes"])
        assert response.headers["accept-ranges"] == "bytes"
    url = f"/v1/jobs/{job_id}/artifacts/student.pt"
    whole, size = team.get(url).content, finished["artifacts"]["student.pt"]["bytes"]
    assert_range(team, url, whole, "bytes=10-19", 10, 19)
    assert_range(team, url, whole, "bytes=-7", size - 7, size - 1)
    assert_range(team, url, whole, f"bytes={size - 3}-", size - 3, size - 1)
    assert_range(team, url, whole, f"bytes=5-{size + 100}", 5, size - 1)  # clipped to the end
    etag = f'"{finished["artifacts"]["student.pt"]["sha256"]}"'
    assert_range(team, url, whole, "bytes=0-0", 0, 0, headers={"If-Range": etag})


def test_what_is_not_one_satisfiable_range_gets_the_rules_answer(
    s3_service: S3Service, finished: dict[str, Any]
) -> None:
    team, job_id = s3_service.team, finished["job"]["id"]
    url = f"/v1/jobs/{job_id}/artifacts/student.pt"
    size = finished["artifacts"]["student.pt"]["bytes"]
    past_the_end = team.get(url, headers={"Range": f"bytes={size}-"})
    assert error_of(past_the_end, 416)["code"] == "range_not_satisfiable"
    assert past_the_end.headers["content-range"] == f"bytes */{size}"
    whole = team.get(url).content
    for headers in (
        {"Range": "bytes=0-1,5-6"},  # several ranges: S3 reads one, so the whole file
        {"Range": "lines=1-2"},  # a unit HTTP says to ignore
        {"Range": "bytes=0-1", "If-Range": '"another-version"'},
    ):
        response = team.get(url, headers=headers)
        assert (response.status_code, response.content) == (200, whole), headers


def test_file_content_streams_from_the_bucket(
    s3_service: S3Service, finished: dict[str, Any], digits: Digits
) -> None:
    teacher = finished["files"][0]
    url = f"/v1/files/{teacher['id']}/content"
    response = s3_service.team.get(url)
    assert response.status_code == 200 and response.content == digits.teacher.read_bytes()
    assert response.headers["etag"] == f'"{teacher["sha256"]}"'
    assert (
        response.headers["content-disposition"] == f'attachment; filename="{teacher["filename"]}"'
    )
    assert_range(s3_service.team, url, response.content, "bytes=100-199", 100, 199)


def test_a_large_upload_goes_up_in_parts_and_delete_removes_it(
    s3_service: S3Service, tmp_path: Path
) -> None:
    rows = np.random.default_rng(0).random((24_000, 64), dtype=np.float32)  # 5.9 MiB
    path = save_npz(tmp_path / "large.npz", rows, np.zeros(len(rows), dtype=np.int64))
    file = flow.upload(s3_service.team, path, "dataset")
    key = f"{PREFIX}/files/{file['id']}"
    head = s3_service.s3.head_object(Bucket=s3_service.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-2")  # two parts of at most 5 MiB
    assert s3_service.object(f"files/{file['id']}") == path.read_bytes()
    assert s3_service.team.delete(f"/v1/files/{file['id']}").status_code == 204
    assert f"files/{file['id']}" not in s3_service.keys("files/")


def test_a_job_taken_over_by_another_machine_resumes_from_the_bucket(
    s3_service: S3Service, finished: dict[str, Any]
) -> None:
    """A worker that takes a job over finds its checkpoint and its teacher-output cache entry in
    the bucket, not on its own disk. The job here stands for one whose first machine died after
    the last epoch's checkpoint: its checkpoint is the finished job's, so the resumed run has
    nothing left to train and must give exactly the same student."""
    first = finished["job"]
    for copies in ("files", "cache", "jobs"):  # a machine that has never seen these files
        shutil.rmtree(s3_service.worker_dir / copies, ignore_errors=True)
    job_id = new_id("job")
    s3_service.s3.copy_object(
        Bucket=s3_service.bucket,
        CopySource={
            "Bucket": s3_service.bucket,
            "Key": f"{PREFIX}/jobs/{first['id']}/checkpoint.pt",
        },
        Key=f"{PREFIX}/jobs/{job_id}/checkpoint.pt",
    )
    with session_scope() as session:
        session.add(
            Job(
                id=job_id,
                team_id=s3_service.team.team_id,
                spec=first["spec"],
                teacher_file_id=first["spec"]["teacher"]["file_id"],
                train_file_id=first["spec"]["data"]["train_file_id"],
                validation_file_id=first["spec"]["data"]["validation_file_id"],
            )
        )
        session.flush()
        repository.add_event(session, job_id, "status", "Job queued.", data={"status": "queued"})
    broker.send_run_job(job_id)

    events = flow.events_until(s3_service.team, job_id)
    job = s3_service.team.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any(m.startswith("Resumed the student at epoch 2,") for m in logs), logs
    assert job["metrics"]["teacher_cache"] == "hit"
    weights = s3_service.team.get(f"/v1/jobs/{job_id}/artifacts/student.safetensors")
    assert (
        hashlib.sha256(weights.content).hexdigest()
        == (finished["artifacts"]["student.safetensors"]["sha256"])
    )


def assert_range(
    client: Client,
    url: str,
    whole: bytes,
    header: str,
    first: int,
    last: int,
    headers: dict[str, str] | None = None,
) -> None:
    response = client.get(url, headers={"Range": header, **(headers or {})})
    assert response.status_code == 206, (header, response.text)
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(whole)}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.content == whole[first : last + 1]
