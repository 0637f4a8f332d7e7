"""Every query on jobs and their events, metrics and artifacts. A job's status (and its
``status`` event) is written by ``app.jobs.lifecycle`` alone."""

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ids import new_id
from app.models import Artifact, Job, JobEvent, JobMetric
from app.pagination import page


def get_job(session: Session, team_id: str, job_id: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.team_id == team_id else None


async def job_sql(conn: AsyncConnection[Any], team_id: str, job_id: str) -> dict[str, Any] | None:
    """``get_job`` in plain SQL, for the hot path (``app.db.hot_read_pool``). A queued job's
    ``queue_position`` is the scheduler's to compute: it is null here."""
    cursor = await conn.execute(
        "SELECT *, NULL AS queue_position FROM jobs WHERE id = %s AND team_id = %s",
        (job_id, team_id),
    )
    return await cursor.fetchone()


def get_job_for_update(session: Session, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id).with_for_update())


def get_by_idempotency_key(session: Session, team_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.team_id == team_id, Job.idempotency_key == key))


def list_jobs(
    session: Session, team_id: str, *, limit: int, after: str | None, status: str | None
) -> tuple[Sequence[Job], bool]:
    stmt = select(Job).where(Job.team_id == team_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return page(session, stmt, Job.id, limit=limit, after=after)


def add_event(
    session: Session,
    job_id: str,
    type_: str,
    message: str,
    *,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(
        id=new_id("evt"), job_id=job_id, type=type_, message=message, level=level, data=data
    )
    session.add(event)
    return event


def list_events(
    session: Session, job_id: str, *, limit: int, after: str | None
) -> tuple[Sequence[JobEvent], bool]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    return page(session, stmt, JobEvent.id, limit=limit, after=after, newest_first=False)


def list_metrics(
    session: Session, job_id: str, *, limit: int, after: int | None
) -> tuple[Sequence[JobMetric], bool]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id)
    return page(session, stmt, JobMetric.step, limit=limit, after=after, newest_first=False)


def add_metric_points(session: Session, job_id: str, points: list[dict[str, Any]]) -> None:
    for point in points:
        values = {k: v for k, v in point.items() if k not in ("step", "epoch")}
        session.merge(
            JobMetric(job_id=job_id, step=point["step"], epoch=point["epoch"], values=values)
        )


def list_artifacts(session: Session, job_id: str) -> Sequence[Artifact]:
    return session.scalars(
        select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
    ).all()


def get_artifact(session: Session, job_id: str, name: str) -> Artifact | None:
    return session.get(Artifact, (job_id, name))


def job_team(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.team_id).where(Job.id == job_id))


def job_status(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
