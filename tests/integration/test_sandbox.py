"""Training processes seen through the API, on the session's real Celery worker process: a job
that blows the memory bound costs that job, not the worker; the lease is renewed while a child
trains, and a worker that loses it kills its child."""

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.jobs import lifecycle, repository
from app.models import Job, JobStatus
from app.models.base import utcnow
from tests.conftest import JOB_MEMORY_BYTES, Client
from tests.helpers.teachers import MemoryBomb, save_teacher
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning"),
]


def worker_of(job_id: str) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Job.worker_id).where(Job.id == job_id))


def test_out_of_memory_fails_the_job_and_the_same_worker_runs_the_next(
    team: Client, digits: Digits, worker_process, tmp_path
) -> None:
    import torch

    teacher = torch.jit.load(str(digits.teacher))
    bomb = save_teacher(
        MemoryBomb(teacher, 2 * JOB_MEMORY_BYTES), tmp_path / "bomb.pt", "torchscript"
    )
    bomb_id = flow.upload(team, bomb, "teacher")["id"]
    good_id = flow.upload(team, digits.teacher, "teacher")["id"]
    train = flow.upload(team, digits.train, "dataset")["id"]
    validation = flow.upload(team, digits.validation, "dataset")["id"]
    one_epoch = {"hyperparameters": {"epochs": 1}}

    failed = flow.run_to_end(
        team, flow.submit(team, flow.spec(bomb_id, train, validation, **one_epoch))["id"]
    )
    succeeded = flow.run_to_end(
        team, flow.submit(team, flow.spec(good_id, train, validation, **one_epoch))["id"]
    )

    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "out_of_memory", failed["error"]
    assert succeeded["status"] == "succeeded", succeeded["error"]
    # the same Celery pool process (the worker id is host:pid) ran both, and it is still up
    assert worker_of(failed["id"]) == worker_of(succeeded["id"]) is not None
    assert worker_process.poll() is None


def lease_of(job_id: str) -> datetime | None:
    with session_scope() as session:
        return session.scalar(select(Job.lease_expires_at).where(Job.id == job_id))


def training_process_of(pool_pid: int) -> int | None:
    """The worker's child running ``python -m worker.sandbox``, if there is one."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if ppid == pool_pid and b"worker.sandbox" in cmdline:
            return int(stat.parent.name)
    return None


def until(condition, timeout: float = 120) -> None:
    """Leases and processes are rows and /proc entries, not events: poll them."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_lease_is_renewed_while_training_and_losing_it_kills_the_training_process(
    team: Client, digits: Digits, worker_process
) -> None:
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    train = flow.upload(team, digits.train, "dataset")["id"]
    validation = flow.upload(team, digits.validation, "dataset")["id"]
    long = flow.spec(teacher, train, validation, hyperparameters={"epochs": 1000, "batch_size": 4})
    job_id = flow.submit(team, long)["id"]
    try:
        flow.events_until(team, job_id, "running")
        worker_id = worker_of(job_id)
        assert worker_id is not None
        pool = int(worker_id.rsplit(":", 1)[1])
        until(lambda: training_process_of(pool) is not None)
        trainer, first_lease = training_process_of(pool), lease_of(job_id)

        until(lambda: lease_of(job_id) != first_lease)  # renewed while the child trains
        assert training_process_of(pool) == trainer
        # Another worker takes the job over, as one would once the lease had run out and the
        # scheduler had queued the job again and handed it out (in one transaction here).
        with session_scope() as session:
            now = utcnow()
            job = repository.get_job_for_update(session, job_id)
            assert job is not None
            lifecycle.requeue(session, job, max_attempts=job.attempts + 1)
            job.dispatched_at = now
            session.flush()
            assert lifecycle.start(session, job_id, "elsewhere:1", now, now + timedelta(hours=1))

        until(lambda: training_process_of(pool) is None)  # killed once its renewal was refused
        assert worker_process.poll() is None
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.status, job.worker_id) == (JobStatus.running, "elsewhere:1")  # left alone
    finally:
        with session_scope() as session:  # the job "elsewhere" will never finish by itself
            job = repository.get_job_for_update(session, job_id)
            if job is not None and job.status == JobStatus.running:
                message = "Cleaned up by the test."
                lifecycle.finish(session, job, JobStatus.cancelled, message=message)
