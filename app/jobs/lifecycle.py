"""The one owner of a job's status: every transition writes the status and its ``status`` event
(and, for a final status, the webhook's outbox row) in the caller's transaction, so a reader sees
both or neither. Nothing here commits: the request or task scope around the call does.

    queued --start--> running --finish--> succeeded | failed | cancelled
       ^                 |
       +----requeue------+   (its worker was lost; it resumes from its last checkpoint)

A queued job may also finish (cancelled while it waits).
"""

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.jobs import repository
from app.jobs.schemas import job_out
from app.models import Job, JobStatus
from app.models.base import utcnow
from app.webhooks import service as webhooks


def enqueue(session: Session, **columns: Any) -> Job | None:
    """Insert a new job, queued, and its event. None when its team already has a job under the
    same ``idempotency_key`` (a concurrent submit won the race): then nothing is written.

    ``ON CONFLICT DO NOTHING`` rather than catching the unique violation: that would abort the
    request's transaction on PostgreSQL, and a savepoint around it commits early on pysqlite.
    """
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    job = session.scalar(
        insert(Job)
        .values(status=JobStatus.queued, **columns)
        .on_conflict_do_nothing(index_elements=[Job.team_id, Job.idempotency_key])
        .returning(Job)
    )
    if job is not None:
        _status_event(session, job.id, JobStatus.queued, "Job queued.")
    return job


def start(session: Session, job_id: str, worker_id: str, now: datetime, until: datetime) -> bool:
    """Claim the job for ``worker_id`` until ``until``; False when it is not ours to start.

    Only a queued job that the scheduler handed out to this worker (its placement's leader) and
    nobody is cancelling starts. One conditional UPDATE, so two workers handed the same message
    cannot both win, and a message the scheduler did not send (or has since taken back, or sent
    to another worker since) starts nothing.
    """
    job = session.get(Job, job_id)
    if job is None or (job.placement and job.placement[0] != worker_id):
        return False
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.queued,
            Job.dispatched_at.is_not(None),
            Job.dispatched_at == job.dispatched_at,  # handed out as read above, not since
            Job.cancel_requested.is_(False),
        )
        .values(
            status=JobStatus.running,
            worker_id=worker_id,
            lease_expires_at=until,
            dispatched_at=None,
            started_at=func.coalesce(Job.started_at, now),
            attempts=Job.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _status_event(session, job_id, JobStatus.running, "Job running.")
    return True


def renew_lease(session: Session, job_id: str, worker_id: str, until: datetime) -> bool:
    """Extend ``worker_id``'s lease; False when the job is no longer its (cancelled, finished,
    or taken over after the lease ran out)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def requeue(session: Session, job: Job, *, max_attempts: int, reason: str | None = None) -> None:
    """Queue a running job again, to resume from its last checkpoint: its worker was lost, or
    (``reason``) a rank of its gang died."""
    job.status = JobStatus.queued
    job.worker_id = None
    job.lease_expires_at = None
    job.dispatched_at = None
    job.placement = None
    _status_event(
        session,
        job.id,
        JobStatus.queued,
        f"{reason or 'The worker running this job was lost.'} Queued again to resume from its "
        f"last checkpoint (attempt {job.attempts + 1} of {max_attempts}).",
        level="warning",
        attempts=job.attempts,
    )


def finish(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    message: str,
    error: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Move a job to a final status; with a ``webhook_url``, its delivery goes in the outbox in
    the same transaction (no final status without its webhook, none for one rolled back)."""
    assert status.is_final, status
    job.status = status
    job.finished_at = utcnow()
    job.lease_expires_at = None
    job.error = error
    if metrics is not None:
        job.metrics = metrics
    level = "error" if status == JobStatus.failed else "info"
    extra = {} if error is None else {"error": error}
    _status_event(session, job.id, status, message, level=level, **extra)
    if url := job.spec.get("webhook_url"):
        payload = job_out(job).model_dump(mode="json")
        webhooks.enqueue(session, job.id, job.team_id, url, payload)


def _status_event(
    session: Session,
    job_id: str,
    status: JobStatus,
    message: str,
    *,
    level: str = "info",
    **data: Any,
) -> None:
    repository.add_event(
        session, job_id, "status", message, level=level, data={"status": status.value, **data}
    )
