from datetime import timedelta

from sqlalchemy.orm import Session

from app.config import get_settings
from app.jobs import service as jobs
from app.models import Job, Worker
from app.models.base import utcnow
from app.queue import repository
from app.queue.scheduler import QueueView, gpu_seconds
from app.queue.schemas import QueuedJob, QueueOut, TeamUsage, WorkerOut


def _worker(worker: Worker, offline_after: timedelta, held: dict[str, str]) -> WorkerOut:
    """``held``: the job each worker of a running or dispatched job's placement holds."""
    job_id = held.get(worker.id, worker.job_id)
    if utcnow() - worker.last_heartbeat > offline_after:
        status = "offline"
    else:
        status = "busy" if job_id else "idle"
    return WorkerOut(
        id=worker.id,
        hostname=worker.hostname,
        device=worker.device,
        device_name=worker.device_name,
        memory_bytes=worker.memory_bytes,
        version=worker.version,
        status=status,
        job_id=job_id,
        last_heartbeat=worker.last_heartbeat,
    )


def _entry(view: QueueView, job: Job, team_id: str, position: int | None) -> QueuedJob:
    if job.team_id != team_id:
        return _other(job.team_id, job.status, position)
    return QueuedJob(
        id=job.id,
        team_id=job.team_id,
        status=job.status,
        queue_position=position,
        job=jobs.render(view.session, job, position=position),
    )


def _other(team_id: str, status: str, position: int | None) -> QueuedJob:
    """Another team's job: where it stands, and nothing about it."""
    return QueuedJob(id=None, team_id=team_id, status=status, queue_position=position)


def snapshot(session: Session, team_id: str, limit: int, *, all_names: bool) -> QueueOut:
    """``all_names``: every team's name, else only ``team_id``'s (others' rows say null)."""
    settings = get_settings()
    view = QueueView(session)
    first = view.first(limit)
    mine = repository.jobs_by_id(session, [job_id for job_id, team in first if team == team_id])
    used = gpu_seconds(view.spans, view.now, half_life=None)
    offline_after = timedelta(seconds=settings.worker_offline_seconds)
    held = {
        worker_id: job_id
        for job_id, placement, _ in repository.holding(session, view.now)
        for worker_id in placement or ()
    }
    return QueueOut(
        workers=[_worker(w, offline_after, held) for w in repository.workers(session)],
        running=[_entry(view, job, team_id, None) for job in repository.running_jobs(session)],
        queued=[
            _entry(view, mine[job_id], team_id, i) if team == team_id else _other(team, "queued", i)
            for i, (job_id, team) in enumerate(first)
        ],
        teams=[
            TeamUsage(
                team_id=row.id,
                name=row.name if all_names or row.id == team_id else None,
                running=int(row.running),
                queued=int(row.queued) + int(row.dispatched),
                max_running_jobs=row.max_running_jobs,
                running_devices=int(row.running_devices),
                max_running_devices=row.max_running_devices,
                weight=row.weight,
                gpu_seconds_24h=round(used.get(row.id, 0.0), 3),
                fair_share_usage=round(view.states[row.id].usage, 3),
            )
            for row in view.team_rows
        ],
    )
