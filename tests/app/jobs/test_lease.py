"""The lease: a job runs on one worker at a time, even when the broker hands it out twice."""

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from app.db import session_scope
from app.ids import new_id
from app.jobs import repository
from app.models import Job, JobStatus
from app.models.base import utcnow

LEASE = timedelta(seconds=30)


@pytest.fixture
def job_id(service_env: dict[str, str]) -> str:
    job_id = new_id("job")
    with session_scope() as session:
        session.add(
            Job(id=job_id, team_id="team_default", spec={}, teacher_file_id="file_t",
                train_file_id="file_d")
        )  # fmt: skip
    return job_id


def claim(job_id: str, worker: str, now_offset: timedelta = timedelta()) -> bool:
    now = utcnow() + now_offset
    with session_scope() as session:
        return repository.claim(session, job_id, worker, now, now + LEASE)


def load(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_queued_job_is_claimed_once(job_id: str) -> None:
    assert claim(job_id, "worker-a") is True
    # The broker redelivers the message (Redis visibility timeout) while worker-a still runs it.
    assert claim(job_id, "worker-b") is False
    job = load(job_id)
    assert (job.status, job.worker_id, job.attempts) == (JobStatus.running, "worker-a", 1)
    assert job.started_at is not None


def test_an_expired_lease_can_be_taken_over(job_id: str) -> None:
    assert claim(job_id, "worker-a") is True
    started = load(job_id).started_at
    assert claim(job_id, "worker-b", now_offset=LEASE + timedelta(seconds=1)) is True
    job = load(job_id)
    assert (job.worker_id, job.attempts, job.started_at) == ("worker-b", 2, started)
    with session_scope() as session:  # worker-a has lost the job and learns so at its renewal
        assert repository.renew_lease(session, job_id, "worker-a", utcnow() + LEASE) is False
        assert repository.renew_lease(session, job_id, "worker-b", utcnow() + LEASE) is True


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
def test_finished_jobs_are_never_claimed(job_id: str, status: JobStatus) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = status
    assert claim(job_id, "worker-a") is False
    assert claim(job_id, "worker-a", now_offset=timedelta(days=1)) is False


def test_a_job_being_cancelled_is_not_claimed(job_id: str) -> None:
    with session_scope() as session:
        _set(session, job_id, cancel_requested=True)
    assert claim(job_id, "worker-a") is False


def test_the_runner_skips_a_job_it_cannot_claim(job_id: str) -> None:
    from worker.runner import JobRunner

    assert claim(job_id, "worker-a") is True
    outcome = JobRunner(job_id, "worker-b").run()
    assert outcome.startswith("skipped")
    job = load(job_id)
    assert (job.status, job.worker_id, job.attempts) == (JobStatus.running, "worker-a", 1)


def _set(session: Session, job_id: str, **values: object) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    for key, value in values.items():
        setattr(job, key, value)


def test_a_worker_that_lost_its_lease_does_not_finish_the_job(job_id: str) -> None:
    from worker.runner import LOST, JobRunner

    assert claim(job_id, "worker-a") is True
    assert claim(job_id, "worker-b", now_offset=LEASE + timedelta(seconds=1)) is True
    # worker-a comes back from a long stall and tries to report its outcome
    outcome = JobRunner(job_id, "worker-a")._finish(JobStatus.failed, "Job failed.")
    assert outcome == LOST
    job = load(job_id)
    assert (job.status, job.worker_id, job.error) == (JobStatus.running, "worker-b", None)
