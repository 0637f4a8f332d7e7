from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, Team, Worker


def workers(session: Session) -> Sequence[Worker]:
    return session.scalars(select(Worker).order_by(Worker.id)).all()


def jobs_with_status(session: Session, status: JobStatus, limit: int = 500) -> Sequence[Job]:
    return session.scalars(
        select(Job).where(Job.status == status).order_by(Job.id).limit(limit)
    ).all()


def team_counts(session: Session) -> Sequence[Any]:
    """Each team with its running and queued job counts."""
    running = func.coalesce(func.sum(case((Job.status == JobStatus.running, 1), else_=0)), 0)
    queued = func.coalesce(func.sum(case((Job.status == JobStatus.queued, 1), else_=0)), 0)
    return session.execute(
        select(Team.id, Team.name, Team.max_running_jobs, running, queued)
        .outerjoin(Job, Job.team_id == Team.id)
        .group_by(Team.id, Team.name, Team.max_running_jobs)
        .order_by(Team.name)
    ).all()


def run_spans_since(session: Session, since: datetime) -> Sequence[Any]:
    """(team_id, started_at, finished_at) of every job that ran at some point after ``since``."""
    return session.execute(
        select(Job.team_id, Job.started_at, Job.finished_at).where(
            Job.started_at.is_not(None),
            or_(Job.finished_at.is_(None), Job.finished_at >= since),
        )
    ).all()
