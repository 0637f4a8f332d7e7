"""The queries one scrape of ``/metrics`` makes, besides the queue's own (``app.queue``)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, WebhookDelivery


def job_counts(session: Session) -> Sequence[Any]:
    """(team_id, status, count) over every job: one grouped count, read from the queue index
    (``ix_jobs_queue_order`` starts with status and team) without touching the table."""
    stmt = select(Job.team_id, Job.status, func.count()).group_by(Job.status, Job.team_id)
    return session.execute(stmt).all()


def oldest_queued(session: Session) -> Sequence[Any]:
    """(team_id, created_at of its oldest queued job), for the teams with queued jobs."""
    stmt = (
        select(Job.team_id, func.min(Job.created_at))
        .where(Job.status == JobStatus.queued)
        .group_by(Job.team_id)
    )
    return session.execute(stmt).all()


def runs_since(session: Session, since: datetime) -> Sequence[Any]:
    """(team_id, status, created_at, started_at, finished_at, devices) of the running jobs and
    of those that ended since ``since``: two index scans, as
    ``app.queue.repository.run_spans_since``."""
    columns = (
        Job.team_id, Job.status, Job.created_at, Job.started_at, Job.finished_at, Job.devices
    )  # fmt: skip
    running = select(*columns).where(Job.status == JobStatus.running)
    ended = select(*columns).where(Job.finished_at >= since)
    return session.execute(running.union_all(ended)).all()


def webhook_counts(session: Session) -> Sequence[Any]:
    """(status, count) of the webhook outbox, from its index ``ix_webhook_deliveries_due``."""
    stmt = select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    return session.execute(stmt).all()
