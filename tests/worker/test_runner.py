"""What the runner hands the engine: the job's files, fetched from the store, a pretrained
student's among them. Real PostgreSQL; the local store, and S3 as moto's server over HTTP."""

import hashlib

import pytest

from app import storage
from app.db import session_scope
from app.ids import new_id
from app.models import File, Job, Team, Worker
from jobspec import JobSpec
from worker.engine import EngineError
from worker.runner import GangDevices, JobRunner, _gang

TEACHER, STUDENT, TRAIN = b"teacher archive bytes", b"GGUF student bytes", b'{"text": "hi"}\n'


def lm_job(student: bool = True) -> str:
    """A causal-LM job with its files in the store and rows in the database: the teacher an
    hf_archive, the student (``{"file_id"}``, if ``student``) a gguf, the data jsonl."""
    team_id, job_id = new_id("team"), new_id("job")
    files = {
        "teacher": (new_id("file"), "hf_archive", TEACHER),
        "student": (new_id("file"), "gguf", STUDENT),
        "train": (new_id("file"), "jsonl", TRAIN),
    }
    spec = {  # as the API stores it: the spec with its defaults
        "task": "causal_lm",
        "teacher": {"file_id": files["teacher"][0]},
        "student": {"file_id": files["student"][0]}
        if student
        else {"arch": "from_teacher", "layers": [0, 2]},
        "data": {"train_file_id": files["train"][0], "validation_split": 0.1},
    }
    spec = JobSpec.model_validate(spec).model_dump(mode="json")
    with session_scope() as session:
        session.add(Team(id=team_id, name=team_id, max_running_jobs=0))
        session.flush()
        for role, (file_id, fmt, data) in files.items():
            storage.get_store().put_bytes(storage.file_key(file_id), data)
            session.add(
                File(id=file_id, team_id=team_id, filename=f"{role}.{fmt}", bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest(), purpose=role, format=fmt)
            )  # fmt: skip
        session.add(
            Job(id=job_id, team_id=team_id, spec=spec, teacher_file_id=files["teacher"][0],
                train_file_id=files["train"][0])
        )  # fmt: skip
    return job_id


def student_file_id(job_id: str) -> str:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return str(job.spec["student"]["file_id"])


def test_a_pretrained_student_is_fetched_from_the_bucket(s3_env: dict[str, str]) -> None:
    job_id = lm_job()

    job = JobRunner(job_id, "worker-a")._engine_job()

    assert job.student_path is not None and job.student_format == "gguf"
    assert job.student_path.read_bytes() == STUDENT
    assert job.student_path == storage.root() / storage.file_key(student_file_id(job_id))
    assert job.teacher_path.read_bytes() == TEACHER
    assert job.file_names["student"] == "student.gguf"


def test_a_student_missing_from_the_bucket_fails_the_job_as_file_missing(
    s3_env: dict[str, str],
) -> None:
    job_id = lm_job()
    storage.get_store().delete(storage.file_key(student_file_id(job_id)))

    with pytest.raises(EngineError) as failed:
        JobRunner(job_id, "worker-a")._engine_job()

    assert failed.value.code == "file_missing"


def test_a_deleted_student_file_fails_the_job_as_file_missing(
    service_env: dict[str, str],
) -> None:
    job_id = lm_job()
    with session_scope() as session:
        student = session.get(File, student_file_id(job_id))
        session.delete(student)

    with pytest.raises(EngineError) as failed:
        JobRunner(job_id, "worker-a")._engine_job()

    assert failed.value.code == "file_missing"


def test_a_student_from_the_teacher_has_no_student_file(service_env: dict[str, str]) -> None:
    job = JobRunner(lm_job(student=False), "worker-a")._engine_job()

    assert job.student_path is None and job.student_format is None
    assert "student" not in job.file_names


def gang_job(placement: list[tuple[str, str]]) -> Job:
    """A 2-device job placed on workers of the given (id, device) rows, which exist."""
    with session_scope() as session:
        for worker_id, device in placement:
            session.merge(Worker(id=worker_id, hostname="h", device=device, device_name="x"))
    return Job(id=new_id("job"), devices=2, placement=[w for w, _ in placement])


def test_a_gang_on_gpus_sees_its_placement_s_gpus_alone_one_per_rank(
    service_env: dict[str, str],
) -> None:
    job = gang_job([(new_id("w"), "cuda:3"), (new_id("w"), "cuda:1")])
    with session_scope() as session:
        gang = _gang(session, job, "cuda")
    assert gang == GangDevices(world_size=2, devices=["cuda:0", "cuda:1"], visible="3,1")
    with session_scope() as session:
        on_cpu = _gang(session, gang_job([(new_id("w"), "cpu"), (new_id("w"), "cpu")]), "cpu")
    assert on_cpu == GangDevices(world_size=2)  # every rank on the CPU, CUDA left as it is


def test_a_gang_whose_worker_is_gone_goes_back_to_the_queue(service_env: dict[str, str]) -> None:
    job = gang_job([(new_id("w"), "cpu")])
    job.placement = [*(job.placement or []), "gone:1"]
    with session_scope() as session, pytest.raises(EngineError) as failed:
        _gang(session, job, "cpu")
    assert failed.value.code == "rank_lost"
