"""The lease: a job runs on one worker at a time, even when the broker hands it out twice, and
only jobs the scheduler handed out start."""

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from app.db import session_scope
from app.ids import new_id
from app.jobs import lifecycle
from app.models import Job, JobStatus, Team
from app.models.base import utcnow
from app.queue import scheduler

LEASE = timedelta(seconds=30)


@pytest.fixture
def job_id(service_env: dict[str, str]) -> str:
    """A job the scheduler has handed to the broker, of a team with no quota (so the scheduler
    running in this process never hands it to the suite's worker)."""
    team_id, job_id = new_id("team"), new_id("job")
    with session_scope() as session:
        session.add(Team(id=team_id, name=team_id, max_running_jobs=0))
        session.flush()
        session.add(
            Job(id=job_id, team_id=team_id, spec={}, teacher_file_id="file_t",
                train_file_id="file_d", dispatched_at=utcnow())
        )  # fmt: skip
    return job_id


def claim(job_id: str, worker: str, now_offset: timedelta = timedelta()) -> bool:
    now = utcnow() + now_offset
    with session_scope() as session:
        return lifecycle.start(session, job_id, worker, now, now + LEASE)


def load(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _set(session: Session, job_id: str, **values: object) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    for key, value in values.items():
        setattr(job, key, value)


def test_a_dispatched_job_is_claimed_once(job_id: str) -> None:
    assert claim(job_id, "worker-a") is True
    # The broker redelivers the message (Redis visibility timeout) while worker-a still runs it.
    assert claim(job_id, "worker-b") is False
    job = load(job_id)
    assert (job.status, job.worker_id, job.attempts) == (JobStatus.running, "worker-a", 1)
    assert job.started_at is not None and job.dispatched_at is None


def test_a_message_the_scheduler_did_not_send_starts_nothing(job_id: str) -> None:
    with session_scope() as session:
        _set(session, job_id, dispatched_at=None)  # queued, waiting for its turn
    assert claim(job_id, "worker-a") is False
    assert load(job_id).status == JobStatus.queued


def test_a_lost_worker_s_job_is_queued_again_then_claimed_by_the_next(job_id: str) -> None:
    # worker-a claimed it a while ago and stopped renewing: its lease has run out.
    assert claim(job_id, "worker-a", now_offset=-2 * LEASE) is True
    started = load(job_id).started_at
    # Even a redelivered message cannot take over a running job directly...
    assert claim(job_id, "worker-b") is False
    scheduler.run_pass()  # ...the scheduler requeues it first
    job = load(job_id)
    assert (job.status, job.worker_id, job.lease_expires_at) == (JobStatus.queued, None, None)
    with session_scope() as session:  # its turn comes (its team has no quota here: by hand)
        _set(session, job_id, dispatched_at=utcnow())
    assert claim(job_id, "worker-b") is True
    job = load(job_id)
    assert (job.worker_id, job.attempts, job.started_at) == ("worker-b", 2, started)
    with session_scope() as session:  # worker-a has lost the job and learns so at its renewal
        assert lifecycle.renew_lease(session, job_id, "worker-a", utcnow() + LEASE) is False
        assert lifecycle.renew_lease(session, job_id, "worker-b", utcnow() + LEASE) is True


def test_a_job_lost_max_attempts_times_fails_with_worker_lost(
    job_id: str, service_env: dict[str, str]
) -> None:
    from app.config import get_settings

    with session_scope() as session:
        _set(session, job_id, attempts=get_settings().max_attempts - 1)
    assert claim(job_id, "worker-a", now_offset=-2 * LEASE) is True
    scheduler.run_pass()
    job = load(job_id)
    assert job.status == JobStatus.failed and job.error is not None
    assert job.error["code"] == "worker_lost"


def test_a_lost_job_being_cancelled_is_cancelled_not_queued_again(job_id: str) -> None:
    assert claim(job_id, "worker-a", now_offset=-2 * LEASE) is True
    with session_scope() as session:
        _set(session, job_id, cancel_requested=True)
    scheduler.run_pass()
    job = load(job_id)
    assert job.status == JobStatus.cancelled and job.finished_at is not None


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
def test_finished_jobs_are_never_claimed(job_id: str, status: JobStatus) -> None:
    with session_scope() as session:
        _set(session, job_id, status=status)
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


def test_a_worker_that_lost_its_lease_does_not_finish_the_job(job_id: str) -> None:
    from worker.runner import LOST, JobRunner

    assert claim(job_id, "worker-a", now_offset=-2 * LEASE) is True
    scheduler.run_pass()
    with session_scope() as session:
        _set(session, job_id, dispatched_at=utcnow())
    assert claim(job_id, "worker-b") is True
    # worker-a comes back from a long stall and tries to report its outcome
    outcome = JobRunner(job_id, "worker-a")._finish(JobStatus.failed, "Job failed.")
    assert outcome == LOST
    job = load(job_id)
    assert (job.status, job.worker_id, job.error) == (JobStatus.running, "worker-b", None)
